"""Special tokens: inputs wrapped as the tokenizer says, generations started and ended as the model says."""

from __future__ import annotations

import torch

from ..errors import NotApplicable
from ..record import GenerationRecord, finished_mask, generated_tokens, prompt_rows
from ..report import Violation
from ._base import from_positions, invariant, make, merge, require_text_inputs


@invariant("special_tokens")
def inputs_follow_tokenizer_convention(record: GenerationRecord) -> list[Violation]:
    """Every encoded input is ``prefix + text + suffix`` as the tokenizer's convention says, pad only outside it.

    The convention (``<s> X </s>`` for BART, ``X </s>`` for T5/Pegasus, ``X </s> lang`` for mBART)
    is probed from the tokenizer itself; a row that lacks its end token, or has pad inside the
    attended span, feeds the encoder something the model was never trained on.
    """
    name = "inputs_follow_tokenizer_convention"
    require_text_inputs(record, "no tokenizer wrapping to check")
    c = record.conventions
    ids, mask = record.input_ids, record.attention_mask.bool()
    n, width = ids.shape
    lengths = mask.sum(dim=1)
    pos = torch.arange(width).expand(n, width)
    left = c.padding_side == "left"
    start = (width - lengths) if left else torch.zeros_like(lengths)
    expected_mask = (pos >= start[:, None]) & (pos < (start + lengths)[:, None])
    bad_mask = (mask != expected_mask).nonzero()
    bad_pad = ((~mask) & (ids != c.pad_token_id)).nonzero()
    parts = [
        from_positions(
            bad_mask,
            lambda p: make(
                record,
                name,
                "attention mask is not one contiguous span",
                row=p[0],
                input_pos=p[1],
                on_input=True,
                expected=int(expected_mask[p]),
                found=int(mask[p]),
            ),
        ),
        from_positions(
            bad_pad,
            lambda p: make(
                record,
                name,
                "padding position holds a non-pad token",
                row=p[0],
                input_pos=p[1],
                on_input=True,
                token_id=int(ids[p]),
                expected=f"pad {c.pad_token_id}",
                found=int(ids[p]),
            ),
        ),
    ]
    for label, wanted, offset in (
        ("prefix", c.input_prefix, torch.zeros_like(lengths)),
        ("suffix", c.input_suffix, lengths - len(c.input_suffix)),
    ):
        if not wanted:
            continue
        want = torch.tensor(wanted)
        idx = (start + offset)[:, None] + torch.arange(len(wanted))[None, :]
        got = ids.gather(1, idx.clamp(0, width - 1))
        wrong = (got != want[None, :]).nonzero()

        def build(
            p: tuple[int, ...],
            label: str = label,
            want: torch.Tensor = want,
            idx: torch.Tensor = idx,
            got: torch.Tensor = got,
        ) -> Violation:
            r, j = p
            return make(
                record,
                name,
                f"input does not have the tokenizer's {label}",
                row=r,
                input_pos=int(idx[r, j]),
                on_input=True,
                token_id=int(got[r, j]),
                expected=f"{int(want[j])} {record.token_text(int(want[j]))!r}",
                found=f"{int(got[r, j])} {record.token_text(int(got[r, j]))!r}",
            )

        parts.append(from_positions(wrong, build))
    return merge(*parts)


@invariant("special_tokens")
def generations_start_with_decoder_start(record: GenerationRecord) -> list[Violation]:
    """Every generated row starts with the decoder start token, then the forced first token when one is configured.

    The decoder is primed with ``decoder_start_token_id`` (``</s>`` for BART, ``<pad>`` for
    T5/Pegasus); ``forced_bos_token_id`` (BART's ``<s>``, mBART's language code) must follow.
    Code that strips "the first token" of a generation relies on exactly this.
    """
    name = "generations_start_with_decoder_start"
    if record.decoder_only:
        raise NotApplicable("decoder-only model: no decoder start (judged by prompt_echoed_unchanged)")
    c = record.conventions
    seq = record.sequences
    wrong = (seq[:, 0] != c.decoder_start_token_id).nonzero()
    parts = [
        from_positions(
            wrong,
            lambda p: make(
                record,
                name,
                "generation does not start with the decoder start token",
                row=p[0],
                token_id=int(seq[p[0], 0]),
                expected=f"{c.decoder_start_token_id} {c.text(c.decoder_start_token_id)!r}",
                found=f"{int(seq[p[0], 0])} {record.token_text(int(seq[p[0], 0]))!r}",
            ),
        )
    ]
    forced = record.generation_config.get("forced_bos_token_id")
    if forced is not None and record.steps >= 1:
        wrong = (seq[:, 1] != int(forced)).nonzero()
        parts.append(
            from_positions(
                wrong,
                lambda p: make(
                    record,
                    name,
                    "first generated token is not the forced first token",
                    row=p[0],
                    step=0,
                    token_id=int(seq[p[0], 1]),
                    expected=f"{forced} {record.token_text(int(forced))!r}",
                    found=f"{int(seq[p[0], 1])} {record.token_text(int(seq[p[0], 1]))!r}",
                ),
            )
        )
    return merge(*parts)


@invariant("special_tokens")
def only_pad_after_eos(record: GenerationRecord) -> list[Violation]:
    """After a row's first eos, every token is pad.

    ``generate()`` keeps finished rows in the batch and fills them with ``pad_token_id``; a real
    token after eos means a finished hypothesis kept generating (or rows were stitched wrongly),
    and a sequence log-prob that masks by eos would silently drop it.
    """
    name = "only_pad_after_eos"
    c = record.conventions
    tokens = generated_tokens(record)
    mask, _ = finished_mask(tokens, c.eos_token_ids)
    wrong = ((mask == 0) & (tokens != c.pad_token_id)).nonzero()
    return from_positions(
        wrong,
        lambda p: make(
            record,
            name,
            "non-pad token after eos",
            row=p[0],
            step=p[1],
            token_id=int(tokens[p]),
            expected=f"pad {c.pad_token_id} {c.text(c.pad_token_id)!r}",
            found=f"{int(tokens[p])} {record.token_text(int(tokens[p]))!r}",
        ),
    )


