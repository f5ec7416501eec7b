"""Checking a user's own sequence log-prob function (a training loop's) against :func:`sequence_logprobs`.

A reinforcement-learning loop computes ``log p(y | x)`` of generated rows with its own code: a
teacher-forced pass, a gather, and a mask of the generated tokens. :func:`check_logprob_fn` captures
real ``generate()`` outputs of a target (left-padded batches for a decoder-only model, greedy and
sampled by default), gives them to the user's function as a training loop has them, and compares
each row's value with ppinvariants' own :func:`ppinvariants.rescoring.sequence_logprobs` on the same
rows. Every row that differs is reported with its input, expected and found values, and the
tokens where the row ends. The classic bug it catches: a mask built as ``sequences != pad_token_id``
where pad is eos (a tokenizer without a pad token), which drops each row's real eos.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .capturing import capture
from .decoding import GREEDY, SAMPLE, Decoding, for_decoder_only
from .errors import UsageError
from .record import GenerationRecord, generated_tokens
from .rescoring import generation_mask, sequence_logprobs
from .targets import Target, load_target
from .texts import DEFAULT_TEXTS

#: Keyword arguments a user's function may declare; each is passed only where its signature names it.
OPTIONAL_ARGUMENTS = ("input_ids", "eos_token_id", "pad_token_id")

LogprobFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LogprobMismatch:
    """One row whose sequence log-prob differs from the reference."""

    decoding: str
    row: int
    text: str
    expected: float
    found: float
    ending: str  # the row's last counted tokens and what follows them

    def __str__(self) -> str:
        return (
            f"{self.decoding} row {self.row} (input {self.text[:40]!r}): expected {self.expected:.6g}, "
            f"found {self.found:.6g} (difference {self.found - self.expected:+.6g}); the row ends {self.ending}"
        )


class LogprobMismatchError(AssertionError):
    """A user's log-prob function disagrees with :func:`~ppinvariants.rescoring.sequence_logprobs`."""


