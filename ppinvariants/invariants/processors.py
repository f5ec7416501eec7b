"""The processed scores, held against the logits processors and warpers the decoding asks for.

The reference is :mod:`ppinvariants.processing`: transformers' own processors, built from the
*effective* generation config (the checkpoint's ``generation_config.json`` merged with the
decoding, plus any processors the user passed), replayed on each step's raw logits with the
tokens generated so far. Every ``-inf`` a ban sets, every value a penalty, bias, warper or the
renormalisation changes, and their order, are judged exactly; only a warper's edge within a few
rounding steps (another device or dtype may land either side) is left unjudged.
"""

from __future__ import annotations

import torch

from ..errors import NotApplicable
from ..processing import differences
from ..record import GenerationRecord, generated_tokens, replay_matches, replay_processing, replay_unstable
from ..report import Violation
from ._base import from_positions, invariant, make, merge


def _eos_ids(record: GenerationRecord) -> list[int]:
    return list(record.conventions.eos_token_ids)


def _differences(record: GenerationRecord) -> dict[str, torch.Tensor]:
    """Positions ``[n, 3]`` (score row, step, token) where the found scores and the replay differ, by kind.

    ``missing``: the replay is ``-inf``, the found score is not; ``unexplained``: the found score is
    ``-inf``, the replay is not; ``value``: both finite, further apart than the dtype's tolerance.
    Only cells whose history is known are compared; NaN and ``+inf`` are the finiteness check's.
    """

    def compute() -> torch.Tensor:
        found = record.scores.float()
        if replay_matches(record, found):
            # The usual healthy case, step by step: no [rows, steps, V] replay is kept (it is built, by
            # replay_processing, only where something differs).
            return torch.empty((0, 4), dtype=torch.long)
        expected, known = replay_processing(record)
        steps = min(found.shape[1], expected.shape[1])
        if torch.equal(found[:, :steps], expected[:, :steps]):
            # The usual healthy case: the replay computes what generate() computed, bit for bit
            # (``-inf == -inf``; a NaN makes them unequal). One pass instead of the masks' six.
            return torch.empty((0, 4), dtype=torch.long)
        diff = differences(found[:, :steps], expected[:, :steps], record.tolerance)
        known = known[:, :steps, None]
        missing, unexplained, value = (diff[k] & known for k in ("missing", "unexplained", "value"))
        mask_steps = sorted({int(t) for t in (missing | unexplained).any(dim=(0, 2)).nonzero().flatten()})
        if mask_steps:
            unstable = replay_unstable(record, mask_steps)[:, :steps]
            missing &= ~unstable
            unexplained &= ~unstable
        return torch.stack([missing, unexplained, value]).nonzero()  # [n, 4]: kind, score row, step, token

    found = record.derived("replay_differences", (record.scores, record.logits, record.sequences), compute)
    return {kind: found[found[:, 0] == i, 1:] for i, kind in enumerate(("missing", "unexplained", "value"))}


def _replayed(record: GenerationRecord, p: tuple[int, ...]) -> float:
    return float(replay_processing(record)[0][p])


def culprit_of(record: GenerationRecord, p: tuple[int, ...]) -> int:
    """Index in the reference list of the processor that bans the token at ``p`` (-1: none does)."""
    from ..record import step_history

    row, step, token = p
    at = step_history(record, step, record.logits.shape[0])
    if at is None or record.processing is None:
        return -1
    return record.processing.culprit(at[0], record.logits[:, step], row, token)


#: The replay checks and the kind of difference (:func:`ppinvariants.processing.differences`) each reports.
REPLAYED: dict[str, str] = {
    "neg_inf_only_where_processors_explain": "unexplained",
    "processor_masks_applied": "missing",
    "processed_scores_match_processors": "value",
}


def replay_violation(
    record: GenerationRecord, name: str, p: tuple[int, ...], found: float, replayed: float, culprit: int
) -> Violation:
    """The violation of replay check ``name`` at ``p`` (score row, step, token), ``culprit`` the index of the
    processor that set the replayed value (:func:`culprit_of`); record and streaming mode share it."""
    names = record.processing.names if record.processing is not None else ()
    culprit = f" (set by {names[culprit]})" if 0 <= culprit < len(names) else ""
    names = ", ".join(names) or "none"
    what, expected = {
        "neg_inf_only_where_processors_explain": (
            f"-inf not explained by any logits processor in effect ({names})",
            f"finite (replayed: {replayed:.6g})",
        ),
        "processor_masks_applied": ("a configured processor should have set this score to -inf" + culprit, "-inf"),
        "processed_scores_match_processors": (
            f"processed score differs from the configured processors ({names}) replayed on the raw logits",
            f"{replayed:.6g}",
        ),
    }[name]
    return make(record, name, what, row=p[0], score_row=True, step=p[1], token_id=p[2], expected=expected, found=found)


