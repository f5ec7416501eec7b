"""Run ``generate()`` once and keep everything the invariants need in one :class:`GenerationRecord`.

Also home of the vectorized helpers the invariants share: stacking step tensors, mapping each
generated token to the score row that produced it, the padding mask, chosen-token log-probs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import _compat
from .conventions import Conventions
from .errors import NotApplicable, UsageError
from .masks import finished_mask
from .texts import DEFAULT_TEXTS as DEFAULT_TEXTS  # re-exported: capture.DEFAULT_TEXTS stays public


@dataclass(frozen=True)
class Decoding:
    """A named decoding config: the ``generate()`` arguments a check run uses."""

    name: str
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    max_new_tokens: int = 24
    min_length: int | None = None
    min_new_tokens: int | None = None
    length_penalty: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    no_repeat_ngram_size: int | None = None
    renormalize_logits: bool | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise UsageError(f"decoding {self.name}: num_beams and num_return_sequences must be >= 1")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise UsageError(
                f"decoding {self.name}: num_return_sequences ({self.num_return_sequences}) > num_beams "
                f"({self.num_beams}) is invalid for beam/greedy search"
            )
        if self.max_new_tokens < 1:
            raise UsageError(f"decoding {self.name}: max_new_tokens must be >= 1")

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "num_beams": self.num_beams,
            "num_return_sequences": self.num_return_sequences,
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
        }
        for name in (
            "min_length",
            "min_new_tokens",
            "length_penalty",
            "temperature",
            "top_k",
            "top_p",
            "no_repeat_ngram_size",
            "renormalize_logits",
        ):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        if self.bad_words_ids:
            kw["bad_words_ids"] = [list(w) for w in self.bad_words_ids]
        return kw

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


GREEDY = Decoding("greedy", min_length=6, max_new_tokens=24)
BEAM = Decoding("beam", num_beams=4, num_return_sequences=2, min_length=6, max_new_tokens=24)
SAMPLE = Decoding(
    "sample", do_sample=True, temperature=0.8, top_k=40, top_p=0.9, min_length=6, max_new_tokens=24, seed=0
)
DEFAULT_DECODINGS: tuple[Decoding, ...] = (GREEDY, BEAM, SAMPLE)


class StepsNotKept:
    """Stands in for ``GenerationRecord.scores`` / ``.logits`` when streaming mode kept no step tensors.

    Any use (attribute, indexing, arithmetic, a ``torch`` function) raises :class:`NotApplicable`, so
    every invariant that reads stacked step tensors skips with :data:`STEPS_NOT_KEPT_REASON` instead
    of each one testing for it; ``is NOT_KEPT`` tells it apart from "never returned" (None).
    """

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotApplicable(STEPS_NOT_KEPT_REASON)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle/dataclass probes must see a plain object
            raise AttributeError(name)
        self._refuse()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise NotApplicable(STEPS_NOT_KEPT_REASON)

    __getitem__ = __len__ = __iter__ = __float__ = __neg__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __repr__(self) -> str:
        return "<step tensors not kept (streaming mode)>"


STEPS_NOT_KEPT_REASON = "streaming mode: step scores not kept"
#: The one :class:`StepsNotKept` instance: ``record.scores is NOT_KEPT`` in streaming mode.
NOT_KEPT = StepsNotKept()


@dataclass
class GenerationRecord:
    """Everything one ``generate()`` call produced, plus what is needed to judge it.

    ``scores`` and ``logits`` are stacked to ``[score_rows, steps, V]`` in float32 on the CPU.
    ``score_rows`` is ``batch * num_return_sequences`` for greedy search and sampling and
    ``batch * num_beams`` for beam search (one row per beam, re-indexed by ``beam_indices``).
    ``sequences`` is ``[batch * num_return_sequences, 1 + steps]`` and starts with the decoder start.
    """

    target: str
    decoding: Decoding
    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sequences: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor | None
    beam_indices: torch.Tensor | None
    sequences_scores: torch.Tensor | None
    transition_scores: torch.Tensor | None
    generation_config: dict[str, Any]
    conventions: Conventions
    output_width: int
    tokenizer_size: int
    dtype: str
    device: str
    truncated: list[int] = field(default_factory=list)
    tokenizer: Any = field(default=None, repr=False, compare=False)
    model_type: str = ""  # config.model_type, for known-issue signatures
    evidence: Any = field(default=None, repr=False)  # ppinvariants.evidence.Evidence, when collected
    # Streaming mode: chosen-token log-probs [rows, steps] accumulated during generation (scores is NOT_KEPT).
    streamed_chosen: torch.Tensor | None = field(default=None, repr=False)
    # Tensors derived from the step tensors, computed once for all invariants: see derived().
    _derived: dict[str, tuple[tuple[Any, ...], tuple[int, ...], torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def derived(self, key: str, sources: tuple[Any, ...], fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``fn()``, computed once per ``key`` while ``sources`` are the same, unmodified tensors.

        Several invariants need the same vocabulary-wide tensor (the step log-probs, say); this
        computes it once. The entry is recomputed when a source is replaced or changed in place
        (``Tensor._version`` counts in-place writes), so an altered record is never judged on stale
        values. :func:`ppinvariants.invariants.run_invariants` empties the cache when it is done.
        """
        versions = tuple(getattr(src, "_version", 0) for src in sources)
        hit = self._derived.get(key)
        if hit is not None and hit[1] == versions and [id(a) for a in hit[0]] == [id(b) for b in sources]:
            return hit[2]  # ids are safe to compare: the entry holds its sources, so none was freed
        value = fn()
        self._derived[key] = (sources, versions, value)
        return value

    def forget_derived(self) -> None:
        """Free the tensors :meth:`derived` keeps."""
        self._derived.clear()

    # -- shape facts -------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return int(self.sequences.shape[1]) - 1

    @property
    def is_beam(self) -> bool:
        return self.decoding.num_beams > 1 and not self.decoding.do_sample

    @property
    def is_greedy(self) -> bool:
        return self.decoding.num_beams == 1 and not self.decoding.do_sample

    @property
    def rows_per_input(self) -> int:
        return self.decoding.num_return_sequences

    def input_of_row(self, row: int) -> int:
        return row // self.rows_per_input

    @property
    def max_length(self) -> int:
        """Length limit of ``sequences`` rows, decoder start included."""
        gc = self.generation_config
        if gc.get("max_new_tokens") is not None:
            return 1 + int(gc["max_new_tokens"])
        return int(gc.get("max_length") or 20)

    @property
    def tolerance(self) -> float:
        """Absolute tolerance for float comparisons, following the model's dtype."""
        return {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}.get(self.dtype, 1e-4)

    @property
    def tie_tolerance(self) -> float:
        """Log-prob margin under which two candidate tokens are a tie at this dtype's precision.

        bfloat16 keeps 8 significant bits: logits of magnitude 16 to 32 are rounded to steps of
        0.125, so two tokens closer than about two such steps can swap under any change of
        kernel (padding, batch shape). float16 keeps 11 bits.
        """
        return {"float32": 1e-4, "bfloat16": 0.25, "float16": 0.05}.get(self.dtype, 1e-4)

    def token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return str(token_id)
        try:
            text = self.tokenizer.convert_ids_to_tokens(int(token_id))
        except Exception:  # noqa: BLE001 - ids outside the tokenizer are themselves a finding
            return f"<id {token_id} outside tokenizer>"
        return f"<id {token_id} outside tokenizer>" if text is None else str(text)

    def repro(self) -> str:
        return (
            f"target={self.target} decoding={self.decoding.to_dict()} dtype={self.dtype} device={self.device} "
            f"seed={self.decoding.seed}"
        )


