"""The pytest plugin, end to end through ``pytester``: options, header, fixtures, markers, the shipped suite.

Runs that load models go through ``runpytest_subprocess`` (a fresh interpreter); light ones run in
process. pytester points ``HOME`` at a temporary folder, so every run is told where the already
built tiny checkpoints are (``PPINVARIANTS_CACHE``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ppinvariants import zoo

BROKEN = str(Path(__file__).with_name("broken_factory.py").resolve()) + ":make"
# Computed at import, before pytester moves HOME.
CACHE = str(zoo.cache_root())

USER_TESTS = """
import pytest
from ppinvariants.capture import BEAM, Decoding

LOADED = {}

def test_target_is_loaded_once(ppi_target):
    assert LOADED.setdefault(ppi_target.spec, ppi_target) is ppi_target
    assert ppi_target.model.config.is_encoder_decoder

SAMPLE = Decoding("sample", do_sample=True, top_k=20, max_new_tokens=12, seed=3)
CHECKS = ["only_pad_after_eos", "neg_inf_only_where_processors_explain", "scores_have_no_nan_or_posinf"]

@pytest.mark.parametrize("decoding", [BEAM, SAMPLE], ids=["beam", "sample"])
def test_my_model(ppi_capture, ppi_assert_invariants, decoding):
    record = ppi_capture(["Hello world.", "A much longer input sentence, with punctuation: 42!"], decoding)
    results = ppi_assert_invariants(record, CHECKS)
    assert [r.invariant for r in results] == CHECKS
"""


@pytest.fixture(autouse=True)
def _tiny_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPINVARIANTS_CACHE", CACHE)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_importing_the_plugin_loads_neither_torch_nor_transformers() -> None:
    code = "import sys, ppinvariants.plugin; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_options_ini_key_and_markers_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "ppinvariants: invariant checks for seq2seq generate() outputs:",
            "*--ppi-model=TARGET*",
            "*--ppi-device=DEVICE*",
            "*--ppi-dtype=DTYPE*",
            "*--ppi-thorough*",
            "*ppi_models (linelist)*",
        ]
    )
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.ppi_gpu:*", "@pytest.mark.ppi_default_targets(*specs):*"])


def test_header_shows_targets_and_versions(pytester: pytest.Pytester) -> None:
    from importlib.metadata import version

    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--ppi-model", "tiny:bart", "--ppi-model", "tiny:t5", "--ppi-dtype", "bfloat16")
    result.stdout.fnmatch_lines(
        [
            f"ppinvariants 0.1.0 (torch {version('torch')}, transformers {version('transformers')}): "
            "targets: tiny:bart, tiny:t5; device cpu, dtype bfloat16"
        ]
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["ppinvariants 0.1.0 (*): targets: none (no --ppi-model given;*"])


def test_ini_pins_targets_and_the_command_line_replaces_them(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nppi_models =\n    tiny:t5\n    tiny:marian\n")
    pytester.makepyfile("def test_x(ppi_target): pass")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_x[[]tiny:t5[]]", "*test_x[[]tiny:marian[]]"])
    result = pytester.runpytest("--collect-only", "-q", "--ppi-model", "tiny:bart")
    result.stdout.fnmatch_lines(["*test_x[[]tiny:bart[]]"])
    result.stdout.no_fnmatch_line("*tiny:t5*")


def test_without_targets_ppi_tests_are_skipped_unless_they_name_default_targets(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_needs_a_target(ppi_capture):
            raise AssertionError("must not run")

        @pytest.mark.ppi_default_targets("tiny:t5", "tiny:pegasus")
        def test_with_defaults(ppi_target):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*test_needs_a_target[[]no-ppi-model[]]",
            "*test_with_defaults[[]tiny:t5[]]",
            "*test_with_defaults[[]tiny:pegasus[]]",
        ]
    )
    result = pytester.runpytest("-rs", "-k", "not defaults")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *no --ppi-model given"])


def test_ppi_gpu_tests_are_skipped_without_a_gpu(pytester: pytest.Pytester) -> None:
    import torch

    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ppi_gpu
        def test_on_gpu():
            import torch
            assert torch.cuda.is_available()
        """
    )
    result = pytester.runpytest("-rs")
    if torch.cuda.is_available():
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*ppi_gpu: no CUDA GPU available*"])


