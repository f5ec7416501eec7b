"""Streaming mode: the per-step invariants judged inside ``generate()``, in memory O(rows x V).

A :class:`StreamingMonitor` is passed to ``generate(logits_processor=...)`` and moved behind every
built-in processor and sampling warper (transformers 5.x merges custom processors *before* the
warpers and ``LogitNormalization``: ``generation/utils.py`` ``_get_logits_processor``; where
generate() builds the sampling warpers as a second list, ``_get_logits_warper`` in 4.40, the monitor
observes at the end of that list instead), so each call sees exactly the tensor ``output_scores``
would have kept for that step. A forward hook on the model
sees the raw logits of the step. ``generate()`` is not asked for ``output_scores``/``output_logits``:
no step tensor outlives its step. What is kept across steps:

* the previous step's scores and their :func:`~ppinvariants.record.vocab_summary` until the next call reads
  the chosen token as ``input_ids[:, -1]``; the last step's tokens come from the returned sequences;
* in beam search, per beam row and step, the top ``beams_to_keep`` log-probs and their ids: every
  token beam search can select at a step is among them (it ranks ``log-prob + beam score``, constant
  within a row); the returned hypotheses read theirs through ``beam_indices``, or, where generate()
  returns none (transformers 4.x without ``output_scores``), through the beam rows reconstructed by
  matching each hypothesis' prefixes against a per step and beam row fingerprint of ``input_ids``
  (:func:`beam_lineage`);
* per row and step a few scalars (chosen log-prob, chosen score, best score and id);
* per check the first :data:`~ppinvariants.invariants._base.MAX_KEPT` violations in the order the
  record-based checks report them (row, step, token), and the total count.

The results carry the same invariant names, statuses and violations (messages included) as the
record-based checks on the same generation. Two deliberate differences: history-dependent
processors (no-repeat n-grams, multi-token bad words) are judged on *every* beam row, since each
row's history is ``input_ids`` here (the record knows only the returned hypotheses' histories), and
faults that post-process generate()'s *output* are invisible here (the live scores are judged).

Its length (about 550 lines) is one concept: the monitor's per-step judgement and the results it
builds after generate() share the state it keeps; the beam lineage lives in :mod:`ppinvariants.lineage`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import _compat
from .capturing import capture
from .decoding import resolve
from .errors import NotApplicable, NotJudged
from .invariants import ALL
from .invariants._base import MAX_KEPT, REGISTRY, Invariant, Violations, make, merge
from .invariants.logprobs import greedy_argmax_violations
from .invariants.processors import REPLAYED, replay_violation
from .invariants.scores import ENTROPY_OUTSIDE, NAN_SCORE, NOT_NORMALISED, RAW_NOT_FINITE
from .judge import run_invariants
from .lineage import beam_lineage, prefix_fingerprints
from .processing import Processing, differences
from .record import (
    LOGITS_OF_FIRST_BEAMS,
    GenerationRecord,
    VocabSummary,
    generated_tokens,
    score_rows,
    tolerance_for,
    vocab_summary,
)
from .report import Result

#: Projected size of the stacked step tensors (``rows x max_new_tokens x V x 4 bytes x 2``, scores and
#: logits) above which ``check_loaded(streaming=None)`` switches to streaming mode.
AUTO_THRESHOLD_BYTES = 512 * 2**20

#: Judged by the monitor during generation.
STREAMED: tuple[str, ...] = (
    "scores_have_no_nan_or_posinf",
    "softmax_rows_sum_to_one",
    "step_entropy_within_bounds",
    "neg_inf_only_where_processors_explain",
    "processor_masks_applied",
    "processed_scores_match_processors",
    "greedy_tokens_are_argmax",
)
#: Judged by the record-based functions themselves on the scoreless record: they read the returned
#: sequences and (``padding_mask_matches_eos``) the chosen-token log-probs the monitor accumulated.
FROM_RECORD: tuple[str, ...] = ("no_eos_before_min_length", "padding_mask_matches_eos")
STREAMING_INVARIANTS: tuple[str, ...] = STREAMED + FROM_RECORD


def score_rows_of(decoding: Any, batch: int) -> int:
    """Rows of each step's score tensor: ``batch * num_beams`` with beams, else ``batch * num_return_sequences``."""
    return batch * max(decoding.num_beams, decoding.num_return_sequences)