# ------------------------------------------------------------------------------ helpers


def stack_steps(steps: tuple[torch.Tensor, ...] | None) -> torch.Tensor | None:
    """``generate()``'s tuple of per-step ``[rows, V]`` tensors as one float32 ``[rows, steps, V]``."""
    if steps is None or len(steps) == 0:
        return None
    return torch.stack([s.detach().float().cpu() for s in steps], dim=1)


def generated_tokens(record: GenerationRecord) -> torch.Tensor:
    """The tokens chosen at each step, ``[rows, steps]`` (``sequences`` without the decoder start)."""
    return record.sequences[:, 1:]


def score_rows(record: GenerationRecord) -> torch.Tensor:
    """For each returned row and step, the row of ``scores`` that chose the token, ``[rows, steps]``.

    Beam search: ``beam_indices`` (``-1`` after a hypothesis ended). Otherwise: the row itself.
    """
    rows, steps = record.sequences.shape[0], record.steps
    if record.is_beam and record.beam_indices is not None:
        bi = record.beam_indices[:, :steps]
        if bi.shape[1] < steps:  # some versions trim beam_indices to the longest hypothesis
            pad = torch.full((rows, steps - bi.shape[1]), -1, dtype=bi.dtype)
            bi = torch.cat([bi, pad], dim=1)
        return bi
    return torch.arange(rows).unsqueeze(1).expand(rows, steps)


