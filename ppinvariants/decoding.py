"""What a check run asks ``generate()`` to do: :class:`Decoding`, the built-in decodings and the default inputs.

A decoding is a name, a seed and any ``generate()`` settings (``GenerationConfig`` attributes). It is
*resolved* against a checkpoint's own generation config (:func:`resolve`) the way ``generate()``
merges them, so that what the checks read is the decoding that really ran.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import _compat
from .errors import UsageError
from .texts import DEFAULT_TEXTS as DEFAULT_TEXTS  # re-exported: the default inputs

#: Settings that are not "how to decode" but what to return, or special token ids (the conventions).
_NOT_SETTINGS = frozenset(
    {
        "return_dict_in_generate",
        "output_scores",
        "output_logits",
        "output_attentions",
        "output_hidden_states",
        "_from_model_config",
        "transformers_version",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "decoder_start_token_id",
        "use_cache",
        "_commit_hash",
        "_original_object_hash",
    }
)

#: New tokens the ``checkpoint`` decoding (and any decoding that sets no length) generates at most.
CHECKPOINT_MAX_NEW_TOKENS = 24


def _freeze(value: Any) -> Any:
    """Lists (JSON) as tuples, dicts as sorted item tuples: a :class:`Decoding` is hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    """The inverse of :func:`_freeze` for ``generate()``: tuples back to lists."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Decoding:
    """A named decoding: any ``generate()`` settings, a seed, and where its settings came from.

    ``Decoding("beam", num_beams=4, num_return_sequences=2, max_new_tokens=24)``. Settings left out
    take the checkpoint's generation config, as ``model.generate(**inputs, **settings)`` would
    (:func:`resolve`). Common settings read as attributes with ``generate()``'s defaults
    (``num_beams`` 1, ``do_sample`` False, ...); :meth:`get` reads any.
    """

    __slots__ = ("name", "seed", "settings", "note", "cap")

    def __init__(self, name: str, *, seed: int = 0, note: str = "", cap: int | None = None, **settings: Any) -> None:
        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "note", str(note))
        # At most this many new tokens, whatever length the settings allow (see resolve()).
        object.__setattr__(self, "cap", None if cap is None else int(cap))
        frozen = tuple(sorted((k, _freeze(v)) for k, v in settings.items() if v is not None))
        object.__setattr__(self, "settings", frozen)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Decoding is immutable: use .replace(...)")

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle (pytest-xdist) rebuild through __init__
        return (_rebuild, (self.name, self.seed, self.note, self.cap, self.generate_kwargs()))

    # -- identity ---------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.seed, self.settings, self.cap)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decoding) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_thaw(v)!r}" for k, v in self.settings)
        return f"Decoding({self.name!r}{', ' if inner else ''}{inner}, seed={self.seed})"

    # -- reading ----------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The setting ``key`` (lists as given), or ``default`` when it is not set."""
        for k, v in self.settings:
            if k == key:
                return _thaw(v)
        return default

    def __getattr__(self, key: str) -> Any:
        """Any other ``generate()`` setting by name: its value, None when the decoding leaves it unset."""
        if key.startswith("_") or key in _NOT_SETTINGS or not _compat.generation_config_supports(key):
            raise AttributeError(key)
        return self.get(key)

    @property
    def num_beams(self) -> int:
        return int(self.get("num_beams", 1))

    @property
    def num_return_sequences(self) -> int:
        return int(self.get("num_return_sequences", 1))

    @property
    def do_sample(self) -> bool:
        return bool(self.get("do_sample", False))

    @property
    def max_new_tokens(self) -> int | None:
        value = self.get("max_new_tokens")
        return None if value is None else int(value)

    # -- building ---------------------------------------------------------------------------
    def replace(self, *, name: str | None = None, seed: int | None = None, **changes: Any) -> Decoding:
        """A copy with ``changes`` applied; a setting changed to None is removed."""
        settings = {k: _thaw(v) for k, v in self.settings}
        settings.update(changes)
        return Decoding(
            self.name if name is None else name,
            seed=self.seed if seed is None else seed,
            note=self.note,
            cap=self.cap,
            **settings,
        )

    def generate_kwargs(self) -> dict[str, Any]:
        """The settings as ``generate()`` keyword arguments (lists, not tuples)."""
        return {k: _thaw(v) for k, v in self.settings}

    def to_dict(self) -> dict[str, Any]:
        """``name``, the settings and ``seed``: what the report and the ``reproduce:`` line show."""
        return {"name": self.name, **self.generate_kwargs(), "seed": self.seed}

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first unknown or invalid setting.

        Every key must be a ``GenerationConfig`` attribute of the installed transformers; the values
        are checked by ``GenerationConfig.validate()`` (which raises on invalid combinations).
        """
        for key, _ in self.settings:
            if key in _NOT_SETTINGS or not _compat.generation_config_supports(key):
                raise UsageError(
                    f"decoding {self.name}: unknown generate() setting {key!r} "
                    "(not a GenerationConfig attribute of this transformers version)"
                )
        if self.get("forced_decoder_ids") is not None:
            raise UsageError(
                f"decoding {self.name}: generate() rejects forced_decoder_ids (transformers 4.39 and later); "
                "give the forced start tokens as decoder_input_ids instead"
            )
        for key, value in self.settings:
            check = _RANGES.get(key)
            if check is not None and not _in_range(value, check):
                raise UsageError(f"decoding {self.name}: {key}={_thaw(value)!r} is invalid ({check[2]})")
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise UsageError(f"decoding {self.name}: num_beams and num_return_sequences must be >= 1")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise UsageError(
                f"decoding {self.name}: num_return_sequences ({self.num_return_sequences}) > num_beams "
                f"({self.num_beams}) is invalid for beam/greedy search"
            )
        new = self.max_new_tokens
        if new is not None and new < 1:
            raise UsageError(f"decoding {self.name}: max_new_tokens must be >= 1")
        _compat.check_generation_settings(self.name, self.generate_kwargs())


def _rebuild(name: str, seed: int, note: str, cap: int | None, settings: dict[str, Any]) -> Decoding:
    return Decoding(name, seed=seed, note=note, cap=cap, **settings)


#: Settings checked here before transformers sees them (it checks some only when a warper is built):
#: ``(type, predicate, what is allowed)``.
_RANGES: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "num_beams": (int, lambda v: v >= 1, "an integer >= 1"),
    "num_return_sequences": (int, lambda v: v >= 1, "an integer >= 1"),
    "max_new_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "max_length": (int, lambda v: v >= 1, "an integer >= 1"),
    "min_length": (int, lambda v: v >= 0, "an integer >= 0"),
    "min_new_tokens": (int, lambda v: v >= 0, "an integer >= 0"),
    "do_sample": (bool, lambda v: True, "true or false"),
    "temperature": ((int, float), lambda v: v > 0, "a number > 0"),
    "top_k": (int, lambda v: v >= 0, "an integer >= 0"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "min_p": ((int, float), lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "typical_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "epsilon_cutoff": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "eta_cutoff": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "repetition_penalty": ((int, float), lambda v: v > 0, "a number > 0"),
    "encoder_repetition_penalty": ((int, float), lambda v: v > 0, "a number > 0"),
    "length_penalty": ((int, float), lambda v: True, "a number"),
    "no_repeat_ngram_size": (int, lambda v: v >= 0, "an integer >= 0"),
    "encoder_no_repeat_ngram_size": (int, lambda v: v >= 0, "an integer >= 0"),
    "renormalize_logits": (bool, lambda v: True, "true or false"),
    "remove_invalid_values": (bool, lambda v: True, "true or false"),
}


def _in_range(value: Any, check: tuple[Any, Any, str]) -> bool:
    kind, ok, _ = check
    if isinstance(value, bool) and kind is not bool:
        return False  # JSON true is not a number of beams
    return isinstance(value, kind) and bool(ok(value))


GREEDY = Decoding("greedy", num_beams=1, do_sample=False, min_length=6, max_new_tokens=24)
BEAM = Decoding("beam", num_beams=4, num_return_sequences=2, do_sample=False, min_length=6, max_new_tokens=24)
SAMPLE = Decoding(
    "sample", num_beams=1, do_sample=True, temperature=0.8, top_k=40, top_p=0.9, min_length=6, max_new_tokens=24
)
#: Exactly ``model.generate(**inputs)`` under the checkpoint's own generation config; only a cap on new
#: tokens (:data:`CHECKPOINT_MAX_NEW_TOKENS`) is added by :func:`resolve`, and reported.
CHECKPOINT = Decoding("checkpoint", cap=CHECKPOINT_MAX_NEW_TOKENS)
DEFAULT_DECODINGS: tuple[Decoding, ...] = (GREEDY, BEAM, SAMPLE, CHECKPOINT)


def for_decoder_only(decoding: Decoding) -> Decoding:
    """A built-in decoding as it is meant for a decoder-only model: ``min_length=6`` (5 new tokens after the
    decoder start) becomes ``min_new_tokens=5``, since a decoder-only model's ``min_length`` counts its whole
    left-padded prompt (and so would mean nothing, and differ between a batch and a prompt alone).
    Any other decoding is returned as it is: the user's settings run as given."""
    if decoding not in DEFAULT_DECODINGS or decoding.get("min_length") is None:
        return decoding
    return decoding.replace(min_length=None, min_new_tokens=max(0, int(decoding.get("min_length")) - 1))


