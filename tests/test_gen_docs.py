"""scripts/gen_docs.py: docs/coverage.md is what the coverage command prints; --check ignores the date."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gen_docs.py"


def _module():  # noqa: ANN202 - the script as a module
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module
    spec.loader.exec_module(module)
    return module


def test_check_compares_everything_but_the_date() -> None:
    gen = _module()
    a = "# t\nProduced on 2026-11-28 with x\n| led | pass |\n"
    b = "# t\nProduced on 2027-01-01 with x\n| led | pass |\n"
    assert gen._deterministic(a) == gen._deterministic(b)
    assert gen._deterministic(a) != gen._deterministic(a.replace("pass", "fail"))


@pytest.mark.slow
def test_committed_coverage_doc_matches_the_command() -> None:
    assert _module().main(["--check"]) == 0
