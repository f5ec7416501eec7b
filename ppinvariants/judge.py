"""Judge a record: run the invariants, turn their violations into results, apply the known issues.

It sits above both :mod:`ppinvariants.invariants` (the pure checks) and :mod:`ppinvariants.known_issues`
(upstream bugs, matched on violation fields), so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import NotApplicable, NotJudged
from .invariants import ALL, Invariant
from .known_issues import KNOWN_ISSUES, KnownIssue
from .record import GenerationRecord
from .report import Result


def run_invariants(
    record: GenerationRecord,
    invariants: Iterable[Invariant] | None = None,
    known_issues: Iterable[KnownIssue] = KNOWN_ISSUES,
) -> list[Result]:
    """Run each invariant on ``record``: ``pass``, ``fail``, ``skip`` (not applicable, or not judged
    for want of evidence: see :attr:`~ppinvariants.report.Result.skip_kind`), ``xfail``
    (every violation matches one known upstream issue) or ``error`` (the check itself crashed)."""
    try:
        return _run(record, invariants, known_issues)
    finally:
        record.forget_derived()  # the vocabulary-wide tensors shared by the checks


def _run(
    record: GenerationRecord, invariants: Iterable[Invariant] | None, known_issues: Iterable[KnownIssue]
) -> list[Result]:
    results = []
    known = list(known_issues)
    for inv in invariants or ALL:
        base = dict(invariant=inv.name, decoding=record.decoding.name, repro=record.repro())
        try:
            violations = inv.check(record)
        except NotJudged as e:  # applies, but its evidence is missing: counted in the summary
            results.append(Result(status="skip", reason=str(e), skip_kind=e.kind, **base))
            continue
        except NotApplicable as e:
            results.append(Result(status="skip", reason=str(e), skip_kind="not_applicable", **base))
            continue
        except Exception as e:  # noqa: BLE001 - a crashing check is reported, the others still run
            results.append(Result(status="error", reason=f"{type(e).__name__}: {e}", **base))
            continue
        total = getattr(violations, "total", len(violations))
        if not violations:
            note = inv.note(record) if inv.note else None
            results.append(Result(status="pass", reason=note or "", **base))
            continue
        issue = next((k for k in known if k.explains(record, inv.name, violations)), None)
        if issue is not None:
            results.append(
                Result(
                    status="xfail",
                    reason=f"{issue.reason} ({issue.reference})",
                    violations=list(violations),
                    total_violations=total,
                    **base,
                )
            )
        else:
            results.append(Result(status="fail", violations=list(violations), total_violations=total, **base))
    return results


__all__ = ["run_invariants"]
