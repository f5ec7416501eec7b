"""The mutation self-test: every injected fault is caught, the healthy models give no violation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppinvariants import _compat, evidence, rescoring
from ppinvariants.cli import main
from ppinvariants.progress import PREFIX
from ppinvariants.selftest import CAUSAL_FAULTS, FAULTS, run_fault


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_every_fault_is_detected(fault) -> None:  # noqa: ANN001
    result = run_fault(fault)
    assert result.detected, f"{fault.name} ({fault.bug_class}): no invariant fired; errors={result.errors}"


def test_faults_cover_the_bug_classes_and_every_injection_kind() -> None:
    kinds = {"hook", "post-process", "config", "tokenizer"}
    if _compat.checks_decoder_only():
        kinds.add("rescoring")
        assert {f.name for f in CAUSAL_FAULTS} <= {f.name for f in FAULTS}
    assert {f.how for f in FAULTS} == kinds
    assert len({f.bug_class for f in FAULTS}) == len(FAULTS)


def test_selftest_command_prints_the_table_and_json(capsys, tmp_path: Path) -> None:
    out_json = tmp_path / "selftest.json"
    code = main(["selftest", "--fault", "nan_logits", "--fault", "encoder_ignores_mask", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "detection rate: 2/2 = 100%" in out
    assert "healthy models: 0 violations" in out
    data = json.loads(out_json.read_text())
    assert data["detection_rate"] == 1.0 and data["healthy_violations"] == 0
    assert {f["fault"] for f in data["faults"]} == {"nan_logits", "encoder_ignores_mask"}


def test_unknown_fault_is_one_clear_line(capsys) -> None:
    code = main(["selftest", "--fault", "nope"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(PREFIX)]  # progress lines (--quiet: none)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ppinvariants: error: unknown fault 'nope'")
    assert "Traceback" not in err


@pytest.mark.skipif(
    not _compat.checks_decoder_only(), reason="decoder-only models are checked with transformers 5 only"
)
def test_the_rescoring_fault_is_undone_after_its_run() -> None:
    fault = next(f for f in CAUSAL_FAULTS if f.how == "rescoring")
    result = run_fault(fault)
    assert result.fired == ["sequence_logprob_is_differentiable"]
    assert evidence.generation_mask is rescoring.generation_mask
