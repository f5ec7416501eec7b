"""``-inf`` in the processed scores, held against the logits processors actually in effect.

The processors are read from the *effective* generation config (checkpoint's
``generation_config.json`` merged with the call), never assumed. Step ``t`` (0-based) is
decided with ``cur_len = t + 1`` decoder tokens so far (the decoder start counts).
"""

from __future__ import annotations

from typing import Any

import torch

from ..capture import GenerationRecord, generated_tokens, score_rows
from ..errors import NotApplicable
from ..report import Violation
from ._base import from_positions, invariant, make, merge


def _eos_ids(record: GenerationRecord) -> list[int]:
    return list(record.conventions.eos_token_ids)


def required_neg_inf(record: GenerationRecord) -> torch.Tensor:
    """``[score_rows, steps, V]``: positions a history-independent processor must set to ``-inf``.

    * min_length: eos while ``cur_len < min_length``;
    * min_new_tokens: eos while ``t < min_new_tokens`` (one decoder prompt token);
    * forced_bos_token_id: every other token at step 0;
    * forced_eos_token_id: every other token at ``cur_len == max_length - 1``;
    * bad_words_ids of one token, suppress_tokens: those tokens at every step;
    * begin_suppress_tokens: those tokens at the first free step.
    """
    gc: dict[str, Any] = record.generation_config
    rows, steps, vocab = record.scores.shape
    req = torch.zeros(steps, vocab, dtype=torch.bool)
    t = torch.arange(steps)
    eos = torch.tensor(_eos_ids(record))
    min_length = gc.get("min_length") or 0
    min_new = gc.get("min_new_tokens") or 0
    eos_blocked = (t + 1 < min_length) | (t < min_new)
    req[eos_blocked.nonzero().flatten()[:, None], eos[None, :]] = True
    forced_bos = gc.get("forced_bos_token_id")
    first_free = 0
    if forced_bos is not None and steps > 0:
        req[0] = True
        req[0, int(forced_bos)] = False
        first_free = 1
    forced_eos = gc.get("forced_eos_token_id")
    last = record.max_length - 2
    if forced_eos is not None and 0 <= last < steps:
        keep = torch.tensor(forced_eos if isinstance(forced_eos, list) else [forced_eos])
        req[last] = True
        req[last, keep] = False
    singles = [w[0] for w in (gc.get("bad_words_ids") or []) if len(w) == 1]
    singles += list(gc.get("suppress_tokens") or [])
    if singles:
        req[:, torch.tensor(singles)] = True
    begin = list(gc.get("begin_suppress_tokens") or [])
    if begin and first_free < steps:
        req[first_free, torch.tensor(begin)] = True
    return req.unsqueeze(0).expand(rows, steps, vocab)


