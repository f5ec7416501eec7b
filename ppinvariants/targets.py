"""Loading what the user wants checked: a checkpoint folder, a ``module:factory``, ``tiny:<arch>``, a cached hub id.

Safe by default: ``trust_remote_code`` stays off unless asked for, weights load through
safetensors, and a pickle-only checkpoint is refused unless ``allow_pickle`` is set.
Every failure is a :class:`TargetError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _compat
from .conventions import Conventions, derive_conventions
from .errors import TargetError, UsageError
from .progress import say

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "vocab-src.json",  # FSMT
    "sentencepiece.model",
    "tokenizer.model",
    "prophetnet.tokenizer",  # ProphetNetTokenizer's WordPiece vocabulary
)


@dataclass
class Target:
    """A loaded model + tokenizer pair, ready to generate, with its derived conventions.

    A speech or vision encoder-decoder also has its ``processor`` (feature extractor or image processor plus
    the tokenizer) and ``modality`` ``"audio"`` or ``"image"``: its inputs are clips or images, encoded by the
    processor; a text model's modality is ``"text"`` and its processor None.
    """

    spec: str
    model: Any
    tokenizer: Any
    conventions: Conventions
    device: torch.device
    dtype: torch.dtype
    device_map: dict[str, Any] | None = None  # where accelerate put each module, when loaded with a device_map
    processor: Any = None  # feature extractor / image processor + tokenizer (speech and vision models)
    modality: str = "text"  # what the inputs are: "text", "audio" or "image"

    def __repr__(self) -> str:  # the default would print the whole model (e.g. in Hypothesis reports)
        return f"Target({self.spec!r}, {type(self.model).__name__}, {self.device}, {self.dtype_name})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """The same one line for pretty printers (Hypothesis prints a failing example's arguments with one,
        and would list a dataclass field by field, the whole model included)."""
        printer.text(repr(self))

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (error without a GPU), ``cuda:N`` or ``auto`` (cuda when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but no CUDA GPU is available here (use --device cpu)")
        return torch.device(device)
    raise UsageError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")


#: ``device_map`` strategies transformers/accelerate accept by name.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device_map(value: Any) -> str | dict[str, Any] | None:
    """A ``device_map`` for ``from_pretrained``: a strategy name (``auto``, ``balanced``, ...), a dict of
    module name to device (an int for a GPU, ``"cpu"``, ``"disk"``, ``"cuda:N"``), or its JSON text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if value in DEVICE_MAP_STRATEGIES:
            return value
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UsageError(
                f"device map {value!r}: use one of {', '.join(DEVICE_MAP_STRATEGIES)} or a JSON object of module "
                'name to device, e.g. \'{"model.encoder": "cpu", "model.decoder": "disk", "lm_head": "cpu"}\''
            ) from None
    if not isinstance(value, dict) or not value:
        raise UsageError(f"device map {value!r}: a strategy name or a non-empty object of module name to device")
    for module, where in value.items():
        if not isinstance(module, str) or not (isinstance(where, int) or isinstance(where, str)):
            raise UsageError(
                f"device map entry {module!r}: {where!r} is not a device (an int, 'cpu', 'disk', 'cuda:N')"
            )
    return value