def _replay_check(record: GenerationRecord, name: str) -> list[Violation]:
    s = record.scores
    bad = _differences(record)[REPLAYED[name]]
    masks = name == "processor_masks_applied"  # a ban not applied: name the processor that bans

    def build(p: tuple[int, ...]) -> Violation:
        culprit = culprit_of(record, p) if masks else -1
        return replay_violation(record, name, p, float(s[p]), _replayed(record, p), culprit)

    return from_positions(bad, build)


@invariant("processors")
def neg_inf_only_where_processors_explain(record: GenerationRecord) -> list[Violation]:
    """Every ``-inf`` in the processed scores is one a logits processor or warper in effect sets.

    A model's softmax never yields ``-inf`` on its own: ``-inf`` comes from processors (eos before
    the minimum length, non-forced tokens at a forced step, bad words, no-repeat n-grams, suppressed
    tokens) and warpers (tokens outside top-k, top-p, ...). The configured ones, replayed on the raw
    logits, say exactly where. An unexplained ``-inf`` means a token was banned by something nobody
    configured: a masked vocabulary slice, an overflow in half precision, a processor applied twice.
    """
    return _replay_check(record, "neg_inf_only_where_processors_explain")


@invariant("processors")
def processor_masks_applied(record: GenerationRecord) -> list[Violation]:
    """Every position a configured processor or warper bans is ``-inf``, in every row whose history is known.

    The converse of :func:`neg_inf_only_where_processors_explain`: eos before ``min_length`` /
    ``min_new_tokens``, the non-forced tokens of a forced step, bad words, repeated n-grams (of the
    output and of the input), suppressed tokens and the tokens a warper removes must all read
    ``-inf``. A finite score there means the processor did not run (a setting dropped, a ban not
    enforced in beam search) or the scores were captured before it ran.
    """
    return _replay_check(record, "processor_masks_applied")


@invariant("processors")
def processed_scores_match_processors(record: GenerationRecord) -> list[Violation]:
    """Every finite processed score equals the configured processors and warpers replayed on the raw logits.

    Penalties and biases (``repetition_penalty``, ``encoder_repetition_penalty``, ``sequence_bias``,
    ``exponential_decay_length_penalty``), temperature, ``remove_invalid_values`` and the final
    renormalisation change scores without banning anything; replayed in transformers' order on the
    step's raw logits with the row's tokens so far, they give each processed score to within the
    dtype's tolerance. A difference means a setting was dropped, applied twice, applied with
    another value or in another order, or the scores returned are not the ones decided on.
    """
    return _replay_check(record, "processed_scores_match_processors")


@invariant("processors")
def no_eos_before_min_length(record: GenerationRecord) -> list[Violation]:
    """No generated row has eos before ``min_length`` (decoder start included) or ``min_new_tokens``.

    The min-length processor bans eos until the minimum is reached; an eos earlier means the
    constraint was not enforced and short outputs slip through. The one exception is the step
    where ``forced_eos_token_id`` forces eos at the length limit, which takes precedence.
    """
    name = "no_eos_before_min_length"
    gc = record.generation_config
    tokens = generated_tokens(record)
    t = torch.arange(tokens.shape[1])
    # min_length counts the decoder start (or a decoder-only model's whole prompt): step t makes length prompt + t + 1.
    blocked = (t + record.prompt_length < (gc.get("min_length") or 0)) | (t < (gc.get("min_new_tokens") or 0))
    if gc.get("forced_eos_token_id") is not None:
        # The forced eos at the length limit runs after the min-length processor and wins over it
        # (a config asking for min_length >= max_length gets its eos there all the same).
        blocked &= t != record.max_length - record.prompt_length - 1
    is_eos = torch.isin(tokens, torch.tensor(_eos_ids(record)))
    bad = (is_eos & blocked[None, :]).nonzero()
    return merge(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "eos generated before the minimum length",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=f"no eos before min_length={gc.get('min_length')} / min_new_tokens={gc.get('min_new_tokens')}",
                found=f"eos at length {p[1] + record.prompt_length + 1}",
            ),
        )
    )


@invariant("processors")
def renormalized_scores_are_log_probs(record: GenerationRecord) -> list[Violation]:
    """With ``renormalize_logits``, every processed score row is a log-distribution: ``logsumexp == 0``.

    The renormalising processor runs last and turns the processed scores into log-probabilities;
    a row that does not normalise means a processor ran after it, or it did not run.
    """
    name = "renormalized_scores_are_log_probs"
    if not record.generation_config.get("renormalize_logits"):
        raise NotApplicable("renormalize_logits is off")
    lse = torch.logsumexp(record.scores.float(), dim=-1)
    bad = (~(lse.abs() <= record.tolerance)).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "renormalized scores do not sum to probability 1",
            row=p[0],
            score_row=True,
            step=p[1],
            expected="logsumexp 0",
            found=float(lse[p]),
        ),
    )
