"""Log-probs of the chosen tokens: gathered right, argmax in greedy search, padding masked out."""

from __future__ import annotations

import torch

from ..errors import NotApplicable
from ..record import (
    GenerationRecord,
    chosen_logprobs,
    finished_mask,
    generated_tokens,
    masked_sum,
    score_rows,
    score_summary,
)
from ..report import Violation
from ._base import from_positions, invariant, make, merge


@invariant("logprobs")
def chosen_logprob_gather_matches_indexing(record: GenerationRecord) -> list[Violation]:
    """The chosen-token log-probs from one vectorized gather equal direct indexing and transformers' transition scores.

    Three independent readings of the same numbers: ``gather`` over the (beam-re-indexed) step
    scores, advanced indexing ``lp[row, step, token]``, and ``compute_transition_scores`` as
    captured from transformers. A gather over the wrong axis or an off-by-one between scores and
    tokens makes them disagree. Positions after a row's eos are not compared (they are padding).
    """
    name = "chosen_logprob_gather_matches_indexing"
    tokens = generated_tokens(record)
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    live = mask.bool()
    gathered = chosen_logprobs(record)
    rows = score_rows(record).clamp(min=0)
    steps = torch.arange(record.steps).expand_as(rows)
    # lp[rows, steps, tokens] of the step log-probs (step_logprobs), read by advanced indexing: beam scores are
    # log-probs as they are; other scores' log_softmax at these entries from the record's vocab_summary.
    indexed = record.scores[rows, steps, tokens].float()
    if not record.is_beam:
        indexed = score_summary(record).logprob_at((rows, steps), indexed)
    tol = record.tolerance
    parts = []
    differ = live & ~torch.isclose(gathered, indexed, atol=tol, rtol=0, equal_nan=True)
    parts.append(
        from_positions(
            differ.nonzero(),
            lambda p: make(
                record,
                name,
                "gathered log-prob differs from direct indexing",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=float(indexed[p]),
                found=float(gathered[p]),
            ),
        )
    )
    ts = record.transition_scores
    if ts is not None:
        ts = ts[:, : record.steps]
        if ts.shape != gathered.shape:
            parts.append(
                [
                    make(
                        record,
                        name,
                        "transition scores have a different shape than the tokens",
                        expected=list(gathered.shape),
                        found=list(ts.shape),
                    )
                ]
            )
        else:
            differ = live & ~torch.isclose(gathered, ts, atol=tol, rtol=0, equal_nan=True)
            parts.append(
                from_positions(
                    differ.nonzero(),
                    lambda p: make(
                        record,
                        name,
                        "gathered log-prob differs from transformers' compute_transition_scores",
                        row=p[0],
                        step=p[1],
                        token_id=int(tokens[p]),
                        expected=float(ts[p]),
                        found=float(gathered[p]),
                    ),
                )
            )
    return merge(*parts)


@invariant("logprobs")
def greedy_tokens_are_argmax(record: GenerationRecord) -> list[Violation]:
    """In greedy search every chosen token has the maximal processed score of its step.

    Greedy search is ``argmax`` over the processed scores; a token that is not the argmax means
    the scores returned are not the ones the decision was made on (shifted by a step, or taken
    before a processor ran). Ties are accepted. Steps after a row's eos are padding and skipped.
    """
    if not record.is_greedy:
        raise NotApplicable("only greedy search picks the argmax")
    tokens = generated_tokens(record)
    s = record.scores.float()
    chosen = s.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    summary = score_summary(record)  # the maxima, computed once per record with the other vocabulary facts
    best_id = summary.best_ids_where(chosen < summary.best)  # the argmax id, read only where it is not the token
    return greedy_argmax_violations(record, tokens, chosen, summary.best, best_id)


def greedy_argmax_violations(
    record: GenerationRecord, tokens: torch.Tensor, chosen: torch.Tensor, best: torch.Tensor, best_id: torch.Tensor
) -> list[Violation]:
    """Violations of :func:`greedy_tokens_are_argmax` from the per-step chosen score, best score and its id
    (``[rows, steps]`` each; ``best_id`` is read only where ``chosen < best``): ``live & (chosen < best)``.
    Streaming mode, which keeps only these scalars, judges through this function too."""
    name = "greedy_tokens_are_argmax"
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    wrong = (mask.bool() & (chosen < best)).nonzero()
    return from_positions(
        wrong,
        lambda p: make(
            record,
            name,
            "greedy token is not the argmax of the processed scores",
            row=p[0],
            step=p[1],
            token_id=int(tokens[p]),
            expected=f"{int(best_id[p])} {record.token_text(int(best_id[p]))!r} (score {float(best[p]):.6g})",
            found=f"{int(tokens[p])} {record.token_text(int(tokens[p]))!r} (score {float(chosen[p]):.6g})",
        ),
    )


