"""Healthy tiny targets and records, loaded/captured once per process and copied per test."""

from __future__ import annotations

import copy

from ppinvariants.capturing import capture
from ppinvariants.decoding import BEAM, DEFAULT_TEXTS, GREEDY, SAMPLE
from ppinvariants.record import GenerationRecord
from ppinvariants.targets import Target, load_target

_TARGETS: dict[str, Target] = {}
_RECORDS: dict[tuple[str, str, str], GenerationRecord] = {}
DECODINGS = {"greedy": GREEDY, "beam": BEAM, "sample": SAMPLE}


def tiny_target(arch: str) -> Target:
    if arch not in _TARGETS:
        _TARGETS[arch] = load_target(f"tiny:{arch}")
    return _TARGETS[arch]


def healthy_record(arch: str, decoding: str, evidence: str = "thorough") -> GenerationRecord:
    """A fresh deep copy (tests may alter it) of the healthy record of ``arch`` under ``decoding``.

    Thorough evidence by default, so that every consistency invariant has its re-runs to judge.
    """
    key = (arch, decoding, evidence)
    if key not in _RECORDS:
        _RECORDS[key] = capture(tiny_target(arch), list(DEFAULT_TEXTS), DECODINGS[decoding], evidence=evidence)
    rec = _RECORDS[key]
    tok, rec.tokenizer = rec.tokenizer, None
    try:
        clone = copy.deepcopy(rec)
    finally:
        rec.tokenizer = tok
    clone.tokenizer = tok
    return clone
