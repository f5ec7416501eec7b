"""Consistency with re-runs of the model: teacher forcing, batch/padding, determinism, gradients.

These read :class:`ppinvariants.evidence.Evidence`, collected at capture time; a record captured
without evidence makes them skip.

Its length (about 480 lines): every check here reads the same evidence through the same helpers
(``_evidence``, the rerun comparison); the decoder-only left-padding check joined them.
"""

from __future__ import annotations

import torch

from ..errors import NotApplicable, NotJudged
from ..evidence import ALONE
from ..record import (
    LOGITS_OF_FIRST_BEAMS,
    GenerationRecord,
    chosen_logprobs,
    finished_mask,
    generated_tokens,
    masked_sum,
    replayed_decisions,
    score_rows,
    step_logprobs,
)
from ..report import Violation
from ._base import from_positions, invariant, make, merge


class _RerunFailed(Exception):  # noqa: N818
    def __init__(self, key: str, error: str) -> None:
        super().__init__(f"re-running the model for this check ({key}) raised {error}")


def _evidence(record: GenerationRecord, *keys: str, optional: tuple[str, ...] = ()):  # noqa: ANN202 - an Evidence
    """The record's evidence; raises if absent (skip) or if a re-run it needs crashed (a violation).

    ``keys`` are the re-runs the check needs: one left out at the record's evidence depth skips the
    check. ``optional`` ones are used when present; only their crashes are reported.
    """
    if record.evidence is None:
        raise NotJudged("captured without evidence (capture(..., evidence=False))")
    for key in keys:
        if key in record.evidence.not_collected:
            why = record.evidence.not_collected[key]
            raise NotJudged(why, "thorough_only" if "thorough evidence" in why else "lost")
    for key in (*keys, *optional):
        if key in record.evidence.errors:
            raise _RerunFailed(key, record.evidence.errors[key])
    return record.evidence


def _reports_rerun_failures(check):  # noqa: ANN001, ANN202
    """Turn a crashed re-run into one violation of ``check`` instead of an error of the check itself."""

    def wrapper(record: GenerationRecord) -> list[Violation]:
        try:
            return check(record)
        except _RerunFailed as e:
            return [make(record, check.__name__, str(e), expected="a clean re-run", found="an exception")]

    wrapper.__name__ = check.__name__
    wrapper.__doc__ = check.__doc__
    return wrapper


def _raw_logits_per_row(record: GenerationRecord) -> torch.Tensor:
    """Generation-time raw logits re-indexed to returned rows, ``[rows, steps, V]``."""
    if record.logits is None:
        if record.scores_per_hypothesis:
            raise NotJudged(LOGITS_OF_FIRST_BEAMS)
        raise NotJudged("this transformers version returns no raw logits")
    rows = score_rows(record).clamp(min=0)
    steps = torch.arange(record.steps).expand_as(rows)
    return record.logits[rows, steps]


def _raw_logprobs_per_row(record: GenerationRecord) -> torch.Tensor:
    """``log_softmax`` of :func:`_raw_logits_per_row`, computed once per record."""
    sources = (record.logits, record.sequences, record.beam_indices)
    return record.derived(
        "raw_logprobs_per_row", sources, lambda: torch.log_softmax(_raw_logits_per_row(record).float(), dim=-1)
    )


def _teacher_forced_logprobs(record: GenerationRecord) -> torch.Tensor:
    """``log_softmax`` of the record's own teacher-forced logits, ``[rows, steps, V]``, computed once per record."""
    logits = record.evidence.teacher_forced_logits
    return record.derived("teacher_forced_logprobs", (logits,), lambda: torch.log_softmax(logits, dim=-1))


def _teacher_forced_decisions(record: GenerationRecord) -> torch.Tensor:
    """:func:`~ppinvariants.record.replayed_decisions` of the record's own teacher-forced pass, computed once."""
    logits = record.evidence.teacher_forced_logits
    sources = (logits, record.sequences, record.beam_indices)
    return record.derived("teacher_forced_decisions", sources, lambda: replayed_decisions(record, logits))


