"""Version regression: ``ppinvariants snapshot`` / ``compare``, the library API and the ``ppi_snapshot`` fixture.

One snapshot of ``tiny:bart`` with the default inputs and decodings is taken per module (through the
CLI, in process) and compared against the same model, a changed model and corrupt files. Library and
fixture tests use two inputs and greedy search only, to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ppinvariants import zoo
from ppinvariants.capturing import capture
from ppinvariants.cli import main
from ppinvariants.decoding import GREEDY
from ppinvariants.record import chosen_logprobs
from ppinvariants.snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    compare_snapshot,
    default_atol,
    dumps_snapshot,
    load_snapshot,
    snapshot_name,
    take_snapshot,
    write_snapshot,
)
from ppinvariants.targets import load_target

TEXTS = ["Hello world.", "A model rewrites sentences."]
CACHE = str(zoo.cache_root())  # before pytester moves HOME

CHANGED_FACTORY = """
from ppinvariants.targets import load_target

def changed():
    '''tiny:bart, except that right after token {after} the logit of token {boost} gets +50.'''
    target = load_target("tiny:bart")
    model = target.model
    last = {{}}

    def remember(_module, args):
        last["ids"] = args[0][:, -1]  # the decoder's input ids at this step, [rows]

    def boost(_module, _inputs, output):
        output = output.clone()
        hit = last["ids"] == {after}
        output[hit, -1, {boost}] += 50.0
        return output

    model.get_decoder().embed_tokens.register_forward_pre_hook(remember)
    model.get_output_embeddings().register_forward_hook(boost)
    return model, target.tokenizer
