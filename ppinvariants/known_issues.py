"""Known upstream issues: violations that are real bugs outside ppinvariants, matched narrowly.

A known issue turns a failing result into ``xfail`` only when *every* violation of that result
matches its exact signature (invariant, decoding kind, transformers versions, and a predicate
on the violation). Any other violation of the same invariant still fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet

from ._compat import TRANSFORMERS_VERSION


@dataclass(frozen=True)
class KnownIssue:
    invariant: str
    reason: str
    reference: str
    transformers: str  # a PEP 440 specifier, e.g. ">=4.40,<4.47"
    applies: Callable[[Any], bool]  # record -> bool (decoding kind, model, config)
    matches: Callable[[Any, Any], bool]  # (record, violation) -> bool

    def explains(self, record: Any, invariant: str, violations: list[Any]) -> bool:
        return (
            invariant == self.invariant
            and TRANSFORMERS_VERSION in SpecifierSet(self.transformers, prereleases=True)
            and self.applies(record)
            and all(self.matches(record, v) for v in violations)
        )


def _beam_with_pad_zero(record: Any) -> bool:
    eos = record.conventions.eos_token_ids
    return bool(record.is_beam and record.generation_config.get("pad_token_id") == 0 and eos and eos[0] != 0)


def _row_filled_with_eos(record: Any, violation: Any) -> bool:
    """The violation's row has, after its first eos, eos[0] and nothing else (never pad)."""
    import torch

    if violation.row is None:
        return False
    eos = record.conventions.eos_token_ids
    row = record.sequences[violation.row, 1:]
    is_eos = torch.isin(row, torch.tensor(eos))
    if not bool(is_eos.any()):
        return False
    tail = row[int(is_eos.int().argmax()) + 1 :]
    return tail.numel() > 0 and bool((tail == eos[0]).all())


_PAD_ZERO_REASON = "beam search pads finished hypotheses with eos when pad_token_id == 0 (`pad_token_id or eos`)"
_PAD_ZERO_REF = "huggingface/transformers#47286"

KNOWN_ISSUES: tuple[KnownIssue, ...] = tuple(
    KnownIssue(
        invariant=name,
        reason=_PAD_ZERO_REASON,
        reference=_PAD_ZERO_REF,
        transformers=">=5.0.0",
        applies=_beam_with_pad_zero,
        matches=_row_filled_with_eos,
    )
    for name in ("only_pad_after_eos", "padding_mask_matches_eos")
)
