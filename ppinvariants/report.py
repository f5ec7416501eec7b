"""Violations, results and reports, with their JSON and human renderings.

The JSON shape is a public contract (later versions add fields, never rename these)::

    {"environment": {"ppinvariants", "python", "torch", "transformers", "device", "dtype"},
     "targets": [{"target", "status", "summary", "error", "conventions", "notes", "not_judged",
                  "decodings": {name: {"settings", "note"}},
                  "results": [{"invariant", "decoding", "status", "reason", "skip_kind",
                               "violations": [{"message", "row", "step", "token_id", "token",
                                               "expected", "found"}]}]}]}

``skip_kind`` of a ``skip`` result: ``not_applicable`` (the check does not apply to this decoding or
config), ``lost`` (it applies, but its evidence was not kept: streaming mode, no re-runs; a failure
under ``--strict``) or ``thorough_only`` (its evidence is collected only by ``--thorough``).
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
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
    # Which comparison of the check failed, for machines (known issues match on it, never on the message):
    # e.g. "logprob", "greedy_token", "solo", "permuted", "teacher_forced_value", "generate_grad_value".
    kind: str | None = None

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
    skip_kind: str = ""  # for skips: "not_applicable", "lost" or "thorough_only" (see the module doc)

    @property
    def not_judged(self) -> bool:
        """A skip of a check that applies, for want of evidence (``lost`` or ``thorough_only``)."""
        return self.status == "skip" and self.skip_kind in ("lost", "thorough_only")

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "decoding": self.decoding,
            "status": self.status,
            "reason": self.reason,
            "skip_kind": self.skip_kind,
            "violations": [v.to_dict() for v in self.violations],
            "total_violations": self.total_violations,
            "repro": self.repro,
        }


def short_reason(reason: str) -> str:
    """The head of a skip reason, for grouping in a summary: ``streaming mode: step scores not kept``
    gives ``streaming mode``; ``collected only with thorough evidence (--thorough ...)`` gives
    ``collected only with thorough evidence``."""
    head = reason.split(";")[0].split(" (")[0]
    if ":" in head and len(head.split(":")[0]) <= 40:
        head = head.split(":")[0]
    return head.strip() or "no reason given"


def strict_results(results: list[Result]) -> list[Result]:
    """``results`` with every ``lost`` skip (a check that applies but was not judged) turned into a
    ``fail`` that says why: what ``--strict`` / ``--ppi-strict`` does. Not-applicable and
    thorough-only skips stay skips."""
    out = []
    for r in results:
        if r.status == "skip" and r.skip_kind == "lost":
            r = replace(r, status="fail", reason=f"not judged ({r.reason}); --strict makes this a failure")
        out.append(r)
    return out


def not_judged_summary(results: list[Result]) -> str:
    """``"11 of 27 not judged: streaming mode"`` (parts joined by ``"; "``), or ``""`` when every
    check that applies was judged. Thorough-only skips are counted apart (``2 of 27 left to --thorough``)."""
    n = len(results)
    parts = []
    lost = [r for r in results if r.status == "skip" and r.skip_kind == "lost"]
    if lost:
        groups = Counter(short_reason(r.reason) for r in lost)
        why = ", ".join(g if len(groups) == 1 else f"{g} ({k})" for g, k in groups.items())
        parts.append(f"{len(lost)} of {n} not judged: {why}")
    depth = sum(r.status == "skip" and r.skip_kind == "thorough_only" for r in results)
    if depth:
        parts.append(f"{depth} of {n} left to --thorough")
    return "; ".join(parts)


@dataclass
class TargetReport:
    target: str
    status: str = "pass"
    error: str | None = None
    conventions: dict[str, Any] | None = None
    results: list[Result] = field(default_factory=list)
    # Each decoding's effective settings (the checkpoint's generation config merged in) and its note.
    decodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # said once per target, e.g. inputs truncated

    @property
    def summary(self) -> str:
        """The one-line status: ``PASS``, ``PASS (11 of 81 not judged: streaming mode)``, ``FAIL``..."""
        extra = "" if self.error is not None else not_judged_summary(self.results)
        return self.status.upper() + (f" ({extra})" if extra else "")

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
            "summary": self.summary,
            "error": self.error,
            "conventions": self.conventions,
            "notes": list(self.notes),
            "not_judged": sum(r.status == "skip" and r.skip_kind == "lost" for r in self.results),
            "decodings": self.decodings,
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

    from . import __version__

    return {
        "ppinvariants": __version__,
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
        f"ppinvariants {env.get('ppinvariants', '')}: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"{env['device']}, {env['dtype']}"
    ]
    for t in report.targets:
        lines.append("")
        lines.append(f"{t.target}: {t.summary}")
        if t.error:
            lines.append(f"  error: {t.error}")
            continue
        for note in t.notes:
            lines.append(f"  note: {note}")
        if verbose and t.conventions:
            described = t.conventions.get("describe", [])
            width = max([len(c.split(":", 1)[0]) for c in described if ":" in c] + [0])
            for c in described:
                head, sep, rest = c.partition(":")
                lines.append(f"  {head + sep:<{width + 1}} {rest.strip()}" if sep else f"  {c}")
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
        for name, d in t.decodings.items():
            settings = ", ".join(f"{k}={v}" for k, v in d["settings"].items() if k not in ("name", "seed"))
            note = f"  [{d['note']}]" if d.get("note") else ""
            if verbose or note:
                lines.append(f"  decoding {name}: {settings}{note}")
        for r in t.results:
            if r.status in ("fail", "error") or (verbose and r.status in ("skip", "xfail")):
                lines.append("")
                lines.extend(render_result(r, indent="  ", max_violations=max_violations))
    return "\n".join(lines)


def render_result(result: Result, *, indent: str = "", reason: str | None = None, max_violations: int = 5) -> list[str]:
    """One result as text lines: ``[STATUS] invariant (decoding): reason``, its first ``max_violations``
    violation messages with their decoded context, the count of the others, and (failed or errored)
    the ``reproduce:`` line. The CLI report and the pytest plugin both print results this way."""
    why = result.reason if reason is None else reason
    lines = [f"{indent}[{result.status.upper()}] {result.invariant} ({result.decoding})" + (f": {why}" if why else "")]
    for v in result.violations[:max_violations]:
        lines.append(f"{indent}  - {v.message}")
        if v.context:
            lines.append(f"{indent}    context: {v.context}")
    more = result.total_violations - min(len(result.violations), max_violations)
    if more > 0:
        lines.append(f"{indent}  ... and {more} more")
    if result.repro and result.status in ("fail", "error"):
        lines.append(f"{indent}  reproduce: {result.repro}")
    return lines
