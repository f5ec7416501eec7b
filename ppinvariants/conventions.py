"""Which tokens start and end inputs and generations, derived from config, generation config and tokenizer.

Nothing here knows model names: every convention is read from the checkpoint's own configuration
or found by probing the tokenizer, so a new architecture needs no code change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import TargetError

_PROBE = "hello world"


@dataclass(frozen=True)
class Conventions:
    """The special-token conventions of one model + tokenizer pair.

    Decoder-only models (``decoder_only``) have no decoder start: the prompt itself, left-padded, is the
    start of every generated row (``decoder_start_token_id`` is None). ``padding_side`` is the side
    inputs are padded on for generation (always ``left`` for a decoder-only model);
    ``tokenizer_padding_side`` the side the tokenizer pads on as saved.
    """

    decoder_start_token_id: int | None
    forced_bos_token_id: int | None
    forced_eos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    input_prefix: tuple[int, ...]
    input_suffix: tuple[int, ...]
    padding_side: str
    token_texts: dict[int, str]
    decoder_only: bool = False
    tokenizer_padding_side: str = ""
    #: The tokenizer defines no pad token, and pad is the (first) eos, as users set it (decoder-only).
    pad_from_eos: bool = False
    #: The token a chat template ends each turn with (``<|im_end|>``, ``<|eot_id|>``); () without a template.
    chat_end_token_ids: tuple[int, ...] = ()
    #: Whether the model's forward pass takes ``position_ids`` (derived from the attention mask under left padding).
    takes_position_ids: bool = False

    @property
    def pad_is_eos(self) -> bool:
        """Pad is one of the eos ids: a ``!= pad`` mask then also drops the real eos."""
        return self.pad_token_id in self.eos_token_ids

    @property
    def adds_bos(self) -> bool:
        """The tokenizer puts a special token before every input (a BOS)."""
        return bool(self.input_prefix)

    def text(self, token_id: int | None) -> str:
        return "" if token_id is None else self.token_texts.get(token_id, str(token_id))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        d["input_prefix"] = list(self.input_prefix)
        d["input_suffix"] = list(self.input_suffix)
        d["token_texts"] = {str(k): v for k, v in sorted(self.token_texts.items())}
        d["chat_end_token_ids"] = list(self.chat_end_token_ids)
        d["pad_is_eos"] = self.pad_is_eos
        return d

    def describe(self) -> list[str]:
        """Human lines, e.g. ``input: <s> X </s>``, as ``ppinvariants check -v`` prints them."""

        def toks(ids: tuple[int, ...]) -> str:
            return " ".join(f"{self.text(i)}({i})" for i in ids)

        if self.decoder_only:
            eos = "|".join(toks((e,)) for e in self.eos_token_ids)
            pad = f"{self.text(self.pad_token_id)}({self.pad_token_id})"
            return [
                "prompt:     "
                + f"[left pad] {toks(self.input_prefix)} X {toks(self.input_suffix)}".replace("  ", " ")
                + (" (the tokenizer adds a BOS)" if self.adds_bos else " (no BOS added)"),
                f"generation: prompt echoed, then ... {eos}"
                + (f"; chat turns end with {toks(self.chat_end_token_ids)}" if self.chat_end_token_ids else ""),
                f"pad:        {pad}"
                + (" = eos (the tokenizer has no pad token)" if self.pad_from_eos else "")
                + (" (pad is an eos id: masks come from the first eos, never from != pad)" if self.pad_is_eos else "")
                + f", left padding for generation (tokenizer saved with {self.tokenizer_padding_side or '?'} padding)",
                f"positions:  {'position_ids from the attention mask' if self.takes_position_ids else 'no position_ids argument'}",
            ]
        gen = [f"{self.text(self.decoder_start_token_id)}({self.decoder_start_token_id})"]
        if self.forced_bos_token_id is not None:
            gen.append(f"{self.text(self.forced_bos_token_id)}({self.forced_bos_token_id}) [forced]")
        return [
            "input:      " + f"{toks(self.input_prefix)} X {toks(self.input_suffix)}".strip(),
            f"generation: {' '.join(gen)} ... {'|'.join(toks((e,)) for e in self.eos_token_ids)}"
            + (
                f" [forced eos {self.text(self.forced_eos_token_id)}({self.forced_eos_token_id}) at the length limit]"
                if self.forced_eos_token_id is not None
                else ""
            ),
            f"pad:        {self.text(self.pad_token_id)}({self.pad_token_id}), {self.padding_side} padding of inputs",
        ]


def _as_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def probe_input_wrapping(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ids the tokenizer puts before and after an encoded text, found by encoding a probe twice.

    ``encode(x, add_special_tokens=True) == prefix + encode(x, add_special_tokens=False) + suffix``.
    """
    with_special = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    bare = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    n = len(bare)
    for start in range(len(with_special) - n + 1):
        if with_special[start : start + n] == bare:
            return tuple(with_special[:start]), tuple(with_special[start + n :])
    # The special tokens changed the tokenization of the text itself: fall back to the special ids at each end.
    special = set(tokenizer.all_special_ids)
    i = 0
    while i < len(with_special) and with_special[i] in special:
        i += 1
    j = len(with_special)
    while j > i and with_special[j - 1] in special:
        j -= 1
    return tuple(with_special[:i]), tuple(with_special[j:])


