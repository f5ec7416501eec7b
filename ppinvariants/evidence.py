"""Evidence beyond one ``generate()`` call, gathered by re-running the model, stored on the record.

The invariants stay pure functions of a record: whatever needs the model again (a teacher-forced
pass, each input generated alone, a permuted batch, a second run, gradients) is computed here
once, at capture time, and kept as plain tensors in :class:`Evidence`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from . import _compat
from .rescoring import sequence_logprobs, teacher_forced_logits

if TYPE_CHECKING:
    from .capture import GenerationRecord


@dataclass
class Rerun:
    """Sequences and per-step processed scores of one more ``generate()`` call."""

    sequences: torch.Tensor
    scores: torch.Tensor
    rows: list[int] = field(default_factory=list)  # which rows of the original record these are
    sequences_scores: torch.Tensor | None = None  # beam search only


@dataclass
class Evidence:
    teacher_forced_logits: torch.Tensor | None = None
    solo: list[Rerun] | None = None  # one per input, generated alone
    permuted: Rerun | None = None  # the batch in reversed order, rows mapped back
    rerun: Rerun | None = None  # the same call again (determinism)
    train_mode_differs: bool | None = None  # dropout on: reported, never failed
    top1_sampling: torch.Tensor | None = None  # greedy records: do_sample with top_k=1
    grad_logprob: torch.Tensor | None = None  # teacher-forced, with grad (value detached)
    grad_finite: bool | None = None
    grad_nonzero: bool | None = None
    generate_grad_logprob: torch.Tensor | None = None  # from generate() run with autograd on
    errors: dict[str, str] = field(default_factory=dict)  # re-runs that raised, by key


def _generate(target: Any, batch: dict[str, torch.Tensor], decoding: Any, **override: Any) -> Rerun:
    from .capture import stack_steps

    gen_config = copy.deepcopy(target.model.generation_config)
    gen_config.update(**{**decoding.generate_kwargs(), **override})
    gen_config.return_dict_in_generate = True
    gen_config.output_scores = True
    torch.manual_seed(decoding.seed)
    with torch.no_grad():
        out = target.model.generate(**{k: v.to(target.device) for k, v in batch.items()}, generation_config=gen_config)
    seq_scores = getattr(out, "sequences_scores", None)
    return Rerun(
        sequences=out.sequences.detach().cpu(),
        scores=stack_steps(out.scores),
        sequences_scores=None if seq_scores is None else seq_scores.detach().float().cpu(),
    )


def collect_evidence(target: Any, record: GenerationRecord) -> Evidence:
    """Re-run the model as the consistency invariants need, for ``record``'s inputs and decoding.

    A re-run that raises (a NaN model crashing ``torch.multinomial``, say) is kept in
    ``Evidence.errors`` under its key; the invariant that needed it reports it as a violation.
    """
    model, d = target.model, record.decoding
    ev = Evidence()
    nrs = d.num_return_sequences
    ids = record.input_ids.repeat_interleave(nrs, dim=0)
    mask = record.attention_mask.repeat_interleave(nrs, dim=0)
    eos = record.conventions.eos_token_ids
    batch = {"input_ids": record.input_ids, "attention_mask": record.attention_mask}

    def attempt(key: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - recorded and reported by the invariant that needs it
            ev.errors[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return None

    def teacher_forcing() -> torch.Tensor:
        with torch.no_grad():
            return teacher_forced_logits(model, ids, mask, record.sequences).float().cpu()

    ev.teacher_forced_logits = attempt("teacher_forcing", teacher_forcing)
    if not d.do_sample:
        ev.solo = attempt("solo", lambda: _solo_runs(target, record))
        ev.permuted = attempt("permuted", lambda: _permuted_run(target, record))
    ev.rerun = attempt("rerun", lambda: _generate(target, batch, d))
    if ev.rerun is not None:
        ev.rerun.rows = list(range(record.sequences.shape[0]))
    if record.is_greedy:
        ev.top1_sampling = attempt(
            "top1", lambda: _generate(target, batch, dataclasses.replace(d, do_sample=True), top_k=1).sequences
        )
    ev.train_mode_differs = attempt("train_mode", lambda: _train_mode_differs(target, batch, record))

    def gradient() -> torch.Tensor:
        # Differentiable sequence log-prob by teacher forcing; its gradient must reach the parameters.
        model.zero_grad(set_to_none=True)
        try:
            with torch.enable_grad():
                lp = sequence_logprobs(model, ids, mask, record.sequences, eos_token_ids=eos)
                if lp.requires_grad:  # detached logits leave nothing to backpropagate: reported as no gradient
                    lp.sum().backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            ev.grad_finite = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)
            ev.grad_nonzero = any(bool((g != 0).any()) for g in grads)
        finally:
            model.zero_grad(set_to_none=True)
        return lp.detach().float().cpu()

    ev.grad_logprob = attempt("grad", gradient)
    if record.is_greedy:
        ev.generate_grad_logprob = attempt("generate_grad", lambda: _generate_grad_logprob(target, batch, record))
    return ev


def _solo_runs(target: Any, record: GenerationRecord) -> list[Rerun]:
    """Each input generated alone, without any padding."""
    runs = []
    nrs = record.decoding.num_return_sequences
    width = record.input_ids.shape[1]
    for i in range(record.input_ids.shape[0]):
        n = int(record.attention_mask[i].sum())
        cols = slice(width - n, width) if target.tokenizer.padding_side == "left" else slice(0, n)
        alone = {
            "input_ids": record.input_ids[i : i + 1, cols],
            "attention_mask": record.attention_mask[i : i + 1, cols],
        }
        run = _generate(target, alone, record.decoding)
        run.rows = list(range(i * nrs, (i + 1) * nrs))
        runs.append(run)
    return runs


def _permuted_run(target: Any, record: GenerationRecord) -> Rerun:
    """The batch in reverse order, with ``rows`` mapping its rows back to the record's."""
    nrs = record.decoding.num_return_sequences
    order = list(range(record.input_ids.shape[0]))[::-1]
    batch = {"input_ids": record.input_ids[order], "attention_mask": record.attention_mask[order]}
    run = _generate(target, batch, record.decoding)
    run.rows = [o * nrs + j for o in order for j in range(nrs)]
    return run


