"""Every invariant stays quiet on healthy tiny models and fires, precisely, on a record broken on purpose."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _records import healthy_record

from ppinvariants.invariants import ALL, REGISTRY
from ppinvariants.judge import run_invariants
from ppinvariants.record import GenerationRecord, finished_mask, generated_tokens, source_rows


def test_every_invariant_is_quiet_on_every_healthy_tiny_model(arch: str, decoding_name: str) -> None:
    rec = healthy_record(arch, decoding_name)
    results = run_invariants(rec)
    assert {r.invariant for r in results} == {i.name for i in ALL}
    bad = [
        f"{r.invariant}: {r.status} {r.reason} {[v.message for v in r.violations[:2]]}"
        for r in results
        if r.status not in ("pass", "skip", "xfail")
    ]
    assert not bad, "\n".join(bad)


def test_every_invariant_has_a_docstring_stating_its_property() -> None:
    for inv in ALL:
        assert inv.doc and len(inv.doc) > 30, inv.name


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
    return next(i for i in range(10, rec.output_width) if i not in special)


def _drop_last_step(rec: GenerationRecord) -> None:
    rec.scores = rec.scores[:, :-1]


def _break_input_suffix(rec: GenerationRecord) -> None:
    n = int(rec.attention_mask[0].sum())
    rec.input_ids[0, n - 1] = _ordinary_token(rec)


def _non_pad_in_input_padding(rec: GenerationRecord) -> None:
    row = int(rec.attention_mask.sum(dim=1).argmin())
    rec.input_ids[row, -1] = _ordinary_token(rec)


def _wrong_decoder_start(rec: GenerationRecord) -> None:
    rec.sequences[1, 0] = _ordinary_token(rec)


def _token_after_eos(rec: GenerationRecord) -> None:
    row, step = _finished_row(rec)
    rec.sequences[row, step + 2] = _ordinary_token(rec)


def _eos_dropped(rec: GenerationRecord) -> None:
    row, step = _finished_row(rec)
    rec.sequences[row, step + 1] = rec.conventions.pad_token_id
    rec.generation_config["max_new_tokens"] = rec.steps + 10


def _nan_score(rec: GenerationRecord) -> None:
    rec.scores[0, 2, 7] = float("nan")


def _posinf_logit(rec: GenerationRecord) -> None:
    rec.logits[1, 1, 9] = float("inf")


def _all_neg_inf_row(rec: GenerationRecord) -> None:
    rec.scores[0, 3, :] = float("-inf")


def _unexplained_neg_inf(rec: GenerationRecord) -> None:
    # At the latest step (up to 8) of a score row a returned hypothesis passed through: beam search
    # judges only rows whose history is known.
    src = source_rows(rec)
    step = max(t for t in range(min(9, src.shape[1])) if bool((src[:, t] >= 0).any()))
    row = int(src[:, step][src[:, step] >= 0][0])
    rec.scores[row, step, _ordinary_token(rec)] = float("-inf")


def _penalty_applied_twice(rec: GenerationRecord) -> None:
    # A finite score moved as a penalty applied once more would move it.
    row, tok = int(source_rows(rec)[0, 3]), _ordinary_token(rec)
    value = float(rec.scores[row, 3, tok])
    rec.scores[row, 3, tok] = value * 1.3 if value < 0 else value / 1.3


def _min_length_not_enforced(rec: GenerationRecord) -> None:
    eos = rec.conventions.eos_token_ids[0]
    rec.scores[2, 2, eos] = 0.5


def _early_eos(rec: GenerationRecord) -> None:
    rec.sequences[0, 3] = rec.conventions.eos_token_ids[0]


def _shifted_scores(rec: GenerationRecord) -> None:
    rec.scores = torch.roll(rec.scores, shifts=1, dims=1)


def _altered_transition_scores(rec: GenerationRecord) -> None:
    rec.transition_scores[0, 1] += 0.5


def _suffix_without_eos(rec: GenerationRecord) -> None:
    import dataclasses

    rec.conventions = dataclasses.replace(rec.conventions, input_suffix=())


def _pad_inserted_before_eos(rec: GenerationRecord) -> None:
    row, step = _finished_row(rec)
    rec.sequences[row, step + 1] = rec.conventions.pad_token_id  # eos replaced by pad


BREAKS: list[tuple[str, str, Callable[[GenerationRecord], None], str]] = [
    ("scores_match_generation_shape", "greedy", _drop_last_step, "scores have the wrong shape"),
    ("inputs_follow_tokenizer_convention", "greedy", _break_input_suffix, "does not have the tokenizer's suffix"),
    ("inputs_follow_tokenizer_convention", "beam", _non_pad_in_input_padding, "padding position holds a non-pad"),
    ("generations_start_with_decoder_start", "greedy", _wrong_decoder_start, "does not start with the decoder start"),
    ("only_pad_after_eos", "greedy", _token_after_eos, "non-pad token after eos"),
    ("rows_end_with_eos_or_length_limit", "greedy", _eos_dropped, "no eos but is shorter than the length limit"),
    ("scores_have_no_nan_or_posinf", "greedy", _nan_score, "processed score is NaN or +inf"),
    ("scores_have_no_nan_or_posinf", "beam", _posinf_logit, "raw logit is not finite"),
    ("softmax_rows_sum_to_one", "greedy", _all_neg_inf_row, "does not sum to 1"),
    ("softmax_rows_sum_to_one", "beam", _nan_score, "does not sum to 1"),
    ("step_entropy_within_bounds", "greedy", _nan_score, "step entropy outside [0, log V]"),
    ("neg_inf_only_where_processors_explain", "greedy", _unexplained_neg_inf, "-inf not explained"),
    ("neg_inf_only_where_processors_explain", "beam", _unexplained_neg_inf, "-inf not explained"),
    ("processor_masks_applied", "greedy", _min_length_not_enforced, "should have set this score to -inf"),
    (
        "processed_scores_match_processors",
        "greedy",
        _penalty_applied_twice,
        "replayed on the raw logits",
    ),
    (
        "processed_scores_match_processors",
        "beam",
        _penalty_applied_twice,
        "replayed on the raw logits",
    ),
    ("no_eos_before_min_length", "greedy", _early_eos, "eos generated before the minimum length"),
    ("chosen_logprob_gather_matches_indexing", "greedy", _shifted_scores, "differs from transformers'"),
    ("chosen_logprob_gather_matches_indexing", "beam", _altered_transition_scores, "differs from transformers'"),
    ("greedy_tokens_are_argmax", "greedy", _shifted_scores, "is not the argmax"),
    ("tokenizer_ends_inputs_with_eos", "greedy", _suffix_without_eos, "does not close inputs with the model's eos"),
    ("padding_mask_matches_eos", "greedy", _token_after_eos, "masked-out position is not pad"),
    (
        "padding_mask_matches_eos",
        "greedy",
        _pad_inserted_before_eos,
        "last counted token before the padding is not eos",
    ),
]


@pytest.mark.parametrize(
    ("name", "decoding", "break_it", "expected"),
    BREAKS,
    ids=[f"{b[0]}-{b[1]}-{b[2].__name__.strip('_')}" for b in BREAKS],
)
def test_invariant_fires_on_a_broken_record(
    name: str, decoding: str, break_it: Callable[[GenerationRecord], None], expected: str
) -> None:
    rec = healthy_record("bart", decoding)
    assert REGISTRY[name].check(rec) == [], "the healthy record must pass first"
    break_it(rec)
    violations = REGISTRY[name].check(rec)
    assert violations, f"{name} did not fire"
    matching = [v for v in violations if expected in v.message]
    assert matching, [v.message for v in violations]
    v = matching[0]
    assert v.invariant == name
    assert v.message.startswith(f"{name}: ")
    # A diagnosis names the example, and for per-token findings the step and the token.
    if v.row is not None:
        assert f"row {v.row}" in v.message and "input #" in v.message
    if v.token_id is not None:
        assert f"token {v.token_id} " in v.message


def test_every_invariant_has_a_firing_test() -> None:
    from test_consistency import BROKEN_EVIDENCE
    from test_decoder_only import FIRING_TESTED as DECODER_ONLY_FIRING
    from test_invariants_deeper import FIRING_TESTED
    from test_processors import FIRING_TESTED as PROCESSORS_FIRING
    from test_speech_vision import FIRING_TESTED as SPEECH_VISION_FIRING

    covered = (
        {b[0] for b in BREAKS}
        | {b[0] for b in BROKEN_EVIDENCE}
        | FIRING_TESTED
        | PROCESSORS_FIRING
        | DECODER_ONLY_FIRING
        | SPEECH_VISION_FIRING
    )
    assert covered == set(REGISTRY), set(REGISTRY) ^ covered


def test_violation_message_is_a_diagnosis() -> None:
    rec = healthy_record("bart", "greedy")
    _unexplained_neg_inf(rec)
    [result] = [r for r in run_invariants(rec) if r.invariant == "neg_inf_only_where_processors_explain"]
    assert result.status == "fail"
    v = result.violations[0]
    assert v.row == 0 and v.step == 8 and v.expected.startswith("finite (replayed: ") and v.found == "-inf"
    assert v.token and v.context and "[[" in v.context
    # the pieces are followed by the same tokens as decoded text, the step's token marked there too
    row = rec.sequences[0].tolist()
    pos = 8 + rec.prompt_length
    decoded = rec.tokenizer.decode(row[pos : pos + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert f"[[{decoded}]]" in v.context.split(" (text: ", 1)[1]
    assert "seed=0" in result.repro and "tiny:bart" in result.repro and "min_length" in result.repro


def test_known_issue_is_matched_narrowly() -> None:
    """transformers#47286 (eos fill with pad_token_id 0) is xfail only when every violation has its signature."""
    rec = healthy_record("t5", "beam")
    results = {r.invariant: r for r in run_invariants(rec)}
    if results["only_pad_after_eos"].status == "pass":
        pytest.skip("this transformers version pads beam hypotheses with pad: known issue not present")
    assert results["only_pad_after_eos"].status == "xfail"
    # Another violation of the same invariant, in a row padded correctly, still fails.
    rec2 = healthy_record("t5", "greedy")
    _token_after_eos(rec2)
    results2 = {r.invariant: r for r in run_invariants(rec2)}
    assert results2["only_pad_after_eos"].status == "fail"


