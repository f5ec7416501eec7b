"""Consistency invariants: quiet on healthy models, firing on broken evidence and on broken models."""

from __future__ import annotations

import pytest
from _records import healthy_record

from ppinvariants.capture import BEAM, DEFAULT_TEXTS, GREEDY, capture
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


def _teacher_forcing_drift(rec) -> None:  # noqa: ANN001
    rec.evidence.teacher_forced_logits[0, 2] *= 1.5  # sharper distribution at one step: log-probs change


def _solo_differs(rec) -> None:  # noqa: ANN001
    run = rec.evidence.solo[1]
    run.sequences[0, 2] = (run.sequences[0, 2] + 7) % rec.tokenizer_size
    if run.sequences_scores is not None:  # a beam run that found another hypothesis scored it differently
        run.sequences_scores[0] -= 0.5


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
    assert _check(name, rec) == []
    break_it(rec)
    violations = _check(name, rec)
    assert any(expected in v.message for v in violations), [v.message for v in violations]
    assert all(v.message.startswith(name) for v in violations)


@pytest.mark.parametrize(
    ("factory", "decoding", "name", "expected"),
    [
        ("cache_drift", GREEDY, "teacher_forced_logprobs_match_generation", "differ from generation time"),
        ("encoder_ignores_mask", GREEDY, "batch_and_padding_invariance", "generated alone"),
        ("encoder_ignores_mask", BEAM, "batch_and_padding_invariance", "generated alone"),
        ("noisy_in_eval", GREEDY, "deterministic_in_eval_mode", "second identical run"),
        ("detached_logits", GREEDY, "sequence_logprob_is_differentiable", "gradient"),
    ],
    ids=["cache-drift", "encoder-ignores-mask-greedy", "encoder-ignores-mask-beam", "nondeterministic", "detached"],
)
def test_fires_on_a_broken_model(factory: str, decoding, name: str, expected: str) -> None:  # noqa: ANN001
    target = load_target(f"{FACTORIES}:{factory}")
    rec = capture(target, list(DEFAULT_TEXTS), decoding)
    violations = _check(name, rec)
    assert any(expected in v.message for v in violations), [v.message for v in violations]


def test_train_mode_difference_is_reported_not_failed() -> None:
    from ppinvariants.invariants import run_invariants

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
