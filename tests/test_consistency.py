"""Consistency invariants: quiet on healthy models, firing on broken evidence and on broken models."""

from __future__ import annotations

import pytest
import torch
from _records import healthy_record

from ppinvariants.capturing import capture
from ppinvariants.decoding import BEAM, DEFAULT_TEXTS, GREEDY, SAMPLE
from ppinvariants.invariants import REGISTRY
from ppinvariants.targets import load_target

FACTORIES = "tests/factories.py"
CONSISTENCY = [n for n, inv in REGISTRY.items() if inv.family == "consistency"]


def _check(name: str, rec) -> list:  # noqa: ANN001
    return REGISTRY[name].check(rec)


@pytest.mark.parametrize("name", CONSISTENCY)
def test_skips_without_evidence(name: str) -> None:
    from ppinvariants.errors import NotApplicable

    rec = healthy_record("bart", "greedy")
    rec.evidence = None
    with pytest.raises(NotApplicable):
        _check(name, rec)


def _unexplained(name: str, rec) -> list:  # noqa: ANN001
    """Violations of ``name`` that no known upstream issue explains (on this transformers version)."""
    from ppinvariants.known_issues import KNOWN_ISSUES

    return [v for v in _check(name, rec) if not any(k.explains(rec, name, [v]) for k in KNOWN_ISSUES)]


def _teacher_forcing_drift(rec) -> None:  # noqa: ANN001
    rec.evidence.teacher_forced_logits[0, 2] *= 1.5  # sharper distribution at one step: log-probs change


def _solo_differs(rec) -> None:  # noqa: ANN001
    run = rec.evidence.solo[1]
    run.sequences[0, 2] = (run.sequences[0, 2] + 7) % rec.tokenizer_size
    if run.sequences_scores is not None:  # a beam run that found another (here: better) hypothesis
        run.sequences_scores[0] += 0.5


def _layout_logprob_off(rec) -> None:  # noqa: ANN001
    rec.evidence.layouts[0].chosen_logprob[1, 2] += 0.5  # the reversed batch scores a token otherwise


def _layout_picks_another(rec) -> None:  # noqa: ANN001
    decisions = rec.evidence.layouts[1].decisions  # alone: another token's processed score beats the record's
    decisions[1, 1, 2] = decisions[0, 1, 2] + 1.0
    decisions[2, 1, 2] = (decisions[2, 1, 2] + 7) % rec.tokenizer_size


def _layout_beam_score_off(rec) -> None:  # noqa: ANN001
    rec.evidence.layouts[1].decisions[0, 1, 2] -= 1.0  # alone: the hypothesis' processed log-prob of its token


def _rerun_differs(rec) -> None:  # noqa: ANN001
    rec.evidence.rerun.sequences[0, 2] = (rec.evidence.rerun.sequences[0, 2] + 7) % rec.tokenizer_size


def _top1_differs(rec) -> None:  # noqa: ANN001
    rec.evidence.top1_sampling[3, 2] = (rec.evidence.top1_sampling[3, 2] + 7) % rec.tokenizer_size


def _grad_value_off(rec) -> None:  # noqa: ANN001
    rec.evidence.grad_logprob[1] += 1.0


def _grad_zero(rec) -> None:  # noqa: ANN001
    rec.evidence.grad_nonzero = False


BROKEN_EVIDENCE = [
    ("teacher_forced_logprobs_match_generation", "greedy", _teacher_forcing_drift, "differ from generation time"),
    ("teacher_forced_logprobs_match_generation", "beam", _teacher_forcing_drift, "differ from generation time"),
    ("batch_and_padding_invariance", "greedy", _solo_differs, "generated alone"),
    ("batch_and_padding_invariance", "beam", _solo_differs, "generated alone"),
    ("batch_and_padding_invariance", "greedy", _layout_logprob_off, "log-prob of its token differs from its own batch"),
    ("batch_and_padding_invariance", "beam", _layout_logprob_off, "log-prob of its token differs from its own batch"),
    (
        "batch_and_padding_invariance",
        "greedy",
        _layout_picks_another,
        "alone (teacher-forced), the input gives another",
    ),
    ("batch_and_padding_invariance", "beam", _layout_beam_score_off, "processed log-prob of its token differs"),
    ("deterministic_in_eval_mode", "greedy", _rerun_differs, "second identical run"),
    ("greedy_equals_top1_sampling", "greedy", _top1_differs, "top-1 sampling picks another token"),
    ("sequence_logprob_is_differentiable", "greedy", _grad_value_off, "teacher-forced sequence log-prob differs"),
    ("sequence_logprob_is_differentiable", "beam", _grad_zero, "zero everywhere"),
]


