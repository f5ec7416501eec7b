"""How many input tokens a model accepts: the smallest length limit its config and tokenizer state.

Configs spell the encoder's limit in several ways (``max_position_embeddings`` for BART,
``max_encoder_position_embeddings`` for LED, ``n_positions`` for old T5 configs,
``max_source_positions`` for speech-style configs), and composite models
(``EncoderDecoderModel``) nest it in their encoder's config. A config value of ``None`` (LED's
``max_position_embeddings``) states no limit. The tokenizer's ``model_max_length`` counts too,
unless it is transformers' "no limit" placeholder (``1e30``).

Importing this module imports neither torch nor transformers (the Hypothesis strategies use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Config attributes that bound the encoder's input length, read on the config and its encoder config.
CONFIG_LIMITS: tuple[str, ...] = (
    "max_position_embeddings",
    "max_encoder_position_embeddings",
    "n_positions",
    "max_source_positions",
)
#: The limit used when neither the config nor the tokenizer states one (T5's relative positions).
FALLBACK_LIMIT = 512
#: A tokenizer ``model_max_length`` at or above this is transformers' "no limit" placeholder.
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class InputLimit:
    """The input length limit in tokens (special tokens included) and where it comes from."""

    tokens: int
    source: str  # e.g. "config.max_encoder_position_embeddings", "tokenizer.model_max_length", "default"

    def __int__(self) -> int:
        return self.tokens

    def describe(self) -> str:
        return f"{self.tokens} tokens ({self.source})"


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if 0 < value < _NO_LIMIT else None


def input_limit(tokenizer: Any = None, model: Any = None) -> InputLimit:
    """The smallest input length limit stated by ``model``'s config (or a config object given as
    ``model``), its nested encoder config, and ``tokenizer.model_max_length``; ties go to the
    config. :data:`FALLBACK_LIMIT` (source ``"default"``) when none states one."""
    candidates: list[tuple[int, str]] = []
    config = getattr(model, "config", model)
    scopes: list[tuple[str, Any]] = [("config", config)] if config is not None else []
    encoder = getattr(config, "encoder", None) if config is not None else None
    if encoder is not None and not callable(encoder):
        scopes.append(("config.encoder", encoder))
    for prefix, cfg in scopes:
        for name in CONFIG_LIMITS:
            value = _int_or_none(getattr(cfg, name, None))
            if value is not None:
                candidates.append((value, f"{prefix}.{name}"))
    tml = _int_or_none(getattr(tokenizer, "model_max_length", None)) if tokenizer is not None else None
    if tml is not None:
        candidates.append((tml, "tokenizer.model_max_length"))
    if not candidates:
        return InputLimit(FALLBACK_LIMIT, "default")
    tokens, source = min(candidates, key=lambda c: c[0])  # min keeps the first of equal values
    return InputLimit(tokens, source)


def max_input_tokens(target: Any = None, *, tokenizer: Any = None, model: Any = None) -> int:
    """The number of input tokens ``target`` (a loaded :class:`~ppinvariants.targets.Target`, or
    ``tokenizer=`` / ``model=``) accepts: pass it as ``max_tokens`` to the Hypothesis strategies.

    >>> texts(tokenizer=ppi_target.tokenizer, max_tokens=max_input_tokens(ppi_target))  # doctest: +SKIP
    """
    if target is not None:
        tokenizer = tokenizer if tokenizer is not None else getattr(target, "tokenizer", None)
        model = model if model is not None else getattr(target, "model", None)
    return input_limit(tokenizer, model).tokens


__all__ = ["CONFIG_LIMITS", "FALLBACK_LIMIT", "InputLimit", "input_limit", "max_input_tokens"]
