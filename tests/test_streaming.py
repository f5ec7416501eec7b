"""Streaming mode agrees with the record-based checks, keeps no step tensors, and is chosen by size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ppinvariants import _compat, lineage, streaming, zoo
from ppinvariants.capturing import capture
from ppinvariants.decoding import BEAM, DEFAULT_TEXTS, GREEDY, SAMPLE
from ppinvariants.invariants import REGISTRY
from ppinvariants.invariants.processors import REPLAYED
from ppinvariants.judge import run_invariants
from ppinvariants.record import (
    NOT_KEPT,
    STEPS_NOT_KEPT_REASON,
    chosen_logprobs,
    finished_mask,
    generated_tokens,
    score_rows,
)
from ppinvariants.runner import check_loaded
from ppinvariants.selftest import FAULTS
from ppinvariants.targets import load_target

TEXTS = list(DEFAULT_TEXTS)
#: The streaming-capable invariants: what the monitor and the record-based checks must agree on.
STREAMED_CHECKS = [REGISTRY[n] for n in streaming.STREAMING_INVARIANTS]
DECODINGS = (GREEDY, BEAM, SAMPLE)

#: Faults injected inside generate() (model hooks, config, tokenizer): streaming sees them as the record does.
APPLICABLE = {
    "nan_logits",
    "posinf_logits",
    "unexplained_neg_inf",
    "min_length_ignored",
    "wrong_decoder_start",
    "forced_bos_wrong",
    "top_k_ignored",
    "cache_drift",
    "encoder_ignores_mask",
    "logits_detached",
    "ids_outside_tokenizer",
    "tokenizer_drops_eos",
    "pad_zero_t5_nan",
    "repetition_penalty_dropped",
    "repetition_penalty_other_value",
    "temperature_applied_twice",
    "ngram_ban_dropped_in_beam_search",
    "length_penalty_ignored",
    # decoder-only (transformers 5): a model hook, and the tokenizer's padding side
    "positions_ignore_mask",
    "right_padding",
}
#: Post-processing faults alter only generate()'s returned output, which streaming does not judge;
#: "nondeterministic" draws fresh noise per run, so two runs (streaming, record) see different logits.
NOT_APPLICABLE = {
    "pad_before_eos",
    "eos_dropped",
    "shifted_step_scores",
    "beam_scores_inconsistent",
    "nondeterministic",
    # Speech faults: this module's inputs are texts (Whisper in streaming mode: tests/test_speech_vision.py).
    "wrong_language_token",
    "timestamps_out_of_order",
    "audio_mask_ignored",  # and caught by a re-run of the batch, which streaming mode does not judge
    # A training loop's own log-prob mask (!= pad where pad is eos): no part of generate().
    "logprob_mask_not_pad",
}


def _summary(results: list, beam: bool = False) -> tuple[set, set]:
    """Statuses, and violations; in beam search not those of the replay checks, which streaming judges on
    every beam row (each row's history is its input_ids there) and the record only on the rows the
    returned hypotheses passed through: their verdicts must agree, their lists may differ."""
    statuses = {(r.invariant, r.status) for r in results}
    violations = {
        (r.invariant, v.row, v.step, v.token_id, v.message)
        for r in results
        for v in r.violations
        if not (beam and r.invariant in REPLAYED)
    }
    return statuses, violations


def _both(target, decoding) -> tuple[tuple[set, set] | str, tuple[set, set] | str]:
    """(streaming, record) summaries of the streaming-capable invariants; an exception's type name if generate() raised."""
    out = []
    for run in (
        lambda: streaming.run_streaming(target, TEXTS, decoding, STREAMED_CHECKS)[1],
        lambda: run_invariants(
            capture(target, TEXTS, decoding, evidence=False),
            [REGISTRY[n] for n in streaming.STREAMING_INVARIANTS],
        ),
    ):
        try:
            out.append(_summary(run(), beam=decoding.num_beams > 1))
        except Exception as e:  # noqa: BLE001 - e.g. multinomial on NaN: both modes must raise alike
            out.append(type(e).__name__)
    return out[0], out[1]


@pytest.mark.parametrize("arch", zoo.ARCHITECTURES)
def test_streaming_agrees_with_record_on_healthy_models(arch: str) -> None:
    target = load_target(f"tiny:{arch}")
    for decoding in DECODINGS:
        stream, record = _both(target, decoding)
        assert stream == record, (arch, decoding.name)


def test_fault_partition_covers_every_fault() -> None:
    from ppinvariants.selftest import CAUSAL_FAULTS

    # The decoder-only faults are in FAULTS with transformers 5 only.
    absent = set() if _compat.checks_decoder_only() else {f.name for f in CAUSAL_FAULTS}
    assert {f.name for f in FAULTS} == (APPLICABLE | NOT_APPLICABLE) - absent


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.name in APPLICABLE], ids=lambda f: f.name)
def test_streaming_agrees_with_record_on_faults(fault) -> None:
    target = load_target(f"tiny:{fault.arch}")
    fault.inject(target)
    for decoding in DECODINGS:
        stream, record = _both(target, decoding)
        assert stream == record, (fault.name, decoding.name)


