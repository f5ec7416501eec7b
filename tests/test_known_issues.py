"""Versions that process scores in the model's dtype (transformers < 4.46) are replayed in that dtype.

transformers before 4.46 ran the processors and warpers on the logits in the model's dtype; 4.46 upcasts
``next_token_logits`` to float32 first (commit 22e6f14). The replay follows the installed version
(``_compat.processes_in_model_dtype``), so a bfloat16 model's top-p boundary, computed in bfloat16 by
such a version, is no false alarm. Emulated here on any version by warping in bfloat16 by hand.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ppinvariants import _compat
from ppinvariants.capturing import capture
from ppinvariants.decoding import DEFAULT_TEXTS, SAMPLE
from ppinvariants.invariants import REGISTRY
from ppinvariants.invariants.processors import REPLAYED
from ppinvariants.judge import run_invariants
from ppinvariants.targets import load_target


@pytest.fixture(scope="module")
def bf16_sample():
    return capture(load_target("tiny:t5", dtype="bfloat16"), list(DEFAULT_TEXTS), SAMPLE, evidence=False)


def _processed_in_bfloat16(record):
    """``record`` with its scores replaced by its own reference processors run in bfloat16, step by step."""
    procs = record.processing.processors
    steps = [procs(record.sequences[:, : t + 1], record.logits[:, t].bfloat16()).float() for t in range(record.steps)]
    return dataclasses.replace(record, scores=torch.stack(steps, dim=1), _derived={})


def test_processing_dtype_follows_the_version(bf16_sample) -> None:
    expected = torch.bfloat16 if _compat.processes_in_model_dtype() else torch.float32
    assert bf16_sample.processing.dtype == expected


def test_bfloat16_processing_passes_when_replayed_in_bfloat16(bf16_sample) -> None:
    rec = _processed_in_bfloat16(bf16_sample)
    rec.processing = dataclasses.replace(rec.processing, dtype=torch.bfloat16)
    results = run_invariants(rec, [REGISTRY[n] for n in REPLAYED])
    assert {r.status for r in results} == {"pass"}, [(r.invariant, r.violations[:2]) for r in results]


def test_bfloat16_processing_is_a_difference_to_a_float32_replay(bf16_sample) -> None:
    rec = _processed_in_bfloat16(bf16_sample)
    rec.processing = dataclasses.replace(rec.processing, dtype=torch.float32)
    rec.dtype = "float32"  # float32 tolerance: the bfloat16 rounding of the warped scores shows
    results = run_invariants(rec, [REGISTRY[n] for n in REPLAYED])
    assert "fail" in {r.status for r in results}