def history_neg_inf(record: GenerationRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """``(banned, known)``: positions that history-dependent processors set to ``-inf``, per score row.

    no_repeat_ngram_size, encoder_no_repeat_ngram_size and multi-token bad_words_ids depend on the tokens so far. A score row's
    history is known when it produced a returned token at that step (always in greedy search and
    sampling; along each returned hypothesis's ``beam_indices`` in beam search); ``known`` marks
    those ``[score_rows, steps]`` cells. Elsewhere the banned set is unknown and not judged.
    """
    gc = record.generation_config
    rows, score_steps, vocab = record.scores.shape
    # Beam search may run more steps than its longest returned hypothesis: judge those steps' history only
    # along returned hypotheses, i.e. not beyond the returned sequences.
    steps = min(score_steps, record.steps)
    seq = record.sequences[:, : steps + 1]  # [R, 1 + steps]
    R = seq.shape[0]
    banned_r = torch.zeros(R, steps, vocab, dtype=torch.bool)
    t = torch.arange(steps)
    n = gc.get("no_repeat_ngram_size") or 0
    if n and n <= seq.shape[1]:
        grams = seq.unfold(1, n, 1)  # [R, J, n], gram j covers positions j..j+n-1
        J = grams.shape[1]
        j = torch.arange(J)
        if n == 1:
            match = torch.ones(R, steps, J, dtype=torch.bool)
        else:
            # the n-1 tokens ending at position t (cur_len = t + 1) vs every gram's first n-1 tokens
            idx = (t[:, None] - (n - 2) + torch.arange(n - 1)[None, :]).clamp(min=0)  # [steps, n-1]
            tail = seq[:, idx]  # [R, steps, n-1]
            match = (grams[:, None, :, : n - 1] == tail[:, :, None, :]).all(dim=-1)  # [R, steps, J]
            match &= (t[:, None] + 1 >= n)[None]
        match &= (j[None, :] + n - 1 <= t[:, None])[None]
        last_tok = grams[:, :, n - 1][:, None, :].expand(R, steps, J)
        hits = torch.zeros(R, steps, vocab, dtype=torch.int32)
        hits.scatter_add_(2, last_tok, match.int())
        banned_r |= hits > 0
    m = gc.get("encoder_no_repeat_ngram_size") or 0
    if m and m <= record.input_ids.shape[1]:
        # EncoderNoRepeatNGramLogitsProcessor: bans the last token of every n-gram of the (padded)
        # encoder input whose first n-1 tokens are the last n-1 tokens of the decoder sequence.
        enc = record.input_ids.cpu().repeat_interleave(R // record.input_ids.shape[0], dim=0)  # [R, L]
        egrams = enc.unfold(1, m, 1)  # [R, J, m]
        if m == 1:
            ematch = torch.ones(R, steps, egrams.shape[1], dtype=torch.bool)
        else:
            idx = (t[:, None] - (m - 2) + torch.arange(m - 1)[None, :]).clamp(min=0)  # [steps, m-1]
            ematch = (egrams[:, None, :, : m - 1] == seq[:, idx][:, :, None, :]).all(dim=-1)  # [R, steps, J]
            ematch &= (t[:, None] + 1 >= m - 1)[None]
        hits = torch.zeros(R, steps, vocab, dtype=torch.int32)
        hits.scatter_add_(2, egrams[:, :, m - 1][:, None, :].expand(R, steps, -1).contiguous(), ematch.int())
        banned_r |= hits > 0
    for word in gc.get("bad_words_ids") or []:
        if len(word) < 2:
            continue
        prefix = torch.tensor(word[:-1])
        k = len(prefix)
        idx = (t[:, None] - (k - 1) + torch.arange(k)[None, :]).clamp(min=0)
        ok = (seq[:, idx] == prefix).all(dim=-1) & (t + 1 >= k)[None]  # [R, steps]
        banned_r[:, :, word[-1]] |= ok
    if not record.is_beam:
        return banned_r, torch.ones(rows, score_steps, dtype=torch.bool)
    # Scatter each returned hypothesis's history to the beam row it came from at each step.
    src = score_rows(record)[:, :steps]  # [R, steps], -1 after the hypothesis ended
    banned = torch.zeros(rows, score_steps, vocab, dtype=torch.bool)
    known = torch.zeros(rows, score_steps, dtype=torch.bool)
    live = src >= 0
    r_idx, s_idx = live.nonzero(as_tuple=True)
    banned[src[r_idx, s_idx], s_idx] = banned_r[r_idx, s_idx]
    known[src[r_idx, s_idx], s_idx] = True
    return banned, known


def _history_processors_active(record: GenerationRecord) -> bool:
    gc = record.generation_config
    return (
        bool(gc.get("no_repeat_ngram_size"))
        or bool(gc.get("encoder_no_repeat_ngram_size"))
        or any(len(w) > 1 for w in gc.get("bad_words_ids") or [])
    )


@invariant("processors")
def neg_inf_only_where_processors_explain(record: GenerationRecord) -> list[Violation]:
    """Every ``-inf`` in the processed scores is explained by a logits processor in effect.

    A model's softmax never yields ``-inf`` on its own; ``-inf`` comes from processors (eos before
    the minimum length, non-forced tokens at a forced step, bad words, no-repeat n-grams,
    suppressed tokens). An unexplained ``-inf`` means a token was banned by something nobody
    configured, e.g. a masked vocabulary slice or an overflow in half precision.
    Sampling warpers (top-k/top-p) are judged by the sampling invariants, so this check skips sampling.
    """
    name = "neg_inf_only_where_processors_explain"
    if record.decoding.do_sample:
        raise NotApplicable("sampling warpers mask data-dependent sets; not judged here")
    s = record.scores
    explained = required_neg_inf(record).clone()
    if _history_processors_active(record):
        banned, known = history_neg_inf(record)
        explained |= banned | ~known[:, :, None]
    bad = (torch.isneginf(s) & ~explained).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "-inf not explained by any logits processor in effect",
            row=p[0],
            score_row=True,
            step=p[1],
            token_id=p[2],
            expected="finite",
            found="-inf",
        ),
    )


