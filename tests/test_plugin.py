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

from ppinvariants import _compat, zoo

BROKEN = str(Path(__file__).with_name("broken_factory.py").resolve()) + ":make"
# Computed at import, before pytester moves HOME.
CACHE = str(zoo.cache_root())

USER_TESTS = """
import pytest
from ppinvariants import BEAM, Decoding

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


def test_fixtures_from_a_user_test_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Healthy target passes, the broken one fails with the rendered violations and no traceback,
    an unloadable one errors once with its one-line message (its other tests skip, naming that one)."""
    monkeypatch.setenv("COLUMNS", "1000")  # -ra leaves the reason out of lines wider than the terminal
    pytester.makepyfile(test_user=USER_TESTS)
    missing = str(pytester.path / "no-such-checkpoint")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-ra", "--ppi-model", "tiny:bart", "--ppi-model", BROKEN, "--ppi-model", missing
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=4, failed=2, errors=1, skipped=2)
    first = f"test_user.py::test_target_is_loaded_once[{missing}]"
    result.stdout.fnmatch_lines(
        [
            "ERROR test_user.py::test_target_is_loaded_once[[]*no-such-checkpoint[]] - Failed: ppinvariants: "
            "cannot load target *",
            "FAILED test_user.py::test_my_model[[]*broken_factory.py:make-beam[]] - Failed: ppinvariants: "
            "neg_inf_only_where_processors_explain, * failed on *",
            "FAILED test_user.py::test_my_model[[]*broken_factory.py:make-sample[]] - Failed: ppinvariants: "
            "scores_have_no_nan_or_posinf failed on *",
        ]
    )
    assert "SKIPPED [2] " in out and f"depends on {first}, which failed: cannot load target {missing}" in out
    assert "broken_factory.py:make (beam)" in out and "broken_factory.py:make (sample)" in out
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


NEEDS_A_TARGET = """
def test_needs_a_model(ppi_target):
    pass

def test_does_not(): pass
"""


def test_no_target_warns_once_and_require_target_makes_it_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(NEEDS_A_TARGET)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*= ppinvariants: no target configured =*", "1 test needing a model were skipped (no --ppi-model given)*"]
    )
    assert result.stdout.str().count("no target configured") == 1
    result = pytester.runpytest("-p", "no:cacheprovider", "--ppi-require-target")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ppi-require-target*give --ppi-model=TARGET*"])
    pytester.makeini("[pytest]\nppi_require_target = true\n")
    assert pytester.runpytest("-p", "no:cacheprovider").ret == pytest.ExitCode.USAGE_ERROR
    pytester.makeini("[pytest]\nppi_require_target = true\nppi_models = tiny:bart\n")
    pytester.makepyfile(NEEDS_A_TARGET.replace("(ppi_target)", "(ppi_target, request)"))


