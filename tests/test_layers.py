"""The package's imports only go down: no cycle, eager or lazy, and no module imports a higher layer.

Every ``import`` / ``from ... import`` statement of the package is read from the source (function
bodies included: a lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks, which
never run, are left out. A new module must be given its layer here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import ppinvariants

PACKAGE = Path(ppinvariants.__file__).parent

#: Bottom (0) to top. A module may import only modules of a lower layer.
LAYERS: dict[str, int] = {
    # the version, and the public names, which load their modules on first use (importlib: not an edge;
    # no public name is also a submodule's name, which importing that submodule would overwrite)
    "ppinvariants": -1,
    # facts and plain data: errors, lengths, progress lines, the report types
    "ppinvariants.errors": 0,
    "ppinvariants.lengths": 0,
    "ppinvariants.progress": 0,
    "ppinvariants.report": 0,
    # the one place that knows transformers versions; conventions derived from a config
    "ppinvariants._compat": 1,
    "ppinvariants.conventions": 1,
    # what to run: decodings, and the processors a decoding asks for
    "ppinvariants.decoding": 2,
    "ppinvariants.processing": 2,
    # what one generate() produced; the tiny model zoo (its calibration reads records' first-eos mask)
    "ppinvariants.texts": 0,
    "ppinvariants.signals": 0,
    "ppinvariants.lineage": 0,
    "ppinvariants.masks": 0,
    "ppinvariants.record": 3,
    # the tiny model zoo: imports only the bottom layer (texts, masks, conventions, _compat)
    "ppinvariants.zoo.recipes": 1,
    "ppinvariants.zoo.tokenizers": 2,  # trains on the recipes' corpus
    "ppinvariants.zoo.speech": 2.5,  # builds Whisper (the build passes its weight init in)
    "ppinvariants.zoo.vision": 2.75,  # builds a VisionEncoderDecoder (likewise)
    "ppinvariants.zoo.build": 3,
    "ppinvariants.zoo": 4,
    # teacher-forced rescoring; loading targets (the zoo's included)
    "ppinvariants.rescoring": 5,
    "ppinvariants.targets": 5,
    # re-runs of the model, gathered once per record
    "ppinvariants.evidence": 6,
    # encode + generate (+ evidence)
    "ppinvariants.capturing": 7,
    # the invariants: pure functions of a record
    "ppinvariants.invariants._base": 8,
    "ppinvariants.known_issues": 8,
}


def _families() -> list[str]:
    return sorted(p.stem for p in (PACKAGE / "invariants").glob("*.py") if not p.stem.startswith("_"))


LAYERS.update({f"ppinvariants.invariants.{family}": 9 for family in _families()})
LAYERS.update(
    {
        "ppinvariants.invariants": 10,  # registers them
        "ppinvariants.judge": 10.5,  # runs them and applies the known issues
        "ppinvariants.streaming": 11,
        "ppinvariants.explain": 11,
        "ppinvariants.snapshot": 11,
        "ppinvariants.strategies": 11,
        "ppinvariants.logprob_check": 11,  # a user's log-prob function against sequence_logprobs on captures
        "ppinvariants.runner": 12,
        "ppinvariants.selftest": 13,
        "ppinvariants.coverage": 13,
        "ppinvariants.plugin": 14,  # thin shells
        "ppinvariants.suite": 15,
        "ppinvariants.suite.test_invariants": 15,
        "ppinvariants.cli": 15,
        "ppinvariants.__main__": 16,
    }
)


def _module_name(path: Path) -> str:
    parts = ["ppinvariants", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source, ``TYPE_CHECKING`` blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import x` imports the module x
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    assert set(_modules()) <= set(LAYERS), sorted(set(_modules()) - set(LAYERS))


def test_imports_only_go_down() -> None:
    upward = [
        f"{m} (layer {LAYERS[m]}) imports {d} (layer {LAYERS[d]})"
        for m, deps in _graph().items()
        for d in sorted(deps)
        if LAYERS[d] >= LAYERS[m]
    ]
    assert not upward, upward


def test_public_names_are_not_shadowed_by_submodules() -> None:
    """Importing ``ppinvariants.X`` sets the package attribute ``X`` to that module: a public name equal to a
    submodule's would turn into the module once anything imports it (``capture`` did, before the rename)."""
    submodules = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    assert not submodules & set(ppinvariants.__all__)
    importlib.import_module("ppinvariants.runner")  # loads every core module, as a user's own imports may
    from ppinvariants import capture, check, run_invariants

    assert callable(capture) and callable(check) and callable(run_invariants)


def test_no_import_cycle() -> None:
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_a_lazy_import_is_an_edge_and_type_checking_is_not(tmp_path: Path) -> None:
    source = tmp_path / "fake.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .runner import check\n"
        "def later():\n    from .record import GenerationRecord\n    return GenerationRecord\n"
    )
    assert _imports("ppinvariants.fake", source, _modules()) == {"ppinvariants.record"}
