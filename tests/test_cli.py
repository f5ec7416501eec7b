"""The check command end to end: exit codes, JSON shape, human output, and one clear line for bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppinvariants import __version__, zoo
from ppinvariants.cli import main
from ppinvariants.progress import PREFIX

HERE = Path(__file__).parent
FACTORIES = HERE / "factories.py"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code: int, err: str, fragment: str) -> None:
    """Exit 2 and one line ``ppinvariants: error: ...``, after the progress lines (``--quiet`` drops those)."""
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line and not line.startswith(PREFIX)]
    assert len(lines) == 1, err
    assert lines[0].startswith("ppinvariants: error: ")
    assert fragment in lines[0], lines[0]


def test_check_passes_on_a_tiny_model_and_writes_the_json_shape(capsys, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    code, out, _ = run(capsys, "tiny:bart", "--json", str(path))
    assert code == 0, out
    report = json.loads(path.read_text())
    assert set(report) == {"environment", "targets"}
    assert set(report["environment"]) == {"ppinvariants", "python", "torch", "transformers", "device", "dtype"}
    assert report["environment"]["ppinvariants"] == __version__
    [target] = report["targets"]
    assert {"target", "status", "error", "conventions", "decodings", "results"} <= set(target)
    # the checkpoint decoding: max_length 20 of the default generation config, less the decoder start
    assert target["decodings"]["checkpoint"]["settings"]["max_new_tokens"] == 19
    assert target["status"] == "pass" and target["error"] is None
    decodings = {r["decoding"] for r in target["results"]}
    assert decodings == {"greedy", "beam", "sample", "checkpoint"}
    for r in target["results"]:
        assert {"invariant", "decoding", "status", "reason", "violations"} <= set(r)
        assert r["status"] in ("pass", "fail", "skip", "xfail")
    assert "tiny:bart: PASS" in out


def test_thorough_runs_the_checks_standard_evidence_skips(capsys, tmp_path: Path) -> None:
    def statuses(*extra: str) -> dict[tuple[str, str], str]:
        path = tmp_path / "r.json"
        code, out, _ = run(capsys, "tiny:bart", "--json", str(path), *extra)
        assert code == 0, out
        results = json.loads(path.read_text())["targets"][0]["results"]
        return {(r["invariant"], r["decoding"]): r["status"] for r in results}

    standard, thorough = statuses(), statuses("--thorough")
    for key in (("greedy_equals_top1_sampling", "greedy"), ("deterministic_in_eval_mode", "beam")):
        assert standard[key] == "skip" and thorough[key] == "pass", key
    assert standard[("deterministic_in_eval_mode", "sample")] == "pass"
    assert standard[("batch_and_padding_invariance", "beam")] == "pass"


def test_verbose_prints_the_conventions(capsys) -> None:
    code, out, _ = run(capsys, "tiny:mbart", "-v")
    assert code == 0
    assert "input:" in out and "en_XX" in out and "ro_RO" in out and "[forced]" in out


def test_a_broken_model_exits_1_naming_the_invariant(capsys, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    code, out, _ = run(capsys, f"{FACTORIES}:nan_logits", "--json", str(path))
    assert code == 1
    assert "[FAIL] scores_have_no_nan_or_posinf (greedy)" in out
    assert "token 17" in out and "reproduce:" in out
    report = json.loads(path.read_text())
    failed = {r["invariant"] for r in report["targets"][0]["results"] if r["status"] == "fail"}
    assert "scores_have_no_nan_or_posinf" in failed
    v = next(r for r in report["targets"][0]["results"] if r["invariant"] == "scores_have_no_nan_or_posinf")
    first = v["violations"][0]
    assert first["token_id"] == 17 and first["step"] is not None and first["row"] is not None


def test_an_unexplained_neg_inf_is_caught_end_to_end(capsys) -> None:
    code, out, _ = run(capsys, f"{FACTORIES}:banned_token")
    assert code == 1
    assert "neg_inf_only_where_processors_explain" in out and "token 42" in out


def test_a_healthy_factory_passes(capsys) -> None:
    code, out, err = run(capsys, f"{FACTORIES}:healthy", "-q")
    assert code == 0 and out.strip() == f"{FACTORIES}:healthy: PASS (5 of 128 left to --thorough)"
    assert err == ""  # --quiet: no progress lines either


def test_python_dash_m_and_the_console_script_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ppinvariants", "check", "tiny:t5", "-q"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "tiny:t5: PASS" in proc.stdout
    exe = shutil.which("ppinvariants")
    if exe:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "ppinvariants" in proc.stdout


def test_bad_input_exits_2_without_traceback_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ppinvariants", "check", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such checkpoint directory" in proc.stderr


# ------------------------------------------------------------------ bad input, one line each


def _copy_tiny(tmp_path: Path, arch: str = "bart") -> Path:
    dst = tmp_path / f"ckpt-{arch}"
    shutil.copytree(zoo.tiny_checkpoint(arch), dst)
    return dst


def test_missing_path(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope"))
    assert_one_clear_line(code, err, "no such checkpoint directory")


def test_directory_without_config(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path))
    assert_one_clear_line(code, err, "no config.json")


def test_corrupt_config(capsys, tmp_path: Path) -> None:
    d = _copy_tiny(tmp_path)
    (d / "config.json").write_text("{not json")
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "corrupt config.json")


def test_a_saved_causal_lm_directory_is_checked(capsys, tmp_path: Path) -> None:
    import shutil

    from ppinvariants.zoo import tiny_checkpoint

    d = tmp_path / "gpt2"
    shutil.copytree(tiny_checkpoint("gpt2"), d)
    code, out, err = run(capsys, str(d), "-q")
    assert code == 0, out + err
    assert out.strip() == f"{d}: PASS (5 of 128 left to --thorough)"


def test_decoder_only_factory(capsys) -> None:
    code, out, err = run(capsys, f"{FACTORIES}:decoder_only", "-q")
    assert code in (0, 1) and "Traceback" not in err, err
    assert "PASS" in out or "FAIL" in out


def test_non_text_model(capsys, tmp_path: Path) -> None:
    from transformers import ViTConfig, WhisperConfig

    d = tmp_path / "whisper"  # a speech model is checked now: without weights, that is the one line
    WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(d)
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "no weights found")
    d = tmp_path / "vit"  # an image classifier generates nothing
    ViTConfig(hidden_size=16, num_hidden_layers=1).save_pretrained(d)
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "neither an encoder-decoder model")


def test_missing_tokenizer_files(capsys, tmp_path: Path) -> None:
    d = _copy_tiny(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink(missing_ok=True)
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "tokenizer")


def test_tokenizer_without_pad_token(capsys) -> None:
    code, _, err = run(capsys, f"{FACTORIES}:no_pad_token")
    assert_one_clear_line(code, err, "no pad token")


@pytest.mark.parametrize("text", ["", "   \t "], ids=["empty", "whitespace"])
def test_empty_or_whitespace_text(capsys, text: str) -> None:
    code, _, err = run(capsys, "tiny:bart", "--text", text)
    assert_one_clear_line(code, err, "empty or whitespace-only")


def test_text_longer_than_the_positions_is_truncated_and_said(capsys) -> None:
    code, out, _ = run(capsys, "tiny:bart", "-v", "--text", "word " * 400, "--text", "Hello world.")
    assert code == 0
    notes = [line for line in out.splitlines() if "truncated" in line]
    assert notes == [
        "  note: inputs [0] were truncated to the model's input limit, 128 tokens "
        "(config.max_position_embeddings); the checks judged the truncated inputs"
    ]


def test_unknown_device(capsys) -> None:
    code, _, err = run(capsys, "tiny:bart", "--device", "tpu")
    assert_one_clear_line(code, err, "unknown device")


def test_cuda_without_a_gpu(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "tiny:bart", "--device", "cuda")
    assert_one_clear_line(code, err, "no CUDA GPU")


def test_unknown_dtype(capsys) -> None:
    code, _, err = run(capsys, "tiny:bart", "--dtype", "int8")
    assert_one_clear_line(code, err, "unknown dtype")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (f"{FACTORIES}:does_not_exist", "has no callable"),
        (f"{HERE}/no_such_file.py:make", "no such file"),
        ("no_such_module_xyz:make", "cannot import"),
        (f"{FACTORIES}:raises", "the factory raised RuntimeError: weights server unreachable"),
        (f"{FACTORIES}:wrong_return", "must return (model, tokenizer)"),
        ("tiny:nope", "unknown tiny model"),
        ("some-org/some-model", "not in the local Hugging Face cache"),
    ],
    ids=["no-callable", "no-file", "no-module", "raises", "wrong-return", "unknown-tiny", "uncached-hub-id"],
)
def test_malformed_or_failing_targets(capsys, spec: str, fragment: str) -> None:
    code, _, err = run(capsys, spec)
    assert_one_clear_line(code, err, fragment)


def test_pickle_only_checkpoint_is_refused_unless_allowed(capsys, tmp_path: Path) -> None:
    import torch
    import transformers

    src = zoo.tiny_checkpoint("bart")
    d = tmp_path / "pickled"
    shutil.copytree(src, d)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(src)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    capsys.readouterr()  # drop the progress bar of the load above
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "pickle")
    code, out, _ = run(capsys, str(d), "--allow-pickle", "-q")
    assert code == 0, out


def test_remote_code_is_refused_unless_trusted(capsys, tmp_path: Path) -> None:
    d = _copy_tiny(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSeq2SeqLM": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, str(d))
    assert_one_clear_line(code, err, "--trust-remote-code")


def test_a_factory_folder_is_importable_for_sibling_modules(capsys, tmp_path: Path) -> None:
    (tmp_path / "sibling_helper.py").write_text("SPEC = 'tiny:t5'\n")
    (tmp_path / "my_factory.py").write_text(
        "from sibling_helper import SPEC\n"
        "from ppinvariants.targets import load_target\n"
        "def make():\n    t = load_target(SPEC)\n    return t.model, t.tokenizer\n"
    )
    code, out, _ = run(capsys, f"{tmp_path / 'my_factory.py'}:make", "-q")
    assert code == 0, out


def test_usage_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_crash_inside_generate_is_an_error_result_and_other_checks_run(capsys, monkeypatch) -> None:
    from ppinvariants import runner

    real = runner.capture

    def flaky(target, texts, decoding, **kwargs):  # noqa: ANN001, ANN003
        if decoding.name == "beam":
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real(target, texts, decoding, **kwargs)

    monkeypatch.setattr(runner, "capture", flaky)
    code, out, _ = run(capsys, "tiny:bart")
    assert code == 1
    assert "generate() raised RuntimeError: CUDA error" in out
    assert "scores_have_no_nan_or_posinf" in out  # greedy still ran


def test_bfloat16_runs_on_cpu_with_dtype_aware_tolerances(capsys, tmp_path: Path) -> None:
    path = tmp_path / "bf16.json"
    code, out, _ = run(capsys, "tiny:t5", "--dtype", "bfloat16", "--json", str(path))
    assert code == 0, out
    report = json.loads(path.read_text())
    assert report["environment"]["dtype"] == "bfloat16"


def test_streaming_says_what_it_did_not_judge_and_strict_fails_it(capsys) -> None:
    code, out, _ = run(capsys, "tiny:bart", "--streaming")
    assert code == 0
    head = next(line for line in out.splitlines() if line.startswith("tiny:bart: "))
    assert re.fullmatch(r"tiny:bart: PASS \(\d+ of 128 not judged: streaming mode\)", head)
    assert "note: streaming mode (greedy, beam, sample, checkpoint): the step scores were not kept" in out
    code, out, _ = run(capsys, "tiny:bart", "--streaming", "--strict", "-q")
    assert code == 1
    assert out.strip() == "tiny:bart: FAIL"


def test_strict_passes_where_every_applicable_check_was_judged(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "tiny:t5", "--strict", "-q", "--json", str(tmp_path / "r.json"))
    assert code == 0, out
    [target] = json.loads((tmp_path / "r.json").read_text())["targets"]
    assert target["not_judged"] == 0 and target["summary"] == "PASS (5 of 128 left to --thorough)"
    kinds = {r["skip_kind"] for r in target["results"] if r["status"] == "skip"}
    assert kinds == {"not_applicable", "thorough_only"}


def test_progress_lines_reach_a_piped_stderr_and_quiet_turns_them_off() -> None:
    cmd = [sys.executable, "-m", "ppinvariants", "check", "tiny:t5", "-q"]
    proc = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"{PREFIX}check, version {__version__}")
    assert f"{PREFIX}loading tiny:t5" in lines and f"{PREFIX}tiny:t5 / beam" in lines
    assert all(line.startswith(PREFIX) for line in lines), lines  # nothing else: no bars, no warnings
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_bare_ppinvariants_lists_the_commands(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    for command in ("check", "selftest", "explain", "snapshot", "compare", "coverage"):
        assert re.search(rf"^\s+{command}\s", err, re.M), err


def test_check_verbose_aligns_the_conventions(capsys) -> None:
    code, out, _ = run(capsys, "tiny:bart", "-v")
    assert code == 0
    rows = [line for line in out.splitlines() if line.lstrip().startswith(("input:", "generation:", "pad:"))][:3]
    starts = {len(row) - len(row.split(":", 1)[1].lstrip()) for row in rows}
    assert len(rows) == 3 and len(starts) == 1, rows
