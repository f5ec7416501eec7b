"""The ids a model generates, and the special ids it relies on, exist in its tokenizer and mean the same there."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import NotApplicable
from ..record import GenerationRecord
from ..report import Violation
from ._base import from_positions, invariant, make


@invariant("vocabulary")
def generated_ids_within_tokenizer(record: GenerationRecord) -> list[Violation]:
    """Every id in ``sequences`` (decoder start included) is in ``[0, tokenizer_size)``.

    The output layer is often wider than the tokenizer's vocabulary (padded to a multiple of 8 or
    64, e.g. T5's 32128 logits for 32100 tokens). Ids beyond the tokenizer have no text: decoding
    drops them or crashes, and a reward model or a round trip through the text silently sees
    another sequence. A healthy model never puts probability mass there that wins, so such an id
    (or a negative one) means the extra logits were not masked or the ids were corrupted.
    """
    name = "generated_ids_within_tokenizer"
    seq = record.sequences
    size = int(record.tokenizer_size)
    bad = ((seq < 0) | (seq >= size)).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "decoder start id is outside the tokenizer's vocabulary"
            if p[1] == 0
            else "generated id is outside the tokenizer's vocabulary",
            row=p[0],
            step=p[1] - 1 if p[1] > 0 else None,
            token_id=int(seq[p]),
            expected=f"0 <= id < {size} (tokenizer size; logit width {record.output_width})",
            found=int(seq[p]),
        ),
    )


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(value)]


@invariant("vocabulary")
def special_ids_agree_between_model_and_tokenizer(record: GenerationRecord) -> list[Violation]:
    """The tokenizer's pad and eos ids are the model's pad and (one of its) eos ids, and every special id the model emits exists in the tokenizer.

    A tokenizer that declares no eos at all (BERT-style, ending inputs with ``[SEP]``) agrees when the
    model's eos is one of its special tokens.

    Generation pads finished rows with the model's ``pad_token_id`` and stops at its
    ``eos_token_id``; everything downstream (``batch_decode(skip_special_tokens=True)``, loss
    masks built from ``tokenizer.pad_token_id``, stopping on ``tokenizer.eos_token_id``) reads the
    tokenizer's. When the two disagree, padding is decoded as text or masks cover the wrong
    tokens. The decoder start and forced bos/eos ids are emitted into ``sequences``: they must be
    ids the tokenizer knows (``< tokenizer_size``). Where the tokenizer has a chat template, the token
    it ends each turn with (``<|im_end|>``, ``<|eot_id|>``) must be one of the eos ids, or generation
    from a chat prompt runs past the end of the turn.
    """
    name = "special_ids_agree_between_model_and_tokenizer"
    tok = record.tokenizer
    if tok is None:
        raise NotApplicable("the record carries no tokenizer")
    c = record.conventions
    gc = record.generation_config
    out: list[Violation] = []
    tok_pad, tok_eos = tok.pad_token_id, tok.eos_token_id
    model_pads = {"conventions": [c.pad_token_id], "generation config": _ids(gc.get("pad_token_id"))}
    for source, pads in model_pads.items():
        for pad in pads:
            if tok_pad != pad:
                out.append(
                    make(
                        record,
                        name,
                        f"tokenizer's pad_token_id differs from pad_token_id in the {source}",
                        token_id=pad,
                        expected=f"{pad} {record.token_text(pad)!r}",
                        found=tok_pad if tok_pad is None else f"{tok_pad} {record.token_text(tok_pad)!r}",
                    )
                )
    model_eos = {"conventions": list(c.eos_token_ids), "generation config": _ids(gc.get("eos_token_id"))}
    special = set(getattr(tok, "all_special_ids", []) or [])
    for source, eos in model_eos.items():
        if tok_eos is None and set(eos) & special:
            continue  # a tokenizer that declares no eos (BERT-style [SEP]) still knows the model's as special
        if eos and tok_eos not in eos:
            out.append(
                make(
                    record,
                    name,
                    f"tokenizer's eos_token_id is not one of the eos_token_id in the {source}",
                    token_id=eos[0],
                    expected=f"one of {eos}",
                    found=tok_eos if tok_eos is None else f"{tok_eos} {record.token_text(tok_eos)!r}",
                )
            )
    for chat_end in getattr(c, "chat_end_token_ids", ()):
        if chat_end not in c.eos_token_ids:
            out.append(
                make(
                    record,
                    name,
                    "the chat template ends each turn with a token generation does not stop at "
                    "(add it to generation_config.eos_token_id)",
                    token_id=chat_end,
                    expected=f"{chat_end} {record.token_text(chat_end)!r} among the eos ids",
                    found=f"eos ids {list(c.eos_token_ids)}",
                )
            )
    size = int(record.tokenizer_size)
    emitted = {
        "decoder_start_token_id": [*_ids(c.decoder_start_token_id), *_ids(gc.get("decoder_start_token_id"))],
        "forced_bos_token_id": [*_ids(c.forced_bos_token_id), *_ids(gc.get("forced_bos_token_id"))],
        "forced_eos_token_id": [*_ids(c.forced_eos_token_id), *_ids(gc.get("forced_eos_token_id"))],
    }
    for what, ids in emitted.items():
        for i in sorted(set(ids)):
            if not 0 <= i < size:
                out.append(
                    make(
                        record,
                        name,
                        f"{what} is outside the tokenizer's vocabulary",
                        token_id=i,
                        expected=f"0 <= id < {size}",
                        found=i,
                    )
                )
    return out