def _live(record: GenerationRecord) -> torch.Tensor:
    mask, _ = finished_mask(generated_tokens(record), record.conventions.eos_token_ids)
    return mask.bool()


@invariant("consistency")
@_reports_rerun_failures
def teacher_forced_logprobs_match_generation(record: GenerationRecord) -> list[Violation]:
    """A full teacher-forced pass (no cache) gives the generation-time log-probs, and the greedy tokens.

    Incremental decoding with a key/value cache must compute the same function as one forward
    pass over the whole sequence; a drift means the cache (or the position handling under it) is
    wrong, and any log-prob computed later by rescoring disagrees with what generation saw.
    Compared on live positions (up to eos) within the dtype's tolerance; in greedy search the
    teacher-forced logits, with the configured processors replayed on them, must pick the same tokens.
    """
    name = "teacher_forced_logprobs_match_generation"
    _evidence(record, "teacher_forcing")  # skips, or reports a crashed re-run
    gen = _raw_logprobs_per_row(record)
    tf = _teacher_forced_logprobs(record)
    tokens = generated_tokens(record)
    live = _live(record)
    # Two different kernels (cached vs full attention) agree to ~1e-5 in fp32. Compared: the chosen token's
    # log-prob, and the total variation distance of the whole step distribution (in probability space, so
    # that the rounding of very unlikely tokens' log-probs in half precision does not count).
    tol = record.tolerance * 10
    tv_tol = max(record.tolerance, 0.4 * record.tie_tolerance)  # 1e-4 in fp32, 0.1 in bf16
    chosen_gen = gen.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    chosen_tf = tf.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    # -inf in both passes (a masked vocabulary slice) agrees; -inf in one pass only does not.
    both_inf = torch.isinf(chosen_gen) & (chosen_gen == chosen_tf)
    d_chosen = torch.where(both_inf, torch.zeros_like(chosen_gen), (chosen_gen - chosen_tf).abs())
    tv = 0.5 * (gen.exp() - tf.exp()).abs().sum(dim=-1)
    bad = (live & ~((d_chosen <= tol) & (tv <= tv_tol))).nonzero()
    parts = [
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "teacher-forced log-probs differ from generation time",
                kind="logprob",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=f"|chosen log-prob diff| <= {tol:g} and total variation <= {tv_tol:g}",
                found=f"{float(d_chosen[p]):.4g} and {float(tv[p]):.4g}",
            ),
        )
    ]
    if record.is_greedy and record.processing is not None:
        # The configured processors replayed on the teacher-forced logits (penalties and biases included,
        # not only the -inf masks) must pick the greedy tokens again.
        chosen, best, pick, _known = _teacher_forced_decisions(record)
        pick = pick.long()
        bad = (live & (chosen < best - tol)).nonzero()
        parts.append(
            from_positions(
                bad,
                lambda p: make(
                    record,
                    name,
                    "teacher-forced logits, with the configured processors, pick another greedy token",
                    kind="greedy_token",
                    row=p[0],
                    step=p[1],
                    token_id=int(tokens[p]),
                    expected=f"{int(pick[p])} {record.token_text(int(pick[p]))!r}",
                    found=f"{int(tokens[p])} {record.token_text(int(tokens[p]))!r}",
                ),
            )
        )
    return merge(*parts)


def _min_length_differs(record: GenerationRecord, run) -> bool:  # noqa: ANN001
    """Whether a decoder-only re-run with another prompt width ran under another minimum length: ``min_length``
    counts the whole padded prompt, so it bans eos for more steps in the narrower batch."""
    gc = record.generation_config
    if not record.decoder_only or gc.get("min_new_tokens") is not None:
        return False
    min_length = int(gc.get("min_length") or 0)
    return min_length > min(record.prompt_length, int(getattr(run, "prompt_length", record.prompt_length)))


