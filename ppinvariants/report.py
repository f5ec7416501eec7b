"""Violations, results and reports, with their JSON and human renderings.

The JSON shape is a public contract (later versions add fields, never rename these)::

    {"environment": {"python", "torch", "transformers", "device", "dtype"},
     "targets": [{"target", "status", "error", "conventions",
                  "results": [{"invariant", "decoding", "status", "reason",
                               "violations": [{"message", "row", "step", "token_id", "token",
                                               "expected", "found"}]}]}]}
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Violation:
    """One broken invariant at one place: which check, row, step, token; expected vs found."""

    invariant: str
    message: str
    row: int | None = None
    step: int | None = None
    token_id: int | None = None
    token: str | None = None
    expected: str | None = None
    found: str | None = None
    context: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("invariant")
        return d


@dataclass
class Result:
    """The outcome of one invariant under one decoding."""

    invariant: str
    decoding: str
    status: str
    reason: str = ""
    violations: list[Violation] = field(default_factory=list)
    total_violations: int = 0
    repro: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "decoding": self.decoding,
            "status": self.status,
            "reason": self.reason,
            "violations": [v.to_dict() for v in self.violations],
            "total_violations": self.total_violations,
            "repro": self.repro,
        }


@dataclass
class TargetReport:
    target: str
    status: str = "pass"
    error: str | None = None
    conventions: dict[str, Any] | None = None
    results: list[Result] = field(default_factory=list)

    def finalize(self) -> TargetReport:
        if self.error is not None:
            self.status = "error"
        elif any(r.status in ("fail", "error") for r in self.results):
            self.status = "fail"
        else:
            self.status = "pass"
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status,
            "error": self.error,
            "conventions": self.conventions,
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class Report:
    environment: dict[str, str]
    targets: list[TargetReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: every invariant holds; 1: a violation; 2: a target could not be loaded."""
        if any(t.status == "error" for t in self.targets):
            return 2
        if any(t.status == "fail" for t in self.targets):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "targets": [t.to_dict() for t in self.targets]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False)


def environment(device: str, dtype: str) -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "dtype": dtype,
    }


_MARK = {"pass": "ok", "fail": "FAIL", "skip": "skip", "xfail": "xfail", "error": "ERROR"}


def render_text(report: Report, *, verbose: bool = False, max_violations: int = 5) -> str:
    """A compact table per target, then each violation with the decoded tokens around it."""
    env = report.environment
    lines = [
        f"ppinvariants: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"{env['device']}, {env['dtype']}"
    ]
    for t in report.targets:
        lines.append("")
        lines.append(f"{t.target}: {t.status.upper()}")
        if t.error:
            lines.append(f"  error: {t.error}")
            continue
        if verbose and t.conventions:
            for c in t.conventions.get("describe", []):
                lines.append(f"  {c}")
        decodings = list(dict.fromkeys(r.decoding for r in t.results))
        invariants = list(dict.fromkeys(r.invariant for r in t.results))
        by_key = {(r.invariant, r.decoding): r for r in t.results}
        width = max([len(i) for i in invariants] + [9])
        lines.append("  " + "invariant".ljust(width) + "  " + "  ".join(d.ljust(8) for d in decodings))
        for inv in invariants:
            cells = []
            for d in decodings:
                r = by_key.get((inv, d))
                cells.append((_MARK[r.status] if r else "-").ljust(8))
            lines.append("  " + inv.ljust(width) + "  " + "  ".join(cells))
        for r in t.results:
            if r.status in ("fail", "error") or (verbose and r.status in ("skip", "xfail")):
                lines.append("")
                head = f"  [{r.status.upper()}] {r.invariant} ({r.decoding})"
                if r.reason:
                    head += f": {r.reason}"
                lines.append(head)
                for v in r.violations[:max_violations]:
                    lines.append(f"    - {v.message}")
                    if v.context:
                        lines.append(f"      context: {v.context}")
                more = r.total_violations - min(len(r.violations), max_violations)
                if more > 0:
                    lines.append(f"    ... and {more} more")
                if r.repro and r.status in ("fail", "error"):
                    lines.append(f"    reproduce: {r.repro}")
    return "\n".join(lines)
