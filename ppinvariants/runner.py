"""Check targets end to end: load, capture under each decoding, run the invariants, build the report."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from . import progress as _progress
from .capturing import audio_window, capture, inputs_for, timestamps_on
from .decoding import DEFAULT_DECODINGS, DEFAULT_TEXTS, Decoding, for_decoder_only, resolve
from .errors import PPIError
from .invariants import Invariant
from .judge import run_invariants
from .lengths import input_limit
from .record import NOT_KEPT
from .report import Report, Result, TargetReport, environment, strict_results
from .targets import Target, load_target

Progress = Callable[[str], None]


def check_loaded(
    target: Target,
    *,
    texts: Sequence[str] = DEFAULT_TEXTS,
    decodings: Iterable[Decoding] = DEFAULT_DECODINGS,
    invariants: Iterable[Invariant] | None = None,
    progress: Progress | None = None,
    streaming: bool | None = None,
    evidence: str = "standard",
    strict: bool = False,
) -> TargetReport:
    """Run every decoding on ``target`` and every invariant on each record.

    ``streaming``: judge the per-step invariants inside generate() and keep no step tensors (see
    :mod:`ppinvariants.streaming`); None chooses it per decoding when the projected stacked size
    exceeds ``streaming.AUTO_THRESHOLD_BYTES``. ``evidence``: ``"standard"`` or ``"thorough"``
    re-runs for the consistency invariants (see :func:`ppinvariants.evidence.collect_evidence`).
    ``strict``: a check that applies but was not judged (streaming mode, missing evidence) fails
    (see :func:`ppinvariants.report.strict_results`). ``progress`` gets one line per decoding (and
    :mod:`ppinvariants.progress` sinks too).
    """
    from . import streaming as _streaming  # imports the invariants registry: not at module import time

    conventions = target.conventions.to_dict()
    conventions["describe"] = target.conventions.describe()
    tr = TargetReport(target=target.spec, conventions=conventions)
    invs = list(invariants) if invariants is not None else None
    texts = inputs_for(target, texts)  # a speech or vision model's default inputs are clips or images
    truncated: set[int] = set()
    no_transformers_reading: list[str] = []
    streamed: list[str] = []
    warned: dict[str, dict[str, int]] = {}  # transformers' warning -> decoding -> count
    main = target
    for target, decoding in _plan(main, decodings):
        if getattr(target.conventions, "decoder_only", False):
            decoding = for_decoder_only(decoding)
        # The checkpoint's generation config merged in: what ran, for streaming's size and the report.
        decoding = resolve(decoding, target.model.generation_config)
        tr.decodings[decoding.name] = {"settings": decoding.to_dict(), "note": decoding.note}
        stream = (
            _streaming.should_stream(target, texts, decoding) or not step_tensors_fit(target, texts, decoding)
            if streaming is None
            else streaming
        )
        message = f"{target.spec} / {decoding.name}{' (streaming)' if stream else ''}"
        if progress:
            progress(message)
        _progress.say(message)
        try:
            if stream:
                record, results = _streaming.run_streaming(target, list(texts), decoding, invs)
            else:
                record, results = capture(target, list(texts), decoding, evidence=evidence), None
        except PPIError:
            raise
        except Exception as e:  # noqa: BLE001 - a crash in generate() is a finding, not a crash of ours
            tr.results.append(
                Result(
                    invariant="generate",
                    decoding=decoding.name,
                    status="error",
                    reason=f"generate() raised {type(e).__name__}: {_first_line(e)}",
                )
            )
            continue
        truncated.update(record.truncated)
        for message, count in record.library_warnings.items():
            warned.setdefault(message, {})[decoding.name] = count
        if record.transition_scores is None and record.scores is not NOT_KEPT and record.scores is not None:
            no_transformers_reading.append(decoding.name)
        results = results if results is not None else run_invariants(record, invs)
        if stream:
            streamed.append(decoding.name)
            results = [_streaming_reason(r) for r in results]
        tr.results.extend(strict_results(results) if strict else results)
    target = main
    if truncated and getattr(target, "modality", "text") == "audio":
        extractor = target.processor.feature_extractor
        rate = int(getattr(extractor, "sampling_rate", 16000))
        window = audio_window(extractor) or 0
        tr.notes.append(
            f"inputs {sorted(truncated)} were longer than the feature extractor's window, {window / rate:g} s "
            f"({type(extractor).__name__}.n_samples = {window}), and were truncated to it; the checks judged the "
            "truncated clips (long-form generation over segments is not checked)"
        )
    elif truncated:
        limit = input_limit(target.tokenizer, target.model)
        tr.notes.append(
            f"inputs {sorted(truncated)} were truncated to the model's input limit, {limit.describe()}; "
            "the checks judged the truncated inputs"
        )
    if streamed:
        lost = sum(r.skip_kind == "lost" and r.decoding in streamed for r in tr.results if r.status in ("skip", "fail"))
        tr.notes.append(
            f"streaming mode ({', '.join(streamed)}): the step scores were not kept, so {lost} checks that need "
            "them or re-runs of the model were not judged"
            + (
                " (chosen automatically above 512 MiB of step tensors, or where they would not fit in memory; "
                "--no-streaming keeps them)"
                if streaming is None
                else ""
            )
        )
    if no_transformers_reading:
        tr.notes.append(
            f"transformers' compute_transition_scores gave no reading on this model ({', '.join(no_transformers_reading)}:"
            " missing, or it raised): the log-prob checks compared our gather and indexing only"
        )
    tr.notes.extend(library_warning_notes(warned))
    return tr.finalize()


def library_warning_notes(warned: dict[str, dict[str, int]]) -> list[str]:
    """One note per distinct transformers warning of the captures (silenced while they ran): its text once,
    how often it came and under which decodings, so that a warning repeated per input is read once."""
    notes = []
    for message, per_decoding in sorted(warned.items()):
        total = sum(per_decoding.values())
        where = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in per_decoding.items())
        notes.append(
            f"transformers warned {total} time{'s' if total != 1 else ''} ({where}; silenced during the captures, "
            f"and some of its warnings are printed once per process): {message!r}"
        )
    return notes


#: The decoding added for a model that predicts timestamps (Whisper): greedy search, timestamps on.
TIMESTAMPS = Decoding("timestamps", num_beams=1, do_sample=False, min_length=6, max_new_tokens=24)


def _plan(target: Target, decodings: Iterable[Decoding]) -> Iterator[tuple[Target, Decoding]]:
    """Each decoding on ``target``, then, for a model with timestamp tokens (Whisper) and the default
    decodings, :data:`TIMESTAMPS` on the target with timestamps on (:func:`ppinvariants.capturing.timestamps_on`,
    held while the caller runs it)."""
    decodings = list(decodings)
    for decoding in decodings:
        yield target, decoding
    if getattr(target.conventions, "timestamp_begin", None) is not None and tuple(decodings) == DEFAULT_DECODINGS:
        with timestamps_on(target) as stamped:
            yield stamped, TIMESTAMPS


#: Share of the free memory (host RAM; each GPU the model runs on) the step tensors may take before
#: streaming mode is chosen automatically.
FIT_FRACTION = 0.5


def _free_host_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _free_gpu_bytes(target: Target) -> dict[str, int]:
    """Free memory of each CUDA device the model runs on (its device, or every GPU of its device map)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    devices = {torch.device(target.device)} if target.device.type == "cuda" else set()
    for where in (target.device_map or {}).values():
        if isinstance(where, int) or (isinstance(where, str) and where.startswith("cuda")):
            devices.add(torch.device("cuda", where) if isinstance(where, int) else torch.device(where))
    return {str(d): int(torch.cuda.mem_get_info(d)[0]) for d in devices}


