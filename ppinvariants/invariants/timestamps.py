"""Speech models' forced decoder prompt and Whisper-style timestamp tokens.

A Whisper-style generation config (``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``) makes
``generate()`` force a multi-token decoder prompt (start, language, task, and ``<|notimestamps|>`` unless
timestamps are asked for), and with timestamps run a processor whose rules depend on the row's history.
"""

from __future__ import annotations

from ..conventions import ANY_LANGUAGE
from ..errors import NotApplicable
from ..record import GenerationRecord, finished_mask, generated_tokens
from ..report import Violation
from ._base import invariant, make, merge


@invariant("special_tokens")
def decoder_prompt_as_requested(record: GenerationRecord) -> list[Violation]:
    """Every row starts with the whole forced decoder prompt the generation config asks for: the decoder
    start, the requested language token (any known language token where the model detects it), the
    requested task token, and ``<|notimestamps|>`` unless timestamps were asked for.

    ``generate()`` builds this prompt from ``language`` and ``task``; a transcript in the wrong language or a
    translation where a transcription was asked for starts with the wrong token here, and every token after
    it is conditioned on it. Code that strips "the prompt" relies on its length too.
    """
    name = "decoder_prompt_as_requested"
    c = record.conventions
    if record.decoder_only or len(c.decoder_prompt) <= 1:
        raise NotApplicable(
            "no forced decoder prompt beyond the decoder start (judged by generations_start_with_decoder_start)"
        )
    want = list(c.decoder_prompt)
    if record.prompt_length != len(want):
        return [
            make(
                record,
                name,
                "the decoder prompt has another length than the generation config asks for",
                expected=f"{len(want)} tokens {[c.text(t) for t in want]}",
                found=f"{record.prompt_length} columns before the first scored step",
            )
        ]
    out: list[Violation] = []
    seq = record.sequences
    for row in range(seq.shape[0]):
        for pos, wanted in enumerate(want):
            got = int(seq[row, pos])
            ok = got in c.language_token_ids if wanted == ANY_LANGUAGE else got == wanted
            if ok:
                continue
            what = {c.language_token_id: "language", c.task_token_id: "task"}.get(wanted, "forced prompt")
            if wanted == ANY_LANGUAGE:
                what = "language"
            out.append(
                make(
                    record,
                    name,
                    f"the decoder prompt's {what} token is not the one requested",
                    row=row,
                    token_id=got,
                    expected="a language token" if wanted == ANY_LANGUAGE else f"{wanted} {c.text(wanted)!r}",
                    found=f"{got} {record.token_text(got)!r} at prompt column {pos}",
                )
            )
            break
    return merge(out)


@invariant("special_tokens")
def timestamps_paired_and_non_decreasing(record: GenerationRecord) -> list[Violation]:
    """With timestamps, each row's timestamp tokens (up to its first eos) never decrease, come in pairs (a
    timestamp after text is followed by another timestamp or eos, never text), and never three in a row;
    the first generated token is a timestamp.

    Whisper's timestamp processor enforces exactly this (a segment is ``<|t0|> text <|t1|>``, the next one
    starts at or after ``t1``); a row that breaks it was generated without that processor, or decoded from
    scores it did not mask, and its segments cannot be read back as times.
    """
    name = "timestamps_paired_and_non_decreasing"
    c = record.conventions
    begin = c.timestamp_begin
    if begin is None:
        raise NotApplicable("the vocabulary has no timestamp tokens (no no_timestamps_token_id)")
    prompt = record.sequences[:, : record.prompt_length]
    if bool((prompt == begin - 1).any()):
        raise NotApplicable(f"the decoder prompt asks for no timestamps ({c.text(begin - 1)})")
    tokens = generated_tokens(record)
    live, _ = finished_mask(tokens, c.eos_token_ids)
    eos = set(c.eos_token_ids)
    out: list[Violation] = []
    for row in range(tokens.shape[0]):
        row_tokens = [int(t) for t, m in zip(tokens[row].tolist(), live[row].tolist(), strict=True) if m]
        is_ts = [t >= begin for t in row_tokens]
        last = None
        for step, tok in enumerate(row_tokens):
            problem = None
            if step == 0 and not is_ts[0]:
                problem = ("the first generated token is not a timestamp", "a timestamp")
            elif is_ts[step]:
                if last is not None and tok < last:
                    problem = ("timestamps decrease", f">= {record.token_text(last)!r}")
                elif step >= 2 and is_ts[step - 1] and is_ts[step - 2]:
                    problem = ("three timestamps in a row", "text after a pair of timestamps")
                last = tok
            elif step >= 2 and is_ts[step - 1] and not is_ts[step - 2] and tok not in eos:
                problem = (
                    "a timestamp after text is followed by text, not by a timestamp or eos",
                    "a timestamp or eos",
                )
            if problem is not None:
                out.append(
                    make(record, name, problem[0], row=row, step=step, token_id=tok, expected=problem[1], found=tok)
                )
                break
    return merge(out)