def projected_step_bytes(rows: int, max_new_tokens: int, vocab: int) -> int:
    """Bytes the stacked float32 scores and logits of a record would take: ``rows x steps x V x 4 x 2``."""
    return rows * max_new_tokens * vocab * 4 * 2


def should_stream(target: Any, texts: Sequence[str], decoding: Any) -> bool:
    """True when the projected stacked size exceeds :data:`AUTO_THRESHOLD_BYTES` (read at call time)."""
    vocab = int(target.model.get_output_embeddings().weight.shape[0])
    decoding = resolve(decoding, target.model.generation_config)  # the checkpoint may set beams and lengths
    size = projected_step_bytes(score_rows_of(decoding, len(texts)), decoding.max_new_tokens or 20, vocab)
    return size > AUTO_THRESHOLD_BYTES


# ------------------------------------------------------------------------------ kept violations


class _Kept:
    """The first :data:`MAX_KEPT` violation positions in row-major ``(row, step[, token])`` order, seen step by step.

    ``pos`` is ``[n, width]`` (long), ``vals`` ``[n, m]`` (float64, exact for float32 values and ids).
    The smallest MAX_KEPT of a union are among the smallest MAX_KEPT of each part, and a step's
    ``nonzero()`` comes sorted, so each step adds at most MAX_KEPT rows before a merge-sort.
    """

    def __init__(self, width: int, nvals: int) -> None:
        self.pos = torch.empty(0, width, dtype=torch.long)
        self.vals = torch.empty(0, nvals, dtype=torch.float64)
        self.total = 0

    def add(self, pos: torch.Tensor, vals: torch.Tensor) -> None:
        n = int(pos.shape[0])
        if n == 0:
            return
        self.total += n
        pos = torch.cat([self.pos, pos[:MAX_KEPT].long().cpu()])
        vals = torch.cat([self.vals, vals[:MAX_KEPT].double().cpu().reshape(min(n, MAX_KEPT), -1)])
        order = torch.arange(pos.shape[0])
        for c in reversed(range(pos.shape[1])):  # stable sorts, last key first: lexicographic order
            order = order[torch.sort(pos[order, c], stable=True).indices]
        self.pos, self.vals = pos[order][:MAX_KEPT], vals[order][:MAX_KEPT]

    def build(self, fn: Any) -> Violations:
        out = Violations()
        out.total = self.total
        for p, v in zip(self.pos.tolist(), self.vals.tolist(), strict=True):
            out.append(fn(tuple(p), v))
        return out


def _with_step(pos: torch.Tensor, step: int) -> torch.Tensor:
    """``[n, 2]`` (row, token) positions of one step as ``[n, 3]`` (row, step, token)."""
    return torch.stack([pos[:, 0], torch.full_like(pos[:, 0], step), pos[:, 1]], dim=1)


# ------------------------------------------------------------------------------ the monitor


