"""Version regression: record what a target generates, then check that another environment generates the same.

A *snapshot* is a JSON file holding, for a fixed input set and a few decodings, every returned row's
generated tokens (ids, token pieces and decoded text) and the log-prob of each generated token, up to
and including the row's first eos. It also keeps the tokenized inputs, the decoding configs, the
target spec and an environment fingerprint (python, torch, transformers, ppinvariants, device, dtype).

:func:`compare_snapshot` re-runs the snapshot's inputs and decodings on a target and reports every
row whose tokens changed (with the first divergent step) or whose log-probs drifted by more than a
tolerance. Typical use: snapshot in the old virtual environment, compare in the upgraded one
(``ppinvariants snapshot`` / ``ppinvariants compare``, see ``docs/snapshot.md``).

The file is written with a fixed key order and floats as the shortest decimal that reads back to the
same float32, so a snapshot is byte-identical when re-taken in the same environment.

Its length (about 570 lines) is one concept: the file format, taking, comparing and the pytest
fixture must agree on every field, and are read together when the format changes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import PPIError

if TYPE_CHECKING:
    from .decoding import Decoding
    from .targets import Target

FORMAT = "ppinvariants-snapshot"
FORMAT_VERSION = 1
#: Default absolute log-prob tolerance per dtype; a comparison uses the looser of the two dtypes.
ATOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
#: Tokens of context shown before the first divergent step.
CONTEXT_TOKENS = 4
_ENV_KEYS = ("python", "torch", "transformers", "ppinvariants", "device", "dtype")


class SnapshotError(PPIError):
    """A snapshot file is missing, corrupt, or written in another format version."""


# ------------------------------------------------------------------------------ taking a snapshot


def environment_fingerprint(device: str, dtype: str) -> dict[str, str]:
    """python, torch, transformers and ppinvariants versions, plus the device and dtype of the run."""
    from .report import environment

    env = environment(device, dtype)
    return {k: (__version__ if k == "ppinvariants" else env[k]) for k in _ENV_KEYS}


def take_snapshot(
    target: Target | str,
    texts: Sequence[str] | None = None,
    decodings: Sequence[Decoding] | None = None,
) -> dict[str, Any]:
    """Generate on ``texts`` (default :data:`~ppinvariants.capturing.DEFAULT_TEXTS`) under each of
    ``decodings`` (default greedy, beam and sampling) and return the snapshot as a JSON-ready dict.

    ``target`` is a loaded :class:`~ppinvariants.targets.Target` or a spec for
    :func:`~ppinvariants.targets.load_target` (loaded on the CPU in float32).
    """
    from .capturing import capture
    from .decoding import DEFAULT_DECODINGS, DEFAULT_TEXTS
    from .record import chosen_logprobs, finished_mask, generated_tokens
    from .targets import load_target

    if isinstance(target, str):
        target = load_target(target)
    from .capturing import inputs_for  # a speech or vision target's defaults are its clips or images

    texts = inputs_for(target, DEFAULT_TEXTS if texts is None else texts)
    decodings = list(DEFAULT_DECODINGS if decodings is None else decodings)
    _check_names([d.name for d in decodings])
    tokenizer = target.tokenizer
    inputs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for decoding in decodings:
        record = capture(target, texts, decoding, evidence=False)
        if not inputs:
            for i, text in enumerate(record.texts):  # a clip or image: its label, and no token ids
                live = record.input_ids[i][record.attention_mask[i].bool()]
                inputs.append({"text": text, "input_ids": [int(t) for t in live.tolist()]})
        tokens = generated_tokens(record)
        mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
        logprobs = chosen_logprobs(record)
        rows = []
        for r in range(tokens.shape[0]):
            n = int(mask[r].sum())
            ids = [int(t) for t in tokens[r, :n].tolist()]
            rows.append(
                {
                    "row": r,
                    "input": record.input_of_row(r),
                    "text": _decode(tokenizer, ids),
                    "tokens": ids,
                    "pieces": _pieces(tokenizer, ids),
                    "logprobs": [_float32(x) for x in logprobs[r, :n].tolist()],
                }
            )
        runs.append({"decoding": decoding.name, "rows": rows})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "target": target.spec,
        "environment": environment_fingerprint(str(target.device), target.dtype_name),
        "inputs": inputs,
        "decodings": [_decoding_to_json(d) for d in decodings],
        "runs": runs,
    }


def _check_names(names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SnapshotError(f"decoding names must be unique in a snapshot; repeated: {', '.join(dupes)}")


def _decode(tokenizer: Any, ids: list[int]) -> str:
    try:
        return str(tokenizer.decode(ids, skip_special_tokens=True))
    except Exception:  # noqa: BLE001 - the text is for humans; ids are what is compared
        return ""


def _pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    out = []
    for i in ids:
        try:
            piece = tokenizer.convert_ids_to_tokens(i)
        except Exception:  # noqa: BLE001
            piece = None
        out.append(f"<id {i}>" if piece is None else str(piece))
    return out


def _float32(x: float) -> float | str:
    """The shortest decimal that reads back to the same float32; non-finite values as strings
    (``"-inf"``, ``"inf"``, ``"nan"``) so that the file stays strict JSON."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    packed = struct.pack("<f", x)
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack("<f", y) == packed:
            return y
    return x  # unreachable: 9 significant digits always round-trip a float32