@pytest.mark.parametrize(
    ("name", "decoding", "break_it", "expected"), BROKEN_EVIDENCE, ids=[f"{b[0]}-{b[1]}" for b in BROKEN_EVIDENCE]
)
def test_fires_on_broken_evidence(name, decoding, break_it, expected) -> None:  # noqa: ANN001
    rec = healthy_record("bart", decoding)
    assert _unexplained(name, rec) == []
    break_it(rec)
    violations = _unexplained(name, rec)
    assert any(expected in v.message for v in violations), [v.message for v in violations]
    assert all(v.message.startswith(name) for v in violations)


BROKEN_MODELS = [
    ("cache_drift", GREEDY, "standard", "teacher_forced_logprobs_match_generation", "differ from generation time"),
    ("encoder_ignores_mask", GREEDY, "standard", "batch_and_padding_invariance", "reversed batch padded wider"),
    ("encoder_ignores_mask", BEAM, "standard", "batch_and_padding_invariance", "reversed batch padded wider"),
    ("encoder_ignores_mask", GREEDY, "thorough", "batch_and_padding_invariance", "generated alone"),
    ("encoder_ignores_mask", BEAM, "thorough", "batch_and_padding_invariance", "generated alone"),
    ("noisy_in_eval", SAMPLE, "standard", "deterministic_in_eval_mode", "second identical run"),
    ("noisy_in_eval", GREEDY, "thorough", "deterministic_in_eval_mode", "second identical run"),
    ("detached_logits", GREEDY, "standard", "sequence_logprob_is_differentiable", "gradient"),
    ("detached_logits", GREEDY, "thorough", "sequence_logprob_is_differentiable", "gradient"),
]


@pytest.mark.parametrize(
    ("factory", "decoding", "depth", "name", "expected"),
    BROKEN_MODELS,
    ids=[f"{b[0]}-{b[1].name}-{b[2]}" for b in BROKEN_MODELS],
)
def test_fires_on_a_broken_model(factory: str, decoding, depth: str, name: str, expected: str) -> None:  # noqa: ANN001
    target = load_target(f"{FACTORIES}:{factory}")
    rec = capture(target, list(DEFAULT_TEXTS), decoding, evidence=depth)
    violations = _check(name, rec)
    assert any(expected in v.message for v in violations), [v.message for v in violations]


@pytest.mark.parametrize("decoding", ["greedy", "beam", "sample"])
def test_standard_evidence_collects_one_rerun_and_names_what_it_leaves_out(decoding: str) -> None:
    from ppinvariants.evidence import ALONE, EXTRA_PADDING, REVERSED

    rec = healthy_record("bart", decoding, evidence="standard")
    ev = rec.evidence
    assert ev.depth == "standard" and not ev.errors
    assert ev.teacher_forced_logits is not None and ev.grad_logprob is not None
    assert ev.grad_scope == "the encoder's and decoder's input embeddings" and ev.grad_finite and ev.grad_nonzero
    assert ev.solo is None and ev.top1_sampling is None and ev.train_mode_differs is None
    assert ev.generate_grad_logprob is None
    assert {"top1", "train_mode", "generate_grad"} <= set(ev.not_collected)
    assert ev.permuted is None
    assert ("solo" in ev.not_collected) == ("permuted" in ev.not_collected) == (decoding != "sample")
    if decoding == "sample":  # sampling: a second run for determinism, no batch re-layout (exempt)
        assert ev.rerun is not None and ev.layouts is None
    else:  # no generate() again: the record's sequences teacher-forced under two other layouts
        assert ev.rerun is None and "rerun" in ev.not_collected
        assert [layout.name for layout in ev.layouts] == [REVERSED, ALONE]
        tokens = rec.sequences[:, rec.prompt_length :]
        for layout in ev.layouts:
            assert layout.chosen_logprob.shape == tokens.shape and layout.decisions.shape == (4, *tokens.shape)
    assert EXTRA_PADDING > 0
    # Each piece collected is timed (benchmarks/bench.py splits a check's time with these); nothing else is.
    collected = {"grad"} | ({"rerun"} if decoding == "sample" else {"layouts"})
    assert set(ev.seconds) == collected and all(s >= 0 for s in ev.seconds.values())


