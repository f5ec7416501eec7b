"""The transformers version matrix, as nox sessions.

``nox -s matrix`` runs one session per transformers version: a virtualenv with ``torch==2.13.0``
(the CPU wheel, installed first), that transformers and the package with its test extra, then the
default ``ppinvariants check`` and the tests (``pytest -n 2``, the default selection). Each session
prints its version's summary; the ``matrix_table`` session, queued by the first of them, prints the
table of the latest result for every version. Tiny models are built per version into the
virtualenv's own cache (the zoo's cache key includes the transformers major version anyway).

    nox -s matrix                                   # every version
    nox -s "matrix(transformers='4.46.3')"          # one version
    nox -s matrix -- --check-only                   # the check, not the tests
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / ".matrix"
VERSIONS = ("4.40.2", "4.46.3", "4.51.3", "4.57.6", "5.24.0")
CHECK_TIMEOUT = 600  # seconds for the check; the tests get 6 times as long

nox.options.sessions = ["matrix"]
nox.options.reuse_venv = "yes"  # a rerun re-installs into the same virtualenvs (quick once filled)


def _run(session: nox.Session, cmd: list[str], timeout: int, log: Path) -> tuple[int, str, float]:
    """Run ``cmd`` from the session's virtualenv, logged; return exit code, output and seconds."""
    env = {
        **os.environ,
        **{k: v for k, v in session.env.items() if v is not None},
        "VIRTUAL_ENV": session.virtualenv.location,
        "PATH": os.pathsep.join([session.bin, os.environ.get("PATH", "")]),
        "PPINVARIANTS_CACHE": str(Path(session.virtualenv.location) / "ppi-cache"),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, code = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout}s", 124
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out}\n[exit {code}]\n\n")
    return code, out, time.perf_counter() - start


def _pytest_summary(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1].strip("= ") if lines else "no summary"


@nox.session
@nox.parametrize("transformers", VERSIONS)
def matrix(session: nox.Session, transformers: str) -> None:
    """The default check and the tests under one transformers version."""
    session.notify("matrix_table")
    check_only = "--check-only" in session.posargs
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / f"log-{transformers}.txt"
    log.write_text("")
    session.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    row = {"version": transformers, "date": str(datetime.date.today())}
    try:
        session.install("torch==2.13.0")  # first: a bare torch requirement can pull a CUDA build of several GB
        session.install(f"transformers=={transformers}", "-e", ".[test]")
    except nox.command.CommandFailed:
        (RESULTS / f"row-{transformers}.json").write_text(json.dumps({**row, "install": "failed (see nox's output)"}))
        raise
    row["install"] = "ok"
    code, out, secs = _run(session, ["ppinvariants", "check", "-q"], CHECK_TIMEOUT, log)
    statuses = dict(re.findall(r"^(tiny:\w+): (\w+)$", out, flags=re.M))
    row["check"] = f"exit {code} ({secs:.0f} s): " + (
        ", ".join(f"{k.split(':')[1]} {v}" for k, v in statuses.items()) or out.strip().splitlines()[-1][:160]
    )
    if not check_only:
        _, out, secs = _run(session, ["pytest", "-q", "-p", "no:cacheprovider", "-n", "2"], CHECK_TIMEOUT * 6, log)
        row["tests"] = f"{_pytest_summary(out)} ({secs:.0f} s)"
    (RESULTS / f"row-{transformers}.json").write_text(json.dumps(row))
    session.log(f"transformers {transformers}: " + "; ".join(f"{k} {v}" for k, v in row.items() if k != "version"))
    if code != 0:
        session.error(f"ppinvariants check exited {code} under transformers {transformers}; see {log}")


@nox.session(python=False)
def matrix_table(session: nox.Session) -> None:
    """The version matrix: the latest result of each version (``.matrix/row-VERSION.json``)."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("row-*.json"))]
    rows.sort(key=lambda r: [int(x) for x in r["version"].split(".")])
    cols = ["install", "check"] + (["tests"] if any("tests" in r for r in rows) else [])
    lines = [
        f"Version matrix, Python {platform.python_version()}, torch 2.13.0 (CPU), {platform.machine()}; "
        "logs in .matrix/log-VERSION.txt",
        "",
        "| transformers | date | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 2) + "|",
        *("| " + " | ".join([r["version"], r["date"], *(r.get(c, "-") for c in cols)]) + " |" for r in rows),
    ]
    print("\n".join(lines))
