"""Mutation self-test: inject one fault per bug class into a healthy tiny model, and see which invariants fire.

A fault is injected the way such bugs arise in practice: a forward hook on the logits, a
post-processing of ``generate()``'s output, a change of config or tokenizer, or (decoder-only) a
sequence log-prob computed with the wrong mask. Every fault must
be caught by at least one invariant, and the healthy models must give no violation at all; a
fault nothing catches is a gap in the invariants, never a reason to drop the fault.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _compat
from .decoding import DEFAULT_DECODINGS, DEFAULT_TEXTS, Decoding
from .report import TargetReport
from .runner import check_loaded
from .targets import Target, load_target

#: Injects a fault into a fresh target; may return a function that undoes what it changed outside the target.
Inject = Callable[[Target], "Callable[[], None] | None"]


@dataclass(frozen=True)
class Fault:
    """One injected bug: its class, how it is injected, and on which tiny architecture."""

    name: str
    bug_class: str
    how: str  # "hook" | "post-process" | "config" | "tokenizer" | "rescoring"
    inject: Inject
    arch: str = "bart"


# ------------------------------------------------------------------------------- injections


def _logit_hook(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Inject:
    """Rewrite the output projection's logits with ``fn(hidden_input, logits)``."""

    def inject(target: Target) -> None:
        target.model.get_output_embeddings().register_forward_hook(lambda _m, i, o: fn(i[0], o))

    return inject


def _set(value: float, token: int = 17) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def fn(_h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., token] = value
        return logits

    return fn