def test_streaming_catches_the_per_step_faults() -> None:
    target = load_target("tiny:bart")
    next(f for f in FAULTS if f.name == "unexplained_neg_inf").inject(target)
    failed = {
        r.invariant for r in streaming.run_streaming(target, TEXTS, GREEDY, STREAMED_CHECKS)[1] if r.status == "fail"
    }
    assert "neg_inf_only_where_processors_explain" in failed


def test_monitor_keeps_no_step_tensors() -> None:
    target = load_target("tiny:bart")
    vocab = int(target.model.get_output_embeddings().weight.shape[0])
    for decoding in (GREEDY, BEAM):
        record, _, monitor = streaming.stream_capture(target, TEXTS, decoding)
        assert monitor.generate_asked_for_scores is False  # generate() kept no scores/logits tuple
        assert record.scores is NOT_KEPT and record.logits is NOT_KEPT
        rows = streaming.score_rows_of(decoding, len(TEXTS))
        held = monitor.retained_bytes()
        assert held["per_step"] <= 2 * rows * vocab * 4  # at most the previous step's scores and log-probs
        beams_to_keep = 2 * decoding.num_beams
        assert held["scalars"] <= rows * monitor.step * max(4, 2 * beams_to_keep) * 8  # no vocabulary-sized term
        assert monitor.step == record.steps or decoding.num_beams > 1


def test_monitor_observes_sampling_scores_after_the_warpers() -> None:
    """Once per step and after temperature/top-k/top-p (a separate warper list in transformers 4.40).

    The streamed chosen-token log-probs equal the record's, read from generate()'s ``output_scores``.
    """
    target = load_target("tiny:bart")
    record, _, monitor = streaming.stream_capture(target, TEXTS, SAMPLE)
    full = capture(target, TEXTS, SAMPLE, evidence=False)
    assert torch.equal(record.sequences, full.sequences)
    assert monitor.step == full.scores.shape[1]
    mask = finished_mask(generated_tokens(full), full.conventions.eos_token_ids)[0].bool()
    assert torch.allclose(record.streamed_chosen[mask], chosen_logprobs(full)[mask], atol=1e-5, rtol=0)


def test_history_processors_judged_on_every_beam_row() -> None:
    """With no-repeat n-grams streaming judges every beam row; the record only returned hypotheses' rows."""
    target = load_target("tiny:bart")
    next(f for f in FAULTS if f.name == "unexplained_neg_inf").inject(target)
    decoding = BEAM.replace(no_repeat_ngram_size=2, max_new_tokens=8)
    stream_summary, record_summary = _both(target, decoding)
    assert stream_summary[0] == record_summary[0]  # same statuses
    name = "neg_inf_only_where_processors_explain"
    # totals: streaming judges at least as many cells as the record (the kept first 20 may differ)
    stream = {r.invariant: r for r in streaming.run_streaming(target, TEXTS, decoding, STREAMED_CHECKS)[1]}
    rec = {r.invariant: r for r in run_invariants(capture(target, TEXTS, decoding, evidence=False), [REGISTRY[name]])}
    assert stream[name].total_violations >= rec[name].total_violations > 0


def test_auto_selection_by_projected_size(monkeypatch: pytest.MonkeyPatch) -> None:
    target = load_target("tiny:bart")
    greedy = [GREEDY.replace(max_new_tokens=8)]
    monkeypatch.setattr(streaming, "AUTO_THRESHOLD_BYTES", 0)
    report = check_loaded(target, texts=TEXTS[:2], decodings=greedy)
    by_name = {r.invariant: r for r in report.results}
    assert by_name["chosen_logprob_gather_matches_indexing"].status == "skip"
    assert by_name["chosen_logprob_gather_matches_indexing"].reason == STEPS_NOT_KEPT_REASON
    assert by_name["softmax_rows_sum_to_one"].status == "pass"
    assert by_name["padding_mask_matches_eos"].status == "pass"
    monkeypatch.setattr(streaming, "AUTO_THRESHOLD_BYTES", 1 << 60)
    report = check_loaded(target, texts=TEXTS[:2], decodings=greedy)
    assert {r.invariant: r for r in report.results}["chosen_logprob_gather_matches_indexing"].status == "pass"
    explicit = check_loaded(target, texts=TEXTS[:2], decodings=greedy, streaming=True)
    assert {r.invariant: r for r in explicit.results}["chosen_logprob_gather_matches_indexing"].status == "skip"


