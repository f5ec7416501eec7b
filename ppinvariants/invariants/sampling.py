"""Sampling: the sampled tokens were possible, and the warpers banned exactly the tokens outside their kept set.

The warpers are re-applied from the raw logits the way transformers 5.x ``_get_logits_processor``
orders them: first the logits processors (min length, forced tokens, bad words, suppressed tokens,
no-repeat n-grams), then ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``
(``min_tokens_to_keep=1`` without beams).
"""

from __future__ import annotations

import torch

from ..capture import GenerationRecord, finished_mask, generated_tokens
from ..errors import NotApplicable
from ..report import Violation
from ._base import from_positions, invariant, make, merge
from .beam import setting
from .processors import _history_processors_active, history_neg_inf, required_neg_inf

#: Settings whose processors/warpers change scores in ways this module does not reproduce, with the
#: value that means "off" (the warper check does not apply when any of them is on).
_NOT_REPRODUCED: dict[str, object] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "sequence_bias": None,
    "guidance_scale": 1.0,
    "exponential_decay_length_penalty": None,
    "remove_invalid_values": False,
    "top_h": None,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "watermarking_config": None,
    "encoder_no_repeat_ngram_size": 0,
}

#: Cumulative probabilities this close to ``1 - top_p`` may land either side of the threshold
#: through float32 rounding (e.g. scores computed on a GPU, recomputed here on the CPU).
_TOP_P_BAND = 1e-5


def _require_sampling(record: GenerationRecord) -> None:
    if not record.decoding.do_sample:
        raise NotApplicable("only sampling draws tokens from the warped distribution")


def _source_rows(record: GenerationRecord) -> torch.Tensor:
    """The ``scores`` row each returned token was drawn from, ``[rows, steps]`` (``beam_indices`` for beam sampling)."""
    rows, steps = record.sequences.shape[0], record.steps
    if record.decoding.num_beams > 1 and record.beam_indices is not None:
        bi = record.beam_indices[:, :steps].long()
        if bi.shape[1] < steps:
            bi = torch.cat([bi, torch.full((rows, steps - bi.shape[1]), -1, dtype=bi.dtype)], dim=1)
        return bi
    return torch.arange(rows)[:, None].expand(rows, steps)


@invariant("sampling")
def sampled_tokens_have_positive_probability(record: GenerationRecord) -> list[Violation]:
    """Every sampled token (up to and including its row's eos) has a finite processed score, i.e. non-zero probability.

    Sampling draws from ``softmax(processed scores)``: a token whose processed score is ``-inf``
    (or NaN) has probability zero and cannot be drawn. Finding one means the returned scores are
    not the distribution the token was drawn from (scores shifted by a step, captured before a
    warper ran, or a token written after sampling). Positions after eos are padding, not samples.
    """
    name = "sampled_tokens_have_positive_probability"
    _require_sampling(record)
    tokens = generated_tokens(record)
    R, S = tokens.shape
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    s = record.scores
    src = _source_rows(record).clamp(0, s.shape[0] - 1)
    in_vocab = (tokens >= 0) & (tokens < s.shape[-1])  # ids outside: generated_ids_within_tokenizer
    chosen = s[src, torch.arange(S)[None, :].expand(R, S), tokens.clamp(0, s.shape[-1] - 1)]
    bad = (mask.bool() & in_vocab & ~torch.isfinite(chosen)).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "sampled token has zero probability (its processed score is not finite)",
            row=p[0],
            step=p[1],
            token_id=int(tokens[p]),
            expected="finite processed score",
            found=float(chosen[p]),
        ),
    )