def _as_float(x: float | str) -> float:
    return float(x)  # float("-inf") / float("nan") read the strings back


def _decoding_to_json(d: Decoding) -> dict[str, Any]:
    out = d.to_dict()
    if "bad_words_ids" in out:
        out["bad_words_ids"] = [list(w) for w in out["bad_words_ids"]]
    return out


def _decoding_from_json(d: Any) -> Decoding:
    from .decoding import Decoding

    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        raise SnapshotError("corrupt snapshot: a decoding is not an object with a name")
    kw = {k: v for k, v in d.items() if k not in ("name", "seed", "note")}
    try:
        decoding = Decoding(d["name"], seed=d.get("seed", 0), note=d.get("note", ""), **kw)
        decoding.validate()
    except (TypeError, PPIError) as e:
        raise SnapshotError(f"corrupt snapshot: decoding {d['name']!r}: {e}") from None
    return decoding


# ------------------------------------------------------------------------------ files


def dumps_snapshot(snapshot: dict[str, Any]) -> str:
    """The snapshot as text: indented objects, one line per list of numbers or strings, a final newline."""
    return _dump(snapshot, 0) + "\n"


def _dump(obj: Any, level: int) -> str:
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dump(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in obj):
            return json.dumps(list(obj), ensure_ascii=False, allow_nan=False)
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_snapshot(snapshot: dict[str, Any], path: str | Path) -> Path:
    """Write ``snapshot`` to ``path`` (UTF-8, stable layout; parent folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_snapshot(snapshot), encoding="utf-8")
    return path


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read and validate a snapshot file; raises :class:`SnapshotError` with a one-line message
    when the file is missing, unreadable, not JSON, not a snapshot, or of another format version."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such snapshot file") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path}: is a directory, not a snapshot file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{path}: cannot read the snapshot file ({type(e).__name__}: {e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SnapshotError(f"{path}: corrupt snapshot file (not valid JSON: {e})") from None
    try:
        validate_snapshot(data)
    except SnapshotError as e:
        raise SnapshotError(f"{path}: {e}") from None
    return data


def validate_snapshot(snapshot: Any) -> None:
    """Raise :class:`SnapshotError` unless ``snapshot`` is a well-formed snapshot of this format version."""
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        raise SnapshotError('not a ppinvariants snapshot (no "format": "ppinvariants-snapshot")')
    version = snapshot.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version!r}, but this ppinvariants {__version__} reads version "
            f"{FORMAT_VERSION}; re-take the snapshot with this version"
        )
    try:
        assert isinstance(snapshot["target"], str)
        assert isinstance(snapshot["environment"], dict)
        inputs = snapshot["inputs"]
        assert isinstance(inputs, list) and inputs
        for item in inputs:
            assert isinstance(item["text"], str) and _ints(item["input_ids"])
        decodings = snapshot["decodings"]
        runs = snapshot["runs"]
        assert isinstance(decodings, list) and isinstance(runs, list) and len(decodings) == len(runs)
        for dec, run in zip(decodings, runs, strict=True):
            assert isinstance(dec, dict) and run["decoding"] == dec.get("name")
            for row in run["rows"]:
                assert isinstance(row["row"], int) and isinstance(row["input"], int)
                assert _ints(row["tokens"]) and isinstance(row["pieces"], list)
                lp = row["logprobs"]
                assert isinstance(lp, list) and len(lp) == len(row["tokens"])
                assert all(isinstance(x, int | float) or x in ("inf", "-inf", "nan") for x in lp)
    except (AssertionError, KeyError, TypeError) as e:
        what = f" (missing {e.args[0]!r})" if isinstance(e, KeyError) else ""
        raise SnapshotError(f"corrupt snapshot: unexpected structure{what}") from None
    _check_names([d["name"] for d in decodings])


def _ints(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


# ------------------------------------------------------------------------------ comparing


def default_atol(*dtypes: str) -> float:
    """The looser of the per-dtype tolerances (:data:`ATOL`) of ``dtypes``."""
    return max(ATOL.get(d, ATOL["float32"]) for d in dtypes) if dtypes else ATOL["float32"]


@dataclass
class Change:
    """One row (or one input) that differs between the snapshot and the re-run.

    ``kind`` is ``"input"`` (the text tokenizes differently), ``"tokens"`` (the generated tokens differ
    from ``step`` on), ``"logprobs"`` (same tokens, log-prob drift above the tolerance; ``step`` is the
    first such step) or ``"rows"`` (a decoding returned another number of rows).
    """

    kind: str
    decoding: str | None
    row: int | None
    input: int | None
    step: int | None = None
    old_token: int | None = None
    new_token: int | None = None
    old_piece: str | None = None
    new_piece: str | None = None
    context: list[str] = field(default_factory=list)
    old_logprob: float | None = None
    new_logprob: float | None = None
    max_drift: float = 0.0
    old_text: str | None = None
    new_text: str | None = None
    detail: str = ""

    def render(self) -> str:
        """A few lines: where, what changed (tokens around the first divergent step), both texts."""
        where = f"[{self.decoding}] row {self.row} (input {self.input})" if self.decoding else f"input {self.input}"
        if self.kind == "tokens":
            ctx = " ".join(repr(p) for p in self.context)
            lines = [
                f"{where}: tokens differ from step {self.step} on",
                f"    context: {'… ' if self.step and self.step > len(self.context) else ''}{ctx or '(start)'}",
                f"    step {self.step}: old {_tok(self.old_piece, self.old_token)}  ->  new "
                f"{_tok(self.new_piece, self.new_token)}",
            ]
            if self.max_drift:
                lines.append(f"    max log-prob drift before step {self.step}: {self.max_drift:.3g}")
            lines += [f"    old text: {self.old_text!r}", f"    new text: {self.new_text!r}"]
            return "\n".join(lines)
        if self.kind == "logprobs":
            return (
                f"{where}: same tokens, log-prob drift {self.max_drift:.3g}; first above tolerance at step "
                f"{self.step} ({_tok(self.old_piece, self.old_token)}): old {self.old_logprob!r} new "
                f"{self.new_logprob!r}\n    text: {self.old_text!r}"
            )
        return f"{where}: {self.detail}"


def _tok(piece: str | None, token: int | None) -> str:
    if token is None:
        return "(end of row)"
    return f"{piece!r} (id {token})"


@dataclass
class Comparison:
    """The outcome of :func:`compare_snapshot`: ``ok`` when no token changed and no log-prob drifted
    by more than ``atol``; ``changes`` lists what did."""

    snapshot_target: str
    target: str
    atol: float
    old_environment: dict[str, str]
    new_environment: dict[str, str]
    changes: list[Change] = field(default_factory=list)
    rows: int = 0
    max_drift: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.changes

    def render(self, max_changes: int | None = None) -> str:
        """Summary line, the two environments side by side, then each change (all of them by default)."""
        n = len(self.changes)
        status = "identical within tolerance" if self.ok else f"{n} change{'s' if n != 1 else ''}"
        lines = [
            f"ppinvariants compare: {status} ({self.rows} rows; max log-prob drift on identical tokens "
            f"{self.max_drift:.3g}, atol {self.atol:g})",
            *self._environments(),
        ]
        shown = self.changes if max_changes is None else self.changes[:max_changes]
        for c in shown:
            lines.append(c.render())
        if len(shown) < n:
            lines.append(f"... and {n - len(shown)} more")
        return "\n".join(lines)

    def _environments(self) -> list[str]:
        keys = ["target", *_ENV_KEYS]
        old = {"target": self.snapshot_target, **self.old_environment}
        new = {"target": self.target, **self.new_environment}
        width = max([len("snapshot"), *(len(str(old.get(k, "?"))) for k in keys)])
        rows = [f"  {'':<14}{'snapshot':<{width}}  now"]
        for k in keys:
            a, b = str(old.get(k, "?")), str(new.get(k, "?"))
            rows.append(f"  {k:<14}{a:<{width}}  {b}{'   (differs)' if a != b else ''}".rstrip())
        return rows


def compare_snapshot(snapshot: dict[str, Any], target: Target | str, *, atol: float | None = None) -> Comparison:
    """Re-run ``snapshot``'s inputs and decodings on ``target`` and compare token by token.

    ``atol`` bounds the absolute log-prob difference on identical tokens (default: :func:`default_atol`
    of the snapshot's and the target's dtypes). Raises :class:`SnapshotError` for a malformed snapshot.
    """
    validate_snapshot(snapshot)
    decodings = [_decoding_from_json(d) for d in snapshot["decodings"]]
    texts = [item["text"] for item in snapshot["inputs"]]
    if isinstance(target, str):
        from .targets import load_target

        target = load_target(target)
    if getattr(target, "modality", "text") != "text":
        # A speech or vision snapshot holds its inputs' labels: it is re-run on the target's default inputs
        # (generated deterministically), and compared input by input through those labels.
        texts = None
    new = take_snapshot(target, texts, decodings)
    old_env = {k: str(v) for k, v in snapshot["environment"].items()}
    tol = default_atol(old_env.get("dtype", "float32"), target.dtype_name) if atol is None else float(atol)
    comparison = Comparison(
        snapshot_target=snapshot["target"],
        target=target.spec,
        atol=tol,
        old_environment=old_env,
        new_environment=new["environment"],
    )
    for i, (a, b) in enumerate(zip(snapshot["inputs"], new["inputs"], strict=True)):
        if a["input_ids"] != b["input_ids"]:
            comparison.changes.append(
                Change(
                    "input",
                    None,
                    None,
                    i,
                    detail=f"{a['text']!r} tokenizes differently: old {a['input_ids']} new {b['input_ids']}",
                )
            )
    for old_run, new_run in zip(snapshot["runs"], new["runs"], strict=True):
        name = old_run["decoding"]
        old_rows, new_rows = old_run["rows"], new_run["rows"]
        if len(old_rows) != len(new_rows):
            comparison.changes.append(
                Change("rows", name, None, None, detail=f"{len(old_rows)} rows in the snapshot, {len(new_rows)} now")
            )
        for old, now in zip(old_rows, new_rows, strict=False):
            comparison.rows += 1
            change, drift = _compare_row(name, old, now, tol)
            comparison.max_drift = max(comparison.max_drift, drift)
            if change is not None:
                comparison.changes.append(change)
    return comparison


def _compare_row(decoding: str, old: dict[str, Any], new: dict[str, Any], atol: float) -> tuple[Change | None, float]:
    """The row's change (or None) and its max log-prob drift over the steps where the tokens agree."""
    a, b = old["tokens"], new["tokens"]
    common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    drifts = [_drift(x, y) for x, y in zip(old["logprobs"][:common], new["logprobs"][:common], strict=True)]
    max_drift = max(drifts, default=0.0)
    base = {"decoding": decoding, "row": old["row"], "input": old["input"], "old_text": old["text"]}
    if common < len(a) or common < len(b):
        return (
            Change(
                "tokens",
                step=common,
                old_token=a[common] if common < len(a) else None,
                new_token=b[common] if common < len(b) else None,
                old_piece=old["pieces"][common] if common < len(a) else None,
                new_piece=new["pieces"][common] if common < len(b) else None,
                context=list(old["pieces"][max(0, common - CONTEXT_TOKENS) : common]),
                max_drift=max_drift,
                new_text=new["text"],
                **base,
            ),
            max_drift,
        )
    over = next((i for i, d in enumerate(drifts) if d > atol), None)
    if over is None:
        return None, max_drift
    return (
        Change(
            "logprobs",
            step=over,
            old_token=a[over],
            new_token=b[over],
            old_piece=old["pieces"][over],
            new_piece=new["pieces"][over],
            old_logprob=_as_float(old["logprobs"][over]),
            new_logprob=_as_float(new["logprobs"][over]),
            max_drift=max_drift,
            new_text=new["text"],
            **base,
        ),
        max_drift,
    )