def _placement(device_map: Any, max_memory: Any, offload_folder: str | None) -> dict[str, Any]:
    """``from_pretrained`` keywords that shard the model through accelerate; empty without a device map."""
    dm = parse_device_map(device_map)
    if dm is None:
        if max_memory is not None or offload_folder is not None:
            raise UsageError("max_memory and offload_folder apply only with a device_map")
        return {}
    if isinstance(max_memory, str):
        try:
            max_memory = json.loads(max_memory)
        except json.JSONDecodeError:
            raise UsageError(
                f'max_memory {max_memory!r}: a JSON object, e.g. \'{{"cpu": "2GiB", "0": "20GiB"}}\''
            ) from None
    if max_memory is not None:
        if not isinstance(max_memory, dict):
            raise UsageError(f"max_memory {max_memory!r}: an object of device to size")
        max_memory = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in max_memory.items()}
    if offload_folder is None:  # accelerate needs one as soon as a module lands on "disk"
        import atexit
        import shutil
        import tempfile

        offload_folder = tempfile.mkdtemp(prefix="ppinvariants-offload-")
        atexit.register(shutil.rmtree, offload_folder, True)
    out: dict[str, Any] = {"device_map": dm, "offload_folder": str(offload_folder)}
    if max_memory is not None:
        out["max_memory"] = max_memory
    return out


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_target(
    spec: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[str, Any] | None = None,
    offload_folder: str | None = None,
) -> Target:
    """Load ``spec`` and return a :class:`Target` in eval mode on ``device`` in ``dtype``.

    ``spec`` is one of: ``tiny:<arch>`` (a built-in tiny model), a checkpoint directory,
    ``FILE.py:FUNC`` or ``package.module:FUNC`` (a zero-argument factory returning
    ``(model, tokenizer)``, or ``(model, tokenizer, processor)`` for a speech or vision model), or a hub id
    that is already in the local cache. A speech or vision encoder-decoder checkpoint (Whisper, Speech2Text,
    ``SpeechEncoderDecoderModel``, ``VisionEncoderDecoderModel``) loads with its processor (``AutoProcessor``).

    ``device_map`` (``auto``, ``balanced``, ``balanced_low_0``, ``sequential``, or a dict / JSON object
    of module name to device, ``"disk"`` included) loads the checkpoint sharded through
    transformers/accelerate instead of onto ``device``, with ``max_memory`` per device and
    ``offload_folder`` for modules on ``"disk"`` (default: a temporary folder, removed at exit).
    A factory loads its own model: shard it there (a model it returns dispatched is left where it is).
    """
    if not spec or not spec.strip():
        raise UsageError("empty target: give a checkpoint directory, tiny:<arch>, FILE.py:FUNC or module:FUNC")
    placement = _placement(device_map, max_memory, offload_folder)
    if placement and device not in ("cpu", "auto"):
        raise UsageError(f"device {device!r} and a device map both given: the device map places the model")
    dev = torch.device("cpu") if placement else resolve_device(device)
    dt = resolve_dtype(dtype)
    with _compat.quiet_transformers():
        if spec.startswith("tiny:"):
            from . import zoo  # the zoo is part of the core: it only builds checkpoints

            arch = spec.split(":", 1)[1]
            if arch not in zoo.RECIPES:
                raise TargetError(f"unknown tiny model {arch!r}; built-in: {', '.join(zoo.ALL_ARCHITECTURES)}")
            if not _tiny_is_built(zoo, arch):
                say(f"building {spec} (first run, cached afterwards in {zoo.cache_root()})")
            model, tokenizer, processor = _load_checkpoint(
                zoo.tiny_checkpoint(arch), dt, trust_remote_code, allow_pickle, placement
            )
        elif Path(spec).is_dir():
            model, tokenizer, processor = _load_checkpoint(Path(spec), dt, trust_remote_code, allow_pickle, placement)
        elif _looks_like_factory(spec):
            if placement:
                raise UsageError(
                    f"{spec}: a device map applies to checkpoint directories, tiny:<arch> and cached hub ids; "
                    "a factory loads its own model (pass device_map to from_pretrained there)"
                )
            model, tokenizer, processor = _load_factory(spec)
        elif Path(spec).exists():
            raise TargetError(f"{spec}: is a file, not a checkpoint directory (or FILE.py:FUNC factory)")
        elif _looks_like_path(spec):
            raise TargetError(f"{spec}: no such checkpoint directory")
        else:
            model, tokenizer, processor = _load_cached_hub_id(spec, dt, trust_remote_code, allow_pickle, placement)
        return _finish(spec, model, tokenizer, dev, dt, processor)


