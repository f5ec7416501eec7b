"""Sampling: every sampled token had a non-zero probability under the processed scores.

Which tokens the warpers (temperature, top-k, top-p, min-p, typical, epsilon, eta) keep is judged with
every other processor by :mod:`ppinvariants.invariants.processors`, on the same replay.
"""

from __future__ import annotations

import torch

from ..errors import NotApplicable
from ..record import GenerationRecord, finished_mask, generated_tokens, source_rows
from ..report import Violation
from ._base import from_positions, invariant, make


def _require_sampling(record: GenerationRecord) -> None:
    if not record.decoding.do_sample:
        raise NotApplicable("only sampling draws tokens from the warped distribution")


@invariant("sampling")
def sampled_tokens_have_positive_probability(record: GenerationRecord) -> list[Violation]:
    """Every sampled token (up to and including its row's eos) has a finite processed score, i.e. non-zero probability.

    Sampling draws from ``softmax(processed scores)``: a token whose processed score is ``-inf``
    (or NaN) has probability zero and cannot be drawn. Finding one means the returned scores are
    not the distribution the token was drawn from (scores shifted by a step, captured before a
    warper ran, or a token written after sampling). Positions after eos are padding, not samples.
    """
    name = "sampled_tokens_have_positive_probability"
    _require_sampling(record)
    tokens = generated_tokens(record)
    R, S = tokens.shape
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    s = record.scores
    src = source_rows(record)
    if src is None:
        raise NotApplicable("beam sampling without beam_indices: the score row of each token is unknown")
    src = src.clamp(0, s.shape[0] - 1)
    in_vocab = (tokens >= 0) & (tokens < s.shape[-1])  # ids outside: generated_ids_within_tokenizer
    chosen = s[src, torch.arange(S)[None, :].expand(R, S), tokens.clamp(0, s.shape[-1] - 1)]
    bad = (mask.bool() & in_vocab & ~torch.isfinite(chosen)).nonzero()
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            "sampled token has zero probability (its processed score is not finite)",
            row=p[0],
            step=p[1],
            token_id=int(tokens[p]),
            expected="finite processed score",
            found=float(chosen[p]),
        ),
    )