class StreamingMonitor(LogitsProcessor):
    """A pass-through logits processor that judges each step's processed scores as it goes by.

    Call :meth:`attached` around ``generate()``, then :meth:`finish` with the record built from
    generate()'s output. Memory: O(rows x V) for the previous step, O(rows x steps x beams) scalars.
    """

    def __init__(self, conventions: Any, decoding: Any, dtype: str = "float32") -> None:
        self.conventions = conventions
        self.decoding = decoding
        self.is_beam = decoding.num_beams > 1  # beam search, or beam sampling (do_sample with num_beams > 1)
        self.rows_match = decoding.num_beams == 1  # score rows are the returned rows
        self.dtype = dtype
        self.step = 0
        self.forward_step = 0
        self.vocab: int | None = None
        self.tolerance = tolerance_for(dtype)
        self.processing: Processing | None = None  # the reference, given by capture() through prepare()
        self.processing_error = ""
        self.unjudged_steps = 0  # steps whose processed scores could not be replayed
        self.last_raw: torch.Tensor | None = None  # the latest forward pass's last-position logits
        self.kept = {
            "nan": _Kept(3, 1),
            "raw": _Kept(3, 1),
            "sum": _Kept(2, 1),
            "entropy": _Kept(2, 1),
            "missing": _Kept(3, 3),  # (found, replayed, culprit processor) per position
            "unexplained": _Kept(3, 3),
            "value": _Kept(3, 3),
        }
        # previous step, until the next call reveals the chosen tokens (greedy search, sampling)
        self.prev_scores: torch.Tensor | None = None
        self.prev_summary: VocabSummary | None = None  # its vocab_summary: the chosen log-prob without a log-softmax
        # per step: [rows] chosen log-prob / chosen score / best score / best id; beam: top-k per beam row
        self.chosen_lp: list[torch.Tensor] = []
        self.chosen_score: list[torch.Tensor] = []
        self.best: list[torch.Tensor] = []
        self.best_id: list[torch.Tensor] = []
        self.top_vals: list[torch.Tensor] = []
        self.top_ids: list[torch.Tensor] = []
        self.history_keys: list[torch.Tensor] = []  # beam: [beam rows] fingerprint of input_ids per call
        self.generate_asked_for_scores: bool | None = None
        # True once the current generate() call has built a separate warper list: the monitor then
        # observes from that list's end (_WarperListEnd) and passes through in the processor list.
        self.observes_after_warpers = False

    # -- inside generate() ------------------------------------------------------------------
    def _setup(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.observes_after_warpers:
            self.observe(input_ids, scores)
        return scores

    def observe(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """Judge one step's processed scores (``input_ids`` holds the tokens so far)."""
        with torch.no_grad():
            self._observe(input_ids, scores.detach())

    def prepare(self, processing: Processing | None, error: str = "") -> None:
        """Take the reference processors :func:`~ppinvariants.capturing.capture` built for this call (on the model's device)."""
        self.processing = processing
        self.processing_error = error

    def _judge_processing(self, input_ids: torch.Tensor, s: torch.Tensor, t: int) -> None:
        """The step's processed scores against the reference replayed on its raw logits (every row: each
        row's history is ``input_ids`` here), through :func:`ppinvariants.processing.differences`."""
        if self.processing is None or self.last_raw is None or self.last_raw.shape != s.shape:
            self.unjudged_steps += 1
            return
        expected = self.processing.step(input_ids, self.last_raw)
        diff = differences(s, expected, self.tolerance)
        mask = diff["missing"] | diff["unexplained"]
        if bool(mask.any()) and self.processing.warps:
            unstable = self.processing.unstable(input_ids, self.last_raw).to(s.device)
            diff["missing"] &= ~unstable
            diff["unexplained"] &= ~unstable
        for kind in ("missing", "unexplained", "value"):
            bad = diff[kind].nonzero()
            if bad.shape[0]:
                vals = torch.stack([s[bad[:, 0], bad[:, 1]], expected[bad[:, 0], bad[:, 1]]], dim=1).double()
                # which processor set the replayed value: for the positions that can be kept (sorted by row, token)
                culprits = torch.full((bad.shape[0], 1), -1.0, dtype=torch.float64)
                for i, (r, v) in enumerate(bad[:MAX_KEPT].tolist() if kind == "missing" else []):
                    culprits[i, 0] = self.processing.culprit(input_ids, self.last_raw, r, v)
                self.kept[kind].add(_with_step(bad, t), torch.cat([vals.cpu(), culprits], dim=1))

    def _observe(self, input_ids: torch.Tensor, s: torch.Tensor) -> None:
        if self.vocab is None:
            self._setup(int(s.shape[-1]))
        t, tol = self.step, self.tolerance
        s = s.float()
        if self.prev_summary is not None and self.rows_match:
            self._settle(input_ids[:, -1])
        # One vocabulary pass for the finiteness, softmax, entropy and argmax facts: the record checks' own
        # function (vocab_summary), so both modes judge the same numbers.
        summary = vocab_summary(s)
        if not summary.clean:  # amax() propagates NaN and +inf: positions are looked for only then
            bad = (torch.isnan(s) | torch.isposinf(s)).nonzero()
            self.kept["nan"].add(_with_step(bad, t), s[bad[:, 0], bad[:, 1]])
        sums = summary.prob_sum
        bad = (~((sums - 1).abs() <= tol)).nonzero().flatten()  # NaN compares False: caught
        self.kept["sum"].add(torch.stack([bad, torch.full_like(bad, t)], 1), sums[bad])
        h = summary.entropy
        upper = math.log(s.shape[-1])
        bad = (~((h >= -tol) & (h <= upper + tol))).nonzero().flatten()
        self.kept["entropy"].add(torch.stack([bad, torch.full_like(bad, t)], 1), h[bad])
        self._judge_processing(input_ids, s, t)
        if self.rows_match:
            self.prev_scores, self.prev_summary = s, summary
            if not self.decoding.do_sample:  # greedy: the argmax check reads the scores themselves
                self.best.append(summary.best.cpu())
        elif self.is_beam:
            k = min(max(2, 1 + len(self.conventions.eos_token_ids)) * self.decoding.num_beams, s.shape[-1])
            top = s.topk(k, dim=-1)  # beam search's processed scores are its log-probs (as the record reads them)
            self.top_vals.append(top.values.cpu())
            self.top_ids.append(top.indices.cpu())
            # 4.x returns no beam_indices without output_scores: keep what reconstructs them (beam_lineage)
            self.history_keys.append(prefix_fingerprints(input_ids)[:, -1].cpu())
        self.step += 1

    def _settle(self, tokens: torch.Tensor) -> None:
        """Read the previous step's chosen tokens: their log-prob (and, greedy, score)."""
        tok = tokens.to(self.prev_scores.device).long()[:, None]
        chosen = self.prev_scores.gather(-1, tok).squeeze(-1)
        rows = torch.arange(chosen.shape[0], device=chosen.device)
        self.chosen_lp.append(self.prev_summary.logprob_at(rows, chosen).cpu())
        if not self.decoding.do_sample:  # greedy: the argmax check reads the chosen scores themselves
            self.chosen_score.append(chosen.cpu())
            # the argmax id, as the record check reads it: only where the chosen token is not the maximum
            self.best_id.append(self.prev_summary.best_ids_where(chosen < self.prev_summary.best).cpu())
        self.prev_scores = self.prev_summary = None

    def _raw_logits_hook(self, _module: Any, _args: Any, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if logits is None:
            return
        raw = logits[:, -1].detach()
        self.last_raw = raw
        bad = (~torch.isfinite(raw)).nonzero()
        self.kept["raw"].add(_with_step(bad, self.forward_step), raw[bad[:, 0], bad[:, 1]].float())
        self.forward_step += 1

    @contextlib.contextmanager
    def attached(self, model: Any) -> Iterator[LogitsProcessorList]:
        """Hook the model for raw logits and keep this monitor last in generate()'s processor list.

        Yields the list to pass as ``generate(logits_processor=...)``. transformers appends custom
        processors before the sampling warpers and ``LogitNormalization``; the monitor is moved to
        the end of the list generate() builds, or observes at the end of the separate warper list
        where generate() builds one (:meth:`_last_in_warper_list`), so it sees the scores generate()
        decides on.
        """

        def on_build(gc: Any) -> None:
            self.generate_asked_for_scores = bool(
                getattr(gc, "output_scores", False) or getattr(gc, "output_logits", False)
            )
            self.observes_after_warpers = False  # a new generate() call: no warper list built yet

        handle = model.register_forward_hook(self._raw_logits_hook)
        try:
            with _compat.processor_runs_last(model, self, on_build=on_build), self._last_in_warper_list(model):
                yield LogitsProcessorList([self])
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _last_in_warper_list(self, model: Any) -> Iterator[None]:
        """While inside, a separate warper list generate() builds (transformers 4.40) ends with a
        :class:`_WarperListEnd` of this monitor, which then observes there and passes through in the
        processor list (:func:`ppinvariants._compat.runs_after_separate_warpers`)."""

        def built() -> None:
            self.observes_after_warpers = True

        try:
            with _compat.runs_after_separate_warpers(model, _WarperListEnd(self), on_build=built):
                yield
        finally:
            self.observes_after_warpers = False

    def retained_bytes(self) -> dict[str, int]:
        """Bytes held now: ``per_step`` (O(rows x V): the previous step) and ``scalars`` (O(rows x steps x beams))."""
        per_step = 0 if self.prev_scores is None else self.prev_scores.numel() * self.prev_scores.element_size()
        lists = (
            self.chosen_lp,
            self.chosen_score,
            self.best,
            self.best_id,
            self.top_vals,
            self.top_ids,
            self.history_keys,
        )
        scalars = sum(t.numel() * t.element_size() for seq in lists for t in seq)
        return {"per_step": per_step, "scalars": scalars}

    # -- after generate() ---------------------------------------------------------------------
    def finish(self, record: GenerationRecord) -> dict[str, list[Any] | NotApplicable]:
        """Violations per streamed invariant (or the NotApplicable it skips with), built on ``record``.

        Sets ``record.streamed_chosen`` (chosen-token log-probs, ``[rows, steps]``) when they were streamed.
        """
        tokens = generated_tokens(record)
        if self.rows_match and self.prev_summary is not None:  # the last step's tokens: the returned sequences
            self._settle(tokens[:, len(self.chosen_lp)] if tokens.shape[1] > len(self.chosen_lp) else tokens[:, -1])
        steps = tokens.shape[1]
        if self.rows_match and self.chosen_lp:
            record.streamed_chosen = torch.stack(self.chosen_lp, dim=1)[:, :steps]
        elif self.is_beam and self.top_ids and not self.decoding.do_sample:
            # Beam search picks among each beam row's top scores, which were kept; beam sampling may draw a
            # token outside them, so its chosen log-probs are not known here (the checks that need them skip).
            record.streamed_chosen = self._beam_chosen(record, tokens)
        out: dict[str, list[Any] | NotApplicable] = {}
        k = self.kept

        def at(name: str, what: str, expected: Any, score_row: bool = True, token: bool = True) -> Any:
            def fn(p: tuple[int, ...], v: list[float]) -> Any:
                return make(
                    record,
                    name,
                    what,
                    row=p[0],
                    score_row=score_row,
                    step=p[1],
                    token_id=p[2] if token else None,
                    expected=expected,
                    found=v[0] if v else "-inf",
                )

            return fn

        name = "scores_have_no_nan_or_posinf"
        out[name] = merge(
            k["nan"].build(at(name, NAN_SCORE, "finite or -inf")),
            k["raw"].build(at(name, RAW_NOT_FINITE, "finite")),
        )
        name = "softmax_rows_sum_to_one"
        out[name] = k["sum"].build(at(name, NOT_NORMALISED, f"1 +/- {self.tolerance:g}", token=False))
        name = "step_entropy_within_bounds"
        upper = math.log(self.vocab or 1)
        out[name] = merge(k["entropy"].build(at(name, ENTROPY_OUTSIDE, f"0 <= H <= {upper:.4f}", token=False)))
        if self.processing is None or self.unjudged_steps:
            why = self.processing_error or f"{self.unjudged_steps} step(s) without raw logits to replay"
            said = why if why == LOGITS_OF_FIRST_BEAMS else f"the configured processors could not be replayed: {why}"
            for name in REPLAYED:
                out[name] = NotJudged(said)
        else:
            for name, kind in REPLAYED.items():
                out[name] = k[kind].build(
                    lambda p, v, name=name: replay_violation(record, name, p, v[0], v[1], int(v[2]))
                )
        out["greedy_tokens_are_argmax"] = self._greedy(record, tokens)
        return out

    def _greedy(self, record: GenerationRecord, tokens: torch.Tensor) -> list[Any] | NotApplicable:
        """The record check's formula on the streamed per-step scalars: ``mask & (chosen < best)``."""
        if not record.is_greedy:
            return NotApplicable("only greedy search picks the argmax")
        steps = tokens.shape[1]
        chosen = torch.stack(self.chosen_score, dim=1)[:, :steps]
        best = torch.stack(self.best, dim=1)[:, :steps]
        best_id = torch.stack(self.best_id, dim=1)[:, :steps]
        return greedy_argmax_violations(record, tokens, chosen, best, best_id)

    def beam_rows(self, record: GenerationRecord) -> torch.Tensor:
        """For each returned row and step, the beam row that chose the token, ``[rows, steps]`` (``-1`` after the end).

        :func:`~ppinvariants.capturing.score_rows` (generate()'s ``beam_indices``) when the record
        has them, else :meth:`reconstructed_beam_rows`.
        """
        if record.beam_indices is not None:
            return score_rows(record)
        return self.reconstructed_beam_rows(record)

    def reconstructed_beam_rows(self, record: GenerationRecord) -> torch.Tensor:
        """:func:`beam_lineage` of the record's sequences on the fingerprints kept per call, ``[rows, steps]``."""
        rows, steps = record.sequences.shape[0], record.steps
        if not self.history_keys:
            return torch.full((rows, steps), -1, dtype=torch.long)
        history = torch.stack(self.history_keys)
        return beam_lineage(
            history,
            record.sequences,
            self.decoding.num_beams,
            self.decoding.num_return_sequences,
            record.prompt_length,
        )

    def _beam_chosen(self, record: GenerationRecord, tokens: torch.Tensor) -> torch.Tensor:
        """Chosen-token log-probs of the returned hypotheses from the per-step top-k, ``[rows, steps]``.

        The top-k row of each returned row and step is :meth:`beam_rows` (``-1`` read as row 0, as
        :func:`~ppinvariants.capturing.chosen_logprobs` does; those positions are masked by the checks).

        A token missing from its row's top-k has a log-prob at most the k-th: ``-inf`` when that is
        ``-inf`` (a tie among banned tokens), else beam search selected a token it could not have
        ranked (NaN, which the log-prob checks then report).
        """
        steps = tokens.shape[1]
        vals = torch.stack(self.top_vals)[:steps]  # [steps, beam rows, k]
        ids = torch.stack(self.top_ids)[:steps]
        src = self.beam_rows(record)[:, :steps].clamp(min=0).long()  # [rows, steps]
        t = torch.arange(steps)[None, :].expand_as(src)
        cand_ids, cand_vals = ids[t, src], vals[t, src]  # [rows, steps, k]
        hit = cand_ids == tokens[:, :, None]
        found = cand_vals.gather(-1, hit.int().argmax(dim=-1, keepdim=True)).squeeze(-1)
        kth_neg_inf = torch.isneginf(cand_vals[..., -1])
        missing = torch.where(kth_neg_inf, torch.full_like(found, float("-inf")), torch.full_like(found, float("nan")))
        return torch.where(hit.any(dim=-1), found, missing)


class _WarperListEnd(LogitsProcessor):
    """The last entry of a separate warper list: passes the scores through :meth:`StreamingMonitor.observe`."""

    def __init__(self, monitor: StreamingMonitor) -> None:
        self.monitor = monitor

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.monitor.observe(input_ids, scores)
        return scores


# ------------------------------------------------------------------------------ entry points


def stream_capture(
    target: Any, texts: Sequence[str], decoding: Any
) -> tuple[GenerationRecord, dict[str, list[Any] | NotApplicable], StreamingMonitor]:
    """One ``generate()`` with the monitor attached and no step tensors kept.

    Returns the scoreless record (``scores``/``logits`` are ``NOT_KEPT``, no evidence), the streamed
    violations per invariant, and the monitor (for inspection).
    """
    decoding = resolve(decoding, target.model.generation_config)
    monitor = StreamingMonitor(target.conventions, decoding, target.dtype_name)
    with monitor.attached(target.model):
        record = capture(target, list(texts), decoding, evidence=False, keep_scores=False, observer=monitor)
    return record, monitor.finish(record), monitor


def _results(record: GenerationRecord, streamed: dict[str, Any], names: Iterable[str]) -> list[Result]:
    """Results of the streamed invariants through :func:`run_invariants` (same statuses, xfail matching, notes)."""

    def stub(value: Any) -> Any:
        def check(_record: GenerationRecord) -> Any:
            if isinstance(value, NotApplicable):
                raise value
            return value

        return check

    invs = []
    for n in names:
        base = REGISTRY[n]
        invs.append(Invariant(n, base.family, stub(streamed[n]), base.note) if n in streamed else base)
    return run_invariants(record, invs) if invs else []


def run_streaming(
    target: Any, texts: Sequence[str], decoding: Any, invariants: Iterable[Invariant] | None = None
) -> tuple[GenerationRecord, list[Result]]:
    """Every requested invariant in streaming mode, in the requested order.

    The streaming-capable ones come from the monitor; the others run on the scoreless record as
    usual and skip ("streaming mode: step scores not kept") where they need stacked step tensors.
    Consistency invariants skip too: their re-runs would keep step tensors (no evidence collected).
    """
    record, streamed, _ = stream_capture(target, texts, decoding)
    names = [i.name for i in (invariants if invariants is not None else ALL)]
    by_name = {r.invariant: r for r in _results(record, streamed, [n for n in names if n in STREAMING_INVARIANTS])}
    others = iter(run_invariants(record, [REGISTRY[n] for n in names if n not in STREAMING_INVARIANTS]))
    return record, [by_name[n] if n in by_name else next(others) for n in names]


__all__ = [
    "AUTO_THRESHOLD_BYTES",
    "STREAMING_INVARIANTS",
    "StreamingMonitor",
    "projected_step_bytes",
    "run_streaming",
    "should_stream",
    "stream_capture",
]