def _cache_drift(h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    # Only incremental (one new position, cached) steps drift; a full forward pass does not.
    if h.shape[1] == 1:
        return logits + 0.3 * torch.linspace(-1, 1, logits.shape[-1], device=logits.device)
    return logits


_NOISE = torch.Generator().manual_seed(1234)  # outside torch.manual_seed: a nondeterministic source


def _noise(_h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return logits + 2.0 * torch.randn(logits.shape, generator=_NOISE).to(logits.device)


def _detach(_h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return logits.detach()


def _post_process(fn: Callable[[Any, Target, dict[str, Any]], None]) -> Inject:
    """Wrap ``model.generate`` so its output is altered by ``fn(out, target, kwargs)`` before anyone sees it."""

    def inject(target: Target) -> None:
        original = target.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if hasattr(out, "sequences"):
                fn(out, target, kwargs)
            return out

        target.model.generate = generate

    return inject


def _generate_with(**override: Any) -> Inject:
    """Wrap ``model.generate`` so it runs with ``override`` applied behind the caller's back."""

    def inject(target: Target) -> None:
        original = target.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            config = kwargs.get("generation_config")
            if config is not None:
                config = config.__class__.from_dict(config.to_dict())
                config.update(**override)
                kwargs["generation_config"] = config
            else:
                kwargs.update(override)
            return original(*args, **kwargs)

        target.model.generate = generate

    return inject


def _checkpoint_reports(reported: dict[str, Any], *, beam_only: bool = False, **runs: Any) -> Inject:
    """The checkpoint's generation config reports ``reported``, but ``generate()`` runs with ``runs``
    instead (in beam search only, with ``beam_only``): a setting dropped or applied with another value."""

    def inject(target: Target) -> None:
        target.model.generation_config.update(**reported)
        original = target.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            config = kwargs.get("generation_config")
            if config is not None and (not beam_only or (config.num_beams or 1) > 1):
                config = config.__class__.from_dict(config.to_dict())
                config.update(**runs)
                kwargs["generation_config"] = config
            return original(*args, **kwargs)

        target.model.generate = generate

    return inject


def _warper_applied_twice(name: str) -> Inject:
    """generate() builds its processor list with the warper ``name`` in it twice."""

    def inject(target: Target) -> None:
        model = target.model
        build = model._get_logits_processor

        def twice(*args: Any, **kwargs: Any) -> Any:
            processors = build(*args, **kwargs)
            again = [p for p in processors if type(p).__name__ == name]
            processors.extend(again[:1])
            return processors

        model._get_logits_processor = twice

    return inject


def _finished_rows(seq: torch.Tensor, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = seq[:, 1:]
    is_eos = gen == eos
    has = is_eos.any(dim=1)
    return has, is_eos.int().argmax(dim=1) + 1  # position in seq of the first eos


def _pad_before_eos(out: Any, target: Target, _kw: dict[str, Any]) -> None:
    eos, pad = target.conventions.eos_token_ids[0], target.conventions.pad_token_id
    has, pos = _finished_rows(out.sequences, eos)
    rows = has.nonzero().flatten()
    prev = (pos[rows] - 1).clamp(min=2)
    out.sequences[rows, prev] = pad


def _shift_scores(out: Any, _t: Target, _kw: dict[str, Any]) -> None:
    out.scores = tuple(out.scores[1:]) + (out.scores[-1],)
    if getattr(out, "logits", None):
        out.logits = tuple(out.logits[1:]) + (out.logits[-1],)


def _beam_scores_off(out: Any, _t: Target, _kw: dict[str, Any]) -> None:
    if getattr(out, "sequences_scores", None) is not None:
        out.sequences_scores = out.sequences_scores + 0.1


def _drop_eos(out: Any, target: Target, _kw: dict[str, Any]) -> None:
    eos, pad = target.conventions.eos_token_ids[0], target.conventions.pad_token_id
    out.sequences[out.sequences == eos] = pad
    out.sequences[:, 0] = target.conventions.decoder_start_token_id


def _wide_vocabulary(target: Target) -> None:
    """Pad the output layer past the tokenizer (as T5's 32128 for 32100) and let the extra ids win."""
    model = target.model
    n = len(target.tokenizer)
    model.resize_token_embeddings(n + 8)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[n:] = 3.0 * head[n // 2 : n // 2 + 8]


def _tokenizer_drops_end_token(target: Target) -> None:
    from tokenizers.processors import TemplateProcessing

    tok = target.tokenizer
    prefix = [tok.convert_ids_to_tokens(i) for i in target.conventions.input_prefix]
    single = " ".join([*prefix, "$A"])
    pair = " ".join([*prefix, "$A", "$B"])
    specials = [(p, tok.convert_tokens_to_ids(p)) for p in prefix]
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    _rederive(target)


def _timestamps_reordered(out: Any, target: Target, _kw: dict[str, Any]) -> None:
    """With timestamps on (no ``<|notimestamps|>`` in the prompt), each row's timestamp tokens in reverse
    order: what decoding without the timestamp rules (or a buggy re-assembly of segments) gives."""
    begin = target.conventions.timestamp_begin
    if begin is None:
        return
    seq = out.sequences
    start = seq.shape[1] - len(out.scores)
    if bool((seq[:, :start] == begin - 1).any()):
        return
    for row in range(seq.shape[0]):
        cols = (seq[row, start:] >= begin).nonzero().flatten() + start
        seq[row, cols] = seq[row, cols.flip(0)]


def _rederive(target: Target) -> None:
    from .conventions import derive_conventions

    target.conventions = derive_conventions(target.model, target.tokenizer)


def _encoder_ignores_mask(target: Target) -> None:
    encoder = target.model.get_encoder()
    forward = encoder.forward

    def no_mask(*args: Any, **kwargs: Any) -> Any:
        kwargs["attention_mask"] = None
        return forward(*args, **kwargs)

    encoder.forward = no_mask


# ------------------------------------------------------------------------------- decoder-only faults


def _positions_ignore_mask(target: Target) -> None:
    """The model numbers positions from the first column, left padding included (``position_ids`` dropped)."""
    forward = target.model.forward

    def no_positions(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("position_ids", None)
        return forward(*args, **kwargs)

    target.model.forward = no_positions


def _logprob_mask_from_pad(target: Target) -> Callable[[], None]:
    """The sequence log-prob (teacher-forced, with gradient: what a training loop computes) masks the generated
    tokens with ``sequences != pad``: where pad is eos that drops each row's real eos. Returns the undo."""
    from . import evidence

    original = evidence.generation_mask
    pad = target.conventions.pad_token_id

    def not_pad(sequences: torch.Tensor, eos_token_ids: Any, prompt_length: int = 1) -> torch.Tensor:
        return (sequences[:, prompt_length:] != pad).long()

    evidence.generation_mask = not_pad

    def undo() -> None:
        evidence.generation_mask = original

    return undo


def _right_padded(target: Target) -> None:
    """Prompts padded on the right (the tokenizer's default side), so generation continues after the padding."""
    from dataclasses import replace

    target.conventions = replace(target.conventions, padding_side="right")


#: Decoder-only faults (checked with transformers 5 only, as decoder-only models are).
CAUSAL_FAULTS: tuple[Fault, ...] = (
    Fault(
        "positions_ignore_mask",
        "position ids ignore the attention mask under left padding",
        "hook",
        _positions_ignore_mask,
        # Absolute learned positions: under rotary embeddings (Llama, Mistral, Gemma, Qwen2, Phi) attention
        # reads only relative positions, and a row's constant shift changes nothing (1e-5 in the logits).
        arch="gpt2",
    ),
    Fault(
        "logprob_mask_not_pad",
        "a sequence log-prob masked by != pad where pad is eos",
        "rescoring",
        _logprob_mask_from_pad,
        arch="llama",
    ),
    Fault("right_padding", "prompts right-padded for generation", "tokenizer", _right_padded, arch="gemma"),
)

FAULTS: tuple[Fault, ...] = (
    Fault("nan_logits", "NaN logits (fp16 overflow)", "hook", _logit_hook(_set(float("nan")))),
    Fault("posinf_logits", "+inf logits", "hook", _logit_hook(_set(float("inf")))),
    Fault("unexplained_neg_inf", "a token banned by no processor", "hook", _logit_hook(_set(float("-inf"), 42))),
    Fault("min_length_ignored", "minimum length not enforced", "config", _generate_with(min_length=0)),
    Fault("wrong_decoder_start", "wrong decoder start token", "config", _generate_with(decoder_start_token_id=0)),
    # (None would mean "unset" to generate(), which then falls back to the model's own forced token.)
    Fault(
        "forced_bos_wrong",
        "forced first token not the configured one",
        "config",
        _generate_with(forced_bos_token_id=50),
    ),
    Fault("pad_before_eos", "pad inserted before eos", "post-process", _post_process(_pad_before_eos)),
    Fault("eos_dropped", "end token removed from outputs", "post-process", _post_process(_drop_eos)),
    Fault("shifted_step_scores", "step scores off by one step", "post-process", _post_process(_shift_scores)),
    Fault(
        "beam_scores_inconsistent", "beam scores not the per-token sum", "post-process", _post_process(_beam_scores_off)
    ),
    Fault("top_k_ignored", "sampling outside the configured top-k", "config", _generate_with(top_k=None)),
    Fault("cache_drift", "cached decoding drifts from a full pass", "hook", _logit_hook(_cache_drift)),
    Fault("encoder_ignores_mask", "encoder ignores the attention mask", "hook", _encoder_ignores_mask),
    Fault("nondeterministic", "non-determinism in eval mode", "hook", _logit_hook(_noise)),
    Fault("logits_detached", "logits detached from the parameters", "hook", _logit_hook(_detach)),
    Fault("ids_outside_tokenizer", "generated ids outside the tokenizer", "config", _wide_vocabulary),
    Fault("tokenizer_drops_eos", "tokenizer drops its end token", "tokenizer", _tokenizer_drops_end_token),
    Fault("pad_zero_t5_nan", "NaN logits on a pad-started model", "hook", _logit_hook(_set(float("nan"))), arch="t5"),
    # Real settings: the checkpoint's generation config says one thing, generate() does another.
    Fault(
        "repetition_penalty_dropped",
        "a penalty the checkpoint reports is not applied",
        "config",
        _checkpoint_reports({"repetition_penalty": 1.3}, repetition_penalty=1.0),
    ),
    Fault(
        "repetition_penalty_other_value",
        "a penalty applied with another value",
        "config",
        _checkpoint_reports({"repetition_penalty": 1.3}, repetition_penalty=2.0),
    ),
    Fault(
        "temperature_applied_twice",
        "a warper applied twice",
        "config",
        _warper_applied_twice("TemperatureLogitsWarper"),
    ),
    Fault(
        "ngram_ban_dropped_in_beam_search",
        "a ban not enforced in beam search",
        "config",
        _checkpoint_reports({"no_repeat_ngram_size": 2}, beam_only=True, no_repeat_ngram_size=0),
    ),
    Fault(
        "length_penalty_ignored",
        "a length penalty ignored by beam search",
        "config",
        _checkpoint_reports({"length_penalty": 2.0}, beam_only=True, length_penalty=1.0),
    ),
    # Speech: Whisper's forced decoder prompt and its timestamps.
    Fault(
        "wrong_language_token",
        "a transcript forced in another language than requested",
        "config",
        _generate_with(language="fr"),
        arch="whisper",
    ),
    Fault(
        "timestamps_out_of_order",
        "timestamps that decrease",
        "post-process",
        _post_process(_timestamps_reordered),
        arch="whisper",
    ),
    # Speech under an attention mask: the encoder attends to the padded frames (caught by the batch padded wider).
    Fault(
        "audio_mask_ignored",
        "a speech encoder ignores the attention mask over padded audio",
        "hook",
        _encoder_ignores_mask,
        arch="speech2text",
    ),
) + (CAUSAL_FAULTS if _compat.checks_decoder_only() else ())

#: Healthy models checked by the self-test besides the default set: speech and vision models.
HEALTHY_EXTRA: tuple[str, ...] = ("whisper", "vision-encoder-decoder", "speech-encoder-decoder", "speech2text")


# ------------------------------------------------------------------------------- running


@dataclass
class FaultResult:
    fault: Fault
    fired: list[str] = field(default_factory=list)  # invariants that failed
    errors: list[str] = field(default_factory=list)  # e.g. generate() crashing for one decoding

    @property
    def detected(self) -> bool:
        return bool(self.fired)


@dataclass
class SelfTestReport:
    faults: list[FaultResult]
    healthy: list[TargetReport]

    @property
    def detection_rate(self) -> float:
        return sum(r.detected for r in self.faults) / max(1, len(self.faults))

    @property
    def healthy_violations(self) -> int:
        return sum(len(r.violations) for t in self.healthy for r in t.results if r.status in ("fail", "error"))

    @property
    def ok(self) -> bool:
        return (
            all(r.detected for r in self.faults)
            and self.healthy_violations == 0
            and not any(t.error for t in self.healthy)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "detection_rate": self.detection_rate,
            "healthy_violations": self.healthy_violations,
            "faults": [
                {
                    "fault": r.fault.name,
                    "bug_class": r.fault.bug_class,
                    "injected_by": r.fault.how,
                    "arch": r.fault.arch,
                    "detected": r.detected,
                    "fired": r.fired,
                    "errors": r.errors,
                }
                for r in self.faults
            ],
            "healthy": [{"target": t.target, "status": t.status} for t in self.healthy],
        }

    def render(self) -> str:
        width = max(len(r.fault.name) for r in self.faults)
        lines = [f"{'fault'.ljust(width)}  {'injected by'.ljust(12)}  detected  invariants that fired"]
        for r in self.faults:
            fired = ", ".join(r.fired) or "-- NONE (a gap) --"
            lines.append(
                f"{r.fault.name.ljust(width)}  {r.fault.how.ljust(12)}  {'yes' if r.detected else 'NO ':8}  {fired}"
            )
        lines.append("")
        lines.append(
            f"detection rate: {sum(r.detected for r in self.faults)}/{len(self.faults)} = {self.detection_rate:.0%}"
        )
        statuses = ", ".join(f"{t.target} {t.status}" for t in self.healthy)
        lines.append(f"healthy models: {self.healthy_violations} violations ({statuses})")
        return "\n".join(lines)


def run_fault(
    fault: Fault, *, texts: Sequence[str] = DEFAULT_TEXTS, decodings: Sequence[Decoding] = DEFAULT_DECODINGS
) -> FaultResult:
    """Load a fresh tiny model, inject ``fault``, run every invariant under every decoding."""
    target = load_target(f"tiny:{fault.arch}")
    undo = fault.inject(target)
    try:
        report = check_loaded(target, texts=texts, decodings=decodings)
    finally:
        if undo is not None:
            undo()
    result = FaultResult(fault)
    result.fired = sorted({r.invariant for r in report.results if r.status == "fail"})
    result.errors = [f"{r.decoding}: {r.reason}" for r in report.results if r.status == "error"]
    return result


def run_selftest(
    faults: Sequence[Fault] = FAULTS,
    *,
    healthy_archs: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SelfTestReport:
    """Every fault in ``faults`` against fresh models, and the healthy built-in models unchanged.

    ``healthy_archs`` defaults to the zoo's default seq2seq set, and its decoder-only models where they are
    checked (transformers 5).
    """
    from . import zoo

    results = []
    for fault in faults:
        if progress:
            progress(f"fault {fault.name}")
        results.append(run_fault(fault))
    healthy = []
    if healthy_archs is None:
        healthy_archs = (
            *zoo.ARCHITECTURES,
            *(zoo.CAUSAL_ARCHITECTURES if _compat.checks_decoder_only() else ()),
            *HEALTHY_EXTRA,
        )
    for arch in healthy_archs:
        if progress:
            progress(f"healthy tiny:{arch}")
        healthy.append(check_loaded(load_target(f"tiny:{arch}")))
    return SelfTestReport(results, healthy)


def report_json(report: SelfTestReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


__all__ = [
    "CAUSAL_FAULTS",
    "FAULTS",
    "HEALTHY_EXTRA",
    "Fault",
    "FaultResult",
    "SelfTestReport",
    "run_fault",
    "run_selftest",
]