def test_ppi_strict_fails_a_check_that_was_not_judged(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from ppinvariants import GREEDY

        def test_no_evidence(ppi_capture, ppi_assert_invariants):
            record = ppi_capture(["Hello world.", "A longer sentence here."], GREEDY, evidence=False)
            ppi_assert_invariants(record, ["teacher_forced_logprobs_match_generation", "only_pad_after_eos"])
        """
    )
    base = ["-p", "no:cacheprovider", "--ppi-model", "tiny:bart"]
    pytester.runpytest_subprocess(*base).assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess(*base, "--ppi-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*teacher_forced_logprobs_match_generation failed on tiny:bart (greedy): not judged (captured without*"]
    )


def test_a_hypothesis_failure_shows_the_example_not_the_source(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import given, settings, strategies as st
        from ppinvariants import GREEDY, capture
        from ppinvariants.plugin import assert_invariants

        SECRET_SOURCE_LINE = 1

        @settings(max_examples=2, deadline=None)
        @given(n=st.integers(1, 3))
        def test_drawn(ppi_target, n):
            record = capture(ppi_target, ["Hello world."] * n, GREEDY, evidence=False)
            record.sequences[:, 2] = record.conventions.eos_token_ids[0]  # tokens after eos, on purpose
            record.sequences[:, 3:] = 10
            assert_invariants(record, ["only_pad_after_eos"])
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ppi-model", "tiny:bart", "--hypothesis-profile", "ppi-ci"
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ppinvariants: only_pad_after_eos failed on tiny:bart (greedy)" in out
    assert "Falsifying example" in out or "Failing test case" in out or "n=" in out
    assert "@reproduce_failure" in out  # ppi-ci prints the blob
    assert "SECRET_SOURCE_LINE" not in out and "def test_drawn" not in out and "Traceback" not in out


REPORTING_FACTORY = """
from ppinvariants.progress import say
from ppinvariants.targets import load_target

def make():
    say("building my model (a long step)")
    target = load_target("tiny:bart")
    return target.model, target.tokenizer
"""


def test_progress_of_a_load_reaches_the_terminal_and_ppi_quiet_turns_it_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(factory=REPORTING_FACTORY)
    pytester.makepyfile(test_it="def test_a(ppi_target): pass\ndef test_b(ppi_target): pass\n")
    spec = f"--ppi-model={pytester.path / 'factory.py'}:make"
    result = pytester.runpytest_subprocess(spec, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    lines = [line for line in result.outlines if "building my model" in line]
    assert lines == ["ppinvariants | building my model (a long step)"]  # once: the target is loaded once
    quiet = pytester.runpytest_subprocess(spec, "--ppi-quiet", "-p", "no:cacheprovider")
    quiet.assert_outcomes(passed=2)
    assert not any("building my model" in line for line in quiet.outlines + quiet.errlines)


@pytest.mark.slow
def test_a_first_zoo_build_inside_pytest_prints_progress_even_piped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fresh cache: the build's progress lines come while the first test runs (output piped), also on
    an xdist worker."""
    monkeypatch.setenv("PPINVARIANTS_CACHE", str(tmp_path / "fresh"))
    pytester.makepyfile(test_it="def test_a(ppi_target): pass\n")
    result = pytester.runpytest_subprocess("--ppi-model=tiny:marian", "-n", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    progress = [line for line in result.outlines + result.errlines if line.startswith("ppinvariants | ")]
    assert progress[0].startswith("ppinvariants | building tiny:marian (first run"), progress
    assert any("tokenizer trained" in line for line in progress), progress


@pytest.mark.skipif(
    not _compat.checks_decoder_only(), reason="decoder-only models are checked with transformers 5 only"
)
def test_ppi_logprob_check_fails_a_not_pad_mask_with_the_diagnosis(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, torch

        def logprobs(model, sequences, attention_mask, prompt_length, pad_token_id, eos_token_id, mask_by_pad):
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(sequences, attention_mask=attention_mask, position_ids=positions).logits
            lp = logits[:, prompt_length - 1 : -1].log_softmax(-1)
            lp = lp.gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)
            gen = sequences[:, prompt_length:]
            if mask_by_pad:
                return (lp * (gen != pad_token_id)).sum(1)
            is_eos = torch.isin(gen, torch.tensor(eos_token_id)).int()
            return lp.masked_fill((is_eos.cumsum(1) - is_eos) > 0, 0.0).sum(1)

        @pytest.mark.ppi_default_targets("tiny:gpt2")
        @pytest.mark.parametrize("mask_by_pad", [False, True], ids=["eos_mask", "not_pad"])
        def test_my_logprobs(ppi_logprob_check, mask_by_pad):
            fn = lambda m, s, a, p, **kw: logprobs(m, s, a, p, kw["pad_token_id"], kw["eos_token_id"], mask_by_pad)
            assert ppi_logprob_check(fn).ok
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "tiny:gpt2: the log-prob function differs on" in out and "expected" in out
    assert "misses exactly its eos token's log-prob" in out and "Traceback" not in out