def test_projected_size_formula() -> None:
    assert streaming.projected_step_bytes(64, 64, 50265) == 64 * 64 * 50265 * 8
    assert streaming.score_rows_of(BEAM, 8) == 32


def test_prefix_fingerprints_are_cumulative_and_content_based() -> None:
    ids = torch.tensor([[2, 5, 7, 9], [2, 5, 7, 8], [0, 5, 7, 9], [2, 5, 7, 9]])
    fp = lineage.prefix_fingerprints(ids)
    for t in range(ids.shape[1]):  # column t is what a call seeing ids[:, : t + 1] keeps
        assert torch.equal(fp[:, t], lineage.prefix_fingerprints(ids[:, : t + 1])[:, -1])
    assert torch.equal(fp[0], fp[3])  # equal histories, equal fingerprints
    assert fp[0, 2] == fp[1, 2] and fp[0, 3] != fp[1, 3]  # prefixes part where the rows do
    assert (fp[0] != fp[2]).all()  # the first token counts (and token 0 is not the empty prefix)


def test_beam_lineage_on_a_hand_built_search() -> None:
    """2 inputs x 2 beams, 2 returned each; beam rows reorder between calls; input 1's first hypothesis ends at step 1."""
    start, eos, pad = 0, 1, 9
    calls = [  # input_ids seen by the monitor per call: [beam rows, t + 1]
        torch.tensor([[start], [start], [start], [start]]),
        torch.tensor([[start, 4], [start, 3], [start, 5], [start, 6]]),
        torch.tensor([[start, 3, 7], [start, 4, 8], [start, 6, 3], [start, 6, 2]]),
    ]
    history = torch.stack([lineage.prefix_fingerprints(ids)[:, -1] for ids in calls])
    sequences = torch.tensor(
        [
            [start, 3, 7, 2],  # call 1: row 1 ([0, 3]); call 2: row 0 ([0, 3, 7])
            [start, 4, 8, 5],  # call 1: row 0; call 2: row 1
            [start, 5, eos, pad],  # ended at step 1: -1 after
            [start, 6, 2, 4],  # call 1: row 3; call 2: row 3 (input 1's rows only)
        ]
    )
    want = torch.tensor([[0, 1, 0], [0, 0, 1], [2, 2, -1], [2, 3, 3]])
    assert torch.equal(lineage.beam_lineage(history, sequences, num_beams=2, num_return_sequences=2), want)
    # calls 0 and 1 only: steps past the last call have no beam row
    short = lineage.beam_lineage(history[:2], sequences, num_beams=2, num_return_sequences=2)
    assert torch.equal(short, torch.cat([want[:, :2], torch.full((4, 1), -1)], dim=1))


@pytest.mark.parametrize("arch", zoo.ARCHITECTURES)
def test_reconstructed_beam_lineage_equals_beam_indices(arch: str) -> None:
    """The monitor's lineage equals generate()'s beam_indices (kept by a record-mode run of the same search).

    With the record's beam_indices removed the monitor falls back to that lineage, and its streamed
    chosen-token log-probs equal the record's gathered through beam_indices.
    """
    target = load_target(f"tiny:{arch}")
    record, _, monitor = streaming.stream_capture(target, TEXTS, BEAM)
    full = capture(target, TEXTS, BEAM, evidence=False)
    assert torch.equal(record.sequences, full.sequences)
    want = score_rows(full)
    assert (want < 0).any() and (want >= 0).any()  # some hypotheses end early: both kinds of position are tested
    got = monitor.reconstructed_beam_rows(record)
    differ = (got != want).nonzero().tolist()
    history = torch.stack(monitor.history_keys)
    # rows with the same history at a call are interchangeable (same scores); anything else is a mismatch
    assert all(
        min(want[r, t], got[r, t]) >= 0 and history[t, got[r, t]] == history[t, want[r, t]] for r, t in differ
    ), differ

    scoreless = dataclasses.replace(record, beam_indices=None, streamed_chosen=None)
    assert torch.equal(monitor.beam_rows(scoreless), got)
    monitor.finish(scoreless)
    mask = finished_mask(generated_tokens(full), full.conventions.eos_token_ids)[0].bool()
    streamed, recorded = scoreless.streamed_chosen[mask], chosen_logprobs(full)[mask]
    assert torch.allclose(streamed, recorded, atol=1e-5, rtol=0, equal_nan=True)
