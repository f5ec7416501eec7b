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


def test_bad_input_table_replaces_only_its_block() -> None:
    gen = _module()
    readme = f"# x\nbefore\n{gen.BAD_START}\nold table\n{gen.BAD_END}\nafter\n"
    new = gen._with_bad_input_table(readme, "| a | 2 | `b` |")
    assert new == f"# x\nbefore\n{gen.BAD_START}\n| a | 2 | `b` |\n{gen.BAD_END}\nafter\n"


def test_committed_bad_input_table_matches_the_commands() -> None:
    """Every case of the README's table, run again, prints what the table says (about 10 s)."""
    gen = _module()
    readme = gen.README.read_text(encoding="utf-8")
    assert gen._with_bad_input_table(readme, gen.bad_input_table()) == readme


def test_timings_check_compares_steps_and_commands_not_figures() -> None:
    gen = _module()
    rows = ["| step | command | seconds | exit |", "|---|---|---|---|"]
    measured = rows + [
        f"| {what} | `{' '.join(argv)}` | {40 + i} | 0 |" for i, (what, argv) in enumerate(gen.TIMED_STEPS)
    ]
    block = f"{gen.MEASURED_LINE}2026-11-29 by x, on y:\n\n" + "\n".join(measured)
    assert gen.timings_skeleton(block) == gen._expected_timings_skeleton()
    other = block.replace("| 40 |", "| 400 |").replace("2026-11-29", "2027-01-01")
    assert gen.timings_skeleton(other) == gen._expected_timings_skeleton()
    assert gen.timings_skeleton(block.replace("`pytest -n 2`", "`pytest -n 4`")) != gen._expected_timings_skeleton()


def test_committed_readme_timings_come_from_the_script() -> None:
    gen = _module()
    block = gen._block(gen.README.read_text(), gen.TIMINGS_START, gen.TIMINGS_END)
    assert gen.MEASURED_LINE in block
    assert gen.timings_skeleton(block) == gen._expected_timings_skeleton()