@invariant("special_tokens")
def rows_end_with_eos_or_length_limit(record: GenerationRecord) -> list[Violation]:
    """Every generated row contains eos, or it ran to the length limit.

    Generation stops a row only at eos or at ``max_length`` (decoder start included). A row
    without eos that is shorter than the limit was truncated or lost its end token.
    """
    name = "rows_end_with_eos_or_length_limit"
    c = record.conventions
    tokens = generated_tokens(record)
    _, has_eos = finished_mask(tokens, c.eos_token_ids)
    if record.sequences.shape[1] >= record.max_length:
        return []
    wrong = (~has_eos).nonzero()
    return from_positions(
        wrong,
        lambda p: make(
            record,
            name,
            "row has no eos but is shorter than the length limit",
            row=p[0],
            step=record.steps - 1,
            expected=f"eos {list(c.eos_token_ids)} or length {record.max_length}",
            found=f"length {record.sequences.shape[1]} without eos",
        ),
    )


@invariant("special_tokens")
def tokenizer_ends_inputs_with_eos(record: GenerationRecord) -> list[Violation]:
    """The tokenizer's input suffix contains one of the model's eos ids (``X </s>``, ``X </s> lang``).

    Encoder-decoder models are trained on inputs closed by eos; a tokenizer that drops its end
    token (a broken post-processor, a slow/fast mismatch) feeds every input unterminated, and
    because the convention is probed from that same tokenizer, only the model's own eos can tell.
    """
    name = "tokenizer_ends_inputs_with_eos"
    if record.decoder_only:
        raise NotApplicable("decoder-only model: a prompt is continued, not closed by eos")
    require_text_inputs(record, "no tokenized input to close with eos")
    c = record.conventions
    if set(c.input_suffix) & set(c.eos_token_ids):
        return []
    suffix = " ".join(f"{i} {record.token_text(i)!r}" for i in c.input_suffix) or "nothing"
    return [
        make(
            record,
            name,
            "the tokenizer does not close inputs with the model's eos",
            expected=f"an eos id {list(c.eos_token_ids)} after the text",
            found=f"suffix {suffix}",
        )
    ]


@invariant("special_tokens")
def prompt_echoed_unchanged(record: GenerationRecord) -> list[Violation]:
    """A decoder-only model's rows start with their own left-padded prompt, unchanged; generation follows it.

    ``generate()`` returns each prompt in ``sequences``, padding included, and appends the generated
    tokens after its last column, so that the generated part starts at the same column in every row.
    Code that strips the prompt by each row's *own* length, or a pipeline that rewrote the prompt,
    reads the wrong tokens as generated.
    """
    name = "prompt_echoed_unchanged"
    if not record.decoder_only:
        raise NotApplicable("encoder-decoder model: the prompt is the encoder's input, not echoed")
    seq = record.sequences
    width = min(record.prompt_length, seq.shape[1])
    want = prompt_rows(record, seq.shape[0])
    wrong = (seq[:, :width] != want[:, :width]).nonzero()
    parts = [
        from_positions(
            wrong,
            lambda p: make(
                record,
                name,
                "the prompt is not echoed unchanged at the start of the row",
                row=p[0],
                input_pos=p[1],
                on_input=False,
                token_id=int(seq[p]),
                expected=f"{int(want[p])} {record.token_text(int(want[p]))!r}",
                found=f"{int(seq[p])} {record.token_text(int(seq[p]))!r}",
            ),
        )
    ]
    if int(record.input_ids.shape[1]) != record.prompt_length:
        parts.append(
            [
                make(
                    record,
                    name,
                    "the generated part does not start right after the prompt's columns",
                    expected=f"column {int(record.input_ids.shape[1])}",
                    found=f"column {record.prompt_length}",
                )
            ]
        )
    return merge(*parts)


@invariant("special_tokens")
def batch_is_left_padded(record: GenerationRecord) -> list[Violation]:
    """A decoder-only model's batch is padded on the left: every prompt ends at the last column, where generation starts.

    ``generate()`` appends each new token after the batch's last column. In a right-padded batch a
    short prompt ends earlier, so its row continues after pad tokens: the model is conditioned on
    ``prompt, pad, pad, ...`` and the generated tokens are wrong, silently (transformers only warns).
    Pad the prompts on the left (``tokenizer.padding_side = "left"``).
    """
    name = "batch_is_left_padded"
    if not record.decoder_only:
        raise NotApplicable("encoder-decoder model: inputs are the encoder's, padded on either side")
    mask = record.attention_mask.bool()
    # A real token, then padding after it: the row's prompt does not end at the last column.
    after = mask.int().cumsum(dim=1) > 0
    bad = (after & ~mask).nonzero()
    first: dict[int, tuple[int, int]] = {}
    for r, col in bad.tolist():
        first.setdefault(r, (r, col))
    return from_positions(
        torch.tensor(list(first.values()), dtype=torch.long).reshape(-1, 2),
        lambda p: make(
            record,
            name,
            "the batch is right-padded: this prompt ends before the last column, so generation continues after "
            "pad tokens and is wrong (pad decoder-only prompts on the left: tokenizer.padding_side = 'left')",
            row=p[0],
            input_pos=p[1],
            on_input=True,
            expected="padding only before the prompt",
            found=f"padding at column {p[1]} after the prompt",
        ),
    )