def _looks_like_path(spec: str) -> bool:
    """A spec that names a path, not a hub id: ``./x``, ``/x``, ``~/x``, ``a/b/c``, or one whose
    first part exists (``checkpoints/missing``, where ``checkpoints`` is a local folder)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        return True
    return "/" in spec and Path(spec.split("/", 1)[0]).is_dir()


def _tiny_is_built(zoo: Any, arch: str) -> bool:
    """Whether ``tiny:<arch>`` is in the cache already (its build takes seconds to minutes)."""
    try:
        final = zoo.cache_root() / "tiny" / f"{arch}-{zoo.RECIPES[arch].key()}"
        return (final / "ppinvariants-recipe.json").exists()
    except Exception:  # noqa: BLE001 - only decides whether to say "building"
        return True


def _finish(spec: str, model: Any, tokenizer: Any, dev: torch.device, dt: torch.dtype, processor: Any = None) -> Target:
    config = getattr(model, "config", None)
    modality = _compat.seq2seq_modality(config) if config is not None else None
    if modality is not None and processor is None:
        raise TargetError(
            f"{spec}: a {getattr(config, 'model_type', '?')} model takes {modality} inputs: it needs its processor "
            "(preprocessor_config.json next to the checkpoint, or a factory returning (model, tokenizer, processor))"
        )
    if modality is None and processor is not None and getattr(config, "is_encoder_decoder", False):
        processor = None  # a text model's processor is its tokenizer: texts go through the tokenizer as before
    if not getattr(config, "is_encoder_decoder", False) and not _compat.checks_decoder_only():
        raise TargetError(
            f"{spec}: decoder-only models are checked with transformers 5 only for now (this is "
            f"{_compat.TRANSFORMERS_VERSION}); encoder-decoder models are checked from 4.40 on"
        )
    if not getattr(config, "is_encoder_decoder", False) and not _compat.is_causal_lm(model):
        kind = getattr(config, "model_type", type(model).__name__)
        raise TargetError(
            f"{spec}: {kind} is neither an encoder-decoder model nor a causal language model "
            "(AutoModelForCausalLM); ppinvariants checks text generation with one of those"
        )
    if not hasattr(model, "generate"):
        raise TargetError(f"{spec}: the model has no generate() method")
    device_map = dispatched(model)
    if device_map is None:
        model = model.to(device=dev, dtype=dt).eval()
    else:  # sharded by accelerate: its hooks move activations between devices; inputs go where the first module runs
        model = model.eval()
        dev = input_device(model)
    pad_from_eos = not getattr(config, "is_encoder_decoder", False) and tokenizer.pad_token_id is None
    if pad_from_eos:
        # Decoder-only tokenizers often have no pad token: set pad = eos, as training loops and
        # generate() itself do. The conventions record it (pad_from_eos), and the checks mask by the
        # first eos, never by != pad.
        conventions = derive_conventions(model, tokenizer)
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(conventions.eos_token_ids[0])
    conventions = derive_conventions(model, tokenizer, modality=modality or "text", processor=processor)
    if pad_from_eos:
        conventions = dataclasses.replace(conventions, pad_from_eos=True)
    return Target(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        conventions=conventions,
        device=dev,
        dtype=dt,
        device_map=device_map,
        processor=processor,
        modality=modality or "text",
    )


def dispatched(model: Any) -> dict[str, Any] | None:
    """The device map of a model accelerate dispatched (``hf_device_map``), None for a model in one place."""
    device_map = getattr(model, "hf_device_map", None)
    return dict(device_map) if isinstance(device_map, dict) and device_map else None


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: the device of its first module under a device map (a module on ``"cpu"`` or
    ``"disk"`` runs on the CPU; accelerate's hooks move what each other module needs), else its parameters'."""
    device_map = dispatched(model)
    if device_map is None:
        return next(model.parameters()).device
    first = next(iter(device_map.values()))
    if isinstance(first, int):
        return torch.device("cuda", first)
    return torch.device("cpu" if first in ("cpu", "disk") else first)


