"""The one place that knows how transformers versions differ.

Everything else in the package calls these helpers instead of testing versions itself.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
import transformers
from packaging.version import Version

TRANSFORMERS_VERSION = Version(transformers.__version__)


def dtype_kwarg(dtype: torch.dtype | None) -> dict[str, Any]:
    """The ``from_pretrained`` keyword that sets the weights' dtype (``dtype`` in 5.x, ``torch_dtype`` before)."""
    if dtype is None:
        return {}
    params = inspect.signature(transformers.PreTrainedModel.from_pretrained).parameters
    if TRANSFORMERS_VERSION >= Version("4.56") or "dtype" in params:
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def generation_config_supports(name: str) -> bool:
    """Whether ``GenerationConfig`` of the installed version knows the attribute ``name``."""
    return hasattr(transformers.GenerationConfig(), name)


def has_output_logits() -> bool:
    """``output_logits`` (raw, unprocessed logits per step) exists from transformers 4.38 on."""
    return generation_config_supports("output_logits")


def compute_transition_scores(
    model: Any,
    sequences: torch.Tensor,
    scores: tuple[torch.Tensor, ...],
    beam_indices: torch.Tensor | None,
    normalize_logits: bool,
) -> torch.Tensor | None:
    """transformers' own per-token transition scores, or None where the model lacks the method."""
    fn = getattr(model, "compute_transition_scores", None)
    if fn is None:
        return None
    try:
        return fn(sequences, scores, beam_indices=beam_indices, normalize_logits=normalize_logits)
    except (AttributeError, RuntimeError):
        # transformers 4.x reshapes the scores by config.vocab_size there, which EncoderDecoderConfig
        # lacks and which is not FSMT's output width: no transformers reading to compare against, the
        # checks use their own gather and indexing.
        if scores and scores[0].shape[-1] != getattr(model.config, "vocab_size", None):
            return None
        raise


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """Number of ids the tokenizer can map back to a token (base vocabulary plus added tokens)."""
    return len(tokenizer)


def is_text_seq2seq(model_type: str) -> bool:
    """Whether ``AutoModelForSeq2SeqLM`` knows ``model_type`` (text-to-text), by its public name table."""
    from transformers.models.auto import modeling_auto

    return model_type in modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


def seq2seq_modality(config: Any) -> str | None:
    """``"audio"`` or ``"image"`` for a speech or vision encoder-decoder config (Whisper, Speech2Text,
    ``SpeechEncoderDecoderModel``; ``VisionEncoderDecoderModel``), by transformers' public name tables; None
    for any other config."""
    from transformers.models.auto import modeling_auto

    if not getattr(config, "is_encoder_decoder", False):
        return None
    model_type = str(getattr(config, "model_type", ""))
    if model_type in getattr(modeling_auto, "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", {}):
        return "audio"
    vision = {
        *getattr(modeling_auto, "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", {}),
        *getattr(modeling_auto, "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", {}),
    }
    if model_type == "vision-encoder-decoder" or (model_type in vision and not is_text_seq2seq(model_type)):
        return "image"
    return None


def speech_vision_model_class(config: Any) -> Any:
    """The class that loads a speech or vision encoder-decoder checkpoint of ``config``: the composite
    classes by name, else ``AutoModelForSpeechSeq2Seq`` / ``AutoModelForVision2Seq`` (4.x) or
    ``AutoModelForImageTextToText`` (5.x)."""
    import transformers

    model_type = str(getattr(config, "model_type", ""))
    if model_type == "speech-encoder-decoder":
        return transformers.SpeechEncoderDecoderModel
    if model_type == "vision-encoder-decoder":
        return transformers.VisionEncoderDecoderModel
    if seq2seq_modality(config) == "audio":
        return transformers.AutoModelForSpeechSeq2Seq
    return getattr(transformers, "AutoModelForVision2Seq", None) or transformers.AutoModelForImageTextToText


