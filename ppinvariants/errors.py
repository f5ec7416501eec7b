"""Errors that mean "bad input", reported to the user as one clear line (exit code 2)."""

from __future__ import annotations


class PPIError(Exception):
    """Base class: the message is a complete, one-line explanation for the user."""


class UsageError(PPIError):
    """The command line or a decoding config is invalid."""


class TargetError(PPIError):
    """A target could not be loaded or is not a model ppinvariants can check."""


class NotApplicable(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an invariant that does not apply to a record; the result becomes ``skip``."""


#: :class:`NotJudged` kinds. ``lost``: evidence the check needs was not kept or could not be had
#: (streaming mode, no re-runs, an old transformers); a failure under ``--strict`` / ``--ppi-strict``.
#: ``thorough_only``: the evidence is collected only at the thorough depth (a choice, never a failure).
NOT_JUDGED_KINDS = ("lost", "thorough_only")


class NotJudged(NotApplicable):
    """Raised by an invariant that applies to the record but whose evidence is missing.

    The result is a ``skip`` all the same, but one that is counted and named in the summary line
    (``PASS (11 of 81 not judged: streaming mode)``), unlike a check that does not apply.
    """

    def __init__(self, reason: str, kind: str = "lost") -> None:
        if kind not in NOT_JUDGED_KINDS:
            raise ValueError(f"kind must be one of {NOT_JUDGED_KINDS}, not {kind!r}")
        super().__init__(reason)
        self.kind = kind
