"""The default inputs of a check, in the bottom layer: shared by capture, the runner and the zoo.

The zoo calibrates its tiny models on these texts, and it may import nothing above this layer.
"""

from __future__ import annotations

#: Default inputs of ``ppinvariants check``: very different lengths (padding), digits,
#: punctuation, unicode and whitespace oddities.
DEFAULT_TEXTS: tuple[str, ...] = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog, twice: once in summer and once in winter 2024!",
    "A model rewrites sentences.",
    "Numbers like 42, 3.14 and 1000000 appear too?",
    "  Leading and trailing   spaces  ",
    "Café, naïve façade — “quoted” text; ünïcödé!",
    "Why?",
    "The river runs through the city and the mountain stands over the garden where people read books at night.",
)
