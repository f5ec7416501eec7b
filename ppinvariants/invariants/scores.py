"""Step scores as distributions: finite where they should be, normalisable, entropy in range."""

from __future__ import annotations

import math

import torch

from ..record import GenerationRecord, score_summary
from ..report import Violation
from ._base import from_positions, invariant, make, merge

#: What each finding says; streaming mode reports the same findings with the same words.
NAN_SCORE = "processed score is NaN or +inf"
RAW_NOT_FINITE = "raw logit is not finite"
NOT_NORMALISED = "softmax of the step scores does not sum to 1"
ENTROPY_OUTSIDE = "step entropy outside [0, log V]"


@invariant("scores")
def scores_have_no_nan_or_posinf(record: GenerationRecord) -> list[Violation]:
    """No NaN and no ``+inf`` in the processed scores; raw logits are finite everywhere.

    Logits processors may only *remove* tokens (``-inf``); NaN or ``+inf`` come from numerical
    overflow (fp16 attention, exploding activations) and poison every softmax and log-prob.
    """
    name = "scores_have_no_nan_or_posinf"
    parts = []
    s = record.scores
    # amax() propagates NaN and +inf: finite maxima (the record's vocab_summary, shared with the softmax, entropy and argmax
    # checks) prove no NaN and no +inf, without a mask; only otherwise are the positions looked for.
    clean = s.numel() == 0 or score_summary(record).clean
    bad = torch.empty(0, 3, dtype=torch.long) if clean else (torch.isnan(s) | torch.isposinf(s)).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                NAN_SCORE,
                row=p[0],
                score_row=True,
                step=p[1],
                token_id=p[2],
                expected="finite or -inf",
                found=float(s[p]),
            ),
        )
    )
    if record.logits is not None:
        lg = record.logits
        clean = lg.numel() == 0 or all(bool(torch.isfinite(x)) for x in torch.aminmax(lg))  # NaN propagates too
        bad = torch.empty(0, 3, dtype=torch.long) if clean else (~torch.isfinite(lg)).nonzero()
        parts.append(
            from_positions(
                bad,
                lambda p: make(
                    record,
                    name,
                    RAW_NOT_FINITE,
                    row=p[0],
                    score_row=True,
                    step=p[1],
                    token_id=p[2],
                    expected="finite",
                    found=float(lg[p]),
                ),
            )
        )
    return merge(*parts)


@invariant("scores")
def softmax_rows_sum_to_one(record: GenerationRecord) -> list[Violation]:
    """The softmax of the scores sums to 1 over the vocabulary at every row and step (dtype-aware tolerance).

    A row that cannot be normalised (all ``-inf``, or NaN anywhere) has no distribution to sample
    from or score with; generate() would pick an arbitrary token there. The sums are the record's
    :func:`~ppinvariants.record.vocab_summary` (``sum exp(s - max) / Z``), with no ``[rows, steps, V]`` softmax.
    """
    name = "softmax_rows_sum_to_one"
    sums = score_summary(record).prob_sum
    bad = (~((sums - 1).abs() <= record.tolerance)).nonzero()  # NaN compares False: caught
    return from_positions(
        bad,
        lambda p: make(
            record,
            name,
            NOT_NORMALISED,
            row=p[0],
            score_row=True,
            step=p[1],
            expected=f"1 +/- {record.tolerance:g}",
            found=float(sums[p]),
        ),
    )


@invariant("scores")
def step_entropy_within_bounds(record: GenerationRecord) -> list[Violation]:
    """The entropy of each step distribution lies in ``[0, log V]``.

    Entropy is a sum of non-negative terms bounded by the uniform distribution's ``log V``; a value
    outside means the scores are not a valid distribution (NaN, wrong axis normalised). The entropies are
    the record's :func:`~ppinvariants.record.vocab_summary` (``log Z - sum(e * (s - max)) / Z``).
    """
    name = "step_entropy_within_bounds"
    h = score_summary(record).entropy
    upper = math.log(record.scores.shape[-1])
    tol = record.tolerance
    bad = (~((h >= -tol) & (h <= upper + tol))).nonzero()
    return merge(
        from_positions(
            bad,
            lambda q: make(
                record,
                name,
                ENTROPY_OUTSIDE,
                row=q[0],
                score_row=True,
                step=q[1],
                expected=f"0 <= H <= {upper:.4f}",
                found=float(h[q]),
            ),
        )
    )