@invariant("processors")
def processor_masks_applied(record: GenerationRecord) -> list[Violation]:
    """Every position a configured processor must ban is ``-inf`` in every row.

    The converse of :func:`neg_inf_only_where_processors_explain`: eos before ``min_length`` /
    ``min_new_tokens``, the non-forced tokens of a forced step, single-token bad words and
    suppressed tokens must all read ``-inf``. A finite score there means the processor did not
    run (or the scores were captured before it ran).
    """
    name = "processor_masks_applied"
    s = record.scores
    req = required_neg_inf(record)
    bad = (req & ~torch.isneginf(s)).nonzero()
    parts = [
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "a configured processor should have set this score to -inf",
                row=p[0],
                score_row=True,
                step=p[1],
                token_id=p[2],
                expected="-inf",
                found=float(s[p]),
            ),
        )
    ]
    if _history_processors_active(record):
        banned, known = history_neg_inf(record)
        bad = (banned & known[:, :, None] & ~torch.isneginf(s)).nonzero()
        parts.append(
            from_positions(
                bad,
                lambda p: make(
                    record,
                    name,
                    "a history-dependent processor (no-repeat n-gram / bad words) should have banned this token",
                    row=p[0],
                    score_row=True,
                    step=p[1],
                    token_id=p[2],
                    expected="-inf",
                    found=float(s[p]),
                ),
            )
        )
    return merge(*parts)


@invariant("processors")
def no_eos_before_min_length(record: GenerationRecord) -> list[Violation]:
    """No generated row has eos before ``min_length`` (decoder start included) or ``min_new_tokens``.

    The min-length processor bans eos until the minimum is reached; an eos earlier means the
    constraint was not enforced and short outputs slip through. The one exception is the step
    where ``forced_eos_token_id`` forces eos at the length limit, which takes precedence.
    """
    name = "no_eos_before_min_length"
    gc = record.generation_config
    tokens = generated_tokens(record)
    t = torch.arange(tokens.shape[1])
    blocked = (t + 1 < (gc.get("min_length") or 0)) | (t < (gc.get("min_new_tokens") or 0))
    if gc.get("forced_eos_token_id") is not None:
        # The forced eos at the length limit runs after the min-length processor and wins over it
        # (a config asking for min_length >= max_length gets its eos there all the same).
        blocked &= t != record.max_length - 2
    is_eos = torch.isin(tokens, torch.tensor(_eos_ids(record)))
    bad = (is_eos & blocked[None, :]).nonzero()
    return merge(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "eos generated before the minimum length",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=f"no eos before min_length={gc.get('min_length')} / min_new_tokens={gc.get('min_new_tokens')}",
                found=f"eos at length {p[1] + 2}",
            ),
        )
    )


@invariant("processors")
def renormalized_scores_are_log_probs(record: GenerationRecord) -> list[Violation]:
    """With ``renormalize_logits``, every processed score row is a log-distribution: ``logsumexp == 0``.

    The renormalising processor runs last and turns the processed scores into log-probabilities;
    a row that does not normalise means a processor ran after it, or it did not run.
    """
    name = "renormalized_scores_are_log_probs"
    if not record.generation_config.get("renormalize_logits"):
        raise NotApplicable("renormalize_logits is off")
    lse = torch.logsumexp(record.scores.float(), dim=-1)
    bad = (~(lse.abs() <= record.tolerance)).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "renormalized scores do not sum to probability 1",
            row=p[0],
            score_row=True,
            step=p[1],
            expected="logsumexp 0",
            found=float(lse[p]),
        ),
    )
