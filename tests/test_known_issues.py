"""Known issues match their own signature and nothing else (matchers called directly: any transformers version)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ppinvariants.capture import capture
from ppinvariants.decoding import DEFAULT_TEXTS, GREEDY, SAMPLE
from ppinvariants.invariants import REGISTRY
from ppinvariants.invariants.processors import required_neg_inf
from ppinvariants.invariants.sampling import expected_warped
from ppinvariants.known_issues import KNOWN_ISSUES
from ppinvariants.targets import load_target

NAME = "warpers_mask_exactly_outside_kept_set"
HALF_TOP_P = next(k for k in KNOWN_ISSUES if k.invariant == NAME and k.transformers == "<4.46")


@pytest.fixture(scope="module")
def bf16_target():
    return load_target("tiny:t5", dtype="bfloat16")


@pytest.fixture(scope="module")
def bf16_sample(bf16_target):
    return capture(bf16_target, list(DEFAULT_TEXTS), SAMPLE, evidence=False)


def _warped_as_before_4_46(record):
    """``record`` with its scores replaced by what transformers' own warpers give on bfloat16 logits.

    The processor masks are applied, then TemperatureLogitsWarper, TopKLogitsWarper and
    TopPLogitsWarper run step by step on ``[rows, V]`` bfloat16 tensors, as generate() ran them
    before 4.46 (no upcast to float32).
    """
    gc = record.generation_config
    x = record.logits.masked_fill(required_neg_inf(record), float("-inf")).bfloat16()
    warpers = [
        TemperatureLogitsWarper(gc["temperature"]),
        TopKLogitsWarper(top_k=gc["top_k"]),
        TopPLogitsWarper(top_p=gc["top_p"]),
    ]
    steps = []
    for t in range(x.shape[1]):
        s = x[:, t]
        for w in warpers:
            s = w(record.sequences[:, : t + 1], s)
        steps.append(s.float())
    return dataclasses.replace(record, scores=torch.stack(steps, dim=1), _derived={})


def test_half_precision_top_p_issue_applies_only_to_half_precision_top_p_sampling(bf16_target, bf16_sample) -> None:
    assert HALF_TOP_P.applies(bf16_sample)
    assert not HALF_TOP_P.applies(dataclasses.replace(bf16_sample, dtype="float32"))
    no_top_p = dataclasses.replace(bf16_sample, generation_config={**bf16_sample.generation_config, "top_p": 1.0})
    assert not HALF_TOP_P.applies(no_top_p)
    assert not HALF_TOP_P.applies(capture(bf16_target, list(DEFAULT_TEXTS)[:2], GREEDY, evidence=False))


def test_half_precision_top_p_issue_matches_violations_of_bfloat16_top_p(bf16_sample) -> None:
    rec = _warped_as_before_4_46(bf16_sample)
    violations = REGISTRY[NAME].check(rec)
    assert violations  # bfloat16 rounding moves the top-p boundary against the float32 recomputation
    assert any("top-p" in v.message for v in violations)
    assert all(HALF_TOP_P.matches(rec, v) for v in violations)
    # the matcher's recomputation is the float32 one with the warpers in bfloat16
    neg_inf, _, ambiguous = expected_warped(rec, warper_dtype=torch.bfloat16)
    assert not ((neg_inf != torch.isneginf(rec.scores)) & ~ambiguous).any()


def test_half_precision_top_p_issue_rejects_other_violations(bf16_sample) -> None:
    rec = _warped_as_before_4_46(bf16_sample)
    expected, _, ambiguous = expected_warped(rec, warper_dtype=torch.bfloat16)
    row, step = 0, 0
    top = int(rec.logits[row, step].argmax())  # the most likely token: kept far from the top-p boundary
    last = int(rec.logits[row, step].argmin())  # the least likely: removed by top-k
    assert not expected[row, step, top] and expected[row, step, last]
    assert not ambiguous[row, step, top] and not ambiguous[row, step, last]
    rec.scores = rec.scores.clone()
    rec.scores[row, step, top] = float("-inf")
    rec.scores[row, step, last] = 0.0
    violations = REGISTRY[NAME].check(rec)
    broken = [v for v in violations if (v.row, v.step, v.token_id) in {(row, step, top), (row, step, last)}]
    assert len(broken) == 2
    assert not any(HALF_TOP_P.matches(rec, v) for v in broken)
    assert not all(HALF_TOP_P.matches(rec, v) for v in violations)  # explains() would not xfail the result