def _compare_rerun(  # noqa: ANN001
    record: GenerationRecord,
    name: str,
    what: str,
    run,
    rows: list[int],
    *,
    near_ties: bool = False,
    kind: str | None = None,
    unjudged: tuple[int, ...] = (),
) -> list[Violation]:
    """Tokens of ``run`` (rows mapped to ``rows`` of the record) equal the record's, up to each row's eos.

    With ``near_ties``, a row whose first divergence picks a token whose log-prob at that step is within
    the dtype's tie tolerance of the record's token (seen from both runs where the other run kept its
    scores) is not a violation: two candidates that close are a tie at that precision (bf16 rounds
    logits to steps of 0.125), and which one wins is not a property of the model.
    """
    tokens = generated_tokens(record)[rows]
    other = run.sequences[:, getattr(run, "prompt_length", 1) :]
    live = _live(record)[rows]
    width = min(tokens.shape[1], other.shape[1])
    # Past the shorter tensor's width, the record row must already be finished.
    differ = torch.zeros_like(live)
    differ[:, :width] = live[:, :width] & (tokens[:, :width] != other[:, :width])
    if other.shape[1] < tokens.shape[1]:
        differ[:, width:] = live[:, width:]
    for r, row in enumerate(rows):  # record rows this run cannot judge (see Rerun.unjudged)
        if row in unjudged:
            differ[r] = False
    bad = differ.nonzero()

    def build(p: tuple[int, ...]) -> Violation:
        r, t = p
        found = int(other[r, t]) if t < other.shape[1] else None
        return make(
            record,
            name,
            what,
            row=rows[r],
            step=t,
            token_id=int(tokens[r, t]),
            expected=f"{int(tokens[r, t])} {record.token_text(int(tokens[r, t]))!r}",
            found="(ended)" if found is None else f"{found} {record.token_text(found)!r}",
            kind=kind,
        )

    # One violation per row (the first divergent step): later steps follow from it.
    first = {}
    for r, t in bad.tolist():
        first.setdefault(r, (r, t))
    if near_ties and first and record.scores is not None:
        lp = step_logprobs(record)
        src = score_rows(record)
        other_scores = getattr(run, "scores", None)
        tie = record.tie_tolerance
        for r, (_, t) in list(first.items()):
            if t >= other.shape[1] or t >= lp.shape[1] or int(src[rows[r], t]) < 0:
                continue
            mine, theirs = int(tokens[r, t]), int(other[r, t])
            step_lp = lp[int(src[rows[r], t]), t]
            close = abs(float(step_lp[mine]) - float(step_lp[theirs])) <= tie
            if record.is_beam:
                # Beams rank whole hypotheses: two hypotheses swap when their cumulative scores tie, whatever
                # the margin at the first step where their tokens differ. A swap is a tie when both runs'
                # returned scores are that close.
                theirs_score = getattr(run, "sequences_scores", None)
                if theirs_score is not None and record.sequences_scores is not None:
                    close = abs(float(record.sequences_scores[rows[r]]) - float(theirs_score[r])) <= tie
            elif close and other_scores is not None and t < other_scores.shape[1]:
                # The other run must see the same near-tie from its side.
                their_lp = torch.log_softmax(other_scores[r, t].float(), dim=-1)
                close = abs(float(their_lp[theirs]) - float(their_lp[mine])) <= tie
            if close:
                del first[r]
    return from_positions(torch.tensor(list(first.values())).reshape(-1, 2), build)