def test_standard_evidence_skips_with_the_way_to_get_it() -> None:
    from ppinvariants.judge import run_invariants

    rec = healthy_record("bart", "greedy", evidence="standard")
    results = {r.invariant: r for r in run_invariants(rec, [REGISTRY[n] for n in CONSISTENCY])}
    for name in ("deterministic_in_eval_mode", "greedy_equals_top1_sampling"):
        assert results[name].status == "skip" and "--thorough" in results[name].reason, results[name]
    for name in ("teacher_forced_logprobs_match_generation", "batch_and_padding_invariance"):
        assert results[name].status == "pass", results[name]
    assert results["sequence_logprob_is_differentiable"].status == "pass"


def test_layouts_pad_every_row_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard evidence generates nothing again for greedy search: it teacher-forces the reversed batch,
    EXTRA_PADDING columns wider (all of them masked padding), then each input alone, without padding."""
    import ppinvariants.evidence as evidence_mod

    seen, generated = [], []
    real = evidence_mod._teacher_forced

    def spy(target, record, batch, rows):  # noqa: ANN001, ANN202
        seen.append(({k: v.clone() for k, v in batch.items()}, list(rows)))
        return real(target, record, batch, rows)

    monkeypatch.setattr(evidence_mod, "_teacher_forced", spy)
    monkeypatch.setattr(evidence_mod, "_generate", lambda *a, **k: generated.append(a))
    rec = healthy_record("bart", "greedy", evidence="standard")
    target = load_target("tiny:bart")
    evidence_mod.collect_evidence(target, rec, "standard")
    assert generated == []
    (batch, rows), *alone = seen
    assert rows == list(range(rec.batch_size))[::-1]
    assert len(alone) == rec.batch_size
    for i, (one, one_rows) in enumerate(alone):
        assert one_rows == [i] and bool(one["attention_mask"].all())
        assert one["input_ids"].shape[1] == int(rec.attention_mask[i].sum())
    width = rec.input_ids.shape[1]
    assert batch["input_ids"].shape[1] == width + evidence_mod.EXTRA_PADDING
    assert torch.equal(batch["attention_mask"].sum(dim=1), rec.attention_mask.flip(0).sum(dim=1))
    assert torch.equal(batch["input_ids"][:, :width], rec.input_ids.flip(0))
    assert bool((batch["input_ids"][:, width:] == target.tokenizer.pad_token_id).all())


@pytest.mark.parametrize("decoding", [GREEDY, BEAM], ids=["greedy", "beam"])
def test_each_input_alone_catches_an_encoder_that_ignores_the_mask(decoding) -> None:  # noqa: ANN001
    """The alone layout fires by itself (the check's violations, capped, show the reversed batch's first)."""
    from ppinvariants.evidence import ALONE
    from ppinvariants.invariants.consistency import _compare_layout

    target = load_target(f"{FACTORIES}:encoder_ignores_mask")
    rec = capture(target, list(DEFAULT_TEXTS), decoding, evidence="standard")
    [alone] = [layout for layout in rec.evidence.layouts if layout.name == ALONE]
    violations = _compare_layout(rec, "batch_and_padding_invariance", alone)
    assert violations and all("alone (teacher-forced)" in v.message for v in violations)
    padded = {i for i in range(rec.batch_size) if not bool(rec.attention_mask[i].all())}
    n = decoding.num_return_sequences
    assert {v.row for v in violations} <= {i * n + j for i in padded for j in range(n)}


def test_unknown_evidence_depth_is_a_usage_error() -> None:
    from ppinvariants.errors import UsageError

    with pytest.raises(UsageError, match="evidence must be"):
        capture(load_target("tiny:bart"), list(DEFAULT_TEXTS), GREEDY, evidence="deep")


def test_train_mode_difference_is_reported_not_failed() -> None:
    from ppinvariants.judge import run_invariants

    rec = healthy_record("bart", "greedy")
    [result] = run_invariants(rec, [REGISTRY["deterministic_in_eval_mode"]])
    assert result.status == "pass"
    assert result.reason.startswith("train mode (dropout on)")


def test_public_sequence_logprobs_has_gradient() -> None:
    import torch

    from ppinvariants.rescoring import sequence_logprobs

    rec = healthy_record("t5", "greedy")
    target = load_target("tiny:t5")
    lp = sequence_logprobs(
        target.model, rec.input_ids, rec.attention_mask, rec.sequences, eos_token_ids=rec.conventions.eos_token_ids
    )
    assert lp.shape == (rec.sequences.shape[0],) and lp.requires_grad
    assert torch.allclose(lp.detach(), rec.evidence.grad_logprob, atol=1e-5)


def test_embedding_modules_tolerate_models_without_accessors() -> None:
    """transformers 4.40's base class raises NotImplementedError for a missing get_input_embeddings()."""
    from ppinvariants.evidence import _embedding_modules

    target = load_target("tiny:bart")
    shared = target.model.get_input_embeddings()
    found = _embedding_modules(target.model)
    assert any(m is shared for m in found)
    assert any(m is target.model.get_encoder().get_input_embeddings() for m in found)
    assert len({id(m) for m in found}) == len(found)  # each once

    class Part:
        def get_input_embeddings(self):  # noqa: ANN202
            raise NotImplementedError

    class Model:
        def get_encoder(self):  # noqa: ANN202
            return Part()

        def get_decoder(self):  # noqa: ANN202
            raise NotImplementedError

        def get_input_embeddings(self):  # noqa: ANN202
            return shared

    assert [m is shared for m in _embedding_modules(Model())] == [True]