def log_probs(scores: torch.Tensor) -> torch.Tensor:
    """log_softmax over the vocabulary, in float32."""
    return torch.log_softmax(scores.float(), dim=-1)


def score_logprobs(record: GenerationRecord) -> torch.Tensor:
    """``log_softmax`` of the record's step scores, ``[score_rows, steps, V]``, computed once per record."""
    return record.derived("score_logprobs", (record.scores,), lambda: log_probs(record.scores))


def score_probs(record: GenerationRecord) -> torch.Tensor:
    """``softmax`` of the record's step scores (``exp`` of :func:`score_logprobs`), computed once per record."""
    return record.derived("score_probs", (record.scores,), lambda: score_logprobs(record).exp())


def step_logprobs(record: GenerationRecord, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Per-step log-probs as the decoding defines them, ``[score_rows, steps, V]``.

    Greedy search and sampling return processed *logits*: log_softmax turns them into log-probs.
    Beam search returns processed *log-probs* (log_softmax, then the processors): they are used
    as they are, since that is what beam scores add up (no renormalisation after ``-inf`` masks).
    """
    if scores is None:
        return record.scores.float() if record.is_beam else score_logprobs(record)
    return scores.float() if record.is_beam else log_probs(scores)


def chosen_logprobs(record: GenerationRecord, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Log-prob of each generated token, ``[rows, steps]``, by one gather over :func:`step_logprobs`.

    Positions whose score row is ``-1`` (after a beam hypothesis ended) read row 0 and must be
    masked out by the caller with :func:`finished_mask`. A streaming-mode record (no step scores
    kept) returns the log-probs its monitor accumulated during generation.
    """
    if scores is None and record.scores is NOT_KEPT and record.streamed_chosen is not None:
        return record.streamed_chosen
    if scores is not None:
        return _gather_chosen(record, step_logprobs(record, scores))
    sources = (record.scores, record.sequences, record.beam_indices)
    return record.derived("chosen_logprobs", sources, lambda: _gather_chosen(record, step_logprobs(record)))


def _gather_chosen(record: GenerationRecord, lp: torch.Tensor) -> torch.Tensor:
    rows = score_rows(record).clamp(min=0)
    tokens = generated_tokens(record)
    if tokens.shape[1] > lp.shape[1]:
        raise ValueError(f"{tokens.shape[1]} generated tokens per row but scores for {lp.shape[1]} steps")
    steps = torch.arange(tokens.shape[1])[None, :]
    # One gather over the flattened [score_rows * steps * V] log-probs (row r, step t, token v sits at
    # (r * steps + t) * V + v): no [rows, steps, V] copy of the beam-re-indexed scores is made.
    flat = (rows * lp.shape[1] + steps) * lp.shape[2] + tokens
    return lp.reshape(-1).gather(0, flat.reshape(-1)).reshape(tokens.shape)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row sums of ``values`` where ``mask`` is 1. Uses ``where``, not ``values * mask``: padded
    positions may hold ``-inf`` (e.g. a forced step), and ``-inf * 0`` is NaN."""
    return torch.where(mask.bool(), values, torch.zeros_like(values)).sum(dim=1)


def sequence_logprob(record: GenerationRecord) -> torch.Tensor:
    """Masked sum of chosen-token log-probs per returned row: padding after eos is not counted."""
    mask, _ = finished_mask(generated_tokens(record), record.conventions.eos_token_ids)
    return masked_sum(chosen_logprobs(record), mask)


# ------------------------------------------------------------------------------ capture


def encode(tokenizer: Any, texts: list[str], model: Any) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Tokenize a padded batch, truncating to the model's positions; returns the rows truncated."""
    if not texts:
        raise UsageError("no input texts: give at least one")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise UsageError(f"input text #{i} is empty or whitespace-only: {t!r}")
    limit = _max_positions(tokenizer, model)
    full = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    truncated = [i for i, ids in enumerate(full) if len(ids) > limit]
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=limit)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, truncated