def _unpadded_note(record: GenerationRecord) -> str | None:
    """For a speech or vision batch: which part of the property was judged. Audio under an attention mask:
    the batch reversed and padded wider (how much, in what); otherwise the batch reversed only, and why."""
    from ..evidence import audio_padding

    if record.modality == "text":
        return None
    found = audio_padding(record.model_inputs()) if record.encoder_inputs else None
    if found is not None:
        key, extra = found
        unit = "samples" if key == "input_values" else "frames"
        ev = record.evidence
        widened = [*(ev.layouts or []), ev.permuted] if ev is not None else []
        why = next((w.unjudged_why for w in widened if w is not None and w.unjudged_why), "")
        return (
            f"audio inputs ({record.model_type}, with an attention mask): judged on the batch reversed and padded "
            f"{extra} {unit} of {key} wider, masked out, and on each input alone" + (f"; {why}" if why else "")
        )
    if record.modality == "image":
        why = "the image processor resizes every image to one size: there is no padding to widen"
    else:
        why = (
            "its encoder takes no attention mask over its inputs (Whisper's: a fixed window the feature "
            "extractor pads to), so wider padding would change what it hears by design"
        )
    return (
        f"{record.modality} inputs ({record.model_type}): judged on the batch reversed (not padded wider) and on "
        f"each input alone; {why}"
    )


def _first_per_row(bad: torch.Tensor) -> torch.Tensor:
    """The first ``(row, step)`` of each row among row-major positions ``bad`` ``[n, 2]``: later steps follow from it."""
    first: dict[int, list[int]] = {}
    for r, t in bad.tolist():
        first.setdefault(r, [r, t])
    return torch.tensor(list(first.values()), dtype=torch.long).reshape(-1, 2)


def _compare_layout(record: GenerationRecord, name: str, layout) -> list[Violation]:  # noqa: ANN001
    """The record's sequences, teacher-forced under another batch layout, score and decide as in the record's own.

    Float32: each row's raw log-prob of its own token at every live step equals the one of the
    teacher-forced pass under the record's own layout (same kernels, only the layout differs) within
    the teacher-forced check's tolerance. Every dtype: the configured processors replayed on the
    layout's logits decide as on the record's own pass. Greedy search: they pick the record's token (a
    margin within the dtype's tie tolerance is a tie), so greedy search under that layout generates
    the same tokens, by induction on the prefix. Beam search: each returned hypothesis keeps the
    processed log-prob of its token (half precision: its ``-inf`` state only, since a batch of another
    shape rounds differently). Decisions are judged where the record's own teacher-forced pass agrees
    with the record: where it does not, ``teacher_forced_logprobs_match_generation`` reports it.
    """
    where = f"{layout.name} (teacher-forced)"
    tokens = generated_tokens(record)
    live = _live(record).clone()
    live[list(layout.unjudged)] = False  # rows this layout cannot judge (see Layout.unjudged_why)
    tol = record.tolerance * 10
    parts: list[list[Violation]] = []

    def first_steps(bad: torch.Tensor, what: str, kind: str, expected, found) -> None:  # noqa: ANN001
        """One violation per row of ``bad`` (its first step): ``expected(p)`` against ``found(p)``."""
        parts.append(
            from_positions(
                _first_per_row(bad.nonzero()),
                lambda p: make(
                    record,
                    name,
                    f"{where}, {what}",
                    kind=kind,
                    row=p[0],
                    step=p[1],
                    token_id=int(tokens[p]),
                    expected=expected(p),
                    found=found(p),
                ),
            )
        )

    if record.dtype == "float32":
        mine = _teacher_forced_logprobs(record).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        theirs = layout.chosen_logprob
        both_inf = torch.isinf(mine) & (mine == theirs)
        diff = torch.where(both_inf, torch.zeros_like(mine), (mine - theirs).abs())
        own_nan = torch.isnan(mine)  # NaN in the record's own pass is the finiteness checks' finding
        first_steps(
            live & ~own_nan & ~(diff <= tol),
            "the input's log-prob of its token differs from its own batch's",
            "layout_logprob",
            lambda p: f"{float(mine[p]):.6g} (+/- {tol:g})",
            lambda p: f"{float(theirs[p]):.6g}",
        )
    if layout.decisions is None or record.processing is None:
        return merge(*parts)
    own, other = _teacher_forced_decisions(record), layout.decisions
    judged = live & own[3].bool() & other[3].bool()
    if not record.is_beam:
        margin = max(tol, record.tie_tolerance)
        own_agrees = own[0] >= own[1] - margin
        pick = other[2].long()
        first_steps(
            judged & own_agrees & (other[0] < other[1] - margin),
            "the input gives another token",
            "layout_token",
            lambda p: f"{int(tokens[p])} {record.token_text(int(tokens[p]))!r}",
            lambda p: (
                f"{int(pick[p])} {record.token_text(int(pick[p]))!r} "
                f"(by {float(other[1][p] - other[0][p]):.4g} over the record's token)"
            ),
        )
        return merge(*parts)

    def differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if record.dtype != "float32":
            return torch.isneginf(a) != torch.isneginf(b)
        same_inf = torch.isinf(a) & (a == b)
        return ~same_inf & ~((a - b).abs() <= tol)

    ours = chosen_logprobs(record)
    first_steps(
        judged & ~differs(ours, own[0]) & differs(ours, other[0]),
        "the hypothesis' processed log-prob of its token differs",
        "layout_token",
        lambda p: float(ours[p]),
        lambda p: float(other[0][p]),
    )
    return merge(*parts)