def effective_generation_config(model_generation_config: Any, decoding: Decoding) -> Any:
    """A copy of the checkpoint's generation config with ``decoding``'s settings applied, as ``generate()`` merges them."""
    config = copy.deepcopy(model_generation_config)
    config.update(**decoding.generate_kwargs())
    return config


def resolve(
    decoding: Decoding, model_generation_config: Any, *, max_new_tokens: int = CHECKPOINT_MAX_NEW_TOKENS
) -> Decoding:
    """``decoding`` with every setting the checkpoint's generation config adds to it, spelled out.

    The result's settings are the merged config's non-default decoding settings (special token
    ids and output flags left out), so that the report and the ``reproduce:`` line show what ran.
    A decoding that sets no length (``max_new_tokens`` / ``max_length``) gets
    ``max_new_tokens = min(what the checkpoint allows, max_new_tokens)``, said in its ``note``; so does a
    decoding with a ``cap`` (one read from a generation config file) that sets no ``max_new_tokens``.
    """
    decoding.validate()
    merged = effective_generation_config(model_generation_config, decoding)
    _compat.check_generation_settings(decoding.name, merged)
    defaults = type(merged)().to_dict()
    settings = {
        k: v
        for k, v in merged.to_dict().items()
        if k not in _NOT_SETTINGS
        and not k.startswith("_")
        and v is not None
        and v != defaults.get(k)
        # a model's own generation settings (Whisper's lang_to_id, language, task) stay in its generation
        # config, where its own generate() reads them: they are not settings of the library's generate()
        and k in defaults
    }
    note = decoding.note
    cap = decoding.cap
    if cap is None and decoding.get("max_new_tokens") is None and decoding.get("max_length") is None:
        cap = max_new_tokens
    if cap is not None and decoding.get("max_new_tokens") is None:
        allowed = settings.get("max_new_tokens")
        if allowed is None:
            allowed = int(merged.max_length or 20) - 1  # the decoder start counts towards max_length
        if int(allowed) > cap:
            note = f"max_new_tokens capped at {cap} (the generation config allows {allowed})"
        settings["max_new_tokens"] = min(int(allowed), cap)
    if settings.get("max_new_tokens") is not None:
        settings.pop("max_length", None)  # max_new_tokens wins in generate(); one length is shown
    for key in ("num_beams", "do_sample", "num_return_sequences"):
        value = getattr(merged, key, None)
        settings.setdefault(key, value if value is not None else (_compat.generation_default(key) or False))
    return Decoding(decoding.name, seed=decoding.seed, note=note, cap=decoding.cap, **settings)