"""


@pytest.fixture(scope="module")
def bart():
    return load_target("tiny:bart")


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("snap") / "bart.json"
    assert main(["snapshot", "tiny:bart", "-o", str(path)]) == 0
    return path


# ------------------------------------------------------------------------------ CLI


def test_snapshot_records_inputs_decodings_rows_and_environment(snapshot_file: Path) -> None:
    import transformers

    snap = json.loads(snapshot_file.read_text(encoding="utf-8"))
    assert list(snap) == ["format", "format_version", "target", "environment", "inputs", "decodings", "runs"]
    assert snap["format_version"] == FORMAT_VERSION and snap["target"] == "tiny:bart"
    env = snap["environment"]
    assert list(env) == ["python", "torch", "transformers", "ppinvariants", "device", "dtype"]
    assert env["transformers"] == transformers.__version__ and (env["device"], env["dtype"]) == ("cpu", "float32")
    assert [d["name"] for d in snap["decodings"]] == ["greedy", "beam", "sample", "checkpoint"]
    assert [len(r["rows"]) for r in snap["runs"]] == [8, 16, 8, 8]
    eos = 2
    for run in snap["runs"]:
        for row in run["rows"]:
            n = len(row["tokens"])
            assert len(row["logprobs"]) == len(row["pieces"]) == n > 0
            # live positions only: the row stops at its first eos (or at the length limit)
            assert eos not in row["tokens"][:-1]
            assert row["tokens"][-1] == eos or n in (19, 24)


def test_snapshot_is_byte_identical_across_runs(snapshot_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    assert main(["snapshot", "tiny:bart", "-o", str(again)]) == 0
    assert again.read_bytes() == snapshot_file.read_bytes()


def test_compare_in_the_same_environment_exits_0(snapshot_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(snapshot_file), "tiny:bart"]) == 0
    out = capsys.readouterr().out
    assert "identical within tolerance (40 rows" in out
    assert "transformers" in out and "(differs)" not in out
    # without TARGET: the snapshot's own target, device and dtype
    assert main(["compare", str(snapshot_file), "--atol", "0"]) == 0
    assert "atol 0)" in capsys.readouterr().out


def test_compare_a_changed_model_exits_1_and_shows_the_first_divergence(
    snapshot_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = json.loads(snapshot_file.read_text(encoding="utf-8"))["runs"][0]["rows"][0]  # greedy, row 0
    tokens, pieces = row["tokens"], row["pieces"]
    after = tokens[2]
    step = tokens.index(after) + 1  # the first step that follows token `after`
    boost = next(t for t in range(300, 400) if t not in tokens)
    factory = tmp_path / "changed_model.py"
    factory.write_text(CHANGED_FACTORY.format(after=after, boost=boost), encoding="utf-8")
    code = main(["compare", str(snapshot_file), f"{factory}:changed"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "changes (" in out or "change (" in out
    block = out[out.index("[greedy] row 0 (input 0)") :]
    assert block.startswith(f"[greedy] row 0 (input 0): tokens differ from step {step} on")
    tok = load_target("tiny:bart").tokenizer
    new_piece = tok.convert_ids_to_tokens(boost)
    assert f"step {step}: old {pieces[step]!r} (id {tokens[step]})  ->  new {new_piece!r} (id {boost})" in block
    context = " ".join(repr(p) for p in pieces[max(0, step - 4) : step])
    assert f"context: {context}" in block or f"context: … {context}" in block
    assert f"old text: {row['text']!r}" in block
    # both fingerprints, side by side
    assert "target        tiny:bart" in out and f"{factory}:changed" in out and "(differs)" in out


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such snapshot file"),
        ("{not json", "corrupt snapshot file (not valid JSON"),
        ('{"format": "ppinvariants-snapshot", "format_version": 99}', "snapshot format version 99"),
        ('{"format": "something-else"}', "not a ppinvariants snapshot"),
        ('{"format": "ppinvariants-snapshot", "format_version": 1, "target": "x"}', "corrupt snapshot"),
        (
            '{"format": "ppinvariants-snapshot", "format_version": 1, "target": "x", "environment": {}, '
            '"inputs": [{"text": "a", "input_ids": [1]}], "decodings": [{"name": "g"}], '
            '"runs": [{"decoding": "g", "rows": [{"row": 0, "input": 0, "tokens": [1], "pieces": ["a"], '
            '"logprobs": []}]}]}',
            "corrupt snapshot: unexpected structure",
        ),
        (b"\xff\xfe\x00", "cannot read the snapshot file"),
    ],
    ids=["missing", "not-json", "other-version", "not-a-snapshot", "truncated", "bad-row", "binary"],
)
def test_compare_a_bad_snapshot_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "snap.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["compare", str(path), "tiny:bart"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"ppinvariants: error: {path}: ") and message in err[0]
    assert "Traceback" not in captured.err


def test_snapshot_of_a_bad_target_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", str(tmp_path / "nowhere"), "-o", str(tmp_path / "s.json")]) == 2
    assert capsys.readouterr().err.startswith("ppinvariants: error: ")
    assert not (tmp_path / "s.json").exists()


# ------------------------------------------------------------------------------ library


def test_logprobs_are_kept_at_full_float32_precision(bart) -> None:
    snap = take_snapshot(bart, TEXTS, [GREEDY])
    record = capture(bart, TEXTS, GREEDY, evidence=False)
    expected = chosen_logprobs(record)
    for r, row in enumerate(snap["runs"][0]["rows"]):
        stored = torch.tensor(row["logprobs"], dtype=torch.float32)
        assert torch.equal(stored, expected[r, : len(stored)])  # bit-exact after a float32 round trip
    text = dumps_snapshot(snap)
    assert json.loads(text) == snap and text.endswith("}\n")


def test_write_and_load_round_trip(bart, tmp_path: Path) -> None:
    snap = take_snapshot(bart, TEXTS, [GREEDY])
    path = write_snapshot(snap, tmp_path / "deep" / "s.json")
    assert load_snapshot(path) == snap
    comparison = compare_snapshot(snap, bart)
    assert comparison.ok and comparison.changes == [] and comparison.rows == 2 and comparison.max_drift == 0.0
    assert "identical within tolerance" in comparison.render()


def test_logprob_drift_on_identical_tokens_is_reported_beyond_atol(bart) -> None:
    snap = take_snapshot(bart, TEXTS, [GREEDY])
    handle = bart.model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: out * 1.01)
    try:
        drifted = compare_snapshot(snap, bart)
        loose = compare_snapshot(snap, bart, atol=1.0)
    finally:
        handle.remove()
    assert not drifted.ok and {c.kind for c in drifted.changes} == {"logprobs"}
    change = drifted.changes[0]
    assert change.max_drift > 1e-4 and change.step is not None
    assert "same tokens, log-prob drift" in drifted.render()
    assert loose.ok and loose.max_drift == drifted.max_drift


def test_a_changed_tokenization_is_reported(bart) -> None:
    snap = take_snapshot(bart, TEXTS, [GREEDY])
    snap["inputs"][1]["input_ids"] = [*snap["inputs"][1]["input_ids"][:-1], 5, 2]
    comparison = compare_snapshot(snap, bart)
    assert [c.kind for c in comparison.changes] == ["input"]
    assert "tokenizes differently" in comparison.render()


def test_default_atol_follows_the_looser_dtype() -> None:
    assert default_atol("float32") == 1e-4
    assert default_atol("float32", "float16") == 1e-2
    assert default_atol("bfloat16", "float32") == 5e-2


def test_decodings_with_unknown_settings_are_refused(bart) -> None:
    snap = take_snapshot(bart, TEXTS[:1], [GREEDY])
    snap["decodings"][0]["beam_magic"] = 3
    with pytest.raises(SnapshotError, match="beam_magic"):
        compare_snapshot(snap, bart)


def test_snapshot_names_are_file_safe() -> None:
    assert snapshot_name("test_x[tiny:bart-/tmp/a b]") == "test_x_tiny_bart-_tmp_a_b_"


# ------------------------------------------------------------------------------ pytest fixture

FIXTURE_TEST = """
from ppinvariants import GREEDY

