"""Invariants: pure functions from a :class:`~ppinvariants.record.GenerationRecord` to violations.

One module per family; each function's docstring states the property and why it holds. They are
registered here; :func:`ppinvariants.judge.run_invariants` runs them and applies the known issues.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import (  # noqa: F401 - registers the checks
    beam,
    consistency,
    logprobs,
    processors,
    sampling,
    scores,
    shapes,
    special_tokens,
    timestamps,
    vocabulary,
)
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


__all__ = ["ALL", "FAMILIES", "REGISTRY", "Invariant", "get"]
