"""benchmarks/gpu.sh, the one prepared GPU run: its control flow holds without a GPU (the run itself needs one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gpu_sh_names_every_step_the_budget_cuts(tmp_path: Path) -> None:
    done = _run(tmp_path, GPU_SH_DEVICE="cpu", GPU_SH_MODELS="pegasus-96k", GPU_SH_BUDGET="1")
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    # float16 is left out on a CPU; each other dtype's three steps are named as not run, then the total.
    assert [line.split(":")[0] for line in summary[:-1]] == [
        f"{step} {dtype}" for dtype in ("bfloat16", "float32") for step in ("bench", "check", "suite")
    ]
    assert all("not run" in line for line in summary[:-1]) and summary[-1].startswith("total:")
    assert "torch" in (tmp_path / "out" / "versions.txt").read_text()
    # At most 8 files come back from the GPU machine: versions, summary, and two per dtype.
    assert len(list((tmp_path / "out").iterdir())) <= 8


def test_gpu_sh_refuses_in_one_line_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: there the script runs for real, with nothing to refuse")
    done = _run(tmp_path, GPU_SH_DEVICE="cuda")
    assert done.returncode == 2
    assert done.stdout.strip().splitlines()[-1] == "gpu.sh: torch cannot use cuda"