def frames_read_past_the_mask(model: Any) -> int:
    """How many padding frames after a clip a speech model's encoder reads before its attention mask applies
    (0 where it reads none). Speech2Text's convolutional subsampler (stride 2 per layer, zero-padded by half
    its kernel) runs over the padded frames unmasked, so the last encoder positions of a clip see the frames
    after it: a clip padded by fewer frames than this gives other encoder states than one padded by more, by
    design (fairseq's subsampler does the same). Per layer, half its kernel times the stride before it, plus
    the total stride as a margin."""
    config = getattr(model, "config", None)
    if str(getattr(config, "model_type", "")) != "speech_to_text":
        return 0
    kernels = [int(k) for k in getattr(config, "conv_kernel_sizes", ()) or ()]
    return sum((k // 2) * 2**i for i, k in enumerate(kernels)) + 2 ** len(kernels)


def builds_own_processors(model: Any) -> bool:
    """Whether the model's ``generate()`` builds logits processors of its own before the library's (Whisper's
    ``_retrieve_logit_processors``: suppress, begin-suppress, the timestamp rules) and sets its decoder prompt
    from ``language``/``task`` in the generation config."""
    return callable(getattr(type(model), "_retrieve_logit_processors", None))


def own_generate_kwargs(model: Any, do_sample: bool, temperature: float | None) -> dict[str, Any]:
    """Keywords a model's own ``generate()`` needs to run the decoding its generation config asks for.

    Whisper's ``generate()`` decides sampling from its ``temperature`` argument alone (none: greedy, whatever
    ``do_sample`` says), so a sampling decoding passes its temperature there; it is asked for one call to the
    library's generate() (``force_unique_generate_call``: no seeking over segments, whose loop may not end on
    a model that predicts ``<|0.00|>`` last) and for timestamps where its generation config sets
    ``return_timestamps``."""
    if not builds_own_processors(model):
        return {}
    params = inspect.signature(type(model).generate).parameters
    out: dict[str, Any] = {}
    if "temperature" in params and do_sample:
        out["temperature"] = float(temperature if temperature is not None else 1.0)
    if "force_unique_generate_call" in params:
        out["force_unique_generate_call"] = True
    if "return_timestamps" in params:
        out["return_timestamps"] = bool(getattr(model.generation_config, "return_timestamps", False))
    return out


def timestamp_precision(model: Any) -> float:
    """Seconds per timestamp token: the model's ``generate()`` default ``time_precision`` (Whisper's 0.02),
    0.02 where it names none."""
    try:
        param = inspect.signature(type(model).generate).parameters.get("time_precision")
    except (TypeError, ValueError):
        param = None
    default = getattr(param, "default", None)
    return float(default) if isinstance(default, (int, float)) else 0.02


def own_logits_processors(
    model: Any, generation_config: Any, *, begin_index: int, num_beams: int, device: Any, user_processors: Any
) -> tuple[Any, list[Any]]:
    """``(generation_config, processors)``: the processors a model's own ``generate()`` puts before the
    user's (Whisper: begin-suppress, suppress, the timestamp rules), built by the model's own method on a copy
    of ``generation_config``, which comes back as the model's generate() leaves it (the suppress settings
    moved into those processors). Raises ``ValueError`` for a setting whose processor keeps state across
    calls (Whisper's ``no_speech_threshold``)."""
    gc = copy.deepcopy(generation_config)
    gc.no_speech_threshold = getattr(gc, "no_speech_threshold", None)  # generate() sets it, None by default
    if gc.no_speech_threshold is not None:
        raise ValueError("no_speech_threshold: Whisper's no-speech detector runs the model itself, not replayed")
    if getattr(gc, "return_timestamps", None) is None:
        gc.return_timestamps = False
    procs = model._retrieve_logit_processors(
        generation_config=gc,
        logits_processor=list(user_processors or []),
        begin_index=begin_index,
        num_beams=num_beams,
        device=device,
    )
    return gc, list(procs or [])


def is_causal_lm_type(model_type: str) -> bool:
    """Whether ``AutoModelForCausalLM`` knows ``model_type``, by its public name table."""
    from transformers.models.auto import modeling_auto

    return model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def checks_decoder_only() -> bool:
    """Whether decoder-only models are checked on this transformers version: verified on 5.x only. Under
    4.46 the tiny multi-eos model's beam scores and the right-padding check disagree with 5.x, and what
    is not verified is refused rather than risk a false alarm or a silent pass."""
    return TRANSFORMERS_VERSION >= Version("5.0.0.dev0")


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a decoder-only language model with a generation head (not an encoder-decoder)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    from transformers.models.auto import modeling_auto

    names = set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return type(model).__name__ in names or (
        hasattr(model, "generate")
        and hasattr(model, "get_output_embeddings")
        and model.get_output_embeddings() is not None
    )


def generate_with_grad(model: Any, **kwargs: Any) -> Any | None:
    """Call ``generate()`` with autograd on, or return None where that is not possible.

    ``generate()`` is wrapped in ``torch.no_grad()``; the undecorated function underneath is
    reached with ``inspect.unwrap`` (every transformers version from 4.40 wraps it with functools).
    """
    raw = inspect.unwrap(type(model).generate)
    if raw is type(model).generate and not hasattr(type(model).generate, "__wrapped__"):
        return None
    with torch.enable_grad():
        return raw(model, **kwargs)


def resolve_lengths(config: dict[str, Any], decoder_prompt_length: int = 1) -> dict[str, Any]:
    """The length limits ``generate()`` actually uses: ``max_new_tokens`` / ``min_new_tokens`` take
    precedence over ``max_length`` / ``min_length`` and are counted after the decoder prompt."""
    out = dict(config)
    if out.get("max_new_tokens") is not None:
        out["max_length"] = int(out["max_new_tokens"]) + decoder_prompt_length
    if out.get("min_new_tokens") is not None:
        out["min_length"] = int(out["min_new_tokens"]) + decoder_prompt_length
    return out


#: transformers 5.x ``GenerationConfig._get_default_generation_params()``, for versions without it
#: (4.x keeps these values on every GenerationConfig instance instead).
_GENERATION_DEFAULTS: dict[str, Any] = {
    "length_penalty": 1.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beams": 1,
    "num_return_sequences": 1,
}


def generation_default(name: str) -> Any:
    """The value ``generate()`` uses for a setting left ``None`` (e.g. ``top_k`` 50, ``length_penalty`` 1.0)."""
    getter = getattr(transformers.GenerationConfig, "_get_default_generation_params", None)
    if getter is not None:
        try:
            value = getter().get(name)
            if value is not None:
                return value
        except Exception:  # noqa: BLE001 - fall back to the documented defaults
            pass
    default = getattr(transformers.GenerationConfig(), name, None)
    return default if default is not None else _GENERATION_DEFAULTS.get(name)


@contextlib.contextmanager
def processor_runs_last(model: Any, processor: Any, on_build: Any = None) -> Iterator[None]:
    """While inside, ``generate()`` runs ``processor`` after every other entry of its processor list.

    transformers merges user ``logits_processor`` entries *before* the sampling warpers and the
    final normalisation (``_get_logits_processor``, 4.46 to 5.x; 4.40 keeps the warpers in a second
    list, see :func:`runs_after_separate_warpers`); a monitor must see the scores generate() decides
    on, so it is moved to the end of the list generate() builds.
    ``on_build(generation_config)`` is called each time the list is built.
    """
    from transformers import LogitsProcessorList

    original = model._get_logits_processor
    own = model.__dict__.get("_get_logits_processor")  # an instance-level wrapper already there stays

    def last(*args: Any, **kwargs: Any) -> Any:
        if on_build is not None:
            on_build(kwargs.get("generation_config", args[0] if args else None))
        processors = original(*args, **kwargs)
        return LogitsProcessorList([p for p in processors if p is not processor] + [processor])

    model._get_logits_processor = last
    try:
        yield
    finally:
        model.__dict__.pop("_get_logits_processor", None)
        if own is not None:
            model._get_logits_processor = own


@contextlib.contextmanager
def runs_after_separate_warpers(model: Any, processor: Any, on_build: Any) -> Iterator[None]:
    """While inside, a separate sampling-warper list that ``generate()`` builds ends with ``processor``.

    transformers 4.40 builds the sampling warpers (temperature, top-k, top-p) with
    ``_get_logits_warper`` as a second list and runs it after the processors (``output_scores`` keeps
    the warped scores); 4.46 and 5.x merge them into one list and have no such method, and are left
    as they are. ``on_build()`` is called each time such a list is built.
    """
    from transformers import LogitsProcessorList

    build = getattr(model, "_get_logits_warper", None)
    if build is None:
        yield
        return

    def with_processor_last(*args: Any, **kwargs: Any) -> Any:
        warpers = build(*args, **kwargs)
        on_build()
        return LogitsProcessorList([*warpers, processor])

    model._get_logits_warper = with_processor_last
    try:
        yield
    finally:
        model.__dict__.pop("_get_logits_warper", None)


def check_generation_settings(name: str, settings: Any) -> None:
    """Raise :class:`~ppinvariants.errors.UsageError` where transformers rejects ``settings`` (a dict or a
    ``GenerationConfig``): a wrong type or an invalid combination. Mere warnings (a setting without effect
    under this decoding) pass: a checkpoint's own config often carries such settings."""

    from .errors import UsageError

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # validate() logs flags without effect: not ours to print
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = settings if isinstance(settings, transformers.GenerationConfig) else None
            if config is None:
                config = transformers.GenerationConfig(**settings)
            config.validate()
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"decoding {name}: transformers rejects these settings: {first}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)


def reference_logits_processors(
    model: Any,
    generation_config: Any,
    *,
    prompt_length: int,
    encoder_input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    device: Any,
    user_processors: Any = None,
) -> Any:
    """The ``LogitsProcessorList`` transformers' own ``generate()`` builds for ``generation_config``.

    Built by the library's ``GenerationMixin`` methods (never a model's override), from the config
    the caller *intends*, with the length limits already resolved: the same processors and warpers,
    in the same order, with the same arguments as generate() would give them (``_prepare_special_tokens``
    first where it exists, 4.41+; the separate warper list of 4.40 appended after the processors, as
    generate() ran it). ``user_processors`` are merged as generate() merges a ``logits_processor=`` list.
    """
    from transformers import LogitsProcessorList
    from transformers.generation.utils import GenerationMixin

    gc = copy.deepcopy(generation_config)
    fill = getattr(GenerationMixin, "_prepare_generation_config", None)
    if fill is not None:
        # generate() fills the settings left None from the model's config, then from the global defaults
        # (5.x: top_k 50 under sampling, ...); the lengths, resolved by the caller, are kept.
        with contextlib.suppress(TypeError, ValueError):
            prepared = fill(model, gc)
            prepared = prepared[0] if isinstance(prepared, tuple) else prepared
            prepared.max_length, prepared.min_length = gc.max_length, gc.min_length
            gc = prepared
    if builds_own_processors(model):
        # The model's own generate() builds its processors first and passes them on as the user's list,
        # its suppress settings cleared (and kept cleared: it passes them to the library's generate() as None).
        own_config, user_processors = own_logits_processors(
            model,
            gc,
            begin_index=prompt_length,
            num_beams=int(gc.num_beams or 1),
            device=device,
            user_processors=user_processors,
        )
        gc.suppress_tokens = own_config.suppress_tokens
        gc.begin_suppress_tokens = own_config.begin_suppress_tokens
    prepare = getattr(GenerationMixin, "_prepare_special_tokens", None)
    if prepare is not None:
        params = inspect.signature(prepare).parameters
        extra: dict[str, Any] = {"device": device}
        if "batch_size" in params and encoder_input_ids is not None:
            extra["batch_size"] = int(encoder_input_ids.shape[0])
        prepare(model, gc, True, **{k: v for k, v in extra.items() if k in params})
    mask_key = "decoder_attention_mask" if model.config.is_encoder_decoder else "attention_mask"
    kwargs = {
        "generation_config": gc,
        "input_ids_seq_length": prompt_length,
        "encoder_input_ids": encoder_input_ids,
        "prefix_allowed_tokens_fn": None,
        "logits_processor": LogitsProcessorList(list(user_processors or [])),
        "device": device,
        "model_kwargs": {} if model.config.is_encoder_decoder else {mask_key: attention_mask},
        "negative_prompt_ids": None,
        "negative_prompt_attention_mask": None,
    }
    build = GenerationMixin._get_logits_processor
    params = inspect.signature(build).parameters
    processors = build(model, **{k: v for k, v in kwargs.items() if k in params})
    warpers = getattr(GenerationMixin, "_get_logits_warper", None)
    if warpers is not None and gc.do_sample:  # 4.40: a second list, run after the processors
        wparams = inspect.signature(warpers).parameters
        wkw = {"generation_config": gc, "device": device}
        processors = LogitsProcessorList(
            [*processors, *warpers(model, **{k: v for k, v in wkw.items() if k in wparams})]
        )
    return processors


def processes_in_model_dtype() -> bool:
    """Whether ``generate()`` runs the processors and warpers on logits in the model's dtype (before 4.46);
    4.46 and later upcast ``next_token_logits`` to float32 first (transformers commit 22e6f14)."""
    return TRANSFORMERS_VERSION < Version("4.46")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Within the block, transformers prints no progress bars (``Loading weights: 100%``) and logs
    errors only (no ``Input ids are automatically padded`` warning per call); both are restored
    after it, so the caller's own logging is left as it was."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = getattr(hf_logging, "is_progress_bar_enabled", lambda: True)()
    hf_logging.set_verbosity_error()
    with contextlib.suppress(AttributeError):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            with contextlib.suppress(AttributeError):
                hf_logging.enable_progress_bar()


def _warning_key(message: str) -> str:
    """The first line of a warning, numbers replaced by ``#``: one key for a warning repeated per input
    (``Input ids are automatically padded from 37 to 64``), cut to a readable length."""
    first = (message.strip().splitlines() or [""])[0]
    first = re.sub(r"\d+(\.\d+)?", "#", first)
    return first if len(first) <= 160 else first[:157] + "..."


class _Counting(logging.Handler):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.counts[_warning_key(record.getMessage())] += 1
        except Exception:  # noqa: BLE001 - a message that cannot be formatted is not worth a crash
            self.counts["(a warning that could not be formatted)"] += 1


@contextlib.contextmanager
def counted_library_warnings() -> Iterator[Counter[str]]:
    """Within the block, transformers' logged warnings and the Python warnings raised from its modules are
    counted, one key per message (see :func:`_warning_key`), instead of printed, and its progress bars are
    off; the counter is filled when the block ends. Other libraries' warnings are re-issued as they were;
    the ``transformers`` logger's level and handlers are restored after the block."""
    from transformers.utils import logging as hf_logging

    counts: Counter[str] = Counter()
    logger = logging.getLogger("transformers")
    level, handlers = logger.level, logger.handlers[:]
    bars = getattr(hf_logging, "is_progress_bar_enabled", lambda: True)()
    logger.handlers = [_Counting(counts)]
    logger.setLevel(logging.WARNING)
    with contextlib.suppress(AttributeError):
        hf_logging.disable_progress_bar()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield counts
    finally:
        logger.handlers = handlers
        logger.setLevel(level)
        if bars:
            with contextlib.suppress(AttributeError):
                hf_logging.enable_progress_bar()
        for w in caught:
            if "transformers" in str(w.filename).replace("\\", "/").split("/"):
                counts[_warning_key(str(w.message))] += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
