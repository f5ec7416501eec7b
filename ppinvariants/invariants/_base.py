"""What every invariant module shares: the registry, and building diagnostic violations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import NotApplicable
from ..record import GenerationRecord
from ..report import Violation

#: Violations kept per result; the total is still counted.
MAX_KEPT = 20


class Violations(list):
    """A list of the first :data:`MAX_KEPT` violations, with ``total`` counting all of them."""

    total: int = 0


Check = Callable[[GenerationRecord], list[Violation]]


@dataclass(frozen=True)
class Invariant:
    """A named property of a generation record; ``check`` returns the violations (empty: it holds)."""

    name: str
    family: str
    check: Check
    note: Callable[[GenerationRecord], str | None] | None = None  # informational text for the result

    @property
    def doc(self) -> str:
        return (self.check.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


REGISTRY: dict[str, Invariant] = {}


def invariant(family: str, *, note: Callable[[GenerationRecord], str | None] | None = None) -> Callable[[Check], Check]:
    """Register a check function under its own name, in ``family``; ``note`` adds a reported remark."""

    def deco(fn: Check) -> Check:
        REGISTRY[fn.__name__] = Invariant(fn.__name__, family, fn, note)
        return fn

    return deco


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _with_text(record: GenerationRecord, pieces: str, ids: list[int], at: int) -> str:
    """``pieces`` followed by the same tokens as decoded text, the token at index ``at`` of ``ids`` in ``[[ ]]``."""
    before, token, after = (record.decoded_text(part) for part in (ids[:at], ids[at : at + 1], ids[at + 1 :]))
    if not (before or token or after):
        return pieces
    return f"{pieces} (text: {before + '[[' + token + ']]' + after!r})"


def generated_context(record: GenerationRecord, row: int, step: int, width: int = 3) -> str:
    """Tokens of ``row`` around generated ``step`` as pieces, the step's token in ``[[ ]]``, then the same
    tokens as decoded text (byte-level pieces such as ``'Ġpolic'`` are hard to read alone)."""
    seq = record.sequences[row].tolist()
    pos = step + record.prompt_length  # sequences start with the decoder start (or the decoder-only prompt)
    lo, hi = max(0, pos - width), min(len(seq), pos + 2)
    parts = []
    for p in range(lo, hi):
        text = repr(record.token_text(seq[p]))
        parts.append(f"[[{text}]]" if p == pos else text)
    prefix = "... " if lo > 0 else ""
    suffix = " ..." if hi < len(seq) else ""
    return _with_text(record, prefix + " ".join(parts) + suffix, seq[lo:hi], pos - lo)


def step_summary(record: GenerationRecord, row: int, step: int, k: int = 3) -> str:
    """``; top: 'a' 0.41, 'b' 0.20, 'c' 0.10; entropy 2.31`` for the step distribution behind ``row``, as explain shows it."""
    from ..record import NOT_KEPT, log_probs, score_rows, vocab_summary

    if record.scores is None or record.scores is NOT_KEPT or step >= record.scores.shape[1] or step >= record.steps:
        return ""
    src = int(score_rows(record)[row, step])
    if src < 0:
        return ""
    lp = log_probs(record.scores[src, step])
    p = lp.exp()
    if not bool(torch.isfinite(p).all()):
        return "; top: (not a distribution)"
    h = float(vocab_summary(record.scores[src, step]).entropy)  # as step_entropy_within_bounds reads it
    top_p, top_i = p.topk(min(k, p.shape[-1]))
    top = ", ".join(f"{record.token_text(int(i))!r} {float(q):.2f}" for q, i in zip(top_p, top_i, strict=True))
    return f"; top: {top}; entropy {h:.2f}"


def beam_row_context(record: GenerationRecord, beam_row: int, step: int, k: int = 3) -> str:
    """Which hypothesis a beam row is at ``step``, and the top tokens of its step distribution
    (beam rows are not returned sequences, so there are no tokens around the step to show)."""
    from ..record import NOT_KEPT, log_probs

    nb = record.beams_per_input
    head = f"beam {beam_row % nb} of {nb} for input #{beam_row // nb} at step {step}"
    scores = record.scores
    if scores is None or scores is NOT_KEPT or beam_row >= scores.shape[0] or step >= scores.shape[1]:
        return head
    lp = scores[beam_row, step].float() if record.is_beam else log_probs(scores[beam_row, step])
    p = lp.exp()
    finite = torch.isfinite(p)
    if not bool(finite.any()):
        return head + "; top: (no finite score)"
    top_p, top_i = torch.where(finite, p, torch.full_like(p, -1.0)).topk(min(k, p.shape[-1]))
    top = ", ".join(
        f"{record.token_text(int(i))!r} {float(q):.2f}" for q, i in zip(top_p, top_i, strict=True) if float(q) >= 0
    )
    return f"{head}; top: {top}"


def input_context(record: GenerationRecord, row: int, pos: int, width: int = 3) -> str:
    """Input tokens of ``row`` around input position ``pos`` as pieces, that token in ``[[ ]]``, then as decoded text."""
    ids = record.input_ids[row].tolist()
    lo, hi = max(0, pos - width), min(len(ids), pos + 2)
    parts = [
        f"[[{record.token_text(ids[p])!r}]]" if p == pos else repr(record.token_text(ids[p])) for p in range(lo, hi)
    ]
    pieces = ("... " if lo > 0 else "") + " ".join(parts) + (" ..." if hi < len(ids) else "")
    return _with_text(record, pieces, ids[lo:hi], pos - lo)


def make(
    record: GenerationRecord,
    name: str,
    what: str,
    *,
    row: int | None = None,
    step: int | None = None,
    token_id: int | None = None,
    expected: object = None,
    found: object = None,
    on_input: bool = False,
    input_pos: int | None = None,
    score_row: bool = False,
    kind: str | None = None,
) -> Violation:
    """A violation whose message names the check, example, step, token (id and text), expected vs found.

    ``row`` indexes ``sequences`` by default; with ``score_row`` it indexes the rows of ``scores``,
    which in beam search are beams (``batch * num_beams``), not returned sequences.
    """
    where = []
    beam_row = score_row and record.is_beam
    if row is not None:
        if on_input:
            src = row
        elif beam_row:
            src = row // record.beams_per_input
        else:
            src = record.input_of_row(row)
        text = record.texts[src] if src < len(record.texts) else "?"
        short = text if len(text) <= 40 else text[:37] + "..."
        where.append(f"{'beam row' if beam_row else 'row'} {row} (input #{src} {short!r})")
    if step is not None:
        where.append(f"step {step}")
    if input_pos is not None:
        where.append(f"input position {input_pos}")
    token = None
    if token_id is not None:
        token = record.token_text(token_id)
        where.append(f"token {token_id} {token!r}")
    message = f"{name}: {what}"
    if where:
        message += " at " + ", ".join(where)
    if expected is not None or found is not None:
        message += f"; expected {fmt(expected)}, found {fmt(found)}"
    context = None
    if row is not None and on_input and input_pos is not None:
        context = input_context(record, row, input_pos)
    elif row is not None and step is not None and not on_input and not beam_row:
        context = generated_context(record, row, step) + step_summary(record, row, step)
    elif row is not None and step is not None and beam_row:
        context = beam_row_context(record, row, step)
    return Violation(
        invariant=name,
        message=message,
        row=row,
        step=step,
        token_id=token_id,
        token=token,
        expected=None if expected is None else fmt(expected),
        found=None if found is None else fmt(found),
        context=context,
        kind=kind,
    )


def from_positions(positions: torch.Tensor, build: Callable[[tuple[int, ...]], Violation]) -> Violations:
    """Build violations for the first :data:`MAX_KEPT` rows of an ``[N, k]`` index tensor, counting all N."""
    out = Violations()
    out.total = int(positions.shape[0])
    for idx in positions[:MAX_KEPT].tolist():
        out.append(build(tuple(int(i) for i in idx)))
    return out


def merge(*parts: list[Violation]) -> Violations:
    out = Violations()
    for p in parts:
        out.total += getattr(p, "total", len(p))
        out.extend(p[: max(0, MAX_KEPT - len(out))])
    return out


def require_text_inputs(record: GenerationRecord, what: str) -> None:
    """Raise :class:`NotApplicable` naming the model and its inputs where they are not token ids (a speech
    or vision model): ``whisper takes audio inputs (input_features), not token ids: <what>``."""
    if record.modality == "text":
        return
    keys = ", ".join(k for k in (record.encoder_inputs or {}) if k != "attention_mask") or "no token ids"
    raise NotApplicable(
        f"{record.model_type or 'the model'} takes {record.modality} inputs ({keys}), not token ids: {what}"
    )
