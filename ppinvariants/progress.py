"""Progress lines on stderr: what is being built, loaded or generated, so that a long first run
(the tiny-model builds take minutes) never looks stalled, on a terminal or piped into a CI log.

The core reports through :func:`say`, which does nothing until a sink is installed with
:func:`reporting` (the command line installs :func:`stderr_sink` unless ``--quiet``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Sink = Callable[[str], None]

_sinks: list[Sink] = []
#: Start of every progress line written to a non-terminal stderr.
PREFIX = "ppinvariants | "


def say(message: str) -> None:
    """Report ``message`` to the innermost installed sink (nothing when none is installed)."""
    if _sinks:
        _sinks[-1](message)


@contextmanager
def reporting(sink: Sink | None) -> Iterator[None]:
    """Install ``sink`` for :func:`say` for the duration of the block (``None``: nothing changes)."""
    if sink is None:
        yield
        return
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.pop()


class StderrSink:
    """Writes each message as one line ``ppinvariants | MESSAGE`` (:data:`PREFIX`), told apart from
    the one ``ppinvariants: error: ...`` line of a bad input; on a terminal, the line is rewritten
    in place, and :meth:`clear` wipes it before the report is printed."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._dirty = False

    def __call__(self, message: str) -> None:
        try:
            if self.tty:
                self.stream.write(f"\r\033[K  {message}")
                self._dirty = True
            else:
                self.stream.write(f"{PREFIX}{message}\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: progress is not worth a crash
            pass

    def clear(self) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._dirty = False


def stderr_sink(*, quiet: bool = False) -> StderrSink | None:
    """The sink for stderr, or None when ``quiet``."""
    return None if quiet else StderrSink()


__all__ = ["PREFIX", "Sink", "StderrSink", "reporting", "say", "stderr_sink"]
