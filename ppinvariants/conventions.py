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
    """The special-token conventions of one model + tokenizer pair."""

    decoder_start_token_id: int
    forced_bos_token_id: int | None
    forced_eos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    input_prefix: tuple[int, ...]
    input_suffix: tuple[int, ...]
    padding_side: str
    token_texts: dict[int, str]

    def text(self, token_id: int | None) -> str:
        return "" if token_id is None else self.token_texts.get(token_id, str(token_id))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        d["input_prefix"] = list(self.input_prefix)
        d["input_suffix"] = list(self.input_suffix)
        d["token_texts"] = {str(k): v for k, v in sorted(self.token_texts.items())}
        return d

    def describe(self) -> list[str]:
        """Human lines, e.g. ``input: <s> X </s>``, as ``ppinvariants check -v`` prints them."""

        def toks(ids: tuple[int, ...]) -> str:
            return " ".join(f"{self.text(i)}({i})" for i in ids)

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