@invariant("consistency", note=_unpadded_note)
@_reports_rerun_failures
def batch_and_padding_invariance(record: GenerationRecord) -> list[Violation]:
    """Each input scores and decides the same in the batch reversed and padded wider, and alone.

    Padding is masked out of attention, so a row's output must not depend on its neighbours or on
    how much padding it received; a difference means the attention mask is ignored somewhere
    (encoder, cross-attention, position ids). The reversed batch gets
    :data:`ppinvariants.evidence.EXTRA_PADDING` more padding columns, so every row (the unpadded
    longest input too) is padded differently there; alone, an input has no padding and no neighbours.
    Standard evidence teacher-forces the record's own sequences under both layouts (forward passes
    only; see :func:`_compare_layout` for what that proves). Thorough evidence also generates again
    under both, which tests the search itself (which hypotheses a batch-wide stop keeps). A decoder-only
    model's prompts alone are judged by :func:`left_padding_invariance`. Audio under an attention mask
    (wav2vec2's samples, Speech2Text's frames) is padded wider likewise; other speech and vision
    batches are reversed only (Whisper's window is fixed, images are resized to one size; the result's
    note says which), and alone keep the processor's padding. Sampling is exempt: its random draws
    depend on the batch layout. A first divergence between two tokens whose log-probs are within the dtype's
    tolerance is a tie at that precision (padding changes the kernels' rounding), not a violation.
    """
    name = "batch_and_padding_invariance"
    if record.decoding.do_sample:
        raise NotApplicable("sampling draws depend on the batch layout")
    gc = record.generation_config
    # transformers' encoder-side processors read the padded encoder input_ids, pad tokens included
    # (they take no attention mask): under them a row's output depends on its padding by design.
    padded = [
        f"{key}={gc[key]}"
        for key, off in (("encoder_repetition_penalty", 1.0), ("encoder_no_repeat_ngram_size", 0))
        if gc.get(key) not in (None, off)
    ]
    if padded:
        raise NotApplicable(
            f"{', '.join(padded)}: transformers' encoder processors read the padded input_ids, pad tokens "
            "included, so the output may depend on the padding by design"
        )
    ev = _evidence(record, "layouts", optional=("permuted", "solo"))
    # A decoder-only model's prompts alone are left_padding_invariance's evidence.
    solo = [] if record.decoder_only else ev.solo or []
    layouts = [lay for lay in ev.layouts or [] if not (record.decoder_only and lay.name == ALONE)]
    parts = [
        _compare_rerun(
            record, name, "generated alone, the input gives another token", run, run.rows, near_ties=True, kind="solo"
        )
        for run in solo
    ]
    if ev.permuted is not None and not _min_length_differs(record, ev.permuted):
        parts.append(
            _compare_rerun(
                record,
                name,
                "generated again in the reversed batch padded wider, the input gives another token",
                ev.permuted,
                ev.permuted.rows,
                near_ties=True,
                kind="permuted",
                unjudged=tuple(getattr(ev.permuted, "unjudged", ())),
            )
        )
    parts += [_compare_layout(record, name, layout) for layout in layouts]
    return merge(*parts)


