"""Big checkpoints: loading sharded through transformers/accelerate (device_map), streaming chosen when the
step tensors would not fit, and the shipped suite grouped by target under pytest-xdist. All on the CPU:
modules placed on "cpu" and on "disk" (an offload folder) take the same code path as GPUs would."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from _records import healthy_record

from ppinvariants import GREEDY, capture
from ppinvariants.decoding import DEFAULT_TEXTS
from ppinvariants.errors import UsageError
from ppinvariants.judge import run_invariants
from ppinvariants.targets import load_target, parse_device_map

# tiny:bart with its decoder layers on "disk" and everything else on "cpu" (the tied embeddings stay together).
SPLIT = {
    "model.shared": "cpu",
    "model.encoder": "cpu",
    "model.decoder.embed_tokens": "cpu",
    "model.decoder.embed_positions": "cpu",
    "model.decoder.layers": "disk",
    "model.decoder.layernorm_embedding": "cpu",
    "lm_head": "cpu",
    "final_logits_bias": "cpu",
}


def _load(**kwargs):  # noqa: ANN003, ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # accelerate: "final_logits_bias" is a parameter, not a submodule
        return load_target("tiny:bart", **kwargs)


def test_a_model_split_over_cpu_and_disk_generates_what_the_whole_model_does(tmp_path: Path) -> None:
    target = _load(device_map=SPLIT, offload_folder=str(tmp_path))
    assert target.device_map == SPLIT and target.device == torch.device("cpu")
    # The decoder layers stay on "disk" (read from the safetensors file or the offload folder per call).
    assert {p.device.type for p in target.model.model.decoder.layers.parameters()} == {"meta"}
    assert {p.device.type for p in target.model.model.encoder.parameters()} == {"cpu"}
    record = capture(target, list(DEFAULT_TEXTS), GREEDY, evidence="standard")
    whole = healthy_record("bart", "greedy", evidence="standard")
    assert torch.equal(record.sequences, whole.sequences)
    assert torch.allclose(record.scores, whole.scores, atol=1e-4)
    results = run_invariants(record)
    assert [r.invariant for r in results if r.status not in ("pass", "skip")] == []
    judged = {r.invariant for r in results if r.status == "pass"}
    assert {"batch_and_padding_invariance", "teacher_forced_logprobs_match_generation"} <= judged
    assert "sequence_logprob_is_differentiable" in judged  # gradients flow through accelerate's hooks


def test_auto_with_a_memory_cap_offloads_the_whole_model_to_disk() -> None:
    target = _load(device_map="auto", max_memory='{"cpu": "100KB"}')
    assert target.device_map == {"": "disk"}
    record = capture(target, list(DEFAULT_TEXTS[:3]), GREEDY, evidence=False)
    assert torch.equal(record.sequences, capture(load_target("tiny:bart"), list(DEFAULT_TEXTS[:3]), GREEDY).sequences)


def test_cli_device_map_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from ppinvariants.cli import main

    report = tmp_path / "r.json"
    args = ["check", "tiny:bart", "-q", "--device-map", json.dumps(SPLIT), "--offload-folder", str(tmp_path / "off")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([*args, "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.fullmatch(r"tiny:bart: PASS \(\d+ of \d+ left to --thorough\)", out.strip())
    assert json.loads(report.read_text())["environment"]["device_map"]["model.decoder.layers"] == "disk"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_map": "everywhere"}, "use one of auto, balanced"),
        ({"device_map": "[1, 2]"}, "a strategy name or a non-empty object"),
        ({"device_map": '{"model": 1.5}'}, "is not a device"),
        ({"max_memory": '{"cpu": "1GiB"}'}, "only with a device_map"),
        ({"device_map": "auto", "max_memory": "lots"}, "a JSON object"),
        ({"device_map": "auto", "device": "cuda:0"}, "both given"),
    ],
)
def test_bad_device_maps_are_usage_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_target("tiny:bart", **kwargs)


def test_a_device_map_leaving_parameters_out_is_one_short_line() -> None:
    # transformers names every parameter left without a device: the line names a few and counts the rest.
    from ppinvariants.errors import TargetError

    with pytest.raises(TargetError) as info:
        _load(device_map={"model.encoder": "disk"})
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, message
    assert "does not give any device" in message and re.search(r"and \d+ more$", message), message


def test_a_factory_loads_its_own_model_so_a_device_map_is_refused() -> None:
    with pytest.raises(UsageError, match="a factory loads its own model"):
        load_target("tests/factories.py:healthy", device_map="auto")


def test_parse_device_map_keeps_strategies_and_objects() -> None:
    assert parse_device_map("balanced") == "balanced"
    assert parse_device_map('{"model": 0, "lm_head": "cpu"}') == {"model": 0, "lm_head": "cpu"}
    assert parse_device_map(None) is None


def test_streaming_is_chosen_when_the_step_tensors_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    import ppinvariants.runner as runner

    target = load_target("tiny:bart")
    texts = list(DEFAULT_TEXTS)
    assert runner.step_tensors_fit(target, texts, GREEDY)
    monkeypatch.setattr(runner, "_free_host_bytes", lambda: 1024)  # 1 KiB free: nothing fits
    assert not runner.step_tensors_fit(target, texts, GREEDY)
    report = runner.check_loaded(target, texts=texts, decodings=[GREEDY])
    assert any("streaming mode (greedy)" in n and "would not fit in memory" in n for n in report.notes), report.notes
    monkeypatch.setattr(runner, "_free_host_bytes", lambda: None)  # unreadable: they fit
    assert runner.step_tensors_fit(target, texts, GREEDY)


def test_shipped_suite_runs_each_target_on_one_worker_under_loadgroup(pytester: pytest.Pytester) -> None:
    """``--dist loadgroup``: every test of a target lands on the worker that loaded it."""
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "ppinvariants.suite",
        "--ppi-model=tiny:bart",
        "--ppi-model=tiny:t5",
        "-k",
        "greedy and (only_pad_after_eos or batch_and_padding_invariance or generated_ids_within_tokenizer)",
        "-n",
        "2",
        "--dist",
        "loadgroup",
        "-v",
    )
    result.assert_outcomes(passed=6)
    workers: dict[str, set[str]] = {}
    for line in result.stdout.lines:
        found = re.search(r"\[(gw\d)\].*PASSED.*test_invariant\[(tiny:\w+)-", line)
        if found:
            workers.setdefault(found.group(2), set()).add(found.group(1))
    assert set(workers) == {"tiny:bart", "tiny:t5"} and all(len(w) == 1 for w in workers.values()), workers


def test_plugin_device_map_loads_the_target_sharded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_sharded(ppi_target):
            assert ppi_target.device_map["model.decoder.layers"] == "disk"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ppi-model=tiny:bart", f"--ppi-device-map={json.dumps(SPLIT)}", "-W", "ignore"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*targets: tiny:bart; device map {*disk*}, dtype float32*"])