def test_derived_tensors_follow_in_place_changes_and_are_freed_after_the_run() -> None:
    """The per-record cache of vocabulary-wide tensors never serves values of an altered record."""
    from ppinvariants.record import chosen_logprobs, score_logprobs

    rec = healthy_record("bart", "greedy", evidence="standard")
    first = score_logprobs(rec)
    assert score_logprobs(rec) is first  # computed once
    before = chosen_logprobs(rec).clone()
    token = int(rec.sequences[0, 3])  # the token chosen at step 2 (step 0 may be forced: all -inf but one)
    rec.scores[0, 2, token] -= 3.0  # changed in place: recomputed
    assert not torch.equal(score_logprobs(rec)[0, 2], first[0, 2])
    assert chosen_logprobs(rec)[0, 2] < before[0, 2]
    seq = rec.sequences.clone()
    seq[1, 1] = (seq[1, 1] + 1) % rec.tokenizer_size
    cached = chosen_logprobs(rec)
    rec.sequences = seq  # replaced: recomputed
    assert chosen_logprobs(rec)[1, 0] != cached[1, 0]
    run_invariants(rec, [REGISTRY["softmax_rows_sum_to_one"]])
    assert rec._derived == {}


def test_batch_dependent_beam_stop_is_matched_only_with_its_signature() -> None:
    """transformers 4.50-4.53 (#38778): alone, an input stops searching earlier; the batch keeps a better hypothesis."""
    from ppinvariants.known_issues import KNOWN_ISSUES

    [issue] = [k for k in KNOWN_ISSUES if "38778" in k.reference]
    rec = healthy_record("bart", "beam")
    run = rec.evidence.solo[1]
    row = run.rows[0]
    assert issue.applies(rec)
    # As the bug does it: alone, the search stopped two steps earlier with a worse hypothesis.
    run.scores = run.scores[:, : rec.scores.shape[1] - 2]
    run.sequences = run.sequences.clone()
    run.sequences[0, 2] = (run.sequences[0, 2] + 7) % rec.tokenizer_size
    run.sequences_scores = run.sequences_scores.clone()
    run.sequences_scores[0] = rec.sequences_scores[row] - 0.5
    # (On transformers 4.50-4.53 other inputs may show the real bug too: only this row is looked at.)
    [violation] = [
        v
        for v in REGISTRY["batch_and_padding_invariance"].check(rec)
        if "generated alone" in v.message and v.row == row
    ]
    assert issue.matches(rec, violation)
    # A worse hypothesis in the batch is not this bug (searching longer can only improve a row's top-k) ...
    run.sequences_scores[0] = rec.sequences_scores[row] + 0.5
    assert not issue.matches(rec, violation)
    # ... nor is a solo run that searched as long as the batch, nor the reversed batch, nor another decoding.
    run.sequences_scores[0] = rec.sequences_scores[row] - 0.5
    run.scores = rec.scores.clone()
    assert not issue.matches(rec, violation)
    assert not issue.applies(healthy_record("bart", "greedy"))
    rec.generation_config["early_stopping"] = True
    assert not issue.applies(rec)