# ------------------------------------------------------------------------------ from the command line


#: The built-in decodings by name: ``--decoding beam`` selects one.
BUILTIN: dict[str, Decoding] = {d.name: d for d in DEFAULT_DECODINGS}


def parse_decoding(spec: str) -> Decoding:
    """``NAME={"num_beams": 5, ...}`` (the CLI's ``--decoding`` and the plugin's ``--ppi-decoding``) as a Decoding.

    A bare built-in name (``greedy``, ``beam``, ``sample``, ``checkpoint``) selects that decoding.
    ``NAME=@FILE.json`` reads the settings from a file. An empty object is the checkpoint's own config.
    """
    name, sep, body = spec.partition("=")
    name = name.strip()
    if not sep and name in BUILTIN:
        return BUILTIN[name]
    if not sep or not name:
        raise UsageError(f"--decoding takes NAME='{{json settings}}', e.g. beam5='{{\"num_beams\": 5}}'; got {spec!r}")
    body = body.strip()
    if body.startswith("@"):
        return decoding_from_file(body[1:], name=name)
    try:
        settings = json.loads(body or "{}")
    except json.JSONDecodeError as e:
        raise UsageError(f"decoding {name}: settings are not valid JSON ({e.msg} at column {e.colno})") from None
    return _from_mapping(name, settings)