def test_standard_gradient_must_reach_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder whose output is detached from the log-prob fails the standard gradient check."""
    target = load_target("tiny:bart")
    encoder = target.model.get_encoder()
    handle = encoder.register_forward_hook(
        lambda _m, _a, out: type(out)(last_hidden_state=out.last_hidden_state.detach())
    )
    try:
        rec = capture(target, list(DEFAULT_TEXTS), GREEDY, evidence="standard")
    finally:
        handle.remove()
    assert rec.evidence.grad_finite is False
    violations = _check("sequence_logprob_is_differentiable", rec)
    assert any("input embeddings" in v.message and "missing or not finite" in v.message for v in violations)


def test_thorough_gradient_check_names_the_parameters_whose_gradient_is_not_finite() -> None:
    """A NaN in one parameter's gradient fails the thorough check, and the violation names that parameter."""
    target = load_target("tiny:bart")
    name, param = next((n, p) for n, p in target.model.named_parameters() if n.endswith("fc1.weight"))
    handle = param.register_hook(lambda g: g * float("nan"))
    try:
        rec = capture(target, list(DEFAULT_TEXTS), GREEDY, evidence="thorough")
    finally:
        handle.remove()
    assert rec.evidence.grad_finite is False and rec.evidence.grad_non_finite == [name]
    violations = _check("sequence_logprob_is_differentiable", rec)
    assert any("missing or not finite" in v.message and name in v.message for v in violations), violations