def derive_conventions(model: Any, tokenizer: Any, generation_config: Any | None = None) -> Conventions:
    """Read the conventions of ``model`` and ``tokenizer`` (generation config first, then model config).

    Raises :class:`TargetError` when a convention the checks rely on is missing (no pad token, no
    decoder start token, no eos).
    """
    config = model.config
    gen = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    if not getattr(config, "is_encoder_decoder", False):
        return _derive_decoder_only(model, tokenizer, gen)
    decoder_cfg = getattr(config, "decoder", None)  # EncoderDecoderModel keeps ids on the sub-config too

    def pick(name: str) -> Any:
        return _first(getattr(gen, name, None), getattr(config, name, None), getattr(decoder_cfg, name, None))

    start = pick("decoder_start_token_id")
    if start is None:
        start = pick("bos_token_id")
    if start is None:
        raise TargetError(
            "the model defines no decoder_start_token_id (nor bos_token_id) in its config or generation config"
        )
    eos = _as_tuple(pick("eos_token_id")) or _as_tuple(tokenizer.eos_token_id)
    if not eos:
        raise TargetError("neither the model config nor the tokenizer defines an eos token")
    pad = _first(pick("pad_token_id"), tokenizer.pad_token_id)
    if pad is None or tokenizer.pad_token_id is None:
        raise TargetError(
            "the tokenizer has no pad token: batched inputs cannot be padded (set tokenizer.pad_token in the checkpoint)"
        )
    prefix, suffix = probe_input_wrapping(tokenizer)
    forced_bos = pick("forced_bos_token_id")
    forced_eos = pick("forced_eos_token_id")
    forced_eos_ids = _as_tuple(forced_eos)
    ids = {int(start), int(pad), *eos, *prefix, *suffix, *forced_eos_ids}
    if forced_bos is not None:
        ids.add(int(forced_bos))
    texts = {i: str(tokenizer.convert_ids_to_tokens(i)) for i in sorted(ids)}
    return Conventions(
        decoder_start_token_id=int(start),
        forced_bos_token_id=None if forced_bos is None else int(forced_bos),
        forced_eos_token_id=forced_eos_ids[0] if forced_eos_ids else None,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        input_prefix=prefix,
        input_suffix=suffix,
        padding_side=str(getattr(tokenizer, "padding_side", "right")),
        token_texts=texts,
    )


def chat_end_tokens(tokenizer: Any) -> tuple[int, ...]:
    """The special token a chat template closes an assistant turn with (``<|im_end|>``), found by rendering one.

    () when the tokenizer has no chat template, or the template puts no special token after the turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        return ()
    marker = "ppinvariants-probe-reply"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - a template that cannot render has no end token to read
        return ()
    if not isinstance(text, str) or marker not in text:
        return ()
    after = text.split(marker, 1)[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {})}
    for i in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if int(i) in special:
            return (int(i),)
    return ()


def _takes_position_ids(model: Any) -> bool:
    import inspect

    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _derive_decoder_only(model: Any, tokenizer: Any, gen: Any) -> Conventions:
    """Conventions of a decoder-only (causal) language model: bos added or not, eos ids, pad (= eos when the
    tokenizer has none, as users set it), padding side, chat template end token, position ids."""
    config = model.config

    def pick(name: str) -> Any:
        return _first(getattr(gen, name, None), getattr(config, name, None))

    eos = _as_tuple(pick("eos_token_id")) or _as_tuple(tokenizer.eos_token_id)
    if not eos:
        raise TargetError("neither the model config nor the tokenizer defines an eos token")
    pad_from_eos = tokenizer.pad_token_id is None
    # generate() fills finished rows with the generation config's pad, and with eos[0] when there is none.
    pad = _first(pick("pad_token_id"), tokenizer.pad_token_id, eos[0])
    prefix, suffix = probe_input_wrapping(tokenizer)
    chat = chat_end_tokens(tokenizer)
    ids = {int(pad), *eos, *prefix, *suffix, *chat}
    texts = {i: str(tokenizer.convert_ids_to_tokens(i)) for i in sorted(ids)}
    return Conventions(
        decoder_start_token_id=None,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        input_prefix=prefix,
        input_suffix=suffix,
        padding_side="left",
        token_texts=texts,
        decoder_only=True,
        tokenizer_padding_side=str(getattr(tokenizer, "padding_side", "right")),
        pad_from_eos=pad_from_eos,
        chat_end_token_ids=chat,
        takes_position_ids=_takes_position_ids(model),
    )
