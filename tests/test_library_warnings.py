"""transformers' warnings during a capture are silenced there, counted, and reported once per message."""

from __future__ import annotations

import logging
import warnings

import pytest

from ppinvariants._compat import counted_library_warnings
from ppinvariants.runner import check_loaded, library_warning_notes


def test_logged_warnings_are_counted_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("transformers.generation.utils")
    root = logging.getLogger("transformers")
    level, handlers = root.level, root.handlers[:]
    with counted_library_warnings() as counts:
        for n in (37, 41, 37):
            logger.warning("Input ids are automatically padded from %d to 64", n)
        logger.info("not a warning")
    assert counts == {"Input ids are automatically padded from # to #": 3}
    assert "automatically padded" not in capsys.readouterr().err
    assert root.level == level and root.handlers == handlers


def test_other_libraries_warnings_are_reissued() -> None:
    with pytest.warns(UserWarning, match="not transformers'"):
        with counted_library_warnings() as counts:
            warnings.warn("not transformers'", UserWarning, stacklevel=1)
    assert counts == {}


def test_notes_read_each_warning_once() -> None:
    notes = library_warning_notes({"Input ids are padded from # to #": {"greedy": 2, "beam": 1}})
    assert len(notes) == 1
    assert notes[0].startswith("transformers warned 3 times (greedy x2, beam;")
    assert "'Input ids are padded from # to #'" in notes[0]
    assert library_warning_notes({}) == []


def test_led_padding_warning_reaches_the_report() -> None:
    """LED pads its inputs to a multiple of its attention window and warns per input length."""
    from _records import tiny_target
    from transformers.utils import logging as hf_logging

    from ppinvariants.decoding import GREEDY

    hf_logging.warning_once.cache_clear()  # printed once per process: another test may have printed it
    report = check_loaded(tiny_target("led"), decodings=[GREEDY])
    [note] = [n for n in report.notes if n.startswith("transformers warned")]
    assert "automatically padded from # to #" in note
