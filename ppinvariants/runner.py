"""Check targets end to end: load, capture under each decoding, run the invariants, build the report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .capture import capture
from .decoding import DEFAULT_DECODINGS, DEFAULT_TEXTS, Decoding, resolve
from .errors import PPIError
from .invariants import Invariant, run_invariants
from .report import Report, Result, TargetReport, environment
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
) -> TargetReport:
    """Run every decoding on ``target`` and every invariant on each record.

    ``streaming``: judge the per-step invariants inside generate() and keep no step tensors (see
    :mod:`ppinvariants.streaming`); None chooses it per decoding when the projected stacked size
    exceeds ``streaming.AUTO_THRESHOLD_BYTES``. ``evidence``: ``"standard"`` or ``"thorough"``
    re-runs for the consistency invariants (see :func:`ppinvariants.evidence.collect_evidence`).
    """
    from . import streaming as _streaming  # imports the invariants registry: not at module import time

    conventions = target.conventions.to_dict()
    conventions["describe"] = target.conventions.describe()
    tr = TargetReport(target=target.spec, conventions=conventions)
    invs = list(invariants) if invariants is not None else None
    for decoding in decodings:
        # The checkpoint's generation config merged in: what ran, for streaming's size and the report.
        decoding = resolve(decoding, target.model.generation_config)
        tr.decodings[decoding.name] = {"settings": decoding.to_dict(), "note": decoding.note}
        stream = _streaming.should_stream(target, texts, decoding) if streaming is None else streaming
        if progress:
            progress(f"{target.spec} / {decoding.name}{' (streaming)' if stream else ''}")
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
                    reason=f"generate() raised {type(e).__name__}: {e}",
                )
            )
            continue
        if record.truncated:
            tr.results.append(
                Result(
                    invariant="inputs_fit_positions",
                    decoding=decoding.name,
                    status="skip",
                    reason=f"inputs {record.truncated} were truncated to the model's positions",
                )
            )
        tr.results.extend(results if results is not None else run_invariants(record, invs))
    return tr.finalize()


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
) -> Report:
    """Load and check each target; a target that cannot be loaded gets status ``error``."""
    decodings = list(decodings)
    report = Report(environment=environment(device, dtype))
    for spec in specs:
        try:
            target = load_target(
                spec,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
            )
            report.environment["device"] = str(target.device)
            report.targets.append(
                check_loaded(
                    target,
                    texts=texts,
                    decodings=decodings,
                    invariants=invariants,
                    progress=progress,
                    streaming=streaming,
                    evidence=evidence,
                )
            )
        except PPIError as e:
            report.targets.append(TargetReport(target=spec, error=str(e)).finalize())
    return report
