"""Which tokens start and end inputs and generations, derived from config, generation config and tokenizer.

Nothing here knows model names: every convention is read from the checkpoint's own configuration
or found by probing the tokenizer, so a new architecture needs no code change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import TargetError

_PROBE = "hello world"

#: Stands in ``Conventions.decoder_prompt`` for the language token of a model that detects the language.
ANY_LANGUAGE = -1


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
    #: What the inputs are: ``text`` (token ids), ``audio`` (a feature extractor's ``input_features`` /
    #: ``input_values``) or ``image`` (an image processor's ``pixel_values``).
    modality: str = "text"
    #: The whole forced decoder prompt of an encoder-decoder model, decoder start first (Whisper's
    #: ``<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>``), from the generation config;
    #: ``ANY_LANGUAGE`` where the model detects the language itself. () for a decoder-only model.
    decoder_prompt: tuple[int, ...] = ()
    #: The language and task tokens the generation config asks for (Whisper-style configs), None otherwise.
    language_token_id: int | None = None
    task_token_id: int | None = None
    #: Language tokens the generation config knows (``lang_to_id``), for a detected language.
    language_token_ids: tuple[int, ...] = ()
    #: The first timestamp token (every id from it on is a timestamp), None without timestamps.
    timestamp_begin: int | None = None
    #: Whether the encoder takes an attention mask over its (audio) inputs: the feature extractor returns one.
    takes_input_mask: bool = True

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

    @property
    def is_text(self) -> bool:
        """The inputs are token ids (not audio or images)."""
        return self.modality == "text"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_prompt"] = list(self.decoder_prompt)
        d["language_token_ids"] = list(self.language_token_ids)
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
        if len(self.decoder_prompt) > 1:
            gen = ["<detected language>" if t == ANY_LANGUAGE else f"{self.text(t)}({t})" for t in self.decoder_prompt]
            gen[-1] += " [forced decoder prompt]"
        if not self.is_text:
            lines = [
                f"input:      {self.modality} ("
                + ("with" if self.takes_input_mask else "no")
                + " attention mask over the encoder inputs)",
                f"generation: {' '.join(gen)} ... {'|'.join(toks((e,)) for e in self.eos_token_ids)}",
                f"pad:        {self.text(self.pad_token_id)}({self.pad_token_id})",
            ]
            if self.timestamp_begin is not None:
                lines.append(f"timestamps: ids from {self.text(self.timestamp_begin)}({self.timestamp_begin}) on")
            return lines
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


def derive_conventions(
    model: Any, tokenizer: Any, generation_config: Any | None = None, *, modality: str = "text", processor: Any = None
) -> Conventions:
    """Read the conventions of ``model`` and ``tokenizer`` (generation config first, then model config).

    ``modality`` (``audio``, ``image``) marks a speech or vision encoder-decoder: its inputs are not wrapped
    by the tokenizer (no prefix or suffix), and ``processor``'s feature extractor says whether the encoder
    takes an attention mask. The decoder prompt is read from the generation config
    (:func:`forced_decoder_prompt`).

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
    prefix, suffix = probe_input_wrapping(tokenizer) if modality == "text" else ((), ())
    forced_bos = pick("forced_bos_token_id")
    forced_eos = pick("forced_eos_token_id")
    forced_eos_ids = _as_tuple(forced_eos)
    prompt, language, task, languages, timestamp_begin = forced_decoder_prompt(gen, int(start))
    ids = {int(start), int(pad), *eos, *prefix, *suffix, *forced_eos_ids, *(t for t in prompt if t >= 0)}
    if forced_bos is not None:
        ids.add(int(forced_bos))
    if timestamp_begin is not None:
        ids.add(timestamp_begin)
    texts = {i: str(tokenizer.convert_ids_to_tokens(i)) for i in sorted(ids)}
    extractor = getattr(processor, "feature_extractor", None)
    # Text inputs have one; images none; audio where the feature extractor returns one (not Whisper's).
    takes_mask = modality == "text" or (
        modality == "audio" and bool(getattr(extractor, "return_attention_mask", False))
    )
    return Conventions(
        modality=modality,
        decoder_prompt=prompt,
        language_token_id=language,
        task_token_id=task,
        language_token_ids=languages,
        timestamp_begin=timestamp_begin,
        takes_input_mask=takes_mask,
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


def forced_decoder_prompt(
    gen: Any, start: int
) -> tuple[tuple[int, ...], int | None, int | None, tuple[int, ...], int | None]:
    """``(prompt, language, task, languages, timestamp_begin)`` read from a generation config.

    A config with ``no_timestamps_token_id`` and ``lang_to_id``/``task_to_id`` (Whisper's) makes ``generate()``
    force ``start``, then the language token (``language``, given as a code, ``<|code|>`` token or a key of
    ``lang_to_id``; :data:`ANY_LANGUAGE` where the config sets none and the model is multilingual: it detects
    it), the task token (``task``, default ``transcribe``), then ``<|notimestamps|>`` unless
    ``return_timestamps`` is set. Timestamps are the ids from ``no_timestamps_token_id + 1`` on. Any other
    config forces the decoder start alone: ``((start,), None, None, (), None)``.
    """
    no_ts = getattr(gen, "no_timestamps_token_id", None)
    lang_to_id = getattr(gen, "lang_to_id", None) or {}
    task_to_id = getattr(gen, "task_to_id", None) or {}
    if no_ts is None or not (lang_to_id or task_to_id):
        return (start,), None, None, (), None
    prompt = [start]
    language = task = None
    languages = tuple(sorted(int(v) for v in lang_to_id.values()))
    if getattr(gen, "is_multilingual", None) is not False and lang_to_id:  # English-only: no language token
        lang = getattr(gen, "language", None)
        if lang is None:
            prompt.append(ANY_LANGUAGE)
        else:
            lang = str(lang).lower()
            for key in (lang, f"<|{lang}|>"):
                if key in lang_to_id:
                    language = int(lang_to_id[key])
            prompt.append(ANY_LANGUAGE if language is None else language)
    multilingual = getattr(gen, "is_multilingual", None) is not False
    if task_to_id and (multilingual or getattr(gen, "task", None) is not None):
        task = int(task_to_id.get(str(getattr(gen, "task", None) or "transcribe"), -1))
        task = None if task < 0 else task
        if task is not None:
            prompt.append(task)
    if not getattr(gen, "return_timestamps", False):
        prompt.append(int(no_ts))
    return tuple(prompt), language, task, languages, int(no_ts) + 1


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