@invariant("consistency")
@_reports_rerun_failures
def left_padding_invariance(record: GenerationRecord) -> list[Violation]:
    """A decoder-only model scores and decides for a prompt alone as inside the left-padded batch.

    Under left padding a prompt's real tokens sit at other columns than alone; the attention mask
    must hide the padding and the position ids must follow the mask (``cumsum - 1``), so that the
    model sees exactly the prompt it sees alone. A model (or a pipeline) whose positions ignore the
    mask, or whose attention reads the padding, scores the generated tokens otherwise in the batch.
    Standard evidence teacher-forces each prompt alone, followed by its generated tokens (see
    :func:`_compare_layout`: greedy search then generates the same tokens alone, by induction on the
    prefix); thorough evidence also generates each prompt alone. Sampling is exempt (its draws depend
    on the batch layout); a first divergence within the dtype's tie tolerance is a tie.
    """
    name = "left_padding_invariance"
    if not record.decoder_only:
        raise NotApplicable("encoder-decoder model: judged by batch_and_padding_invariance")
    if record.decoding.do_sample:
        raise NotApplicable("sampling draws depend on the batch layout")
    ev = _evidence(record, "layouts", optional=("solo",))
    parts = [_compare_layout(record, name, lay) for lay in ev.layouts or [] if lay.name == ALONE]
    runs = [run for run in ev.solo or [] if not _min_length_differs(record, run)]
    parts += [
        _compare_rerun(
            record,
            name,
            "generated alone, the prompt gives another token than in the left-padded batch",
            run,
            run.rows,
            near_ties=True,
        )
        for run in runs
    ]
    return merge(*parts)


def _train_mode_note(record: GenerationRecord) -> str | None:
    ev = record.evidence
    if ev is None or ev.train_mode_differs is None:
        return None
    return "train mode (dropout on) " + ("changes the output" if ev.train_mode_differs else "gives the same output")


@invariant("consistency", note=_train_mode_note)
@_reports_rerun_failures
def deterministic_in_eval_mode(record: GenerationRecord) -> list[Violation]:
    """Two runs in eval mode with the same seed give identical tokens and scores.

    A checkpoint used as a CI gate must be reproducible; a difference means dropout is active in
    eval mode, or a nondeterministic kernel changes results. Standard evidence re-runs sampling
    only (seeded draws are where it bites); thorough evidence re-runs every decoding and reports,
    never fails, whether train mode differs.
    """
    name = "deterministic_in_eval_mode"
    ev = _evidence(record, "rerun")
    out = _compare_rerun(record, name, "a second identical run gives another token", ev.rerun, ev.rerun.rows)
    if ev.rerun.scores is not None and ev.rerun.scores.shape == record.scores.shape:
        diff = torch.nan_to_num((ev.rerun.scores - record.scores).abs(), nan=0.0, posinf=0.0)
        same_inf = torch.isinf(ev.rerun.scores) == torch.isinf(record.scores)
        bad = ((diff > record.tolerance) | ~same_inf).nonzero()
        out = merge(
            out,
            from_positions(
                bad,
                lambda p: make(
                    record,
                    name,
                    "a second identical run gives other scores",
                    row=p[0],
                    score_row=True,
                    step=p[1],
                    token_id=p[2],
                    expected=float(record.scores[p]),
                    found=float(ev.rerun.scores[p]),
                ),
            ),
        )
    return out


