"""ppinvariants: invariant checks for seq2seq ``generate()`` outputs.

The public API, importable from here::

    from ppinvariants import check, capture, run_invariants, load_target, Decoding, GREEDY

Importing the package is cheap (the pytest plugin imports it at start-up): torch and transformers
load on first use of a name below, which then imports its module (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC: dict[str, str] = {
    "check": "runner",
    "check_loaded": "runner",
    "capture": "capturing",
    "encode": "capturing",
    "Decoding": "decoding",
    "GREEDY": "decoding",
    "BEAM": "decoding",
    "SAMPLE": "decoding",
    "CHECKPOINT": "decoding",
    "DEFAULT_DECODINGS": "decoding",
    "DEFAULT_TEXTS": "decoding",
    "parse_decoding": "decoding",
    "decoding_from_file": "decoding",
    "run_invariants": "judge",
    "load_target": "targets",
    "Target": "targets",
    "GenerationRecord": "record",
    "sequence_logprobs": "rescoring",
    "check_logprob_fn": "logprob_check",
    "LogprobCheck": "logprob_check",
    "LogprobMismatchError": "logprob_check",
    "Report": "report",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ppinvariants' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