def _train_mode_differs(target: Any, batch: dict[str, torch.Tensor], record: GenerationRecord) -> bool:
    # Dropout may be nn.Dropout modules or functional calls on self.training: just try train mode.
    target.model.train()
    try:
        return not torch.equal(_generate(target, batch, record.decoding).sequences, record.sequences)
    finally:
        target.model.eval()


def _generate_grad_logprob(
    target: Any, batch: dict[str, torch.Tensor], record: GenerationRecord
) -> torch.Tensor | None:
    """Sequence log-probs from the raw logits of a ``generate()`` run with autograd on (greedy)."""
    from .capture import finished_mask, generated_tokens, masked_sum

    gen_config = copy.deepcopy(target.model.generation_config)
    gen_config.update(**record.decoding.generate_kwargs())
    gen_config.return_dict_in_generate = True
    gen_config.output_scores = True
    if not _compat.has_output_logits():
        return None
    gen_config.output_logits = True
    out = _compat.generate_with_grad(
        target.model, **{k: v.to(target.device) for k, v in batch.items()}, generation_config=gen_config
    )
    if out is None or not out.logits or not out.logits[0].requires_grad:
        return None
    logits = torch.stack(list(out.logits), dim=1)
    if out.sequences.shape != record.sequences.shape or not torch.equal(out.sequences.cpu(), record.sequences):
        return None
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(-1, out.sequences[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask, _ = finished_mask(generated_tokens(record), record.conventions.eos_token_ids)
    value = masked_sum(chosen, mask.to(chosen.device))
    if value.requires_grad:
        value.sum().backward()
    target.model.zero_grad(set_to_none=True)
    return value.detach().float().cpu()
