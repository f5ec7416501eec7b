"""Which architectures pass which invariants: every tiny zoo model under greedy, beam and sampling.

``ppinvariants coverage`` builds (or loads from the cache) each tiny checkpoint of
:data:`ppinvariants.zoo.ALL_ARCHITECTURES`, where decoder-only models are checked (transformers 5) of
:data:`ppinvariants.zoo.CAUSAL_ARCHITECTURES`, and of the speech and vision models
(:data:`ppinvariants.zoo.SPEECH_VISION_ARCHITECTURES`), runs :func:`ppinvariants.runner.check` on it
with the default decodings (and the ``timestamps`` decoding the check adds for a model with timestamp
tokens: Whisper; ``-`` in that column for the others), and folds the results into one row per
architecture and decoding:

* ``pass``: every invariant holds (or does not apply);
* ``xfail``: some invariants fail, and every failure is a known upstream issue (with its reference);
* ``fail``: an invariant fails without a known explanation;
* ``error``: the model could not be loaded, ``generate()`` raised, or a check crashed.

Architectures the zoo cannot build here (:data:`ppinvariants.zoo.UNAVAILABLE`) are listed
with their reason, never silently left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .decoding import DEFAULT_DECODINGS, Decoding
from .report import Report, Result

STATUS_ORDER = ("error", "fail", "xfail", "pass")


@dataclass
class CoverageRow:
    """One architecture under one decoding."""

    arch: str
    decoding: str
    status: str  # pass | fail | xfail | error | n/a
    reasons: list[str] = field(default_factory=list)  # "invariant: reason (reference)" per non-pass


@dataclass
class Coverage:
    rows: list[CoverageRow]
    environment: dict[str, str]
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every row passes or fails only through known upstream issues."""
        return all(r.status in ("pass", "xfail") for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _describe(result: Result) -> str:
    if result.status == "fail":
        first = result.violations[0].message if result.violations else ""
        more = f" (+{result.total_violations - 1} more)" if result.total_violations > 1 else ""
        return f"{first}{more}" if first.startswith(result.invariant) else f"{result.invariant}: {first}{more}"
    return f"{result.invariant}: {result.reason}"


def _fold(report: Report, arch: str, decodings: Sequence[Decoding]) -> list[CoverageRow]:
    (target,) = report.targets
    if target.error is not None:
        return [CoverageRow(arch, d.name, "error", [f"load: {target.error}"]) for d in decodings]
    rows = []
    # The decodings asked for, then any the check added (Whisper's timestamps): none is left out of the table.
    names = list(dict.fromkeys([*(d.name for d in decodings), *(r.decoding for r in target.results)]))
    for name in names:
        results = [r for r in target.results if r.decoding == name]
        worst = "pass"
        reasons = []
        for status in STATUS_ORDER[:-1]:
            hits = [r for r in results if r.status == status]
            if hits and worst == "pass":
                worst = status
            reasons += [f"[{status}] {_describe(r)}" for r in hits]
        rows.append(CoverageRow(arch, name, worst, reasons))
    return rows


def run_coverage(
    archs: Sequence[str] | None = None,
    *,
    decodings: Sequence[Decoding] = DEFAULT_DECODINGS,
    progress: Callable[[str], None] | None = None,
    evidence: str = "standard",
) -> Coverage:
    """Check every architecture in ``archs`` (default: the whole zoo, its decoder-only models where they are
    checked, then its speech and vision models) under each decoding, with ``evidence`` (``"standard"`` or
    ``"thorough"``) re-runs for the consistency invariants."""
    from . import _compat, zoo
    from .runner import check

    default = archs is None
    causal = zoo.CAUSAL_ARCHITECTURES if _compat.checks_decoder_only() else ()
    archs = list((*zoo.ALL_ARCHITECTURES, *causal, *zoo.SPEECH_VISION_ARCHITECTURES) if archs is None else archs)
    rows: list[CoverageRow] = []
    environment: dict[str, str] = {}
    for arch in archs:
        if arch in zoo.UNAVAILABLE:
            rows += [CoverageRow(arch, d.name, "n/a", [zoo.UNAVAILABLE[arch]]) for d in decodings]
            continue
        report = check([f"tiny:{arch}"], decodings=decodings, progress=progress, evidence=evidence)
        environment = report.environment
        rows += _fold(report, arch, decodings)
    # The default run names what it cannot build in its notes (an explicit request gets an n/a row).
    unavailable = dict(zoo.UNAVAILABLE) if default else {}
    return Coverage(rows=rows, environment=environment, unavailable=unavailable)


def _notes(cov: Coverage) -> list[str]:
    notes = []
    for r in cov.rows:
        for reason in r.reasons:
            notes.append(f"{r.arch} / {r.decoding}: {reason}")
    for arch, why in cov.unavailable.items():
        notes.append(f"{arch}: not built: {why}")
    return notes


def render_text(cov: Coverage) -> str:
    decs = list(dict.fromkeys(r.decoding for r in cov.rows))
    archs = list(dict.fromkeys(r.arch for r in cov.rows))
    cell = {(r.arch, r.decoding): r.status for r in cov.rows}
    width = max([len("architecture"), *(len(a) for a in archs)])
    env = cov.environment
    lines = []
    if env:
        lines.append(
            f"ppinvariants coverage: torch {env.get('torch')}, transformers {env.get('transformers')}, "
            f"{env.get('device')}, {env.get('dtype')}"
        )
        lines.append("")
    lines.append(f"{'architecture':<{width}}  " + "  ".join(f"{d:<7}" for d in decs))
    for a in archs:
        lines.append(f"{a:<{width}}  " + "  ".join(f"{cell.get((a, d), '-'):<7}" for d in decs))
    notes = _notes(cov)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def render_markdown(cov: Coverage) -> str:
    decs = list(dict.fromkeys(r.decoding for r in cov.rows))
    archs = list(dict.fromkeys(r.arch for r in cov.rows))
    cell = {(r.arch, r.decoding): r.status for r in cov.rows}
    lines = ["| architecture | " + " | ".join(decs) + " |", "|---|" + "---|" * len(decs)]
    for a in archs:
        lines.append(f"| {a} | " + " | ".join(cell.get((a, d), "-") for d in decs) + " |")
    notes = _notes(cov)
    if notes:
        lines += ["", *(f"- {n.replace('|', '/')}" for n in notes)]
    return "\n".join(lines)


__all__ = ["Coverage", "CoverageRow", "render_markdown", "render_text", "run_coverage"]