@invariant("consistency")
@_reports_rerun_failures
def greedy_equals_top1_sampling(record: GenerationRecord) -> list[Violation]:
    """Greedy search gives the same tokens as sampling restricted to the single most likely token (top_k=1).

    Two code paths of ``generate()`` that must agree by definition (transformers 5 routes
    ``num_beams=1`` beam search to greedy search, so top-1 sampling is the independent path).
    """
    name = "greedy_equals_top1_sampling"
    if not record.is_greedy:
        raise NotApplicable("only for greedy search")
    ev = _evidence(record, "top1")
    if ev.top1_sampling is None:
        raise NotApplicable("only for greedy search")

    class _Run:
        sequences = ev.top1_sampling
        prompt_length = record.prompt_length  # the same batch

    return _compare_rerun(
        record,
        name,
        "top-1 sampling picks another token than greedy search",
        _Run,
        list(range(record.sequences.shape[0])),
        near_ties=True,  # top-k keeps every token tied with the k-th: sampling may pick another of a tie
    )


def _scope(ev) -> str:  # noqa: ANN001 - an Evidence
    return f"with respect to {ev.grad_scope}" if ev.grad_scope else "with respect to the parameters"


def _non_finite(ev) -> str:  # noqa: ANN001 - an Evidence
    """What the gradient check found: the parameters whose gradient is not finite (thorough evidence names
    them, the first three and a count), else ``non-finite or none``."""
    names = getattr(ev, "grad_non_finite", None) or []
    if not names:
        return "non-finite or none"
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"non-finite in {', '.join(names[:3])}{more}"


@invariant("consistency")
@_reports_rerun_failures
def sequence_logprob_is_differentiable(record: GenerationRecord) -> list[Violation]:
    """The differentiable sequence log-prob equals the no-grad value, and its gradient is finite and not all zero.

    Reinforcement learning on generations needs ``log p(y | x)`` with gradient: computed by
    teacher-forced rescoring (:func:`ppinvariants.rescoring.sequence_logprobs`) and, in greedy
    search with thorough evidence, by ``generate()`` run with autograd on; both must equal the
    masked sum of the generation-time raw-logit log-probs, and backpropagate a finite gradient that
    is not all zero: with respect to each of the encoder's and decoder's input embedding activations
    (standard evidence: every path from the inputs to the log-prob starts there; a detached encoder
    fails too) or to the parameters (thorough: some finite, not all zero). Detached logits, a wrong
    mask or a shifted gather break it.
    """
    name = "sequence_logprob_is_differentiable"
    ev = _evidence(record, "grad", optional=("generate_grad",))
    raw = _raw_logprobs_per_row(record)
    tokens = generated_tokens(record)
    chosen = raw.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    reference = masked_sum(chosen, _live(record))
    tol = record.tolerance * 10 * max(1, record.steps)
    parts = []
    readings = (
        ("teacher-forced", "teacher_forced_value", ev.grad_logprob),
        ("generate() with grad", "generate_grad_value", ev.generate_grad_logprob),
    )
    for label, kind, value in readings:
        if value is None:
            continue
        bad = (~torch.isclose(value, reference, atol=tol, rtol=0)).nonzero()
        parts.append(
            from_positions(
                bad,
                lambda p, label=label, value=value, kind=kind: make(
                    record,
                    name,
                    f"{label} sequence log-prob differs from the no-grad value",
                    kind=kind,
                    row=p[0],
                    expected=float(reference[p]),
                    found=float(value[p]),
                ),
            )
        )
    if not ev.grad_finite:
        parts.append(
            [
                make(
                    record,
                    name,
                    f"gradient of the sequence log-prob ({_scope(ev)}) is missing or not finite",
                    expected="finite",
                    found=_non_finite(ev),
                )
            ]
        )
    elif not ev.grad_nonzero:
        parts.append(
            [
                make(
                    record,
                    name,
                    f"gradient of the sequence log-prob ({_scope(ev)}) is zero everywhere (logits detached?)",
                    expected="non-zero",
                    found="all zero",
                )
            ]
        )
    return merge(*parts)
