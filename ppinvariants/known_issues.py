"""Known upstream issues: violations that are real bugs outside ppinvariants, matched narrowly.

A known issue turns a failing result into ``xfail`` only when *every* violation of that result
matches its exact signature (invariant, decoding kind, transformers versions, and a predicate
on the violation's fields: row, step, token, ``kind``; never its message text). Any other
violation of the same invariant still fails. :mod:`ppinvariants.judge` applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet

from ._compat import TRANSFORMERS_VERSION


@dataclass(frozen=True)
class KnownIssue:
    invariant: str
    reason: str
    reference: str
    transformers: str  # a PEP 440 specifier, e.g. ">=4.40,<4.47"
    applies: Callable[[Any], bool]  # record -> bool (decoding kind, model, config)
    matches: Callable[[Any, Any], bool]  # (record, violation) -> bool

    def explains(self, record: Any, invariant: str, violations: list[Any]) -> bool:
        return (
            invariant == self.invariant
            and TRANSFORMERS_VERSION in SpecifierSet(self.transformers, prereleases=True)
            and self.applies(record)
            and all(self.matches(record, v) for v in violations)
        )


def _beam_with_pad_zero(record: Any) -> bool:
    eos = record.conventions.eos_token_ids
    return bool(record.is_beam and record.generation_config.get("pad_token_id") == 0 and eos and eos[0] != 0)


def _row_filled_with_eos(record: Any, violation: Any) -> bool:
    """The violation's row has, after its first eos, eos[0] and nothing else (never pad)."""
    import torch

    if violation.row is None:
        return False
    eos = record.conventions.eos_token_ids
    row = record.sequences[violation.row, getattr(record, "prompt_length", 1) :]  # the generated tokens
    is_eos = torch.isin(row, torch.tensor(eos))
    if not bool(is_eos.any()):
        return False
    tail = row[int(is_eos.int().argmax()) + 1 :]
    return tail.numel() > 0 and bool((tail == eos[0]).all())


_PAD_ZERO_REASON = "beam search pads finished hypotheses with eos when pad_token_id == 0 (`pad_token_id or eos`)"
_PAD_ZERO_REF = "huggingface/transformers#47286"

KNOWN_ISSUES: tuple[KnownIssue, ...] = tuple(
    KnownIssue(
        invariant=name,
        reason=_PAD_ZERO_REASON,
        reference=_PAD_ZERO_REF,
        # Vectorized beam search (huggingface/transformers#35802, 4.50) introduced it: seen on 4.51.3, 4.57.6,
        # 5.24.0; 4.40.2 and 4.46.3 pad with pad.
        transformers=">=4.50",
        applies=_beam_with_pad_zero,
        matches=_row_filled_with_eos,
    )
    for name in ("only_pad_after_eos", "padding_mask_matches_eos")
)


# -- M2M100Tokenizer (transformers 5): the language codes are left out of get_vocab() and len().


def _m2m100_lang_codes_uncounted(record: Any) -> bool:
    tok = record.tokenizer
    lang = getattr(tok, "id_to_lang_token", None)
    return bool(
        type(tok).__name__ == "M2M100Tokenizer"
        and lang
        and len(tok) <= min(lang)  # every language code lies past len(tokenizer)
    )


def _is_m2m100_lang_code(record: Any, violation: Any) -> bool:
    return violation.token_id is not None and violation.token_id in record.tokenizer.id_to_lang_token


_M2M100_REASON = (
    "M2M100Tokenizer (transformers 5) leaves its language codes (__en__, __fr__, ...) out of get_vocab() and "
    "len(tokenizer), although it encodes them (every input starts with one) and they are forced as the first "
    "generated token: len(tokenizer) == len(vocab.json) while __fr__ == len(vocab.json) + 6; transformers 4.22+ "
    "counted them (regression of the get_vocab fix)"
)
_M2M100_REF = "huggingface/transformers#18416 (regressed in 5.x; see also #33240)"

KNOWN_ISSUES += tuple(
    KnownIssue(
        invariant=name,
        reason=_M2M100_REASON,
        reference=_M2M100_REF,
        transformers=">=5.0.0",
        applies=_m2m100_lang_codes_uncounted,
        matches=_is_m2m100_lang_code,
    )
    for name in ("generated_ids_within_tokenizer", "special_ids_agree_between_model_and_tokenizer")
)


# -- BlenderbotTokenizer (transformers 5): inputs are no longer closed with </s>.


def _blenderbot_tokenizer(record: Any) -> bool:
    return type(record.tokenizer).__name__ == "BlenderbotTokenizer"


def _no_input_suffix(record: Any, violation: Any) -> bool:
    return not record.conventions.input_suffix


