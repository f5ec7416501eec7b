"""``GenerationRecord``: everything one ``generate()`` call produced, and the vectorized helpers the checks share.

The helpers stack step tensors, map each generated token to the score row that produced it, build the
padding mask (one definition of "up to and including the first eos") and gather chosen-token log-probs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .conventions import Conventions
from .decoding import Decoding
from .errors import NotJudged
from .masks import finished_mask as finished_mask  # re-exported: one definition, in the bottom layer
from .processing import Processing

_T = TypeVar("_T")


class StepsNotKept:
    """Stands in for ``GenerationRecord.scores`` / ``.logits`` when streaming mode kept no step tensors.

    Any use (attribute, indexing, arithmetic, a ``torch`` function) raises :class:`NotJudged` (a :class:`NotApplicable`), so
    every invariant that reads stacked step tensors skips with :data:`STEPS_NOT_KEPT_REASON` instead
    of each one testing for it; ``is NOT_KEPT`` tells it apart from "never returned" (None).
    """

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotJudged(STEPS_NOT_KEPT_REASON)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle/dataclass probes must see a plain object
            raise AttributeError(name)
        self._refuse()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise NotJudged(STEPS_NOT_KEPT_REASON)

    __getitem__ = __len__ = __iter__ = __float__ = __neg__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __repr__(self) -> str:
        return "<step tensors not kept (streaming mode)>"


STEPS_NOT_KEPT_REASON = "streaming mode: step scores not kept"
#: The one :class:`StepsNotKept` instance: ``record.scores is NOT_KEPT`` in streaming mode.
NOT_KEPT = StepsNotKept()

#: Why a record of a model whose beam search returns each step's scores per returned hypothesis (Whisper's) has
#: no raw logits to replay or rescore: said in one wording by every check it stops.
LOGITS_OF_FIRST_BEAMS = (
    "the model's generate() returns under beam search the raw logits of the first beam rows, "
    "not of each returned hypothesis"
)


def tolerance_for(dtype: str) -> float:
    """Absolute tolerance for float comparisons of scores computed by a model in ``dtype`` (its name)."""
    return {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}.get(dtype, 1e-4)


@dataclass
class GenerationRecord:
    """Everything one ``generate()`` call produced, plus what is needed to judge it.

    ``scores`` and ``logits`` are stacked to ``[score_rows, steps, V]`` in float32 on the CPU.
    ``score_rows`` is ``batch * num_return_sequences`` for greedy search and sampling and
    ``batch * num_beams`` for beam search (one row per beam, re-indexed by ``beam_indices``).
    ``sequences`` is ``[batch * num_return_sequences, prompt_length + steps]``: an encoder-decoder
    model's rows start with the decoder start (``prompt_length`` 1); a decoder-only model's echo its
    left-padded prompt (``prompt_length`` the prompt's width P), so that the generated part starts at
    column ``prompt_length`` in every row.
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
    # The reference processors the decoding asks for (ppinvariants.processing), replayed by the checks.
    processing: Processing | None = field(default=None, repr=False, compare=False)
    processing_error: str = ""  # why no reference could be built, for the checks' skip reason
    # Warnings transformers printed during generate() and the re-runs, counted (silenced there): message -> count.
    library_warnings: dict[str, int] = field(default_factory=dict, compare=False)
    # Columns of ``sequences`` before the first generated token: 1 (the decoder start) for an encoder-decoder
    # model, the left-padded prompt's width for a decoder-only model.
    prompt_length: int = 1
    # "text", "audio" or "image". A speech or vision model's encoder inputs (input_features / input_values /
    # pixel_values, and attention_mask where its encoder takes one) are in encoder_inputs; its input_ids and
    # attention_mask are then empty ([batch, 0]) and texts holds a label of each input ("audio 0.50 s").
    modality: str = "text"
    encoder_inputs: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # Beam search whose generate() returned each step's scores already re-indexed to the returned hypotheses
    # (Whisper's): one score row per returned row, and beam_indices mapping each row to itself (-1 after its end).
    scores_per_hypothesis: bool = False
    # Tensors derived from the step tensors, computed once for all invariants: see derived().
    _derived: dict[str, tuple[tuple[Any, ...], tuple[int, ...], Any]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def derived(self, key: str, sources: tuple[Any, ...], fn: Callable[[], _T]) -> _T:
        """``fn()``, computed once per ``key`` while ``sources`` are the same, unmodified tensors.

        Several invariants need the same vocabulary-wide tensor (the step log-probs, say); this
        computes it once. The entry is recomputed when a source is replaced or changed in place
        (``Tensor._version`` counts in-place writes), so an altered record is never judged on stale
        values. :func:`ppinvariants.judge.run_invariants` empties the cache when it is done.
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
    def batch_size(self) -> int:
        """Number of inputs."""
        return int(self.input_ids.shape[0])

    def model_inputs(self, rows: list[int] | slice | None = None, repeat: int = 1) -> dict[str, torch.Tensor]:
        """The encoder inputs generate() was given (``input_ids`` and ``attention_mask`` for text, the
        processor's tensors otherwise), optionally for some ``rows`` only, each repeated ``repeat`` times."""
        batch = (
            dict(self.encoder_inputs)
            if self.encoder_inputs is not None
            else {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        )
        if rows is not None:
            batch = {k: v[rows] for k, v in batch.items()}
        if repeat > 1:
            batch = {k: v.repeat_interleave(repeat, dim=0) for k, v in batch.items()}
        return batch

    @property
    def beams_per_input(self) -> int:
        """Score rows per input in beam search: ``num_beams``, or ``num_return_sequences`` where the scores
        came back one row per returned hypothesis (:attr:`scores_per_hypothesis`)."""
        return self.decoding.num_return_sequences if self.scores_per_hypothesis else self.decoding.num_beams

    @property
    def steps(self) -> int:
        return int(self.sequences.shape[1]) - self.prompt_length

    @property
    def decoder_only(self) -> bool:
        return bool(getattr(self.conventions, "decoder_only", False))

    @property
    def is_beam(self) -> bool:
        """Beam search or beam sampling (``do_sample`` with ``num_beams > 1``): both keep ``num_beams`` score rows
        per input, processed log-probs, and report ``beam_indices`` and ``sequences_scores``."""
        return self.decoding.num_beams > 1

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
        """Length limit of ``sequences`` rows, decoder start (or prompt) included."""
        gc = self.generation_config
        if gc.get("max_new_tokens") is not None:
            return self.prompt_length + int(gc["max_new_tokens"])
        return int(gc.get("max_length") or 20)

    @property
    def tolerance(self) -> float:
        """Absolute tolerance for float comparisons, following the model's dtype."""
        return tolerance_for(self.dtype)

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

    def decoded_text(self, token_ids: list[int]) -> str:
        """``token_ids`` as the tokenizer decodes them (special tokens kept, spaces not cleaned up), so that
        byte-level pieces such as ``'Ġpolic'`` read as text; "" without a tokenizer or where it cannot."""
        if self.tokenizer is None:
            return ""
        try:
            return str(
                self.tokenizer.decode(
                    [int(i) for i in token_ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            )
        except Exception:  # noqa: BLE001 - an id outside the tokenizer: the pieces are shown instead
            return ""

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
    """The tokens chosen at each step, ``[rows, steps]`` (``sequences`` without the decoder start or prompt)."""
    return record.sequences[:, record.prompt_length :]


def prompt_rows(record: GenerationRecord, rows: int) -> torch.Tensor:
    """The decoder prompt of each of ``rows`` rows (``batch * k`` rows, k per input), ``[rows, prompt_length]``:
    the decoder start for an encoder-decoder model, the left-padded prompt for a decoder-only one."""
    if record.decoder_only:
        batch = int(record.input_ids.shape[0])
        return record.input_ids[:, : record.prompt_length].repeat_interleave(max(1, rows // batch), dim=0)[:rows]
    if record.prompt_length > 1 and record.sequences.shape[0] > 0:
        # A forced decoder prompt (Whisper's): as generate() put it in the returned rows of the same input.
        batch = record.batch_size
        per_row = max(1, rows // max(1, batch))
        returned = [min(int(r) // per_row, batch - 1) * record.rows_per_input for r in range(rows)]
        return record.sequences[returned, : record.prompt_length].clone()
    start = record.conventions.decoder_start_token_id or 0
    return torch.full((rows, record.prompt_length), int(start), dtype=record.sequences.dtype)


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


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy of each distribution along the last axis: ``-sum p log p``, with ``0 log 0 = 0`` (the
    convention) and NaN kept (``xlogy``), so that an invalid distribution shows. The one definition,
    shared by the entropy check, streaming mode, ``explain`` and the violation contexts."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


@dataclass(frozen=True)
class VocabSummary:
    """Per-distribution scalars of score tensors ``[..., V]``, each ``[...]``, from :func:`vocab_summary`.

    ``best``: ``amax(dim=-1)`` (NaN where the row holds a NaN, ``+inf`` where it holds ``+inf``, ``-inf``
    where every score is ``-inf``). ``log_z``: ``log sum exp(s - best)``. ``prob_sum``: the sum of the
    softmax; ``entropy``: ``-sum p log p`` of the softmax (``0 log 0 = 0``). Where ``best`` is not finite the
    row has no distribution: ``log_z``, ``prob_sum`` and ``entropy`` are NaN. ``scores``: the float32 scores
    summarised (not a copy), for the argmax ids where one is asked for (:meth:`best_ids_where`).
    """

    best: torch.Tensor
    log_z: torch.Tensor
    prob_sum: torch.Tensor
    entropy: torch.Tensor
    scores: torch.Tensor = field(repr=False)

    @property
    def clean(self) -> bool:
        """No NaN and no ``+inf`` anywhere in the summarised scores (``amax`` propagates both; an all ``-inf``
        row has maximum ``-inf``, which is neither, so it is looked at too)."""
        return bool(torch.isfinite(self.best).all())

    def logprob_at(self, index: Any, values: torch.Tensor) -> torch.Tensor:
        """``log_softmax`` at the distributions ``index`` (an index into the leading ``[...]`` dims) of the scores
        ``values`` taken there: ``(s - best) - log_z``, torch's own ``log_softmax`` formula, for these entries only."""
        return (values.float() - self.best[index]) - self.log_z[index]

    def best_ids_where(self, where: torch.Tensor) -> torch.Tensor:
        """``argmax(dim=-1)`` (the first maximal id, as ``max(dim=-1)`` gives it) of the distributions where
        ``where`` (``[...]`` bool) holds, ``-1`` elsewhere. The argmax is a pass of its own, dearer than
        ``amax``: a greedy check needs the id only to name it where a token is not the maximum."""
        out = torch.full(where.shape, -1, dtype=torch.long, device=self.best.device)
        if bool(where.any()):
            out[where] = self.scores[where].argmax(dim=-1)
        return out


#: Scores per chunk of :func:`vocab_summary` on the CPU: its two float32 work buffers (1 MiB) stay in cache.
_SUMMARY_CHUNK = 1 << 17


def vocab_summary(scores: torch.Tensor) -> VocabSummary:
    """The softmax facts of every distribution of ``scores`` (``[..., V]``), without a ``[..., V]`` result.

    One ``amax(dim=-1)`` gives ``best``. Then, a few distributions at a time (on the CPU, in work buffers
    that stay in cache), ``d = s - best``, ``e = exp(d)``, ``Z = sum e`` and ``sum e * d``, with ``d``'s
    ``-inf`` (where ``e`` is 0) clamped to the lowest float after the ``exp``, so that ``e * d`` is 0 there
    (the ``0 log 0 = 0`` convention; ``0 * -inf`` would be NaN); a NaN stays NaN. ``Z >= 1`` where ``best``
    is finite: the maximum contributes ``exp(0) = 1``. With ``p = e / Z`` and ``log p = d - log Z``: ``sum p = sum e / Z``
    and ``-sum p log p = log Z - sum(e * d) / Z`` are identities, not approximations; they agree with
    ``exp(log_softmax(s))`` and :func:`entropy` up to float32 rounding (a few units in the last place of the
    sums). ``sum e / Z`` is ``Z / Z``: 1 for every row whose maximum is finite and NaN for the others, which
    is what ``exp(log_softmax(s))`` sums to in float32 within 1e-6: the normalisation check finds the same
    rows either way.
    Shared by record mode (once per record, :func:`score_summary`) and streaming mode (once per step).
    """
    s = scores.detach()
    if s.dtype != torch.float32:
        s = s.float()
    shape, vocab = s.shape[:-1], int(s.shape[-1])
    if s.numel() == 0:
        empty = torch.full(shape, float("nan"), device=s.device)
        return VocabSummary(empty, empty, empty, empty, s)
    flat = s.reshape(-1, vocab)
    n = int(flat.shape[0])
    best = flat.amax(dim=-1)
    z = torch.empty(n, device=flat.device)
    ed = torch.empty(n, device=flat.device)
    # On the CPU a few distributions at a time keep the work buffers in cache; an accelerator takes them all at once.
    chunk = max(1, min(n, _SUMMARY_CHUNK // vocab)) if flat.device.type == "cpu" else n
    d_buf = torch.empty(chunk, vocab, device=flat.device)
    e_buf = torch.empty(chunk, vocab, device=flat.device)
    lowest = torch.finfo(torch.float32).min
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        d, e = d_buf[: b - a], e_buf[: b - a]
        torch.sub(flat[a:b], best[a:b, None], out=d)
        torch.exp(d, out=e)
        d.clamp_(min=lowest)  # -inf (e = 0 there) -> lowest, so e * d is 0, not NaN; a NaN stays NaN
        torch.sum(e, dim=-1, out=z[a:b])
        torch.linalg.vecdot(e, d, out=ed[a:b])
    log_z = z.log()
    return VocabSummary(
        best=best.reshape(shape),
        log_z=log_z.reshape(shape),
        prob_sum=(z / z).reshape(shape),
        entropy=(log_z - ed / z).reshape(shape),
        scores=s,
    )


def score_summary(record: GenerationRecord) -> VocabSummary:
    """:func:`vocab_summary` of the record's step scores, ``[score_rows, steps]`` each, computed once per record."""
    return record.derived("score_summary", (record.scores,), lambda: vocab_summary(record.scores))


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
    """Log-prob of each generated token, ``[rows, steps]``, by one gather over the step scores.

    The log-probs are those of :func:`step_logprobs`: beam search's processed scores as they are; otherwise
    ``log_softmax`` at the chosen token only, ``(s - best) - log_z`` from the scores' :func:`vocab_summary`
    (the record's, :func:`score_summary`, computed once), with no ``[rows, steps, V]`` log-softmax.
    Positions whose score row is ``-1`` (after a beam hypothesis ended) read row 0 and must be
    masked out by the caller with :func:`finished_mask`. A streaming-mode record (no step scores
    kept) returns the log-probs its monitor accumulated during generation.
    """
    if scores is None and record.scores is NOT_KEPT and record.streamed_chosen is not None:
        return record.streamed_chosen
    if scores is not None:
        return _gather_chosen(record, scores, None if record.is_beam else vocab_summary(scores))
    sources = (record.scores, record.sequences, record.beam_indices)
    return record.derived(
        "chosen_logprobs",
        sources,
        lambda: _gather_chosen(record, record.scores, None if record.is_beam else score_summary(record)),
    )


def _gather_chosen(record: GenerationRecord, scores: torch.Tensor, summary: VocabSummary | None) -> torch.Tensor:
    rows = score_rows(record).clamp(min=0)
    tokens = generated_tokens(record)
    if tokens.shape[1] > scores.shape[1]:
        raise ValueError(f"{tokens.shape[1]} generated tokens per row but scores for {scores.shape[1]} steps")
    steps = torch.arange(tokens.shape[1])[None, :]
    # One gather over the flattened [score_rows * steps * V] scores (row r, step t, token v sits at
    # (r * steps + t) * V + v): no [rows, steps, V] copy of the beam-re-indexed scores is made.
    flat = (rows * scores.shape[1] + steps) * scores.shape[2] + tokens
    values = scores.reshape(-1).gather(0, flat.reshape(-1)).reshape(tokens.shape).float()
    if summary is None:
        return values
    return summary.logprob_at((rows, steps.expand_as(rows)), values)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row sums of ``values`` where ``mask`` is 1. Uses ``where``, not ``values * mask``: padded
    positions may hold ``-inf`` (e.g. a forced step), and ``-inf * 0`` is NaN."""
    return torch.where(mask.bool(), values, torch.zeros_like(values)).sum(dim=1)


def source_rows(record: GenerationRecord) -> torch.Tensor | None:
    """For each returned row and step, the score row that chose its token, ``[rows, steps]`` (``-1`` after the end).

    With beams (beam search and beam sampling) that is ``beam_indices`` (None when generate() returned
    none); otherwise each returned row is its own score row.
    """
    rows, steps = record.sequences.shape[0], record.steps
    if record.decoding.num_beams > 1:
        if record.beam_indices is None:
            return None
        bi = record.beam_indices[:, :steps].long()
        if bi.shape[1] < steps:  # some versions trim beam_indices to the longest hypothesis
            bi = torch.cat([bi, torch.full((rows, steps - bi.shape[1]), -1, dtype=bi.dtype)], dim=1)
        return bi
    return torch.arange(rows)[:, None].expand(rows, steps)


def replay_processing(record: GenerationRecord, raw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(expected, known)``: the reference processors replayed on raw logits, step by step.

    ``raw`` defaults to the record's raw logits, ``[score_rows, steps, V]``; ``expected`` has that
    shape, ``known`` is ``[score_rows, steps]``. Each step is replayed with the tokens the score row
    had so far as ``input_ids``: every row in greedy search and sampling; in beam search only the
    rows a returned hypothesis passed through at that step (the others' histories are not in the
    output), and nothing beyond the returned sequences' length. Cells not known are NaN.
    Raises :class:`NotJudged` where there is no reference or no raw logits.
    """
    _replayable(record)
    if raw is None:
        if record.logits is None:
            raise NotJudged("no raw logits captured (output_logits unavailable in this transformers version)")
        sources: tuple[Any, ...] = (record.logits, record.sequences, record.beam_indices)
        return record.derived("replayed", sources, lambda: _replay(record, record.logits))
    return _replay(record, raw)


def _replayable(record: GenerationRecord) -> None:
    """Raises :class:`NotJudged`, saying why, where the record has no reference processors to replay."""
    if record.processing is None:
        if record.processing_error == LOGITS_OF_FIRST_BEAMS:
            raise NotJudged(LOGITS_OF_FIRST_BEAMS)  # as the rescoring checks say it: one reason, one wording
        why = record.processing_error or "no reference processors (captured without step scores)"
        raise NotJudged(f"the configured processors could not be rebuilt to replay: {why}")


def replay_matches(record: GenerationRecord, found: torch.Tensor) -> bool:
    """Whether :func:`replay_processing` would give ``found`` (``[score_rows, steps, V]``) bit for bit at every
    step it replays (``-inf == -inf``; a NaN makes them unequal), judged step by step as each step is replayed,
    without building the ``[score_rows, steps, V]`` replay. False where anything differs or a step cannot be
    replayed (then the full replay says where), or where there is no reference or no raw logits."""
    raw = record.logits
    if record.processing is None or raw is None or raw.shape != found.shape or record.steps > raw.shape[1]:
        return False
    rows = int(raw.shape[0])
    for t in range(record.steps):
        at = step_history(record, t, rows)
        if at is None or not torch.equal(found[:, t], record.processing.step(at[0], raw[:, t]).cpu()):
            return False
    return True


def step_history(record: GenerationRecord, t: int, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(input_ids, known)`` of the ``rows`` score rows at step ``t``: the decoder start (or the prompt) and the
    ``t`` tokens each row had chosen so far, ``[rows, prompt_length + t]``, and ``[rows]`` bool for the rows whose
    history the returned sequences tell (every row without beams; with beams, the rows a returned hypothesis
    passed through at ``t``; the others hold their prompt, then pad). None: beams without ``beam_indices``.
    """
    seq = record.sequences
    width = record.prompt_length + t
    if rows == seq.shape[0] and record.decoding.num_beams == 1:
        return seq[:, :width], torch.ones(rows, dtype=torch.bool)
    src = source_rows(record)
    if src is None:
        return None
    fill = record.conventions.pad_token_id if record.decoder_only else (record.conventions.decoder_start_token_id or 0)
    history = torch.full((rows, width), int(fill), dtype=seq.dtype)
    history[:, : record.prompt_length] = prompt_rows(record, rows)
    known = torch.zeros(rows, dtype=torch.bool)
    live = src[:, t] >= 0
    history[src[live, t]] = seq[live, :width]
    known[src[live, t]] = True
    return history, known


def _replayed_steps(
    record: GenerationRecord, rows: int, steps: int, step_logits: Callable[[int], torch.Tensor]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(t, processed, known)`` for each of ``steps`` steps the reference processors replay, in order, on
    ``step_logits(t)`` (the ``[rows, V]`` raw logits of ``rows`` score rows): the step's processed scores
    (float32, CPU) and which rows' histories are known (see :func:`step_history`). It stops after the
    record's last step, or where histories cannot be told."""
    for t in range(min(steps, record.steps)):
        at = step_history(record, t, rows)
        if at is None:
            return
        history, known = at
        yield t, record.processing.step(history, step_logits(t)).cpu(), known


def _replay(record: GenerationRecord, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows, steps, vocab = raw.shape
    expected = torch.empty((rows, steps, vocab))
    known = torch.zeros(rows, steps, dtype=torch.bool)
    replayed = 0
    for t, processed, known[:, t] in _replayed_steps(record, rows, steps, lambda t: raw[:, t]):
        expected[:, t] = processed
        replayed = t + 1
    expected[:, replayed:] = float("nan")  # the steps not replayed (every step before is written above)
    return expected, known


def replay_unstable(record: GenerationRecord, steps: list[int], raw: torch.Tensor | None = None) -> torch.Tensor:
    """``[score_rows, steps, V]`` bool: at the given ``steps``, tokens whose warper fate hangs on rounding
    (:meth:`ppinvariants.processing.Processing.unstable`); False elsewhere. Histories as in :func:`replay_processing`."""
    raw = record.logits if raw is None else raw
    out = torch.zeros(raw.shape, dtype=torch.bool)
    if record.processing is None or not record.processing.warps:
        return out
    for t in steps:
        at = step_history(record, t, raw.shape[0])
        if at is not None:
            out[:, t] = record.processing.unstable(at[0], raw[:, t])
    return out


def replayed_decisions(record: GenerationRecord, logits: torch.Tensor) -> torch.Tensor:
    """What the configured processors decide on teacher-forced raw ``logits``, ``[4, rows, steps]``.

    ``logits`` is ``[rows, steps, V]``, one row per returned row of the record (a teacher-forced pass
    over the record's own sequences). The processors are replayed with each row's own history (see
    :func:`replay_processing`) and reduced to: ``[0]`` the processed score of the row's token, ``[1]``
    the best processed score, ``[2]`` its token id (as a float), ``[3]`` 1.0 where the replay knew the
    step (NaN in the others where it did not).

    Greedy search and sampling: every returned row is its own score row. With beams, each
    hypothesis' logits are placed in the score row it ran in at each step (hypotheses sharing a row
    there share the prefix, so their logits agree) and the replay knows exactly those rows; beam
    search ranks whole hypotheses, so ``[1]`` and ``[2]`` are the row's own score and token there
    (no per-step argmax).
    """
    _replayable(record)
    tokens = generated_tokens(record)
    rows, steps = tokens.shape
    out = torch.full((4, rows, steps), float("nan"))
    out[3] = 0.0
    # Step by step, keeping only the four numbers per row: no [rows, steps, V] processed tensor.
    if record.decoding.num_beams == 1:
        for t, processed, known in _replayed_steps(record, rows, steps, lambda t: logits[:, t].float()):
            out[0, :, t] = processed.gather(-1, tokens[:, t : t + 1]).squeeze(-1)
            best, pick = processed.max(dim=-1)
            out[1, :, t], out[2, :, t], out[3, :, t] = best, pick.float(), known.float()
        return out
    src = source_rows(record)
    if src is None:
        return out
    width = min(steps, src.shape[1], logits.shape[1])
    r_idx, t_idx = (src[:, :width] >= 0).nonzero(as_tuple=True)
    out[2, r_idx, t_idx] = tokens[r_idx, t_idx].float()
    score_rows = record.batch_size * record.beams_per_input

    def beam_logits(t: int) -> torch.Tensor:
        raw = torch.zeros(score_rows, logits.shape[-1])
        here = r_idx[t_idx == t]
        raw[src[here, t]] = logits[here, t].float()
        return raw

    for t, processed, known in _replayed_steps(record, score_rows, width, beam_logits):
        here = r_idx[t_idx == t]
        out[0, here, t] = out[1, here, t] = processed[src[here, t], tokens[here, t]]
        out[3, here, t] = known[src[here, t]].float()
    return out
    width = min(steps, src.shape[1], logits.shape[1])
    r_idx, t_idx = (src[:, :width] >= 0).nonzero(as_tuple=True)
    raw = torch.zeros(record.batch_size * record.beams_per_input, width, logits.shape[-1])
    raw[src[r_idx, t_idx], t_idx] = logits[r_idx, t_idx].float()
    processed, known = replay_processing(record, raw)
    out[0, r_idx, t_idx] = processed[src[r_idx, t_idx], t_idx, tokens[r_idx, t_idx]]
    out[1, r_idx, t_idx] = out[0, r_idx, t_idx]
    out[2, r_idx, t_idx] = tokens[r_idx, t_idx].float()
    out[3, r_idx, t_idx] = known[src[r_idx, t_idx], t_idx].float()
    return out