def test_a_row_that_generates_pad_without_eos_is_no_padding() -> None:
    """A Hypothesis draw (the README's snippets on tiny:t5) found it: T5's pad id is an ordinary token until
    eos, and a row that runs to the length limit emitting it has no padding to read its length from."""
    from _records import tiny_target

    from ppinvariants import GREEDY, capture
    from ppinvariants.record import generated_tokens

    texts = [
        "people",
        "Story" + " hello" * 29,
        "  World 36868 63LongT5Config" + " school" * 36 + "—",
    ]
    record = capture(tiny_target("t5"), texts, GREEDY, evidence=False)
    tokens = generated_tokens(record)
    pad, eos = record.conventions.pad_token_id, record.conventions.eos_token_ids
    # the case itself: a row without eos, at the length limit, ending in generated pad ids
    assert record.sequences.shape[1] == record.max_length
    assert any(int(tokens[r, -1]) == pad and not set(tokens[r].tolist()) & set(eos) for r in range(len(texts)))
    [result] = [r for r in run_invariants(record) if r.invariant == "padding_mask_matches_eos"]
    assert result.status == "pass", result.violations[:1]


def test_vocab_summary_agrees_with_log_softmax_and_entropy_row_by_row() -> None:
    """The fused per-distribution facts (one max, then chunks in cache) equal the ``[..., V]`` formulas they
    replace within float32 rounding, and are NaN exactly where those are: a NaN, a ``+inf``, an all ``-inf`` row."""
    import math

    from ppinvariants.record import chosen_logprobs, entropy, score_summary, vocab_summary

    torch.manual_seed(0)
    s = torch.randn(3, 5, 3001) * 4
    s[0, 0, :10] = float("-inf")  # a few banned tokens
    s[0, 1, :] = float("-inf")  # no token left
    s[0, 2, :] = float("-inf")
    s[0, 2, 17] = 1.5  # one token left (a forced step): entropy 0
    s[1, 1, 3] = float("nan")
    s[1, 2, 7] = float("inf")
    s[2, 3, :] = 2.0  # uniform: entropy log V
    v = vocab_summary(s)
    lp = torch.log_softmax(s, dim=-1)
    p = lp.exp()
    for fused, reference in ((v.prob_sum, p.sum(dim=-1)), (v.entropy, entropy(p))):
        assert torch.equal(fused.isnan(), reference.isnan())
        assert torch.allclose(fused, reference, atol=1e-5, rtol=0, equal_nan=True)
    assert float(v.entropy[0, 2]) == 0.0
    assert abs(float(v.entropy[2, 3]) - math.log(3001)) < 1e-5
    best, best_id = s.max(dim=-1)
    assert torch.equal(v.best.nan_to_num(7.0), best.nan_to_num(7.0))
    where = torch.rand(best.shape) < 0.5
    assert torch.equal(v.best_ids_where(where), torch.where(where, best_id, -1))
    assert not v.clean and vocab_summary(s[2:]).clean
    tokens = torch.tensor([[4, 17], [0, 9]])
    picked = s[[0, 2], :2].gather(-1, tokens[..., None]).squeeze(-1)
    at = (torch.tensor([[0], [2]]), torch.arange(2)[None, :])
    reference = lp[[0, 2], :2].gather(-1, tokens[..., None]).squeeze(-1)  # -inf (banned) and NaN (no token left)
    assert torch.allclose(v.logprob_at(at, picked), reference, atol=1e-5, rtol=0, equal_nan=True)

    rec = healthy_record("bart", "greedy")  # the record's chosen log-probs: those of log_softmax
    mask, _ = finished_mask(generated_tokens(rec), rec.conventions.eos_token_ids)
    full = torch.log_softmax(rec.scores, dim=-1).gather(-1, generated_tokens(rec)[..., None]).squeeze(-1)
    assert torch.allclose(chosen_logprobs(rec)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)
    assert score_summary(rec) is score_summary(rec)  # computed once per record