def _looks_like_factory(spec: str) -> bool:
    if ":" not in spec:
        return False
    left, func = spec.rsplit(":", 1)
    return (
        bool(left) and func.isidentifier() and (left.endswith(".py") or all(p.isidentifier() for p in left.split(".")))
    )


def _read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise TargetError(f"{path}: no config.json, so this is not a transformers checkpoint directory")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TargetError(f"{cfg_file}: corrupt config.json ({e})") from None
    if not isinstance(cfg, dict):
        raise TargetError(f"{cfg_file}: corrupt config.json (not a JSON object)")
    return cfg


def _load_checkpoint(
    path: Path, dt: torch.dtype, trust_remote_code: bool, allow_pickle: bool, placement: dict[str, Any] | None = None
) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, processor)`` of a checkpoint directory; the processor is None but for a speech or
    vision encoder-decoder."""
    import transformers

    raw = _read_config(path)
    if raw.get("auto_map") and not trust_remote_code:
        raise TargetError(
            f"{path}: the checkpoint ships its own model code (auto_map); refusing to run it without --trust-remote-code"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad checkpoint, reported in one line
        raise TargetError(f"{path}: cannot read config.json: {_one_line(e)}") from None
    cls: Any
    modality = _compat.seq2seq_modality(config)
    if modality is not None:
        cls = _compat.speech_vision_model_class(config)
    elif not getattr(config, "is_encoder_decoder", False):
        if not _compat.is_causal_lm_type(config.model_type) and not trust_remote_code:
            raise TargetError(
                f"{path}: model_type {config.model_type!r} is neither an encoder-decoder model "
                "(AutoModelForSeq2SeqLM) nor a causal language model (AutoModelForCausalLM)"
            )
        cls = transformers.AutoModelForCausalLM
    elif config.model_type == "encoder-decoder":
        cls = transformers.EncoderDecoderModel
    else:
        cls = transformers.AutoModelForSeq2SeqLM
        if not _compat.is_text_seq2seq(config.model_type) and not trust_remote_code:
            raise TargetError(
                f"{path}: model_type {config.model_type!r} is not a text-to-text model (AutoModelForSeq2SeqLM)"
            )
    names = {p.name for p in path.iterdir()}
    if names & set(_SAFE_WEIGHTS):
        weights = {"use_safetensors": True}
    elif names & set(_PICKLE_WEIGHTS):
        if not allow_pickle:
            raise TargetError(
                f"{path}: only pickle weights (pytorch_model.bin), which can run arbitrary code when loaded; "
                "convert them to safetensors or pass --allow-pickle"
            )
        weights = {"use_safetensors": False}
    else:
        raise TargetError(f"{path}: no weights found (model.safetensors)")
    try:
        model = cls.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, **weights, **_compat.dtype_kwarg(dt), **(placement or {})
        )
    except Exception as e:  # noqa: BLE001
        raise TargetError(f"{path}: cannot load the model: {_one_line(e)}") from None
    processor = None
    if modality is not None:
        processor = _load_processor(path, trust_remote_code, modality)
    if not names & set(_TOKENIZER_FILES):
        # transformers 5 silently builds an empty tokenizer from nothing: refuse instead.
        raise TargetError(f"{path}: missing tokenizer files (none of {', '.join(_TOKENIZER_FILES)})")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise TargetError(
            f"{path}: cannot load the tokenizer (missing or broken tokenizer files): {_one_line(e)}"
        ) from None
    if isinstance(tokenizer, bool) or not callable(tokenizer):
        raise TargetError(f"{path}: no tokenizer files found")
    width = model.get_output_embeddings().weight.shape[0]
    if len(tokenizer) < width // 2:
        raise TargetError(
            f"{path}: the tokenizer knows {len(tokenizer)} tokens but the model has {width} outputs "
            "(tokenizer files missing or from another model)"
        )
    if processor is not None:
        processor.tokenizer = tokenizer  # one tokenizer object: the one the conventions read
    return model, tokenizer, processor


#: What a speech or vision processor needs next to the checkpoint.
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _load_processor(path: Path, trust_remote_code: bool, modality: str) -> Any:
    """The checkpoint's ``AutoProcessor`` (feature extractor or image processor, plus tokenizer)."""
    import transformers

    if not {p.name for p in path.iterdir()} & set(_PROCESSOR_FILES):
        raise TargetError(
            f"{path}: a speech or vision model needs its processor saved next to it "
            f"(none of {', '.join(_PROCESSOR_FILES)}: processor.save_pretrained(DIR))"
        )
    try:
        processor = transformers.AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        raise TargetError(f"{path}: cannot load the processor: {_one_line(e)}") from None
    part = "feature_extractor" if modality == "audio" else "image_processor"
    if getattr(processor, part, None) is None:
        raise TargetError(f"{path}: the processor has no {part.replace('_', ' ')} for {modality} inputs")
    return processor


