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