def _max_positions(tokenizer: Any, model: Any) -> int:
    candidates = [getattr(model.config, "max_position_embeddings", None)]
    enc = getattr(model.config, "encoder", None)
    if enc is not None:
        candidates.append(getattr(enc, "max_position_embeddings", None))
    tml = getattr(tokenizer, "model_max_length", None)
    if tml is not None and tml < 1_000_000:
        candidates.append(tml)
    values = [int(c) for c in candidates if c]
    return min(values) if values else 512


def capture(
    target: Any,
    texts: list[str],
    decoding: Decoding,
    *,
    evidence: bool | str = True,
    keep_scores: bool = True,
    logits_processor: Any = None,
) -> GenerationRecord:
    """Run ``target.model.generate()`` on ``texts`` under ``decoding`` and return the record.

    With ``evidence`` (``True`` or ``"standard"``, the default, or ``"thorough"``) the model is also
    re-run as the consistency invariants need (teacher forcing with gradients, a reversed and wider
    padded batch, a second run; thorough adds each input alone and more); see
    :func:`ppinvariants.evidence.collect_evidence`. With ``False`` those invariants skip.
    Without ``keep_scores`` generate() is not asked for step scores or logits (it would keep them
    all): ``scores`` and ``logits`` are :data:`NOT_KEPT` and ``transition_scores`` None; see
    :mod:`ppinvariants.streaming`. ``logits_processor`` is passed to generate() as given.
    """
    decoding.validate()
    if evidence not in (True, False, "standard", "thorough"):
        raise UsageError(f"evidence must be True, False, 'standard' or 'thorough', not {evidence!r}")
    model, tokenizer = target.model, target.tokenizer
    batch, truncated = encode(tokenizer, texts, model)
    batch = {k: v.to(target.device) for k, v in batch.items()}
    gen_config = copy.deepcopy(model.generation_config)
    gen_config.update(**decoding.generate_kwargs())
    gen_config.return_dict_in_generate = True
    gen_config.output_scores = keep_scores
    if _compat.has_output_logits():
        gen_config.output_logits = keep_scores
    extra = {} if logits_processor is None else {"logits_processor": logits_processor}
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
    effective = _compat.resolve_lengths(gen_config.to_dict())
    record = GenerationRecord(
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
    if evidence:
        from .evidence import collect_evidence  # evidence reads records: imported here, not at the top

        record.evidence = collect_evidence(target, record, "standard" if evidence is True else str(evidence))
    return record