def test_hypothesis_profiles_load_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_profile():
            assert settings.default.derandomize and settings.default.deadline is None
        """
    )
    result = pytester.runpytest("--hypothesis-profile", "ppi-ci")
    result.assert_outcomes(passed=1)


def test_fixtures_from_a_user_test_file(pytester: pytest.Pytester) -> None:
    """Healthy target passes, the broken one fails with the rendered violations and no traceback,
    an unloadable one errors with its one-line message."""
    pytester.makepyfile(test_user=USER_TESTS)
    missing = str(pytester.path / "no-such-checkpoint")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ppi-model", "tiny:bart", "--ppi-model", BROKEN, "--ppi-model", missing
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=4, failed=2, errors=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_user.py::test_my_model[[]*broken_factory.py:make-beam[]]*",
            "FAILED test_user.py::test_my_model[[]*broken_factory.py:make-sample[]]*",
            "ERROR test_user.py::test_target_is_loaded_once[[]*no-such-checkpoint[]]*",
        ]
    )
    assert "ppinvariants: 2 invariants failed on " in out and "broken_factory.py:make (beam)" in out
    assert "ppinvariants: 1 invariant failed on " in out and "broken_factory.py:make (sample)" in out
    assert "[FAIL] neg_inf_only_where_processors_explain (beam)" in out
    assert "[FAIL] scores_have_no_nan_or_posinf (sample)" in out
    assert "-inf not explained by any logits processor" in out and "token 485 'Ġthe'" in out
    assert "context: " in out and "reproduce: target=" in out
    assert f"cannot load target {missing}: {missing}: no such checkpoint directory" in out
    assert "Traceback" not in out and "def test_my_model" not in out


def test_ppi_thorough_makes_ppi_capture_collect_thorough_evidence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ppi_default_targets("tiny:bart")
        def test_depth(ppi_capture, request):
            record = ppi_capture(["Hello world.", "A longer input sentence here."])
            expected = "thorough" if request.config.getoption("ppi_thorough") else "standard"
            assert record.evidence.depth == expected
            assert (record.evidence.solo is not None) == (expected == "thorough")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--ppi-thorough").assert_outcomes(passed=1)


def test_shipped_suite_passes_on_a_tiny_model(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "ppinvariants.suite",
        "--ppi-model",
        "tiny:bart",
        "-k",
        "beam or drawn",
        "-v",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 10 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes
    result.stdout.fnmatch_lines(
        [
            "*test_invariant[[]tiny:bart-beam-only_pad_after_eos[]] PASSED*",
            "*test_invariants_hold_on_drawn_texts[[]tiny:bart[]] PASSED*",
        ]
    )


def test_the_suite_joins_a_repo_test_run_by_star_import(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ppinvariants_suite="from ppinvariants.suite.test_invariants import *  # noqa: F403\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "--ppi-model", "tiny:t5")
    result.stdout.fnmatch_lines(
        [
            "test_ppinvariants_suite.py::test_invariant[[]tiny:t5-greedy-only_pad_after_eos[]]",
            "test_ppinvariants_suite.py::test_invariants_hold_on_drawn_texts[[]tiny:t5[]]",
        ]
    )


def _outcomes(result: pytest.RunResult) -> tuple[dict[str, int], list[str]]:
    failed = sorted(set(re.findall(r"^FAILED (\S+)", result.stdout.str(), flags=re.M)))
    return result.parseoutcomes(), failed


@pytest.mark.slow
def test_shipped_suite_fails_on_a_broken_factory_and_xdist_agrees(pytester: pytest.Pytester) -> None:
    args = ("-p", "no:cacheprovider", "--pyargs", "ppinvariants.suite", "--ppi-model", BROKEN, "-k", "greedy-")
    serial = pytester.runpytest_subprocess(*args)
    counts, failed = _outcomes(serial)
    assert counts.get("failed", 0) >= 2 and counts.get("passed", 0) > 0, counts
    names = {f.split("-greedy-")[1].rstrip("]") for f in failed}
    assert {"neg_inf_only_where_processors_explain", "scores_have_no_nan_or_posinf"} <= names, names
    serial.stdout.fnmatch_lines(["*neg_inf_only_where_processors_explain: -inf not explained*token 485 'Ġthe'*"])
    parallel = pytester.runpytest_subprocess(*args, "-n", "2")
    p_counts, p_failed = _outcomes(parallel)
    for key in ("seconds", "deselected"):  # xdist does not report deselected tests
        p_counts.pop(key, None), counts.pop(key, None)
    assert (p_counts, p_failed) == (counts, failed)
