"""Invariants: pure functions from a :class:`~ppinvariants.capture.GenerationRecord` to violations.

One module per family; each function's docstring states the property and why it holds.
:func:`run_invariants` runs them and turns violations into results, matching known upstream
issues narrowly (status ``xfail``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import NotApplicable, NotJudged
from ..known_issues import KNOWN_ISSUES, KnownIssue
from ..record import GenerationRecord
from ..report import Result
from . import beam, consistency, logprobs, processors, sampling, scores, shapes, special_tokens, vocabulary  # noqa: F401 - registers the checks
from ._base import REGISTRY, Invariant

#: Families in reading order: from the shape of the output to re-runs of the model.
FAMILIES = (
    "shapes",
    "special_tokens",
    "vocabulary",
    "scores",
    "processors",
    "logprobs",
    "beam",
    "sampling",
    "consistency",
)
ALL: tuple[Invariant, ...] = tuple(sorted(REGISTRY.values(), key=lambda i: FAMILIES.index(i.family)))


def get(names: Iterable[str] | None = None) -> tuple[Invariant, ...]:
    """The invariants called ``names`` (all when None); unknown names raise KeyError."""
    if names is None:
        return ALL
    return tuple(REGISTRY[n] for n in names)


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


__all__ = ["ALL", "Invariant", "get", "run_invariants"]