def _drift(old: float | str, new: float | str) -> float:
    x, y = _as_float(old), _as_float(new)
    if x == y or (math.isnan(x) and math.isnan(y)):
        return 0.0
    d = abs(x - y)
    return math.inf if math.isnan(d) else d


# ------------------------------------------------------------------------------ pytest fixture logic


def snapshot_name(test_name: str) -> str:
    """A file-name-safe version of a test name (parametrization brackets, colons, slashes → ``_``)."""
    return re.sub(r"[^\w.-]", "_", test_name)


class SnapshotFixture:
    """What the ``ppi_snapshot`` fixture returns: ``check(target)`` compares against
    ``<folder>/<name>.json`` in the manner of pytest-regressions.

    * no file yet: it is written and the test fails, saying so (re-run to compare against it);
    * ``regen`` (``--ppi-regen``): the file is rewritten; the test fails if its content changed;
    * otherwise: a token change or a log-prob drift above the tolerance fails the test with
      :meth:`Comparison.render`.
    """

    def __init__(self, folder: Path, name: str, *, regen: bool = False, load: Callable[[str], Target] | None = None):
        self.folder = Path(folder)
        self.name = snapshot_name(name)
        self.regen = regen
        self._load = load

    def path(self, basename: str | None = None) -> Path:
        """The snapshot file for ``basename`` (default: the test name)."""
        return self.folder / f"{snapshot_name(basename) if basename else self.name}.json"

    def check(
        self,
        target: Target | str,
        texts: Sequence[str] | None = None,
        decodings: Sequence[Decoding] | None = None,
        *,
        atol: float | None = None,
        basename: str | None = None,
    ) -> Comparison | None:
        """Compare ``target`` against the stored snapshot (or create / regenerate it); fails the test
        (``pytest.fail``, no traceback) on a difference. Returns the comparison when one was made.
        Use ``basename`` to keep more than one snapshot per test."""
        import pytest

        if isinstance(target, str):
            if self._load is not None:
                target = self._load(target)
            else:
                from .targets import load_target

                target = load_target(target)
        path = self.path(basename)
        try:
            if self.regen or not path.exists():
                return self._write(path, target, texts, decodings)
            snapshot = load_snapshot(path)
            comparison = compare_snapshot(snapshot, target, atol=atol)
        except PPIError as e:
            pytest.fail(f"ppinvariants: {e}", pytrace=False)
        if not comparison.ok:
            pytest.fail(
                f"ppinvariants: {target.spec} differs from snapshot {path} (re-run with --ppi-regen to accept)\n"
                + comparison.render(),
                pytrace=False,
            )
        return comparison

    def _write(
        self, path: Path, target: Target, texts: Sequence[str] | None, decodings: Sequence[Decoding] | None
    ) -> None:
        import pytest

        existed = path.exists()
        old = path.read_bytes() if existed else None
        write_snapshot(take_snapshot(target, texts, decodings), path)
        if not existed:
            pytest.fail(
                f"ppinvariants: snapshot not found, created: {path}\nRe-run the test to compare against it.",
                pytrace=False,
            )
        if old != path.read_bytes():
            pytest.fail(f"ppinvariants: snapshot differed and --ppi-regen is set, regenerated: {path}", pytrace=False)
        return None