def decoding_from_file(path: str | Path, *, name: str | None = None) -> Decoding:
    """A ``generation_config.json`` (or any JSON object of settings) as a Decoding named after the file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such generation config file: {p}")
    try:
        settings = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"generation config {p}: not valid JSON ({e})") from None
    if isinstance(settings, dict):
        settings = {k: v for k, v in settings.items() if k not in _NOT_SETTINGS}
    return _from_mapping(name or p.stem, settings, cap=CHECKPOINT_MAX_NEW_TOKENS)


def _from_mapping(name: str, settings: Any, cap: int | None = None) -> Decoding:
    if not isinstance(settings, Mapping):
        raise UsageError(f"decoding {name}: settings must be a JSON object, not {type(settings).__name__}")
    seed = settings.get("seed", 0)
    rest = {k: v for k, v in settings.items() if k != "seed"}
    if not isinstance(seed, int):
        raise UsageError(f"decoding {name}: seed must be an integer")
    decoding = Decoding(name, seed=seed, cap=cap, **rest)
    decoding.validate()
    return decoding


def decodings_from_options(
    specs: Iterable[str] | None = None,
    generation_configs: Iterable[str | Path] | None = None,
    *,
    seed: int | None = None,
) -> list[Decoding]:
    """The decodings a command line asks for: each ``--decoding`` spec (:func:`parse_decoding`), then each
    ``--generation-config`` file (:func:`decoding_from_file`); the built-in defaults when neither is given.
    ``seed`` replaces each decoding's seed where given."""
    chosen = [parse_decoding(s) for s in specs or ()]
    chosen += [decoding_from_file(f) for f in generation_configs or ()]
    if not chosen:
        chosen = list(DEFAULT_DECODINGS)
    if seed is not None:
        chosen = [d.replace(seed=seed) for d in chosen]
    return unique_names(chosen)


def unique_names(decodings: Iterable[Decoding]) -> list[Decoding]:
    """``decodings`` in order; a repeated name raises :class:`UsageError` (results are keyed by name)."""
    out: list[Decoding] = []
    seen: set[str] = set()
    for d in decodings:
        if d.name in seen:
            raise UsageError(f"two decodings are named {d.name!r}: give each its own name")
        seen.add(d.name)
        out.append(d)
    return out


__all__ = [
    "BEAM",
    "BUILTIN",
    "CHECKPOINT",
    "CHECKPOINT_MAX_NEW_TOKENS",
    "DEFAULT_DECODINGS",
    "DEFAULT_TEXTS",
    "GREEDY",
    "SAMPLE",
    "Decoding",
    "decoding_from_file",
    "decodings_from_options",
    "effective_generation_config",
    "parse_decoding",
    "resolve",
    "unique_names",
]
