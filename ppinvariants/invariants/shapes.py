"""Shapes: step tensors line up with the generated tokens."""

from __future__ import annotations

from ..record import NOT_KEPT, GenerationRecord
from ..report import Violation
from ._base import invariant, make


@invariant("shapes")
def scores_match_generation_shape(record: GenerationRecord) -> list[Violation]:
    """Scores and raw logits are ``[score_rows, generated_length - 1, V]``; sequences ``[batch * num_return_sequences, L]``.

    ``generate()`` emits one score tensor per generated step (the decoder start is not generated;
    beam search may run further steps than its longest returned hypothesis, never fewer),
    with one row per live hypothesis (``batch * num_beams`` in beam search), over the model's full
    output width V. Any other shape means step tensors and tokens are misaligned, and every
    per-token check downstream would read the wrong values.
    """
    name = "scores_match_generation_shape"
    d = record.decoding
    batch = int(record.input_ids.shape[0])
    out: list[Violation] = []
    want_rows = batch * d.num_return_sequences
    if record.sequences.shape[0] != want_rows:
        out.append(
            make(
                record,
                name,
                "sequences have the wrong number of rows",
                expected=f"{want_rows} (batch {batch} x num_return_sequences {d.num_return_sequences})",
                found=int(record.sequences.shape[0]),
            )
        )
    score_rows = batch * (record.beams_per_input if record.is_beam else d.num_return_sequences)
    want = (score_rows, record.steps, record.output_width)
    for label, tensor in (("scores", record.scores), ("logits", record.logits)):
        if tensor is None or tensor is NOT_KEPT:  # streaming mode: no step tensors to measure
            continue
        shape = tuple(tensor.shape)
        # Beam search can run steps past its longest returned hypothesis (sequences are cut to that).
        steps_ok = shape[1] >= want[1] if record.is_beam else shape[1] == want[1]
        if len(shape) != 3 or shape[0] != want[0] or shape[2] != want[2] or not steps_ok:
            out.append(
                make(
                    record,
                    name,
                    f"{label} have the wrong shape [rows, steps, V]",
                    expected=list(want),
                    found=list(tensor.shape),
                )
            )
    if record.is_beam and record.beam_indices is not None and record.beam_indices.shape[0] != want_rows:
        out.append(
            make(
                record,
                name,
                "beam_indices have the wrong number of rows",
                expected=want_rows,
                found=int(record.beam_indices.shape[0]),
            )
        )
    return out