@dataclass
class LogprobCheck:
    """The outcome of :func:`check_logprob_fn`: rows compared, and every row that differs."""

    target: str
    rows: int = 0
    mismatches: list[LogprobMismatch] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every row agreed with the reference."""
        return not self.mismatches

    def render(self, max_rows: int = 5) -> str:
        """The diagnosis: a summary line, up to ``max_rows`` mismatching rows, and the likely cause."""
        if self.ok:
            return f"{self.target}: the log-prob function agrees with sequence_logprobs on {self.rows} rows"
        lines = [f"{self.target}: the log-prob function differs on {len(self.mismatches)} of {self.rows} rows"]
        lines += [f"  - {m}" for m in self.mismatches[:max_rows]]
        if len(self.mismatches) > max_rows:
            lines.append(f"  ... and {len(self.mismatches) - max_rows} more")
        lines += [f"  likely: {h}" for h in self.hints]
        return "\n".join(lines)


def _call(fn: LogprobFn, model: Any, record: GenerationRecord) -> torch.Tensor:
    """``fn`` on the record's rows, as a training loop has them (see :func:`check_logprob_fn`)."""
    rows = record.sequences.shape[0]
    per_input = max(1, rows // record.input_ids.shape[0])
    input_ids = record.input_ids.repeat_interleave(per_input, dim=0)
    prompt_mask = record.attention_mask.repeat_interleave(per_input, dim=0)
    if record.decoder_only:
        # What generate() attended to: the prompt's mask, then every generated column.
        extra = record.sequences.shape[1] - prompt_mask.shape[1]
        attention_mask = torch.cat([prompt_mask, torch.ones(rows, extra, dtype=prompt_mask.dtype)], dim=1)
    else:
        attention_mask = prompt_mask
    c = record.conventions
    optional = {
        "input_ids": input_ids,
        "eos_token_id": list(c.eos_token_ids),
        "pad_token_id": c.pad_token_id,
    }
    try:
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_all = {}, False  # type: ignore[assignment]
    kwargs = {k: v for k, v in optional.items() if takes_all or k in params}
    with torch.no_grad():
        found = fn(model, record.sequences.clone(), attention_mask, record.prompt_length, **kwargs)
    if not isinstance(found, torch.Tensor) or tuple(found.shape) != (rows,):
        shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
        raise UsageError(
            f"the log-prob function must return one value per row, a tensor of shape ({rows},), not {shape}"
        )
    return found.detach().float().cpu()


def _ending(record: GenerationRecord, row: int) -> str:
    """The row's last counted tokens (up to and including its first eos) and the first one after them."""
    tokens = generated_tokens(record)[row]
    n = int(
        generation_mask(record.sequences[row : row + 1], record.conventions.eos_token_ids, record.prompt_length).sum()
    )
    shown = [record.token_text(int(t)) for t in tokens[max(0, n - 2) : n]]
    after = [record.token_text(int(t)) for t in tokens[n : n + 1]]
    return " ".join(repr(t) for t in shown) + (f" | then {after[0]!r}" if after else " (length limit)")


def _hints(record: GenerationRecord, mismatches: list[LogprobMismatch], lp_eos: dict[int, float]) -> list[str]:
    """Causes that explain every mismatch: the first eos left out (a ``!= pad`` mask where pad is eos)."""
    c = record.conventions
    tol = record.tolerance * 10 * max(1, record.steps)
    if mismatches and all(m.row in lp_eos and abs(m.found - (m.expected - lp_eos[m.row])) <= tol for m in mismatches):
        why = (
            f"pad ({c.pad_token_id}) is an eos id, so a mask built as `sequences != pad_token_id` drops it"
            if c.pad_token_id in c.eos_token_ids
            else "the mask ends before the eos"
        )
        return [f"each differing row misses exactly its eos token's log-prob: {why}; mask up to the first eos"]
    return []


def check_logprob_fn(
    fn: LogprobFn,
    target: Target | str = "tiny:gpt2",
    *,
    texts: Sequence[str] = DEFAULT_TEXTS,
    decodings: Sequence[Decoding] = (GREEDY, SAMPLE),
    atol: float | None = None,
    raise_on_mismatch: bool = True,
) -> LogprobCheck:
    """Compare a user's sequence log-prob function with :func:`~ppinvariants.rescoring.sequence_logprobs`.

    ``fn(model, sequences, attention_mask, prompt_length, **optional) -> Tensor[rows]`` is called, under
    ``torch.no_grad()``, on each captured batch: ``sequences`` as ``generate()`` returned them (a decoder-only
    row echoes its left-padded prompt), ``attention_mask`` over ``sequences`` for a decoder-only model (the
    prompt's mask, then ones over the generated columns) or the encoder's for an encoder-decoder one, and
    ``prompt_length`` the column where the generated part starts (1, the decoder start, for an
    encoder-decoder model). Of ``input_ids`` (one row per sequence), ``eos_token_id`` (a list) and
    ``pad_token_id``, it is given those its signature names (all with ``**kwargs``). It must return each
    row's summed log-prob of the generated tokens.

    ``target``: a :class:`~ppinvariants.targets.Target` or a target spec (``tiny:gpt2``, whose pad is its eos,
    by default). Each of ``decodings`` (greedy and sampling by default; the built-ins are adapted to a
    decoder-only model as the checks run them) is captured on ``texts``. A row differs when
    ``|found - expected| > atol`` (default: the record's tolerance times 10 per step, as the checks compare
    sequence log-probs). Returns the :class:`LogprobCheck`; with ``raise_on_mismatch`` (the default) a
    mismatch raises :class:`LogprobMismatchError` with the diagnosis instead.
    """
    if not callable(fn):
        raise UsageError(f"the log-prob function must be callable, not {type(fn).__name__}")
    if isinstance(target, str):
        target = load_target(target)
    result = LogprobCheck(target=target.spec)
    hints: list[str] = []
    for decoding in decodings:
        if target.conventions.decoder_only:
            decoding = for_decoder_only(decoding)
        record = capture(target, list(texts), decoding, evidence=False)
        with torch.no_grad():
            expected = sequence_logprobs(target.model, record).float().cpu()
            per_token = sequence_logprobs(target.model, record, reduction="none").float().cpu()
        found = _call(fn, target.model, record)
        tol = atol if atol is not None else record.tolerance * 10 * max(1, record.steps)
        per_input = max(1, record.sequences.shape[0] // len(record.texts))
        mask = generation_mask(record.sequences, record.conventions.eos_token_ids, record.prompt_length)
        lengths = mask.sum(dim=1)
        tokens = generated_tokens(record)
        lp_eos = {
            r: float(per_token[r, int(lengths[r]) - 1])
            for r in range(tokens.shape[0])
            if int(lengths[r]) > 0 and int(tokens[r, int(lengths[r]) - 1]) in record.conventions.eos_token_ids
        }
        bad = (~torch.isclose(found, expected, atol=tol, rtol=0)).nonzero().flatten().tolist()
        mismatches = [
            LogprobMismatch(
                decoding=decoding.name,
                row=r,
                text=record.texts[r // per_input],
                expected=float(expected[r]),
                found=float(found[r]),
                ending=_ending(record, r),
            )
            for r in bad
        ]
        result.rows += int(expected.shape[0])
        result.mismatches += mismatches
        hints += [h for h in _hints(record, mismatches, lp_eos) if h not in hints]
    result.hints = hints if result.mismatches else []
    if raise_on_mismatch and not result.ok:
        raise LogprobMismatchError(result.render())
    return result


__all__ = ["LogprobCheck", "LogprobMismatch", "LogprobMismatchError", "check_logprob_fn"]
