#!/usr/bin/env python3
"""Run ppinvariants under several transformers versions and print a version matrix.

For each version: a fresh virtualenv under ``.matrix/`` with ``torch==2.13.0`` (the CPU wheel,
installed first) and that transformers, the package installed in editable mode, then the
default ``ppinvariants check`` and the test suite (``pytest -n 2``, the default selection, unless ``--check-only``).
Tiny models are built per version into the venv's own cache (the zoo's cache key includes the
transformers major version anyway).

    python scripts/version_matrix.py                       # the default versions
    python scripts/version_matrix.py 4.46.3 5.24.0 --check-only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VERSIONS = ("4.40.2", "4.46.3", "4.51.3", "4.57.6", "5.24.0")
EXTRAS = [
    "sentencepiece",
    "protobuf",
    "safetensors",
    "sacremoses",
    "pytest",
    "hypothesis",
    "pytest-xdist",
    "matplotlib",
]


def run(cmd: list[str], env: dict[str, str], timeout: int, log: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, code = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout}s", 124
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out}\n[exit {code}]\n\n")
    return code, out, time.perf_counter() - start


def summary(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1].strip("= ") if lines else "no summary"


def one(version: str, check_only: bool, timeout: int) -> dict[str, str]:
    venv = ROOT / ".matrix" / f"venv-{version}"
    log = ROOT / ".matrix" / f"log-{version}.txt"
    log.parent.mkdir(exist_ok=True)
    log.write_text("")
    env = {**os.environ, "PPINVARIANTS_CACHE": str(venv / "ppi-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    py = venv / "bin" / "python"
    row = {"version": version}
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)], env, 300, log)
    steps = [
        [str(py), "-m", "pip", "install", "-q", "torch==2.13.0"],
        [str(py), "-m", "pip", "install", "-q", f"transformers=={version}", *EXTRAS],
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
    ]
    for cmd in steps:
        code, out, _ = run(cmd, env, 900, log)
        if code != 0:
            row.update(install=f"failed: {out.strip().splitlines()[-1][:120] if out.strip() else code}")
            return row
    row["install"] = "ok"
    code, out, secs = run([str(py), "-m", "ppinvariants", "check", "-q"], env, timeout, log)
    statuses = dict(re.findall(r"^(tiny:\w+): (\w+)$", out, flags=re.M))
    row["check"] = f"exit {code} ({secs:.0f} s): " + (
        ", ".join(f"{k.split(':')[1]} {v}" for k, v in statuses.items()) or out.strip().splitlines()[-1][:160]
    )
    if not check_only:
        code, out, secs = run(
            [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"], env, timeout * 6, log
        )
        row["tests"] = f"{summary(out)} ({secs:.0f} s)"
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("versions", nargs="*", default=list(DEFAULT_VERSIONS))
    p.add_argument("--check-only", action="store_true", help="run the default check, not the test suite")
    p.add_argument("--timeout", type=int, default=600, help="seconds for the check (the tests get 6x)")
    args = p.parse_args()
    rows = []
    for v in args.versions:
        print(f"== transformers {v}", file=sys.stderr, flush=True)
        rows.append(one(v, args.check_only, args.timeout))
        print(rows[-1], file=sys.stderr, flush=True)
    print(
        f"Version matrix, {datetime.date.today()}, Python {platform.python_version()}, torch 2.13.0 (CPU), "
        f"{platform.machine()}; logs in .matrix/log-VERSION.txt\n"
    )
    cols = ["version", "install", "check"] + ([] if args.check_only else ["tests"])
    print("| transformers | " + " | ".join(cols[1:]) + " |")
    print("|---" * len(cols) + "|")
    for r in rows:
        print("| " + " | ".join(r.get(c, "-") for c in cols) + " |")
    return 0 if all(r.get("install") == "ok" and r.get("check", "").startswith("exit 0") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