def test_bart(ppi_snapshot):
    ppi_snapshot.check("tiny:bart", texts=["Hello world.", "A model rewrites sentences."], decodings=[GREEDY])
"""


def test_ppi_snapshot_fixture_creates_compares_and_regenerates(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPINVARIANTS_CACHE", CACHE)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    pytester.makepyfile(test_user=FIXTURE_TEST)
    path = pytester.path / "snapshots" / "test_bart.json"

    first = pytester.runpytest()
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*ppinvariants: snapshot not found, created: *snapshots*test_bart.json*"])
    assert "Traceback" not in first.stdout.str()
    original = path.read_bytes()

    pytester.runpytest().assert_outcomes(passed=1)

    snap = json.loads(original)
    row = snap["runs"][0]["rows"][0]
    row["tokens"][2] += 1
    row["pieces"][2] = "tampered"
    path.write_text(dumps_snapshot(snap), encoding="utf-8")
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*tiny:bart differs from snapshot *test_bart.json (re-run with --ppi-regen to accept)",
            "*[[]greedy[]] row 0 (input 0): tokens differ from step 2 on",
            "*step 2: old 'tampered' (id *)  ->  new *",
        ]
    )

    regen = pytester.runpytest("--ppi-regen")
    regen.assert_outcomes(failed=1)
    regen.stdout.fnmatch_lines(["*snapshot differed and --ppi-regen is set, regenerated: *test_bart.json"])
    assert path.read_bytes() == original

    pytester.runpytest("--ppi-regen").assert_outcomes(passed=1)  # nothing to rewrite: passes
    path.write_text("{broken", encoding="utf-8")
    broken = pytester.runpytest()
    broken.assert_outcomes(failed=1)
    broken.stdout.fnmatch_lines(["*ppinvariants: *test_bart.json: corrupt snapshot file (not valid JSON*"])
