"""The offline tiny model zoo: seeded random seq2seq checkpoints built from a recipe, cached on disk.

:mod:`~ppinvariants.zoo.recipes` says what each architecture is built from,
:mod:`~ppinvariants.zoo.tokenizers` trains its tokenizer and :mod:`~ppinvariants.zoo.build` builds,
calibrates and caches the checkpoint. The zoo imports nothing from ppinvariants above its bottom
layer (``texts``, ``masks``): the core loads ``tiny:<arch>`` targets through it.
"""

from __future__ import annotations

from .build import cache_root, tiny_checkpoint
from .recipes import (
    ALL_ARCHITECTURES,
    ARCHITECTURES,
    CAUSAL_ARCHITECTURES,
    RECIPES,
    SPEECH_VISION_ARCHITECTURES,
    UNAVAILABLE,
    ZOO_VERSION,
    Recipe,
    corpus,
)

__all__ = [
    "ALL_ARCHITECTURES",
    "ARCHITECTURES",
    "CAUSAL_ARCHITECTURES",
    "RECIPES",
    "SPEECH_VISION_ARCHITECTURES",
    "UNAVAILABLE",
    "ZOO_VERSION",
    "Recipe",
    "cache_root",
    "corpus",
    "tiny_checkpoint",
]
