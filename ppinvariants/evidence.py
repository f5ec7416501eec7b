"""Evidence beyond one ``generate()`` call, gathered by re-running the model, stored on the record.

The invariants stay pure functions of a record: whatever needs the model again (a teacher-forced
pass, each input generated alone, a permuted batch, a second run, gradients) is computed here
once, at capture time, and kept as plain tensors in :class:`Evidence`.
"""

from __future__ import annotations

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


#: Evidence depths. ``standard`` is what a CI gate can afford: per decoding, two teacher-forced
#: forward passes and one backward pass, and one more ``generate()`` call (see :func:`collect_evidence`);
#: ``thorough`` re-runs everything.
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
    permuted: Rerun | None = None  # the batch reversed and padded wider, rows mapped back
    rerun: Rerun | None = None  # the same call again (determinism)
    train_mode_differs: bool | None = None  # dropout on: reported, never failed (thorough)
    top1_sampling: torch.Tensor | None = None  # greedy records: do_sample with top_k=1 (thorough)
    grad_logprob: torch.Tensor | None = None  # teacher-forced, with grad (value detached)
    grad_finite: bool | None = None
    grad_nonzero: bool | None = None
    grad_scope: str = ""  # which parameters the gradient was taken with respect to
    generate_grad_logprob: torch.Tensor | None = None  # from generate() run with autograd on (thorough)
    errors: dict[str, str] = field(default_factory=dict)  # re-runs that raised, by key
    not_collected: dict[str, str] = field(default_factory=dict)  # re-runs left out at this depth, by key: why


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
    on and its backward pass (the differentiable sequence log-prob) and, for greedy and beam search, the
    batch reversed and padded :data:`EXTRA_PADDING` columns wider. ``standard`` takes the gradient
    with respect to the encoder's and decoder's input embedding activations only (every path from
    the inputs to the log-prob starts there, and no weight gradient is computed; see
    :func:`_teacher_forcing_with_grad`) and re-runs for determinism only under sampling, where
    seeded draws make it bite. ``thorough`` adds: the
    gradient with respect to every parameter, a second run of every decoding, each input generated
    alone, top-1 sampling against greedy search, a run in train mode, and greedy ``generate()``
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
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - recorded and reported by the invariant that needs it
            ev.errors[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return None

    def leave_out(key: str, why: str = _THOROUGH_ONLY) -> None:
        ev.not_collected[key] = why

    attempt("grad", lambda: _teacher_forcing_with_grad(target, record, ids, mask, ev, thorough))
    if "grad" in ev.errors:  # the forward pass itself raised: the teacher-forced evidence is missing too
        ev.errors["teacher_forcing"] = ev.errors["grad"]
    if not d.do_sample:
        ev.permuted = attempt("permuted", lambda: _permuted_run(target, record))
        if thorough:
            ev.solo = attempt("solo", lambda: _solo_runs(target, record))
        elif record.decoder_only:
            # Left-padding invariance at every depth for a decoder-only model: the prompt with the most
            # left padding in the batch, generated alone (the one most exposed to padding mistakes).
            most = int(record.attention_mask.sum(dim=1).argmin())
            ev.solo = attempt("solo", lambda: _solo_runs(target, record, [most]))
        else:
            leave_out("solo")
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
    all finite, and not all zero. Standard: the gradient with respect to the *outputs* of the input
    embedding modules in the pass (the encoder's and the decoder's inputs): every module whose output
    requires a gradient must receive one, finite, and not all zero in at least one of its outputs.
    Every path from the inputs to the log-prob starts there, and the backward pass computes no
    weight gradient at all.
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
        inputs, ev.grad_scope = [p for p in model.parameters() if p.requires_grad], "every parameter"
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
        ev.grad_nonzero = any(bool((g != 0).any()) for g in present)


def _solo_runs(target: Any, record: GenerationRecord, inputs: list[int] | None = None) -> list[Rerun]:
    """Each input (of ``inputs``; all by default) generated alone, without any padding."""
    runs = []
    nrs = record.decoding.num_return_sequences
    width = record.input_ids.shape[1]
    for i in range(record.input_ids.shape[0]) if inputs is None else inputs:
        if record.encoder_inputs is not None:  # a speech or vision input: its own row of the encoder tensors
            alone = record.model_inputs(slice(i, i + 1))
            run = _generate(target, alone, record.decoding)
            run.rows = list(range(i * nrs, (i + 1) * nrs))
            runs.append(run)
            continue
        n = int(record.attention_mask[i].sum())
        cols = slice(width - n, width) if _padding_side(target) == "left" else slice(0, n)
        alone = {
            "input_ids": record.input_ids[i : i + 1, cols],
            "attention_mask": record.attention_mask[i : i + 1, cols],
        }
        run = _generate(target, alone, record.decoding)
        run.rows = list(range(i * nrs, (i + 1) * nrs))
        runs.append(run)
    return runs


def _padding_side(target: Any) -> str:
    """The side the record's batch was padded on: the conventions' (left for a decoder-only model)."""
    side = getattr(target.conventions, "padding_side", None)
    return str(side or getattr(target.tokenizer, "padding_side", "right"))


def _permuted_run(target: Any, record: GenerationRecord) -> Rerun:
    """The batch in reverse order and :data:`EXTRA_PADDING` columns wider, ``rows`` mapping its rows back.

    The extra columns are padding on the tokenizer's padding side, masked out, so every row sees
    other neighbours and another amount of padding than in the record's batch. They are left out
    when they would not fit the model's positions. Audio under an attention mask is padded wider
    likewise (:func:`widened_audio`); other speech and vision batches are reversed only.
    """

    nrs = record.decoding.num_return_sequences
    order = list(range(record.input_ids.shape[0]))[::-1]
    if record.encoder_inputs is not None:
        # A speech or vision batch: reversed, and audio under an attention mask padded wider too (see
        # widened_audio); Whisper's fixed window and resized images have no padding to widen.
        batch = widened_audio(target, record.model_inputs(order))
        run = _generate(target, batch, record.decoding)
        run.rows = [o * nrs + j for o in order for j in range(nrs)]
        reach = _compat.frames_read_past_the_mask(target.model)
        mask = (record.encoder_inputs or {}).get("attention_mask")
        if reach and mask is not None and audio_padding(record.model_inputs()) is not None:
            padding = (mask.shape[1] - mask.sum(dim=1)).tolist()
            short = [i for i, n in enumerate(padding) if n < reach]
            run.unjudged = [i * nrs + j for i in short for j in range(nrs)]
            if short:
                rows = ", ".join(f"#{i}" for i in short)
                run.unjudged_why = (
                    f"input {rows} not judged in it: padded by fewer than {reach} frames in the batch, and "
                    f"{record.model_type}'s convolutional subsampler reads {reach} frames past a clip before the "
                    "mask applies, so more padding changes its last encoder states by design"
                )
        return run
    ids, mask = record.input_ids[order], record.attention_mask[order]
    extra = EXTRA_PADDING if ids.shape[1] + EXTRA_PADDING <= input_limit(target.tokenizer, target.model).tokens else 0
    pad_id = target.tokenizer.pad_token_id
    if extra and pad_id is not None:
        pad_ids = torch.full((ids.shape[0], extra), int(pad_id), dtype=ids.dtype)
        pad_mask = torch.zeros((mask.shape[0], extra), dtype=mask.dtype)
        left = _padding_side(target) == "left"
        ids = torch.cat([pad_ids, ids] if left else [ids, pad_ids], dim=1)
        mask = torch.cat([pad_mask, mask] if left else [mask, pad_mask], dim=1)
    run = _generate(target, {"input_ids": ids, "attention_mask": mask}, record.decoding)
    run.rows = [o * nrs + j for o in order for j in range(nrs)]
    return run


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
