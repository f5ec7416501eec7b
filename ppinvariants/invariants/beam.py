"""Beam search outputs: returned scores, their order, and the beam indices that trace each hypothesis.

Facts of transformers 5.x ``_beam_search`` these checks rest on (``generation/utils.py``):

* a hypothesis that finishes at ``cur_len`` (decoder tokens *before* the new token, decoder start
  included) is scored ``sum of processed log-probs / (cur_len + 1 - decoder_prompt_len) ** length_penalty``
  (``_update_finished_beams``); for an encoder-decoder ``decoder_prompt_len == 1``, so the
  denominator's base is the number of *generated* tokens, the final eos included;
* ``beam_indices`` hold ``topk_current_beam_indices + batch_offset`` with
  ``batch_offset = b * num_beams``: the *flat* ``[batch * num_beams]`` row of ``scores`` that
  produced the token, ``-1`` where the hypothesis had already ended (``_get_top_k_continuations``);
* the finished hypotheses are kept sorted by score (``torch.topk``), and the first
  ``num_return_sequences`` of each input are returned.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _compat
from ..errors import NotApplicable
from ..record import GenerationRecord, finished_mask, generated_tokens, masked_sum, score_rows, step_logprobs
from ..report import Violation
from ._base import from_positions, invariant, make, merge


def setting(record: GenerationRecord, name: str) -> Any:
    """The value ``generate()`` used for ``name``: the effective config's, else transformers' global default.

    ``generate()`` fills settings left ``None`` from ``GenerationConfig._get_default_generation_params()``
    (e.g. ``top_k`` 50, ``length_penalty`` 1.0), so a ``None`` here does not mean "off".
    """
    value = record.generation_config.get(name)
    return value if value is not None else _compat.generation_default(name)


def _require_beam(record: GenerationRecord) -> None:
    if not record.is_beam:
        raise NotApplicable("only beam search returns sequences_scores and beam_indices")
    if record.sequences_scores is None or record.beam_indices is None:
        raise NotApplicable("the record has no sequences_scores / beam_indices (output_scores was off)")


@invariant("beam")
def beam_scores_match_transition_scores(record: GenerationRecord) -> list[Violation]:
    """Each returned ``sequences_scores`` equals the sum of its tokens' processed log-probs divided by ``generated_length ** length_penalty``.

    Beam search ranks finished hypotheses by exactly this number: transformers 5.x adds the
    processed log-prob of every chosen token (read from the beam row given by ``beam_indices``)
    and, when the hypothesis finishes, divides by ``(cur_len + 1 - decoder_prompt_len) **
    length_penalty``, i.e. by the number of generated tokens *including the final eos* (positions
    after the eos are padding and count for nothing). It is recomputed twice, from our own
    gather over ``scores`` and from transformers' ``compute_transition_scores``; both must agree
    with ``sequences_scores`` within ``tolerance * steps``. A mismatch means the returned scores,
    the scores tensor or the beam indices do not describe the same search (e.g. a length penalty
    applied twice, or scores re-indexed with the wrong beam).
    """
    name = "beam_scores_match_transition_scores"
    _require_beam(record)
    tokens = generated_tokens(record)  # [R, S]
    R, S = tokens.shape
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    live = mask.bool()
    length = live.sum(dim=1)  # generated tokens up to and including eos
    penalty = float(setting(record, "length_penalty"))
    denom = length.clamp(min=1).double() ** penalty
    found = record.sequences_scores.double()
    if found.shape != (R,):
        raise NotApplicable(
            f"sequences_scores has shape {list(found.shape)}, not [{R}] (judged by beam_outputs_are_well_formed)"
        )
    lp = step_logprobs(record)  # beam search: processed log-probs, [batch * num_beams, S, V]
    src = score_rows(record).long().clamp(0, lp.shape[0] - 1)  # out-of-range indices: beam_outputs_are_well_formed
    per_token = lp[src, torch.arange(S)[None, :].expand(R, S), tokens]
    ours = masked_sum(per_token.double(), live) / denom
    tol = record.tolerance * max(1, S)
    how = f"(sum over {{n}} generated tokens incl. eos) / {{n}} ** {penalty:g}"

    def compare(expected: torch.Tensor, source: str) -> list[Violation]:
        bad = (~torch.isclose(expected, found, atol=tol, rtol=0)).nonzero()
        return from_positions(
            bad,
            lambda p: make(
                record,
                name,
                f"sequences_scores differs from {source} {how.format(n=int(length[p[0]]))}",
                row=p[0],
                expected=float(expected[p]),
                found=float(found[p]),
            ),
        )

    parts = [compare(ours, "the chosen-token log-probs gathered through beam_indices")]
    ts = record.transition_scores
    if ts is not None:
        ts = ts.double()[:, :S]
        if ts.shape[0] != R:
            parts.append(
                [
                    make(
                        record,
                        name,
                        "transition scores have a different number of rows than sequences",
                        expected=R,
                        found=int(ts.shape[0]),
                    )
                ]
            )
        else:
            if ts.shape[1] < S:  # compute_transition_scores cuts to the longest hypothesis
                ts = torch.cat([ts, torch.zeros(R, S - ts.shape[1], dtype=ts.dtype)], dim=1)
            parts.append(compare(masked_sum(ts, live) / denom, "transformers' compute_transition_scores"))
    return merge(*parts)


@invariant("beam")
def beam_outputs_are_well_formed(record: GenerationRecord) -> list[Violation]:
    """Beam outputs have the shapes of ``num_return_sequences``, come best-first per input, and trace valid beams.

    transformers returns, per input, the ``num_return_sequences`` best finished hypotheses sorted
    by score (``torch.topk`` keeps them sorted), so ``sequences_scores`` is non-increasing within
    each input's group of rows. Every generated token of input ``b`` was produced by one of that
    input's beams, whose flat row in ``scores`` (``[batch * num_beams]``) is in
    ``[b * num_beams, (b + 1) * num_beams)``; after a hypothesis ended (after its eos) its
    ``beam_indices`` are ``-1``. A beam index pointing into another input's beams, or a live
    position marked ``-1``, means log-probs re-indexed through ``beam_indices`` come from the
    wrong hypothesis.
    """
    name = "beam_outputs_are_well_formed"
    _require_beam(record)
    nb = int(setting(record, "num_beams")) if not record.scores_per_hypothesis else record.beams_per_input
    nrs = int(setting(record, "num_return_sequences"))
    batch = int(record.input_ids.shape[0])
    tokens = generated_tokens(record)
    R, S = tokens.shape
    shapes = {
        "sequences rows (batch * num_return_sequences)": (R, batch * nrs),
        "sequences_scores entries (batch * num_return_sequences)": (
            tuple(record.sequences_scores.shape),
            (batch * nrs,),
        ),
        "beam_indices rows (batch * num_return_sequences)": (int(record.beam_indices.shape[0]), batch * nrs),
        "scores rows (batch * num_beams)": (int(record.scores.shape[0]), batch * nb),
    }
    wrong = [
        make(record, name, f"wrong number of {what}", expected=exp, found=got)
        for what, (got, exp) in shapes.items()
        if got != exp
    ]
    if record.beam_indices.dim() != 2 or record.beam_indices.shape[1] < S:
        wrong.append(
            make(
                record,
                name,
                "beam_indices do not cover every generated step",
                expected=f"[{batch * nrs}, >= {S}]",
                found=list(record.beam_indices.shape),
            )
        )
    if wrong:
        return merge(wrong)
    parts = []
    # 1. best-first within each input's group of rows
    ss = record.sequences_scores.double().view(batch, nrs)
    tol = record.tolerance
    rises = (ss[:, 1:] > ss[:, :-1] + tol).nonzero()
    parts.append(
        from_positions(
            rises,
            lambda p: make(
                record,
                name,
                f"returned sequences are not ordered by sequences_scores: row {p[0] * nrs + p[1] + 1} scores higher "
                f"than row {p[0] * nrs + p[1]} of the same input",
                row=p[0] * nrs + p[1] + 1,
                expected=f"<= {float(ss[p[0], p[1]]):.6g}",
                found=float(ss[p[0], p[1] + 1]),
            ),
        )
    )
    # 2. live beam indices point into the row's own input's beams; -1 exactly after the end
    bi = record.beam_indices.long()
    mask, _ = finished_mask(tokens, record.conventions.eos_token_ids)
    live = mask.bool()
    lo = (torch.arange(R) // nrs * nb)[:, None]
    in_range = (bi[:, :S] >= lo) & (bi[:, :S] < lo + nb)
    bad = (live & ~in_range).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "beam index is -1 before the hypothesis ended"
                if int(bi[p]) == -1
                else "beam index points outside this input's beams",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]),
                expected=f"in [{int(lo[p[0], 0])}, {int(lo[p[0], 0]) + nb})",
                found=int(bi[p]),
            ),
        )
    )
    ended = torch.cat([~live, torch.ones(R, bi.shape[1] - S, dtype=torch.bool)], dim=1)
    bad = (ended & (bi != -1)).nonzero()
    parts.append(
        from_positions(
            bad,
            lambda p: make(
                record,
                name,
                "beam index after the hypothesis ended (after eos) is not -1",
                row=p[0],
                step=p[1],
                token_id=int(tokens[p]) if p[1] < S else None,
                expected=-1,
                found=int(bi[p]),
            ),
        )
    )
    return merge(*parts)