KNOWN_ISSUES += (
    KnownIssue(
        invariant="tokenizer_ends_inputs_with_eos",
        reason=(
            "BlenderbotTokenizer (transformers 5, tokenizers backend) has no post-processor, so "
            "tokenizer('hi').input_ids has no trailing </s>; transformers 4.x built 'X </s>' "
            "(BlenderbotTokenizer.build_inputs_with_special_tokens), the format the model was trained on"
        ),
        reference=(
            "no upstream issue found; 4.x format from huggingface/transformers#7418; "
            "repro: BlenderbotTokenizer(vocab=..., merges=...)('hi').input_ids ends without 2"
        ),
        transformers=">=5.0.0",
        applies=_blenderbot_tokenizer,
        matches=_no_input_suffix,
    ),
)


# -- ProphetNet: a full (teacher-forced) decoder pass and cached decoding disagree.


def _prophetnet(record: Any) -> bool:
    return record.model_type in ("prophetnet", "xlm-prophetnet")


def _teacher_forcing_disagrees(record: Any, violation: Any) -> bool:
    """A teacher-forced (full pass) reading that disagrees with generation's (cached) one."""
    return violation.kind in ("logprob", "greedy_token", "teacher_forced_value", "generate_grad_value")


KNOWN_ISSUES += tuple(
    KnownIssue(
        invariant=name,
        reason=(
            "ProphetNet's decoder computes different logits in one full pass than step by step with its cache "
            "(relative position buckets of the main stream); generate(use_cache=False) differs from use_cache=True "
            "by 0.8 in log-prob at step 1 on the tiny model"
        ),
        reference="huggingface/transformers#13612, #24289 (same root: decoder positions)",
        transformers=">=4.40",
        applies=_prophetnet,
        matches=_teacher_forcing_disagrees,
    )
    for name in ("teacher_forced_logprobs_match_generation", "sequence_logprob_is_differentiable")
)


# -- BlenderbotSmallTokenizer adds no special tokens at all (4.x and 5.x), by design.


def _blenderbot_small_tokenizer(record: Any) -> bool:
    return type(record.tokenizer).__name__ == "BlenderbotSmallTokenizer"


KNOWN_ISSUES += (
    KnownIssue(
        invariant="tokenizer_ends_inputs_with_eos",
        reason=(
            "BlenderbotSmallTokenizer never adds special tokens (no build_inputs_with_special_tokens, in 4.x and "
            "5.x): inputs reach the encoder without __end__, unlike every other seq2seq tokenizer"
        ),
        reference="transformers models/blenderbot_small/tokenization_blenderbot_small.py (by design, no upstream issue)",
        transformers=">=4.40",
        applies=_blenderbot_small_tokenizer,
        matches=_no_input_suffix,
    ),
)


# -- Vectorized beam search (4.50 to 4.53): the early-stop heuristic is pooled over the batch.


def _beam_with_inexact_stop_heuristic(record: Any) -> bool:
    gc = record.generation_config
    length_penalty = gc.get("length_penalty")
    return bool(
        record.is_beam
        and gc.get("early_stopping") in (False, None)
        and (1.0 if length_penalty is None else float(length_penalty)) > 0
    )


def _batch_kept_searching(record: Any, violation: Any) -> bool:
    """The input alone stopped searching earlier than the batch did, and the batch kept a hypothesis
    at least as good: rows that met the stop heuristic kept collecting finished hypotheses while
    other rows ran on (later ones can only enter a row's top-k by scoring higher)."""
    ev = record.evidence
    if ev is None or not ev.solo or violation.row is None or violation.kind != "solo":
        return False
    run = next((r for r in ev.solo if violation.row in r.rows), None)
    if run is None or run.sequences_scores is None or record.sequences_scores is None:
        return False
    import torch

    # Steps the batch's search ran (beam search can run past its longest returned hypothesis).
    batch_steps = record.scores.shape[1] if torch.is_tensor(record.scores) else record.steps
    solo_steps = run.scores.shape[1]
    j = run.rows.index(violation.row)
    batch_score, solo_score = float(record.sequences_scores[violation.row]), float(run.sequences_scores[j])
    return solo_steps < batch_steps and batch_score >= solo_score - record.tie_tolerance


KNOWN_ISSUES += (
    KnownIssue(
        invariant="batch_and_padding_invariance",
        reason=(
            "vectorized beam search decides to stop with one torch.any over the whole batch and has no per-row done "
            "flag (early_stopping=False, length_penalty > 0): a row whose search is over alone keeps collecting "
            "better-scoring finished hypotheses while other rows run, so its output depends on its batch; fixed in 4.54"
        ),
        reference=(
            "huggingface/transformers#38778 (fix, 4.54.0), introduced by #35802 (4.50.0); "
            "repro: tiny:bart beam 4, input #3 alone ends at step 19, in the batch of 8 runs to 24 with a better score"
        ),
        transformers=">=4.50,<4.54",
        applies=_beam_with_inexact_stop_heuristic,
        matches=_batch_kept_searching,
    ),
)