@invariant("logprobs")
def padding_mask_matches_eos(record: GenerationRecord) -> list[Violation]:
    """The generated-token mask is zero exactly on the pad after eos; the masked sequence log-prob counts only real tokens.

    Three consequences are checked: (1) masked positions hold pad and unmasked ones end at the
    first eos (in beam search, exactly where ``beam_indices`` is ``-1``); (2) the masked sum of
    chosen log-probs equals the sum over each row's tokens before its trailing pad (lengths read
    independently of eos); (3) the last token before a row's trailing pad is eos. Summing
    log-probs over pad positions is the classic error in RL fine-tuning of seq2seq models. Where pad is
    eos (decoder-only tokenizers without a pad token), the trailing run of pad starts with the real eos,
    which stays counted: a mask built from ``!= pad`` drops it.
    """
    name = "padding_mask_matches_eos"
    c = record.conventions
    tokens = generated_tokens(record)
    mask, has_eos = finished_mask(tokens, c.eos_token_ids)
    # A row without eos that ran to the length limit was never padded: a pad id at its end is a token the
    # model generated (pad is an ordinary id until eos; T5 can emit its <pad>), not padding to read lengths from.
    unpadded = ~has_eos & (record.sequences.shape[1] >= record.max_length)
    parts = []
    bad = ((mask == 0) & (tokens != c.pad_token_id)).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "masked-out position is not pad",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=f"pad {c.pad_token_id}",
                found=int(tokens[p]),
            ),
        )
    )
    if record.is_beam and record.beam_indices is not None:
        bi = score_rows(record)
        bad = ((bi < 0) != (mask == 0)).nonzero()
        parts.append(
            from_positions(
                bad,
                lambda p: make(
                    record,
                    name,
                    "beam_indices end (-1) does not coincide with the eos mask",
                    row=p[0],
                    step=p[1],
                    token_id=int(tokens[p]),
                    expected=f"mask {int(mask[p])}",
                    found=f"beam index {int(bi[p])}",
                ),
            )
        )
    # Lengths the naive way, from the trailing run of pad (what `tokens != pad` gives): an
    # independent reading of where each row ends, to hold the eos-derived mask against.
    is_pad = (tokens == c.pad_token_id).int()
    trailing_pad = torch.where(unpadded, 0, is_pad.flip(1).cumprod(dim=1).sum(dim=1))
    lengths = tokens.shape[1] - trailing_pad
    if c.pad_token_id in c.eos_token_ids:
        # pad = eos (a tokenizer without a pad token): the trailing run of pad begins with the row's real
        # eos, which is generated and counted. (Reading lengths as `tokens != pad` would drop it: the trap.)
        # Unless the token before the run is itself an eos (another eos id, e.g. <|im_end|> then pad <|endoftext|>).
        before = tokens.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        closed = (lengths > 0) & torch.isin(before, torch.tensor(c.eos_token_ids))
        opens = (trailing_pad > 0) & ~closed
        lengths = torch.where(opens, lengths + 1, lengths)
        trailing_pad = torch.where(opens, trailing_pad - 1, trailing_pad)
    chosen = chosen_logprobs(record)
    by_mask = masked_sum(chosen, mask)
    by_length = torch.where(
        torch.arange(tokens.shape[1])[None, :] < lengths[:, None], chosen, torch.zeros_like(chosen)
    ).sum(dim=1)
    tol = record.tolerance * max(1, tokens.shape[1])
    bad = (~torch.isclose(by_mask, by_length, atol=tol, rtol=0)).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "masked sequence log-prob differs from the sum over unpadded tokens",
                row=p[0],
                expected=float(by_length[p]),
                found=float(by_mask[p]),
            ),
        )
    )
    last = tokens.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    ended = trailing_pad > 0
    bad = (ended & ~torch.isin(last, torch.tensor(c.eos_token_ids))).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "last counted token before the padding is not eos",
                row=p[0],
                step=int(lengths[p]) - 1,
                token_id=int(last[p]),
                expected=f"eos {list(c.eos_token_ids)}",
                found=int(last[p]),
            ),
        )
    )
    return merge(*parts)
