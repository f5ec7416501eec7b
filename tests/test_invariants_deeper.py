"""The beam, sampling and vocabulary invariants: quiet on healthy tiny models, firing precisely on broken copies."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from _records import healthy_record

from ppinvariants.invariants import REGISTRY
from ppinvariants.judge import run_invariants
from ppinvariants.record import GenerationRecord, finished_mask, generated_tokens, replay_processing

#: Which decoding each new invariant applies to (``None``: all of them).
APPLIES: dict[str, str | None] = {
    "beam_scores_match_transition_scores": "beam",
    "beam_outputs_are_well_formed": "beam",
    "sampled_tokens_have_positive_probability": "sample",
    "generated_ids_within_tokenizer": None,
    "special_ids_agree_between_model_and_tokenizer": None,
}


def test_new_invariants_are_quiet_on_every_healthy_tiny_model(arch: str, decoding_name: str) -> None:
    rec = healthy_record(arch, decoding_name)
    results = run_invariants(rec, [REGISTRY[n] for n in APPLIES])
    for r in results:
        applies = APPLIES[r.invariant] in (None, decoding_name)
        expected = "pass" if applies else "skip"
        assert r.status == expected, f"{r.invariant}: {r.status} {r.reason} {[v.message for v in r.violations[:3]]}"


# ----------------------------------------------------------------- breaking records on purpose


def _finished_row(rec: GenerationRecord) -> tuple[int, int]:
    """A row that ended before the last step, and the step of its eos."""
    mask, has_eos = finished_mask(generated_tokens(rec), rec.conventions.eos_token_ids)
    for row in range(rec.sequences.shape[0]):
        if has_eos[row] and (mask[row] == 0).any():
            return row, int(mask[row].sum()) - 1
    raise AssertionError("the healthy record has no finished row")


def _ordinary_token(rec: GenerationRecord) -> int:
    special = set(rec.tokenizer.all_special_ids) | set(rec.conventions.eos_token_ids)
    return next(i for i in range(10, rec.tokenizer_size) if i not in special)


# beam


def _raise_sequence_score(rec: GenerationRecord) -> None:
    rec.sequences_scores[0] += 0.5


def _alter_transition_score(rec: GenerationRecord) -> None:
    rec.transition_scores[3, 1] += 0.5


def _length_penalty_twice(rec: GenerationRecord) -> None:
    rec.generation_config["length_penalty"] = 2.0


def _swap_returned_rows(rec: GenerationRecord) -> None:
    nrs = rec.rows_per_input
    ss = rec.sequences_scores.view(-1, nrs)
    group = int(((ss[:, 0] - ss[:, 1]) > 1e-2).nonzero()[0])
    a, b = group * nrs, group * nrs + 1
    for attr in ("sequences", "sequences_scores", "beam_indices", "transition_scores"):
        t = getattr(rec, attr)
        t[[a, b]] = t[[b, a]]


def _beam_index_of_other_input(rec: GenerationRecord) -> None:
    rec.beam_indices[rec.rows_per_input, 0] = 0  # the first row of input #1 points at input #0's beam


def _beam_index_minus_one_while_live(rec: GenerationRecord) -> None:
    rec.beam_indices[0, 0] = -1


def _beam_index_after_end(rec: GenerationRecord) -> None:
    row, step = _finished_row(rec)
    rec.beam_indices[row, step + 1] = rec.beam_indices[row, step]


def _drop_a_sequence_score(rec: GenerationRecord) -> None:
    rec.sequences_scores = rec.sequences_scores[:-1]


# sampling


def _sampled_token_banned(rec: GenerationRecord) -> None:
    tok = int(rec.sequences[0, 3])  # step 2 of row 0
    rec.scores[0, 2, tok] = float("-inf")


def _removed_token_finite(rec: GenerationRecord) -> None:
    rec.scores[1, 3, int(rec.logits[1, 3].argmin())] = 0.0  # the least likely token: removed by top-k


def _kept_token_neg_inf(rec: GenerationRecord) -> None:
    expected, _ = replay_processing(rec)
    kept = torch.isfinite(expected[2, 4]).nonzero().flatten()
    other = kept[kept != int(rec.sequences[2, 5])]  # not the sampled token: only this check should fire
    rec.scores[2, 4, int(other[0])] = float("-inf")


def _top_p_before_temperature(rec: GenerationRecord) -> None:
    """Re-warp the raw logits with temperature applied last (after top-k/top-p), a plausible ordering bug."""
    procs = rec.processing.processors
    temperature = [p for p in procs if type(p).__name__ == "TemperatureLogitsWarper"]
    reordered = type(procs)([p for p in procs if p not in temperature] + temperature)
    steps = []
    for t in range(rec.steps):
        steps.append(reordered(rec.sequences[:, : t + 1], rec.logits[:, t].clone()))
    rec.scores = torch.stack(steps, dim=1)


# vocabulary


def _id_beyond_tokenizer(rec: GenerationRecord) -> None:
    rec.sequences[1, 4] = rec.tokenizer_size + 2


def _negative_id(rec: GenerationRecord) -> None:
    rec.sequences[2, 2] = -5


def _tokenizer_narrower_than_generations(rec: GenerationRecord) -> None:
    rec.tokenizer_size = int(rec.sequences.max())  # the largest generated id is now outside


def _tokenizer_pad_changed(rec: GenerationRecord) -> None:
    tok = copy.deepcopy(rec.tokenizer)
    tok.pad_token = tok.convert_ids_to_tokens(_ordinary_token(rec))
    rec.tokenizer = tok


def _model_eos_changed(rec: GenerationRecord) -> None:
    rec.generation_config["eos_token_id"] = [_ordinary_token(rec)]


def _decoder_start_outside(rec: GenerationRecord) -> None:
    rec.generation_config["decoder_start_token_id"] = rec.tokenizer_size + 7


# (invariant, arch, decoding, break, expected message fragment, level: "token" | "row" | "config")
BREAKS: list[tuple[str, str, str, Callable[[GenerationRecord], None], str, str]] = [
    (
        "beam_scores_match_transition_scores",
        "bart",
        "beam",
        _raise_sequence_score,
        "sequences_scores differs from the chosen-token log-probs gathered through beam_indices",
        "row",
    ),
    (
        "beam_scores_match_transition_scores",
        "t5",
        "beam",
        _alter_transition_score,
        "sequences_scores differs from transformers' compute_transition_scores",
        "row",
    ),
    ("beam_scores_match_transition_scores", "mbart", "beam", _length_penalty_twice, "** 2", "row"),
    ("beam_outputs_are_well_formed", "bart", "beam", _swap_returned_rows, "not ordered by sequences_scores", "row"),
    (
        "beam_outputs_are_well_formed",
        "pegasus",
        "beam",
        _beam_index_of_other_input,
        "beam index points outside this input's beams",
        "token",
    ),
    (
        "beam_outputs_are_well_formed",
        "bart",
        "beam",
        _beam_index_minus_one_while_live,
        "beam index is -1 before the hypothesis ended",
        "token",
    ),
    ("beam_outputs_are_well_formed", "marian", "beam", _beam_index_after_end, "after the hypothesis ended", "token"),
    (
        "beam_outputs_are_well_formed",
        "bart",
        "beam",
        _drop_a_sequence_score,
        "wrong number of sequences_scores",
        "config",
    ),
    (
        "sampled_tokens_have_positive_probability",
        "bart",
        "sample",
        _sampled_token_banned,
        "sampled token has zero probability",
        "token",
    ),
    (
        "processor_masks_applied",
        "bart",
        "sample",
        _removed_token_finite,
        "should have set this score to -inf (set by TopKLogitsWarper)",
        "token",
    ),
    (
        "neg_inf_only_where_processors_explain",
        "t5",
        "sample",
        _kept_token_neg_inf,
        "-inf not explained by any logits processor in effect",
        "token",
    ),
    (
        "processor_masks_applied",
        "mbart",
        "sample",
        _top_p_before_temperature,
        "should have set this score to -inf (set by TopPLogitsWarper)",
        "token",
    ),
    (
        "generated_ids_within_tokenizer",
        "t5",
        "greedy",
        _id_beyond_tokenizer,
        "outside the tokenizer's vocabulary",
        "token",
    ),
    ("generated_ids_within_tokenizer", "bart", "sample", _negative_id, "outside the tokenizer's vocabulary", "token"),
    (
        "generated_ids_within_tokenizer",
        "marian",
        "beam",
        _tokenizer_narrower_than_generations,
        "generated id is outside the tokenizer's vocabulary",
        "token",
    ),
    (
        "special_ids_agree_between_model_and_tokenizer",
        "bart",
        "greedy",
        _tokenizer_pad_changed,
        "tokenizer's pad_token_id differs from pad_token_id in the conventions",
        "config",
    ),
    (
        "special_ids_agree_between_model_and_tokenizer",
        "pegasus",
        "greedy",
        _model_eos_changed,
        "tokenizer's eos_token_id is not one of the eos_token_id in the generation config",
        "config",
    ),
    (
        "special_ids_agree_between_model_and_tokenizer",
        "t5",
        "beam",
        _decoder_start_outside,
        "decoder_start_token_id is outside the tokenizer's vocabulary",
        "config",
    ),
]

#: The invariants this file gives a firing test (``tests/test_invariants.py`` accepts them as covered).
FIRING_TESTED: set[str] = {b[0] for b in BREAKS}


@pytest.mark.parametrize(
    ("name", "arch", "decoding", "break_it", "expected", "level"),
    BREAKS,
    ids=[f"{b[0]}-{b[1]}-{b[2]}-{b[3].__name__.strip('_')}" for b in BREAKS],
)
def test_new_invariant_fires_on_a_broken_record(
    name: str, arch: str, decoding: str, break_it: Callable[[GenerationRecord], None], expected: str, level: str
) -> None:
    rec = healthy_record(arch, decoding)
    assert REGISTRY[name].check(rec) == [], "the healthy record must pass first"
    break_it(rec)
    violations = REGISTRY[name].check(rec)
    assert violations, f"{name} did not fire"
    matching = [v for v in violations if expected in v.message]
    assert matching, [v.message for v in violations]
    v = matching[0]
    assert v.invariant == name
    assert v.message.startswith(f"{name}: ")
    assert v.expected is not None and v.found is not None, v.message
    if level in ("row", "token"):
        assert v.row is not None, v.message
        assert f"row {v.row} " in v.message and "input #" in v.message, v.message
    if level == "token":
        assert v.step is not None and v.token_id is not None, v.message
        assert f"step {v.step}" in v.message and f"token {v.token_id} " in v.message, v.message
        assert v.context and "[[" in v.context
    if level == "config":
        assert v.row is None, v.message


def test_every_new_invariant_has_a_firing_test() -> None:
    assert set(APPLIES) <= FIRING_TESTED
    assert FIRING_TESTED <= set(REGISTRY)


def test_beam_score_violation_names_the_row_and_both_numbers() -> None:
    rec = healthy_record("bart", "beam")
    before = float(rec.sequences_scores[0])
    _raise_sequence_score(rec)
    [result] = run_invariants(rec, [REGISTRY["beam_scores_match_transition_scores"]])
    assert result.status == "fail"
    v = result.violations[0]
    assert v.row == 0 and "input #0" in v.message
    assert abs(float(v.found) - (before + 0.5)) < 1e-4 and abs(float(v.expected) - before) < 1e-4
    # both readings (our gather, transformers' transition scores) disagree with the altered score
    assert result.total_violations == 2


def test_sampling_checks_skip_without_logits_and_beam_checks_skip_on_greedy() -> None:
    rec = healthy_record("bart", "sample")
    rec.logits = None
    [result] = run_invariants(rec, [REGISTRY["processed_scores_match_processors"]])
    assert result.status == "skip" and "logits" in result.reason
    rec = healthy_record("bart", "greedy")
    statuses = {r.status for r in run_invariants(rec, [REGISTRY[n] for n, d in APPLIES.items() if d == "beam"])}
    assert statuses == {"skip"}
    rec.tokenizer = None
    [result] = run_invariants(rec, [REGISTRY["special_ids_agree_between_model_and_tokenizer"]])
    assert result.status == "skip"