def expected_warped(
    record: GenerationRecord, warper_dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """``(neg_inf, stage, ambiguous)`` from the raw logits, each ``[rows, steps, V]`` bool.

    ``neg_inf``: positions the processors and warpers must set to ``-inf``; ``stage`` names the
    first stage that removed each one (``processors``, ``top-k``, ``top-p``); ``ambiguous``: positions
    whose fate depends on float rounding or on the order of equal scores at the top-p threshold.

    The processors and temperature are applied in float32; the scaled scores are then cast to
    ``warper_dtype``, and top-k and top-p (sort, softmax, cumulative sum) run in that dtype.
    Cumulative probabilities within ``max(1e-5, eps(warper_dtype) * (1 - top_p))`` of the
    threshold are ambiguous. With the default float32 the cast is a no-op and the band is 1e-5.
    """
    x = record.logits.float().clone()
    rows, steps, vocab = x.shape
    mtk = 1  # min_tokens_to_keep without beams
    by_processor = required_neg_inf(record)
    if _history_processors_active(record):
        banned, _known = history_neg_inf(record)  # sampling: every row's history is known
        by_processor = by_processor | banned
    x = x.masked_fill(by_processor, float("-inf"))
    temperature = setting(record, "temperature")
    if temperature is not None and float(temperature) != 1.0:
        x = x / float(temperature)
    # A float32 division rounded once to warper_dtype is what a division in that dtype gives
    # (PyTorch computes reduced-precision arithmetic in float32 and rounds the result).
    x = x.to(warper_dtype)
    stage = {"processors": by_processor}
    ambiguous = torch.zeros_like(by_processor)
    top_k = setting(record, "top_k")
    if top_k is not None and int(top_k) != 0:
        k = min(max(int(top_k), mtk), vocab)
        kth = torch.topk(x, k, dim=-1).values[..., -1:]
        by_k = x < kth  # ties with the k-th score are all kept
        stage["top-k"] = by_k & ~torch.isneginf(x)
        x = x.masked_fill(by_k, float("-inf"))
    top_p = setting(record, "top_p")
    if top_p is not None and float(top_p) < 1.0:
        flat = x.reshape(rows * steps, vocab)  # the 2-D [rows, V] layout transformers works on
        sorted_x, order = torch.sort(flat, descending=False)
        cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        threshold = 1 - float(top_p)
        remove_sorted = cum <= threshold
        remove_sorted[..., -mtk:] = False
        band = max(_TOP_P_BAND, torch.finfo(warper_dtype).eps * threshold)
        near = (cum.float() - threshold).abs() <= band
        remove = remove_sorted.scatter(1, order, remove_sorted).view(rows, steps, vocab)
        ambiguous |= near.scatter(1, order, near).view(rows, steps, vocab)
        # Equal scores straddling the threshold: which of them is removed depends on the sort order.
        first_kept = (~remove_sorted).int().argmax(dim=-1, keepdim=True)
        boundary = sorted_x.gather(1, first_kept).view(rows, steps, 1)
        tie = (x == boundary) & torch.isfinite(boundary)
        ambiguous |= tie & (tie.sum(dim=-1, keepdim=True) > 1)
        stage["top-p"] = remove & ~torch.isneginf(x)
        x = x.masked_fill(remove, float("-inf"))
    return torch.isneginf(x), stage, ambiguous


@invariant("sampling")
def warpers_mask_exactly_outside_kept_set(record: GenerationRecord) -> list[Violation]:
    """The processed scores are ``-inf`` exactly outside the set that the processors, temperature, top-k and top-p keep.

    Re-applying, to the raw logits, the history-independent processor masks (and the
    no-repeat-n-gram / multi-token bad-words bans), then temperature, top-k (ties with the k-th
    score kept) and top-p (smallest set of most likely tokens whose probability exceeds ``top_p``,
    at least one kept) in transformers' order gives the tokens sampling may draw. A token outside
    that set with a finite score means a warper did not run (or ran in another order, e.g. top-p
    before temperature); a kept token at ``-inf`` means something banned a token nobody configured.
    Tokens whose fate hinges on float rounding at the top-p threshold are not judged.
    """
    name = "warpers_mask_exactly_outside_kept_set"
    _require_sampling(record)
    if record.logits is None:
        raise NotApplicable("no raw logits captured (output_logits unavailable)")
    if record.decoding.num_beams > 1:
        raise NotApplicable("beam sampling warps per beam row (min_tokens_to_keep > 1); not judged here")
    on = [k for k, off in _NOT_REPRODUCED.items() if record.generation_config.get(k) not in (None, off)]
    if on:
        raise NotApplicable(f"processors not reproduced here are on: {', '.join(on)}")
    if record.logits.shape != record.scores.shape:
        raise NotApplicable("raw logits and processed scores differ in shape (judged by the shape checks)")
    expected, stage, ambiguous = expected_warped(record)
    found = torch.isneginf(record.scores)
    s = record.scores

    def remover(p: tuple[int, ...]) -> str:
        return next((k for k, m in reversed(stage.items()) if bool(m[p])), "processors")

    missing = (expected & ~found & ~ambiguous).nonzero()
    extra = (found & ~expected & ~ambiguous).nonzero()
    return merge(
        from_positions(
            missing,
            lambda p: make(
                record,
                name,
                f"token outside the kept set (removed by {remover(p)}) has a finite processed score",
                row=p[0],
                step=p[1],
                token_id=p[2],
                expected="-inf",
                found=float(s[p]),
            ),
        ),
        from_positions(
            extra,
            lambda p: make(
                record,
                name,
                "token in the kept set (processors, temperature, top-k, top-p) is -inf in the processed scores",
                row=p[0],
                step=p[1],
                token_id=p[2],
                expected=f"finite (warped logit {float(record.logits[p]):.6g})",
                found="-inf",
            ),
        ),
    )