def _load_factory(spec: str) -> tuple[Any, Any, Any]:
    left, func = spec.rsplit(":", 1)
    try:
        if left.endswith(".py"):
            file = Path(left).resolve()
            if not file.is_file():
                raise TargetError(f"{spec}: no such file {left}")
            # The factory's folder becomes importable, so it can import its sibling modules.
            if str(file.parent) not in sys.path:
                sys.path.insert(0, str(file.parent))
            name = f"_ppi_factory_{abs(hash(str(file)))}"
            module_spec = importlib.util.spec_from_file_location(name, file)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(left)
    except TargetError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TargetError(f"{spec}: cannot import {left}: {_one_line(e)}") from None
    factory = getattr(module, func, None)
    if factory is None or not callable(factory):
        raise TargetError(f"{spec}: {left} has no callable {func!r}")
    try:
        result = factory()
    except Exception as e:  # noqa: BLE001
        raise TargetError(f"{spec}: the factory raised {type(e).__name__}: {_one_line(e)}") from None
    if not (isinstance(result, tuple) and len(result) in (2, 3)):
        raise TargetError(
            f"{spec}: the factory must return (model, tokenizer) or (model, tokenizer, processor), "
            f"got {type(result).__name__}"
        )
    model, tokenizer = result[:2]
    processor = result[2] if len(result) == 3 else None
    if not hasattr(model, "config") or not callable(tokenizer):
        raise TargetError(
            f"{spec}: the factory must return (model, tokenizer), got ({type(model).__name__}, "
            f"{type(tokenizer).__name__})"
        )
    if processor is not None and getattr(processor, "tokenizer", None) is None:
        raise TargetError(f"{spec}: the factory's processor ({type(processor).__name__}) has no tokenizer")
    return model, tokenizer, processor


def _load_cached_hub_id(
    spec: str, dt: torch.dtype, trust_remote_code: bool, allow_pickle: bool, placement: dict[str, Any] | None = None
) -> tuple[Any, Any, Any]:
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(spec, local_files_only=True)
    except Exception:  # noqa: BLE001
        raise TargetError(
            f"{spec}: no such checkpoint directory, and not in the local Hugging Face cache as a hub id "
            "(ppinvariants never downloads; fetch it first or pass a checkpoint directory)"
        ) from None
    return _load_checkpoint(Path(path), dt, trust_remote_code, allow_pickle, placement)


def _one_line(e: BaseException, most: int = 5) -> str:
    """The first line of ``e``'s message; a long comma-separated list in it (transformers names every
    parameter a device map leaves out) cut to its first ``most`` items and how many more there are."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    items = line.split(", ")
    if len(line) > 300 and len(items) > 2 * most:
        line = ", ".join(items[:most]) + f" and {len(items) - most} more"
    return line
