"""Evidence beyond one ``generate()`` call, gathered by re-running the model, stored on the record.

The invariants stay pure functions of a record: whatever needs the model again (a teacher-forced
pass, each input generated alone, a permuted batch, a second run, gradients) is computed here
once, at capture time, and kept as plain tensors in :class:`Evidence`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from . import _compat
from .decoding import effective_generation_config
from .lengths import input_limit
from .rescoring import generation_mask, teacher_forced_logits, token_logprobs

if TYPE_CHECKING:
    from .record import GenerationRecord


@dataclass
class Rerun:
    """Sequences and per-step processed scores of one more ``generate()`` call."""

    sequences: torch.Tensor
    scores: torch.Tensor
    rows: list[int] = field(default_factory=list)  # which rows of the original record these are
    sequences_scores: torch.Tensor | None = None  # beam search only
    prompt_length: int = 1  # columns of sequences before the first generated token (a decoder-only prompt's width)
    # Record rows not to be judged against this run, and why (audio padded wider: clips whose padding in the
    # record's batch was shorter than the frames their encoder reads past the mask).
    unjudged: list[int] = field(default_factory=list)
    unjudged_why: str = ""


@dataclass
class Layout:
    """The record's own sequences teacher-forced under another batch layout, reduced to what
    ``batch_and_padding_invariance`` compares (the ``[rows, steps, V]`` logits are not kept).

    Rows are the record's returned rows, in the record's order, whatever order the layout ran them in.
    ``chosen_logprob``: the raw log-prob (``log_softmax`` of the layout's logits, float32) of each row's
    own token, ``[rows, steps]``. ``decisions``: the configured processors replayed on the layout's
    logits (:func:`ppinvariants.record.replayed_decisions`), None where the record has no reference
    processors. ``name`` says which layout: :data:`REVERSED` or :data:`ALONE`.
    """

    name: str
    chosen_logprob: torch.Tensor
    decisions: torch.Tensor | None = None
    # Record rows not to be judged under this layout, and why (see Rerun.unjudged).
    unjudged: list[int] = field(default_factory=list)
    unjudged_why: str = ""


#: The batch reversed and padded :data:`EXTRA_PADDING` columns wider.
REVERSED = "in the reversed batch padded wider"
#: Each input alone: a batch of one input (its ``num_return_sequences`` rows), without padding.
ALONE = "alone"


#: Evidence depths. ``standard`` is what a CI gate can afford: per decoding, teacher-forced forward
#: passes and one backward pass, and ``generate()`` again only for sampling (see
#: :func:`collect_evidence`); ``thorough`` re-runs everything.
STANDARD = "standard"
THOROUGH = "thorough"
DEPTHS = (STANDARD, THOROUGH)

#: Padding columns added to the reversed batch, so that every row is padded differently from the
#: original batch (the longest input, unpadded there, gets this many).
EXTRA_PADDING = 3

_THOROUGH_ONLY = "collected only with thorough evidence (--thorough / --ppi-thorough / evidence='thorough')"


@dataclass
class Evidence:
    depth: str = STANDARD
    teacher_forced_logits: torch.Tensor | None = None
    solo: list[Rerun] | None = None  # one per input, generated alone (thorough)
    permuted: Rerun | None = None  # the batch reversed and padded wider, generated again, rows mapped back
    layouts: list[Layout] | None = None  # the record's sequences teacher-forced under other layouts
    rerun: Rerun | None = None  # the same call again (determinism)
    train_mode_differs: bool | None = None  # dropout on: reported, never failed (thorough)
    top1_sampling: torch.Tensor | None = None  # greedy records: do_sample with top_k=1 (thorough)
    grad_logprob: torch.Tensor | None = None  # teacher-forced, with grad (value detached)
    grad_finite: bool | None = None
    grad_nonzero: bool | None = None
    grad_scope: str = ""  # which parameters the gradient was taken with respect to
    grad_non_finite: list[str] = field(default_factory=list)  # thorough: parameters with a non-finite gradient
    generate_grad_logprob: torch.Tensor | None = None  # from generate() run with autograd on (thorough)
    errors: dict[str, str] = field(default_factory=dict)  # re-runs that raised, by key
    not_collected: dict[str, str] = field(default_factory=dict)  # re-runs left out at this depth, by key: why
    seconds: dict[str, float] = field(default_factory=dict)  # wall time each re-run took, by key (benchmarks/)


def _generate(target: Any, batch: dict[str, torch.Tensor], decoding: Any, **override: Any) -> Rerun:
    from .record import stack_steps

    gen_config = effective_generation_config(target.model.generation_config, decoding.replace(**override))
    gen_config.return_dict_in_generate = True
    gen_config.output_scores = True
    own = _compat.own_generate_kwargs(target.model, bool(gen_config.do_sample), gen_config.temperature)
    torch.manual_seed(decoding.seed)
    with torch.no_grad():
        out = target.model.generate(
            **{k: v.to(target.device) for k, v in batch.items()}, generation_config=gen_config, **own
        )
    seq_scores = getattr(out, "sequences_scores", None)
    decoder_only = bool(getattr(target.conventions, "decoder_only", False))
    if decoder_only:
        prompt_length = int(batch["input_ids"].shape[1])
    else:  # the decoder start, or a forced decoder prompt: the columns before the first scored step
        prompt_length = max(1, int(out.sequences.shape[1]) - len(out.scores)) if out.scores else 1
    return Rerun(
        sequences=out.sequences.detach().cpu(),
        scores=stack_steps(out.scores),
        sequences_scores=None if seq_scores is None else seq_scores.detach().float().cpu(),
        prompt_length=prompt_length,
    )


def collect_evidence(target: Any, record: GenerationRecord, depth: str = STANDARD) -> Evidence:
    """Re-run the model as the consistency invariants need, for ``record``'s inputs and decoding.

    Every depth: a teacher-forced pass under no_grad (the teacher-forced evidence), one with autograd
    on and its backward pass (the differentiable sequence log-prob) and, for greedy and beam search,
    the record's own sequences teacher-forced under two other layouts (:class:`Layout`, forward passes
    only: see :func:`_teacher_forced_layouts`): the batch reversed and padded :data:`EXTRA_PADDING`
    columns wider, and each input alone. ``standard`` takes the gradient
    with respect to the encoder's and decoder's input embedding activations only (every path from
    the inputs to the log-prob starts there, and no weight gradient is computed; see
    :func:`_teacher_forcing_with_grad`) and re-runs for determinism only under sampling, where
    seeded draws make it bite. ``thorough`` adds: the
    gradient with respect to every parameter, a second run of every decoding, the search itself under
    the other layouts (the reversed, wider padded batch and each input generated again), top-1 sampling
    against greedy search, a run in train mode, and greedy ``generate()``
    with autograd on. What a depth leaves out is listed in ``Evidence.not_collected``.

    A re-run that raises (a NaN model crashing ``torch.multinomial``, say) is kept in
    ``Evidence.errors`` under its key; the invariant that needed it reports it as a violation.
    """
    if depth not in DEPTHS:
        raise ValueError(f"evidence depth must be one of {DEPTHS}, not {depth!r}")
    d = record.decoding
    thorough = depth == THOROUGH
    ev = Evidence(depth=depth)
    nrs = d.num_return_sequences
    ids = record.input_ids.repeat_interleave(nrs, dim=0)
    mask = record.attention_mask.repeat_interleave(nrs, dim=0)
    batch = record.model_inputs()

    def attempt(key: str, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - recorded and reported by the invariant that needs it
            ev.errors[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return None
        finally:
            ev.seconds[key] = time.perf_counter() - start

    def leave_out(key: str, why: str = _THOROUGH_ONLY) -> None:
        ev.not_collected[key] = why

    attempt("grad", lambda: _teacher_forcing_with_grad(target, record, ids, mask, ev, thorough))
    if "grad" in ev.errors:  # the forward pass itself raised: the teacher-forced evidence is missing too
        ev.errors["teacher_forcing"] = ev.errors["grad"]
    if not d.do_sample:
        ev.layouts = attempt("layouts", lambda: _teacher_forced_layouts(target, record))
        if thorough:
            ev.permuted = attempt("permuted", lambda: _permuted_run(target, record))
            ev.solo = attempt("solo", lambda: _solo_runs(target, record))
        else:
            leave_out("permuted", "the search re-run under the reversed batch is " + _THOROUGH_ONLY)
            leave_out("solo", "each input's search re-run alone is " + _THOROUGH_ONLY)
    if thorough or d.do_sample:
        ev.rerun = attempt("rerun", lambda: _generate(target, batch, d))
        if ev.rerun is not None:
            ev.rerun.rows = list(range(record.sequences.shape[0]))
    else:
        leave_out("rerun", "standard evidence re-runs only sampling for determinism; " + _THOROUGH_ONLY)
    if not thorough:
        for key in ("top1", "train_mode", "generate_grad"):
            leave_out(key)
        return ev
    if record.is_greedy:
        ev.top1_sampling = attempt(
            "top1", lambda: _generate(target, batch, d.replace(do_sample=True), top_k=1).sequences
        )
        ev.generate_grad_logprob = attempt("generate_grad", lambda: _generate_grad_logprob(target, batch, record))
    ev.train_mode_differs = attempt("train_mode", lambda: _train_mode_differs(target, batch, record))
    return ev


def _embedding_modules(model: Any) -> list[Any]:
    """The input embedding modules of the model, its encoder and its decoder (each once, when shared)."""

    def call(obj: Any, getter: str) -> Any:
        try:  # the base class raises NotImplementedError where a model defines no such accessor
            return getattr(obj, getter)() if obj is not None and hasattr(obj, getter) else None
        except (NotImplementedError, AttributeError):
            return None

    found: dict[int, Any] = {}
    for part in (model, call(model, "get_encoder"), call(model, "get_decoder")):
        module = call(part, "get_input_embeddings")
        if isinstance(module, torch.nn.Module):
            found[id(module)] = module
    return list(found.values())


def _teacher_forcing_with_grad(
    target: Any, record: GenerationRecord, ids: torch.Tensor, mask: torch.Tensor, ev: Evidence, thorough: bool
) -> None:
    """Teacher forcing: fills the teacher-forced logits (a pass under no_grad) and the gradient evidence
    (a pass with autograd on, then one backward pass).

    Thorough: the gradient with respect to every parameter that requires one; some must be present,
    all finite (those that are not are named in ``ev.grad_non_finite``), and not all zero. Standard: the
    gradient with respect to the *outputs* of the input embedding modules in the pass (the encoder's
    and the decoder's inputs): every module whose output requires a gradient must receive one, finite,
    and not all zero in at least one of its outputs. Every path from the inputs to the log-prob starts
    there, and the backward pass computes no weight gradient at all.
    """
    model = target.model
    nrs = record.decoding.num_return_sequences
    encoder = {} if record.encoder_inputs is None else {"encoder_inputs": record.model_inputs(repeat=nrs)}
    # The teacher-forced evidence comes from a pass under no_grad, as generation ran: with autograd
    # on, attention may take another kernel (T5-family logits then differ by up to 1e-3 in float32).
    with torch.no_grad():
        ev.teacher_forced_logits = (
            teacher_forced_logits(model, ids, mask, record.sequences, prompt_length=record.prompt_length, **encoder)
            .float()
            .cpu()
        )
    captured: list[tuple[int, torch.Tensor]] = []  # (embedding module id, its output in this pass)

    def keeper(module: Any) -> Any:
        def keep(_module: Any, _args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                captured.append((id(module), output))

        return keep

    hooks = [] if thorough else [m.register_forward_hook(keeper(m)) for m in _embedding_modules(model)]
    try:
        with torch.enable_grad():
            logits = teacher_forced_logits(
                model, ids, mask, record.sequences, prompt_length=record.prompt_length, **encoder
            )
            chosen = token_logprobs(logits, record.sequences, record.prompt_length)
            live = generation_mask(record.sequences, record.conventions.eos_token_ids, record.prompt_length)
            live = live.to(chosen.device)
            lp = torch.where(live.bool(), chosen, torch.zeros_like(chosen)).sum(dim=1)
    finally:
        for h in hooks:
            h.remove()
    ev.grad_logprob = lp.detach().float().cpu()
    if captured:
        inputs, ev.grad_scope = [out for _, out in captured], "the encoder's and decoder's input embeddings"
    else:  # thorough, or no embedding module found: every parameter
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        inputs, ev.grad_scope = [p for _, p in named], "every parameter"
    grads: list[torch.Tensor | None] = [None] * len(inputs)
    if lp.requires_grad and inputs:  # detached logits leave nothing to backpropagate: reported as no gradient
        grads = list(torch.autograd.grad(lp.sum(), inputs, allow_unused=True))
    if captured:
        # Each embedding module must pass a usable gradient: finite everywhere, and not all zero in at
        # least one of its outputs (LED embeds its window padding separately: that output gets zero).
        ev.grad_finite = all(g is None or bool(torch.isfinite(g).all()) for g in grads)
        nonzero: dict[int, bool] = {}
        for (module, _), g in zip(captured, grads, strict=True):
            nonzero[module] = nonzero.get(module, False) or (g is not None and bool((g != 0).any()))
        reached = {module for (module, _), g in zip(captured, grads, strict=True) if g is not None}
        ev.grad_finite = ev.grad_finite and reached == set(nonzero)
        ev.grad_nonzero = all(nonzero.values())
    else:
        present = [g for g in grads if g is not None]
        ev.grad_finite = bool(present) and all(bool(torch.isfinite(g).all()) for g in present)
        ev.grad_non_finite = [
            n for (n, _), g in zip(named, grads, strict=True) if g is not None and not g.isfinite().all()
        ]
        ev.grad_nonzero = any(bool((g != 0).any()) for g in present)


def _solo_runs(target: Any, record: GenerationRecord, inputs: list[int] | None = None) -> list[Rerun]:
    """Each input (of ``inputs``; all by default) generated alone, without any padding."""
    runs = []
    nrs = record.decoding.num_return_sequences
    for i in range(record.batch_size) if inputs is None else inputs:
        run = _generate(target, _alone_batch(target, record, i), record.decoding)
        run.rows = list(range(i * nrs, (i + 1) * nrs))
        runs.append(run)
    return runs


def _padding_side(target: Any) -> str:
    """The side the record's batch was padded on: the conventions' (left for a decoder-only model)."""
    side = getattr(target.conventions, "padding_side", None)
    return str(side or getattr(target.tokenizer, "padding_side", "right"))


def _reversed_batch(target: Any, record: GenerationRecord) -> tuple[list[int], dict[str, torch.Tensor]]:
    """``(order, batch)``: the record's inputs in reverse order, padded :data:`EXTRA_PADDING` columns wider.

    The extra columns are padding on the tokenizer's padding side, masked out, so every row sees
    other neighbours and another amount of padding than in the record's batch. They are left out
    when they would not fit the model's positions. Audio under an attention mask is padded wider
    likewise (:func:`widened_audio`); other speech and vision batches are reversed only.
    """
    order = list(range(record.batch_size))[::-1]
    if record.encoder_inputs is not None:
        # Audio under an attention mask padded wider too (see widened_audio); Whisper's fixed window
        # and resized images have no padding to widen.
        return order, widened_audio(target, record.model_inputs(order))
    ids, mask = record.input_ids[order], record.attention_mask[order]
    extra = EXTRA_PADDING if ids.shape[1] + EXTRA_PADDING <= input_limit(target.tokenizer, target.model).tokens else 0
    pad_id = target.tokenizer.pad_token_id
    if extra and pad_id is not None:
        pad_ids = torch.full((ids.shape[0], extra), int(pad_id), dtype=ids.dtype)
        pad_mask = torch.zeros((mask.shape[0], extra), dtype=mask.dtype)
        left = _padding_side(target) == "left"
        ids = torch.cat([pad_ids, ids] if left else [ids, pad_ids], dim=1)
        mask = torch.cat([pad_mask, mask] if left else [mask, pad_mask], dim=1)
    return order, {"input_ids": ids, "attention_mask": mask}


def _alone_batch(target: Any, record: GenerationRecord, i: int) -> dict[str, torch.Tensor]:
    """Input ``i`` as a batch of one: its token columns without padding (a speech or vision input: its
    row of the encoder tensors)."""
    if record.encoder_inputs is not None:
        return record.model_inputs(slice(i, i + 1))
    width = record.input_ids.shape[1]
    n = int(record.attention_mask[i].sum())
    cols = slice(width - n, width) if _padding_side(target) == "left" else slice(0, n)
    return {"input_ids": record.input_ids[i : i + 1, cols], "attention_mask": record.attention_mask[i : i + 1, cols]}


def _unjudged_when_widened(target: Any, record: GenerationRecord) -> tuple[list[int], str]:
    """``(rows, why)``: the record rows :func:`_reversed_batch` cannot judge, and why (none for most models).

    An encoder whose convolutional subsampler reads frames past a clip before its mask applies (Speech2Text,
    as fairseq's) changes its last encoder states by design when the clip gets more padding: a clip padded
    by fewer than that many frames in the record's batch is left out of the comparison.
    """
    reach = _compat.frames_read_past_the_mask(target.model)
    mask = (record.encoder_inputs or {}).get("attention_mask")
    if not reach or mask is None or audio_padding(record.model_inputs()) is None:
        return [], ""
    nrs = record.decoding.num_return_sequences
    short = [i for i, n in enumerate((mask.shape[1] - mask.sum(dim=1)).tolist()) if n < reach]
    if not short:
        return [], ""
    inputs = ", ".join(f"#{i}" for i in short)
    why = (
        f"input {inputs} not judged in it: padded by fewer than {reach} frames in the batch, and "
        f"{record.model_type}'s convolutional subsampler reads {reach} frames past a clip before the "
        "mask applies, so more padding changes its last encoder states by design"
    )
    return [i * nrs + j for i in short for j in range(nrs)], why


def _permuted_run(target: Any, record: GenerationRecord) -> Rerun:
    """The batch of :func:`_reversed_batch` generated again, ``rows`` mapping its rows back."""
    nrs = record.decoding.num_return_sequences
    order, batch = _reversed_batch(target, record)
    run = _generate(target, batch, record.decoding)
    run.rows = [o * nrs + j for o in order for j in range(nrs)]
    run.unjudged, run.unjudged_why = _unjudged_when_widened(target, record)
    return run


def _teacher_forced(
    target: Any, record: GenerationRecord, batch: dict[str, torch.Tensor], rows: list[int]
) -> torch.Tensor:
    """Raw logits ``[len(rows), steps, V]`` (float32, CPU) of the record's ``rows`` teacher-forced (no cache,
    under no_grad) with ``batch`` as the encoder's inputs, one input per ``num_return_sequences`` rows."""
    nrs = record.decoding.num_return_sequences
    batch = {k: v.repeat_interleave(nrs, dim=0) for k, v in batch.items()}
    seqs, prompt_length = record.sequences[rows], record.prompt_length
    if record.decoder_only:  # the prompt as this layout pads it, then the row's generated tokens
        seqs = torch.cat([batch["input_ids"], seqs[:, prompt_length:]], dim=1)
        prompt_length = int(batch["input_ids"].shape[1])
    with torch.no_grad():
        if record.encoder_inputs is not None:
            empty = torch.empty(len(rows), 0, dtype=torch.long)
            out = teacher_forced_logits(
                target.model, empty, empty, seqs, prompt_length=record.prompt_length, encoder_inputs=batch
            )
        else:
            out = teacher_forced_logits(
                target.model, batch["input_ids"], batch["attention_mask"], seqs, prompt_length=prompt_length
            )
        return out.float().cpu()


def _layout(record: GenerationRecord, name: str, logits: torch.Tensor) -> Layout:
    """A :class:`Layout` from the layout's teacher-forced logits, rows in the record's order."""
    from .record import generated_tokens, replayed_decisions

    tokens = generated_tokens(record)
    lse = torch.logsumexp(logits, dim=-1)
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    decisions = replayed_decisions(record, logits) if record.processing is not None else None
    return Layout(name, chosen, decisions)


def _teacher_forced_layouts(target: Any, record: GenerationRecord) -> list[Layout]:
    """The record's own sequences teacher-forced under :data:`REVERSED` and :data:`ALONE`.

    One forward pass for the reversed, wider padded batch, and one per input alone: no ``generate()``.
    If the configured processors, replayed on these logits, pick the record's greedy token at every
    step, greedy search under that layout generates the same tokens (by induction on the prefix); for
    beam search they rescore each returned hypothesis. Each input alone also sees what a reversed batch
    cannot (it holds the same rows): an input whose outputs depend on which other inputs share its
    batch. What these passes cannot show is the search itself under another batch (which hypotheses a
    batch-wide stop keeps): thorough evidence generates again. A decoder-only model's rows are re-laid
    with the prompt: the layout's padded prompt, then the row's generated tokens.
    """
    nrs = record.decoding.num_return_sequences
    order, batch = _reversed_batch(target, record)
    rows = [o * nrs + j for o in order for j in range(nrs)]
    logits = _teacher_forced(target, record, batch, rows)
    in_order = torch.empty_like(logits)
    in_order[rows] = logits
    del logits
    layouts = [_layout(record, REVERSED, in_order)]
    layouts[0].unjudged, layouts[0].unjudged_why = _unjudged_when_widened(target, record)
    for i in range(record.batch_size):
        group = list(range(i * nrs, (i + 1) * nrs))
        in_order[group] = _teacher_forced(target, record, _alone_batch(target, record, i), group)
    layouts.append(_layout(record, ALONE, in_order))
    return layouts


def audio_padding(batch: dict[str, torch.Tensor]) -> tuple[str, int] | None:
    """For an audio batch under an attention mask over its time axis (``input_values`` samples of a wav2vec2,
    ``input_features`` frames of Speech2Text): its input key and how many steps :func:`widened_audio` adds
    (an eighth of the width, at least :data:`EXTRA_PADDING`: enough to add encoder positions after the
    encoders' downsampling). None where there is no such mask (Whisper pads to a fixed window and takes
    none; images are resized to one size)."""
    mask = batch.get("attention_mask")
    key = next((k for k in ("input_values", "input_features") if k in batch), None)
    if mask is None or key is None or batch[key].dim() < 2 or batch[key].shape[1] != mask.shape[1]:
        return None
    return key, max(EXTRA_PADDING, int(mask.shape[1]) // 8)


def widened_audio(target: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` with :func:`audio_padding`'s extra steps of padding on the feature extractor's padding side,
    filled with its padding value (what it pads shorter clips with) and masked out; unchanged where
    :func:`audio_padding` is None."""
    found = audio_padding(batch)
    if found is None:
        return batch
    key, extra = found
    extractor = getattr(getattr(target, "processor", None), "feature_extractor", None)
    value = float(getattr(extractor, "padding_value", 0.0) or 0.0)
    left = getattr(extractor, "padding_side", "right") == "left"
    x, mask = batch[key], batch["attention_mask"]
    pad_x = torch.full((x.shape[0], extra, *x.shape[2:]), value, dtype=x.dtype)
    pad_mask = torch.zeros((mask.shape[0], extra), dtype=mask.dtype)
    return {
        **batch,
        key: torch.cat([pad_x, x] if left else [x, pad_x], dim=1),
        "attention_mask": torch.cat([pad_mask, mask] if left else [mask, pad_mask], dim=1),
    }


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
    from .record import finished_mask, generated_tokens, masked_sum

    gen_config = effective_generation_config(target.model.generation_config, record.decoding)
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
    chosen = lp.gather(-1, out.sequences[:, record.prompt_length :].unsqueeze(-1)).squeeze(-1)
    mask, _ = finished_mask(generated_tokens(record), record.conventions.eos_token_ids)
    value = masked_sum(chosen, mask.to(chosen.device))
    if value.requires_grad:
        value.sum().backward()
    target.model.zero_grad(set_to_none=True)
    return value.detach().float().cpu()
