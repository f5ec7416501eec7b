"""Encode the inputs and run ``generate()`` once: :func:`capture` returns a :class:`~ppinvariants.record.GenerationRecord`."""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import LogitsProcessorList

from . import _compat
from .decoding import Decoding, effective_generation_config, resolve
from .errors import UsageError
from .evidence import collect_evidence
from .lengths import input_limit
from .processing import Processing, build_processing
from .record import NOT_KEPT, GenerationRecord, stack_steps


def encode(
    tokenizer: Any, texts: list[str], model: Any, *, padding_side: str | None = None
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Tokenize a padded batch, truncating to the model's input limit (see
    :func:`ppinvariants.lengths.input_limit`); returns the rows truncated.

    ``padding_side`` (``left`` for a decoder-only model, whose prompts must end where generation
    starts) overrides the tokenizer's own for this call; the tokenizer is left as it was.
    """
    if not texts:
        raise UsageError("no input texts: give at least one")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise UsageError(f"input text #{i} is empty or whitespace-only: {t!r}")
    limit = _max_positions(tokenizer, model)
    full = tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
    truncated = [i for i, ids in enumerate(full) if len(ids) > limit]
    saved = getattr(tokenizer, "padding_side", None)
    try:
        if padding_side is not None:
            tokenizer.padding_side = padding_side
        batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=limit)
    finally:
        if padding_side is not None:
            tokenizer.padding_side = saved
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, truncated


def _max_positions(tokenizer: Any, model: Any) -> int:
    """The smallest input length limit of ``model``'s config (every spelling, nested encoder configs
    too) and ``tokenizer``; see :func:`ppinvariants.lengths.input_limit`."""
    return input_limit(tokenizer, model).tokens


def capture(
    target: Any,
    texts: list[str],
    decoding: Decoding,
    *,
    evidence: bool | str = True,
    keep_scores: bool = True,
    logits_processor: Any = None,
    observer: Any = None,
) -> GenerationRecord:
    """Run ``target.model.generate()`` on ``texts`` under ``decoding`` and return the record.

    ``decoding`` is first resolved against the checkpoint's generation config
    (:func:`ppinvariants.decoding.resolve`): the record's decoding lists every setting that ran.
    With ``evidence`` (``True`` or ``"standard"``, the default, or ``"thorough"``) the model is also
    re-run as the consistency invariants need (teacher forcing with gradients, a reversed and wider
    padded batch, a second run; thorough adds each input alone and more); see
    :func:`ppinvariants.evidence.collect_evidence`. With ``False`` those invariants skip.
    Without ``keep_scores`` generate() is not asked for step scores or logits (it would keep them
    all): ``scores`` and ``logits`` are :data:`NOT_KEPT` and ``transition_scores`` None; see
    :mod:`ppinvariants.streaming`. ``logits_processor`` (a user's own processors) is passed to
    generate() and is part of the reference the processed scores are judged against.
    ``observer`` (a streaming monitor) is passed to generate() too, but is no part of that
    reference; it is given the reference with ``observer.prepare(processing)`` before generate() runs.
    """
    if evidence not in (True, False, "standard", "thorough"):
        raise UsageError(f"evidence must be True, False, 'standard' or 'thorough', not {evidence!r}")
    model, tokenizer = target.model, target.tokenizer
    decoding = resolve(decoding, model.generation_config)
    conventions = target.conventions
    decoder_only = bool(getattr(conventions, "decoder_only", False))
    batch, truncated = encode(tokenizer, texts, model, padding_side=conventions.padding_side if decoder_only else None)
    batch = {k: v.to(target.device) for k, v in batch.items()}
    # The decoder prompt: the decoder start (1 column) for an encoder-decoder model, the whole left-padded
    # prompt for a decoder-only model (generate() echoes it in sequences).
    prompt_length = int(batch["input_ids"].shape[1]) if decoder_only else 1
    gen_config = effective_generation_config(model.generation_config, decoding)
    gen_config.return_dict_in_generate = True
    gen_config.output_scores = keep_scores
    if _compat.has_output_logits():
        gen_config.output_logits = keep_scores
    effective = _compat.resolve_lengths(gen_config.to_dict(), prompt_length)
    user = list(logits_processor or [])

    def reference(device: Any) -> Processing:
        return build_processing(
            model,
            _with_lengths(gen_config, effective),
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            prompt_length=prompt_length,
            device=device,
            dtype=model.dtype,
            user_processors=user,
        )

    processing, processing_error = None, ""
    try:
        processing = reference("cpu") if keep_scores else None
        if observer is not None:
            processing = reference(target.device)  # replayed live, on the model's device
            observer.prepare(processing)
    except Exception as e:  # noqa: BLE001 - the replay checks skip with this reason; generate() still runs
        processing_error = f"{type(e).__name__}: {e}"
        if observer is not None:
            observer.prepare(None, processing_error)
    passed = user + ([observer] if observer is not None else [])
    extra = {"logits_processor": LogitsProcessorList(passed)} if passed else {}
    with _compat.counted_library_warnings() as warned:
        record = _generate(target, texts, decoding, batch, truncated, gen_config, effective, extra, keep_scores)
        record.processing, record.processing_error, record.prompt_length = processing, processing_error, prompt_length
        if evidence:
            record.evidence = collect_evidence(target, record, "standard" if evidence is True else str(evidence))
    record.library_warnings = dict(warned)
    return record


def _generate(
    target: Any,
    texts: list[str],
    decoding: Decoding,
    batch: dict[str, torch.Tensor],
    truncated: list[int],
    gen_config: Any,
    effective: dict[str, Any],
    extra: dict[str, Any],
    keep_scores: bool,
) -> GenerationRecord:
    """``generate()`` once on ``batch`` and its outputs as a record (without processing and evidence)."""
    model, tokenizer = target.model, target.tokenizer
    torch.manual_seed(decoding.seed)
    with torch.no_grad():
        out = model.generate(**batch, generation_config=gen_config, **extra)
    sequences = out.sequences.detach().cpu()
    beam_indices = getattr(out, "beam_indices", None)
    beam_indices = None if beam_indices is None else beam_indices.detach()
    # transformers' own reading of the chosen-token log-probs, kept to hold ours against:
    # beam scores are log-probs already; greedy/sampling scores are logits to normalise.
    is_beam = decoding.num_beams > 1 and not decoding.do_sample
    transition = None
    if keep_scores:
        transition = _compat.compute_transition_scores(
            model, out.sequences, out.scores, beam_indices if is_beam else None, normalize_logits=not is_beam
        )
        transition = None if transition is None else transition.detach().float().cpu()
    seq_scores = getattr(out, "sequences_scores", None)
    return GenerationRecord(
        target=target.spec,
        decoding=decoding,
        texts=list(texts),
        input_ids=batch["input_ids"].cpu(),
        attention_mask=batch["attention_mask"].cpu(),
        sequences=sequences,
        scores=stack_steps(out.scores) if keep_scores else NOT_KEPT,
        logits=stack_steps(getattr(out, "logits", None)) if keep_scores else NOT_KEPT,
        beam_indices=None if beam_indices is None else beam_indices.cpu(),
        sequences_scores=None if seq_scores is None else seq_scores.detach().float().cpu(),
        transition_scores=transition,
        generation_config=effective,
        conventions=target.conventions,
        output_width=int(model.get_output_embeddings().weight.shape[0]),
        tokenizer_size=_compat.tokenizer_vocab_size(tokenizer),
        dtype=target.dtype_name,
        device=str(target.device),
        truncated=truncated,
        tokenizer=tokenizer,
        model_type=str(getattr(model.config, "model_type", "")),
    )


def _with_lengths(config: Any, effective: dict[str, Any]) -> Any:
    """A copy of ``config`` with the length limits ``generate()`` resolves before it builds its processors."""
    out = copy.deepcopy(config)
    out.max_length = effective["max_length"]
    if effective.get("min_length") is not None:
        out.min_length = effective["min_length"]
    return out