def step_tensors_fit(target: Target, texts: Sequence[str], decoding: Decoding) -> bool:
    """Whether record mode's step tensors fit: ``generate()`` keeps every step's scores and logits on the
    device of the output layer, and the record stacks them (and the evidence's teacher-forced logits under
    three layouts) in float32 on the host. Each must stay under :data:`FIT_FRACTION` of the free memory
    there; where the free memory cannot be read, they fit."""
    from . import streaming as _streaming

    decoding = resolve(decoding, target.model.generation_config)
    vocab = int(target.model.get_output_embeddings().weight.shape[0])
    steps = decoding.max_new_tokens or 20
    rows = _streaming.score_rows_of(decoding, len(texts))
    returned = len(texts) * decoding.num_return_sequences
    host = _streaming.projected_step_bytes(rows, steps, vocab) + 3 * returned * steps * vocab * 4
    free = _free_host_bytes()
    if free is not None and host > FIT_FRACTION * free:
        return False
    on_device = _streaming.projected_step_bytes(rows, steps, vocab)  # float32 scores and logits in generate()
    return all(on_device <= FIT_FRACTION * gpu for gpu in _free_gpu_bytes(target).values())


def _streaming_reason(result: Result) -> Result:
    """A result of a streamed decoding whose check was not judged says that streaming is why."""
    if result.skip_kind == "lost" and not result.reason.startswith("streaming mode"):
        return replace(result, reason=f"streaming mode: {result.reason}")
    return result


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def check(
    specs: Sequence[str],
    *,
    texts: Sequence[str] = DEFAULT_TEXTS,
    decodings: Iterable[Decoding] = DEFAULT_DECODINGS,
    invariants: Iterable[Invariant] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    streaming: bool | None = None,
    evidence: str = "standard",
    strict: bool = False,
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[str, Any] | None = None,
    offload_folder: str | None = None,
) -> Report:
    """Load and check each target; a target that cannot be loaded gets status ``error``.

    ``device_map`` / ``max_memory`` / ``offload_folder`` load each checkpoint sharded through
    transformers/accelerate (see :func:`ppinvariants.targets.load_target`)."""
    decodings = list(decodings)
    report = Report(environment=environment(device, dtype))
    for spec in specs:
        _progress.say(f"loading {spec}")
        try:
            target = load_target(
                spec,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
                device_map=device_map,
                max_memory=max_memory,
                offload_folder=offload_folder,
            )
            report.environment["device"] = str(target.device)
            if target.device_map is not None:
                report.environment["device_map"] = {k: str(v) for k, v in target.device_map.items()}
            report.targets.append(
                check_loaded(
                    target,
                    texts=texts,
                    decodings=decodings,
                    invariants=invariants,
                    progress=progress,
                    streaming=streaming,
                    evidence=evidence,
                    strict=strict,
                )
            )
        except PPIError as e:
            report.targets.append(TargetReport(target=spec, error=str(e)).finalize())
    return report
