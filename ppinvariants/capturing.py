"""Encode the inputs and run ``generate()`` once: :func:`capture` returns a :class:`~ppinvariants.record.GenerationRecord`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from transformers import LogitsProcessorList

from . import _compat
from .decoding import Decoding, effective_generation_config, resolve
from .errors import UsageError
from .evidence import collect_evidence
from .lengths import input_limit
from .processing import Processing, build_processing
from .record import LOGITS_OF_FIRST_BEAMS, NOT_KEPT, GenerationRecord, stack_steps


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


def encode_inputs(target: Any, inputs: list[Any]) -> tuple[dict[str, torch.Tensor], list[int], list[str]]:
    """Encode ``inputs`` for ``target``: ``(batch, truncated rows, labels)``.

    The one place inputs become tensors: texts through the tokenizer (:func:`encode`, labels the texts
    themselves); for a speech model, clips (1-D float arrays at the feature extractor's sampling rate)
    through its feature extractor, with the attention mask where the extractor returns one; for a vision
    model, images (PIL) through its image processor. Non-text batches carry their encoder tensors
    (``input_features`` / ``input_values`` / ``pixel_values``) and no ``input_ids``.
    """
    modality = getattr(target, "modality", "text")
    if modality == "text":
        decoder_only = bool(getattr(target.conventions, "decoder_only", False))
        batch, truncated = encode(
            target.tokenizer,
            inputs,
            target.model,
            padding_side=target.conventions.padding_side if decoder_only else None,
        )
        return batch, truncated, list(inputs)
    if not inputs:
        raise UsageError(f"no inputs: give at least one {modality} input")
    from .signals import describe_audio, describe_image

    if modality == "audio":
        import numpy as np

        extractor = target.processor.feature_extractor
        rate = int(getattr(extractor, "sampling_rate", 16000))
        clips = []
        for i, x in enumerate(inputs):
            if isinstance(x, str):
                raise UsageError(
                    f"{target.spec} takes audio inputs, not texts: input #{i} is {x!r} (give 1-D float arrays)"
                )
            arr = np.asarray(x, dtype=np.float32)
            if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
                raise UsageError(f"audio input #{i}: a non-empty 1-D array of finite floats, got shape {arr.shape}")
            clips.append(arr)
        mask = bool(target.conventions.takes_input_mask)
        # Pad to the longest clip where the extractor pads nothing by default (wav2vec2); an extractor that
        # pads on its own (Whisper's, to its fixed window) keeps its default.
        default = inspect.signature(extractor.__call__).parameters.get("padding")
        pads = default is not None and default.default not in (False, None, "do_not_pad")
        extra = {} if pads else {"padding": True}
        # Non-finite features (a silent clip under utterance CMVN: 0/0) are refused below in one line, not
        # by numpy's warning.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = extractor(clips, sampling_rate=rate, return_tensors="pt", return_attention_mask=mask, **extra)
        labels = [describe_audio(c, rate) for c in clips]
        # An extractor with a fixed window (Whisper's n_samples: 30 s in real checkpoints) cuts a longer clip
        # to it: those rows are reported as truncated, as over-long texts are (long-form generation over
        # segments is not what the check runs).
        window = audio_window(extractor) if pads else None
        truncated = [i for i, c in enumerate(clips) if window is not None and len(c) > window]
    elif modality == "image":
        for i, x in enumerate(inputs):
            if not hasattr(x, "size") or isinstance(x, str):
                raise UsageError(f"{target.spec} takes image inputs: input #{i} is {type(x).__name__}, not an image")
        out = target.processor.image_processor(list(inputs), return_tensors="pt")
        labels = [describe_image(x) for x in inputs]
    else:
        raise UsageError(f"unknown input modality {modality!r}")
    batch = {k: v for k, v in out.items() if k in ENCODER_INPUTS and isinstance(v, torch.Tensor)}
    if modality == "audio":
        _refuse_non_finite_features(target, batch)
        return batch, truncated, labels
    return batch, [], labels


def audio_window(extractor: Any) -> int | None:
    """The samples of a feature extractor's fixed input window (Whisper's ``n_samples``, its ``chunk_length``
    seconds), or None where it has none."""
    n = getattr(extractor, "n_samples", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def normalises_per_utterance(extractor: Any) -> bool:
    """Whether a feature extractor divides each utterance's features by their own standard deviation
    (Speech2Text's utterance CMVN): an exactly silent clip then has features 0/0."""
    return bool(getattr(extractor, "do_ceptral_normalize", False) and getattr(extractor, "normalize_vars", False))


def _refuse_non_finite_features(target: Any, batch: dict[str, torch.Tensor]) -> None:
    """A clip whose encoded features are not finite is bad input (one line naming why), not a model's NaN."""
    features = next((batch[k] for k in ("input_features", "input_values") if k in batch), None)
    if features is None:
        return
    bad = [i for i in range(features.shape[0]) if not bool(torch.isfinite(features[i]).all())]
    if not bad:
        return
    extractor = target.processor.feature_extractor
    why = (
        "it normalises each utterance by its own variance, and a silent (constant) clip has none: "
        "give a clip with some signal (a silent one dithered, e.g. noise of std 1e-4)"
        if normalises_per_utterance(extractor)
        else "give a clip the feature extractor can encode"
    )
    raise UsageError(
        f"audio input #{bad[0]}: {type(extractor).__name__} gives non-finite features for it "
        f"({len(bad)} of {features.shape[0]} inputs); {why}"
    )


def default_inputs(target: Any) -> list[Any]:
    """The default inputs of a check for ``target``'s modality: :data:`~ppinvariants.texts.DEFAULT_TEXTS`,
    the clips of :func:`~ppinvariants.signals.default_audio` at its feature extractor's sampling rate (the
    silent one dithered where the extractor normalises each utterance by its variance), or
    the images of :func:`~ppinvariants.signals.default_images`."""
    from .signals import default_audio, default_images
    from .texts import DEFAULT_TEXTS

    modality = getattr(target, "modality", "text")
    if modality == "audio":
        extractor = target.processor.feature_extractor
        # An extractor that normalises each utterance by its variance gets the silent clip dithered (see
        # default_audio): exact silence is bad input there, not a model's fault.
        exact = not normalises_per_utterance(extractor)
        return default_audio(int(getattr(extractor, "sampling_rate", 16000)), exact_silence=exact)
    if modality == "image":
        return default_images()
    return list(DEFAULT_TEXTS)


def inputs_for(target: Any, texts: Any) -> list[Any]:
    """``texts`` as given, except that the default texts stand for the default inputs of a speech or vision
    ``target`` (:func:`default_inputs`): ``check`` with no inputs checks every model on inputs it takes."""
    from .texts import DEFAULT_TEXTS

    texts = list(texts)
    # Compared only when every input is a text: a clip (a numpy array) compared with a string is no truth value.
    if getattr(target, "modality", "text") != "text" and all(isinstance(t, str) for t in texts):
        if tuple(texts) == tuple(DEFAULT_TEXTS):
            return default_inputs(target)
    return texts


@contextlib.contextmanager
def timestamps_on(target: Any) -> Iterator[Any]:
    """Within the block, ``target``'s model predicts timestamps (Whisper: ``return_timestamps`` in its
    generation config, so the decoder prompt has no ``<|notimestamps|>`` and the timestamp processor runs);
    yields a copy of the target with the conventions re-derived for it. The generation config is restored
    after the block. Raises ``ValueError`` for a model without timestamp tokens."""
    from .conventions import derive_conventions

    if getattr(target.conventions, "timestamp_begin", None) is None:
        raise ValueError(f"{target.spec}: no timestamp tokens (no no_timestamps_token_id in its generation config)")
    config = target.model.generation_config
    had = "return_timestamps" in config.__dict__
    saved = getattr(config, "return_timestamps", None)
    config.return_timestamps = True
    try:
        conventions = derive_conventions(
            target.model, target.tokenizer, modality=target.modality, processor=target.processor
        )
        yield dataclasses.replace(target, conventions=conventions)
    finally:
        if had:
            config.return_timestamps = saved
        else:
            del config.return_timestamps


#: The encoder inputs a processor may return, passed on to generate().
ENCODER_INPUTS = ("input_features", "input_values", "pixel_values", "attention_mask")


def _max_positions(tokenizer: Any, model: Any) -> int:
    """The smallest input length limit of ``model``'s config (every spelling, nested encoder configs
    too) and ``tokenizer``; see :func:`ppinvariants.lengths.input_limit`."""
    return input_limit(tokenizer, model).tokens


def capture(
    target: Any,
    texts: list[Any],
    decoding: Decoding,
    *,
    evidence: bool | str = True,
    keep_scores: bool = True,
    logits_processor: Any = None,
    observer: Any = None,
) -> GenerationRecord:
    """Run ``target.model.generate()`` on ``texts`` under ``decoding`` and return the record.

    ``texts`` are the inputs the target takes: strings for a text model; for a speech model, clips (1-D
    float arrays at its feature extractor's sampling rate); for a vision model, images (see
    :func:`encode_inputs`, and :func:`default_inputs` for the defaults of each).

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
    batch, truncated, labels = encode_inputs(target, list(texts))
    batch = {k: v.to(target.device) for k, v in batch.items()}
    rows = int(next(iter(batch.values())).shape[0])
    # The decoder prompt: the decoder start (1 column) for an encoder-decoder model, or its whole forced prompt
    # (Whisper's start, language, task, no-timestamps); the whole left-padded prompt for a decoder-only model
    # (generate() echoes it in sequences).
    prompt_length = int(batch["input_ids"].shape[1]) if decoder_only else max(1, len(conventions.decoder_prompt))
    if "input_ids" in batch:
        text_ids, text_mask = batch["input_ids"], batch["attention_mask"]
    else:  # a speech or vision batch has no token ids: empty [rows, 0] ids and mask stand in the record
        text_ids = torch.zeros((rows, 0), dtype=torch.long, device=target.device)
        text_mask = torch.zeros_like(text_ids)
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
            input_ids=text_ids,
            attention_mask=text_mask,
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
    # transformers' warnings (one per input, some of them) are counted for the report instead of printed.
    with _compat.counted_library_warnings() as warned:
        torch.manual_seed(decoding.seed)
        extra.update(_compat.own_generate_kwargs(model, decoding.do_sample, gen_config.temperature))
        with torch.no_grad():
            out = model.generate(**batch, generation_config=gen_config, **extra)
        sequences = out.sequences.detach().cpu()
        beam_indices = getattr(out, "beam_indices", None)
        beam_indices = None if beam_indices is None else beam_indices.detach()
        # transformers' own reading of the chosen-token log-probs, kept to hold ours against:
        # beam scores are log-probs already; greedy/sampling scores are logits to normalise.
        is_beam = decoding.num_beams > 1  # beam search, or beam sampling (do_sample with num_beams > 1)
        raw_logits = getattr(out, "logits", None)
        per_hypothesis = False
        if (
            is_beam
            and keep_scores
            and beam_indices is not None
            and _scores_per_hypothesis(out, rows, decoding.num_beams)
        ):
            # Whisper's generate() hands back, under beam search, each step's scores already re-indexed to the
            # returned hypotheses (the beam row each came from, by beam_indices) and the logits of the first beam
            # rows: each returned row is then its own score row, and the raw logits belong to no hypothesis.
            beam_indices = torch.where(
                beam_indices >= 0, torch.arange(beam_indices.shape[0], device=beam_indices.device)[:, None], -1
            )
            raw_logits, per_hypothesis = None, True
            processing, processing_error = None, LOGITS_OF_FIRST_BEAMS
        transition = None
        if keep_scores:
            transition = _compat.compute_transition_scores(
                model, out.sequences, out.scores, beam_indices if is_beam else None, normalize_logits=not is_beam
            )
            transition = None if transition is None else transition.detach().float().cpu()
        seq_scores = getattr(out, "sequences_scores", None)
        record = GenerationRecord(
            target=target.spec,
            decoding=decoding,
            texts=labels,
            input_ids=text_ids.cpu(),
            attention_mask=text_mask.cpu(),
            sequences=sequences,
            scores=stack_steps(out.scores) if keep_scores else NOT_KEPT,
            logits=stack_steps(raw_logits) if keep_scores else NOT_KEPT,
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
            processing=processing,
            processing_error=processing_error,
            prompt_length=prompt_length,
            modality=getattr(target, "modality", "text"),
            scores_per_hypothesis=per_hypothesis,
            encoder_inputs=None if "input_ids" in batch else {k: v.cpu() for k, v in batch.items()},
        )
        if evidence:
            record.evidence = collect_evidence(target, record, "standard" if evidence is True else str(evidence))
    record.library_warnings = dict(warned)
    return record


def _scores_per_hypothesis(out: Any, inputs: int, num_beams: int) -> bool:
    """Whether beam search's step scores came back one row per returned hypothesis (Whisper's generate()
    re-indexes them so) instead of the library's one row per beam of each input."""
    scores = getattr(out, "scores", None)
    if not scores:
        return False
    rows = int(scores[0].shape[0])
    return rows == int(out.sequences.shape[0]) and rows != inputs * num_beams


def _with_lengths(config: Any, effective: dict[str, Any]) -> Any:
    """A copy of ``config`` with the length limits ``generate()`` resolves before it builds its processors."""
    out = copy.deepcopy(config)
    out.max_length = effective["max_length"]
    if effective.get("min_length") is not None:
        out.min_length = effective["min_length"]
    return out
