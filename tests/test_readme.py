"""The README's snippets, pasted verbatim into a fresh repo, pass on the zoo's architectures.

A snippet whose first line is ``# <path>`` is a file of that repo (``pytest.ini``, the factory module,
``conftest.py``, the test files). The repo's checkpoint (``checkpoints/paraphraser``, and
``./my-checkpoint`` of the Python API example) is a copy of the tiny model of the architecture under
test, saved as any checkpoint is. Then the repo's own ``pytest`` run (its ini: both targets, every
test file), the GitHub Actions gate's command and the Python examples must pass. Python snippets with
``...`` placeholders are fragments; the test pins which ones, so that no new snippet escapes it. A
snippet that demonstrates a failure says so in a comment (``# SomeError: ...``) and must raise it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppinvariants import zoo

README = Path(__file__).resolve().parents[1] / "README.md"
CACHE = str(zoo.cache_root())
#: First lines of the Python snippets that are fragments (placeholders such as ``batch`` or ``...``).
FRAGMENTS = {"from ppinvariants import sequence_logprobs", 'model.save_pretrained("whisper-ft")'}
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of the README."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


def repo_files() -> dict[str, str]:
    """The snippets that name their file on their first line (``# path``), by path."""
    files = {}
    for _, code in snippets():
        first = code.splitlines()[0] if code.strip() else ""
        m = re.fullmatch(r"# ([\w./-]+\.(?:py|ini|toml|cfg))", first)
        if m:
            assert m.group(1) not in files, f"two README snippets are {m.group(1)}"
            files[m.group(1)] = code
    return files


def python_examples() -> list[str]:
    """Python snippets that are neither repo files nor fragments: run as scripts in the repo."""
    named = set(repo_files().values())
    return [
        code
        for lang, code in snippets()
        if lang == "python" and code not in named and code.splitlines()[0] not in FRAGMENTS
    ]


def actions_gate_command() -> list[str]:
    """The pytest command of the README's GitHub Actions gate, its folded YAML lines joined."""
    [yaml] = [code for lang, code in snippets() if lang == "yaml"]
    m = re.search(r"run: >\n((?:\s+.*\n)+?)\s+- name", yaml)
    assert m, "the gate's `run: >` step"
    return " ".join(line.strip() for line in m.group(1).splitlines()).split()


def test_the_readme_names_the_repo_files_and_fragments() -> None:
    assert set(repo_files()) == {
        "pytest.ini",
        "my_project/models.py",
        "conftest.py",
        "tests/test_paraphraser_invariants.py",
        "tests/test_ppinvariants_suite.py",
    }
    firsts = {code.splitlines()[0] for lang, code in snippets() if lang == "python"}
    assert FRAGMENTS <= firsts
    assert len(python_examples()) == 3
    assert actions_gate_command()[:3] == ["pytest", "--pyargs", "ppinvariants.suite"]


def _fresh_repo(root: Path, arch: str) -> None:
    for path, code in repo_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(code)
    (root / "my_project" / "__init__.py").write_text("")
    built = zoo.tiny_checkpoint(arch)
    for where in ("checkpoints/paraphraser", "my-checkpoint"):
        shutil.copytree(built, root / where, ignore=shutil.ignore_patterns("ppinvariants-recipe.json"))


def _run(root: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=1500)


def _readme_repo_passes(arch: str, root: Path, *, gate: bool) -> None:
    import os

    _fresh_repo(root, arch)
    # The repo's root on the path, as `python -m pytest` or an installed project would have it.
    env = {**os.environ, "PPINVARIANTS_CACHE": CACHE, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(root)}
    # The repo's own run: its pytest.ini (both targets), its test file, the suite joined by star import.
    own = _run(root, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], env)
    assert own.returncode == 0, own.stdout[-4000:] + own.stderr[-2000:]
    assert re.search(r"\d+ passed", own.stdout) and " failed" not in own.stdout, own.stdout[-2000:]
    if gate:
        # The gate's command as written, but on one process: xdist's workers each load torch and the
        # model again, which on a 2-core machine costs more than the suite (xdist is tested in test_plugin).
        ci = _run(root, [sys.executable, "-m", *actions_gate_command(), "-n", "0", "-p", "no:cacheprovider"], env)
        assert ci.returncode == 0, ci.stdout[-4000:] + ci.stderr[-2000:]
        assert (root / "ppinvariants-junit.xml").exists()
    for i, code in enumerate(python_examples()):
        script = root / f"example_{i}.py"
        script.write_text(code)
        done = _run(root, [sys.executable, str(script)], env)
        # A snippet that shows a failure says so in a comment (``# SomeError: what it prints``): it must raise that.
        shown = re.search(r"^# (\w+Error): ", code, re.M)
        if shown:
            assert done.returncode != 0 and f"{shown.group(1)}: " in done.stderr, f"{code}\n{done.stderr[-3000:]}"
        else:
            assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"


def test_readme_snippets_pass_in_a_fresh_repo_on_tiny_bart(tmp_path: Path) -> None:
    _readme_repo_passes("bart", tmp_path, gate=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in zoo.ALL_ARCHITECTURES if a != "bart"])
def test_readme_snippets_pass_in_a_fresh_repo(arch: str, tmp_path: Path) -> None:
    """Every other architecture: the repo's own run (its tests and the suite on both targets) and the
    Python examples; the gate runs the same suite on one of those targets."""
    _readme_repo_passes(arch, tmp_path, gate=False)


def test_the_invariant_count_in_the_readme_is_the_registry_s() -> None:
    from ppinvariants.invariants import REGISTRY

    assert f"**{len(REGISTRY)} invariants**" in README.read_text()
