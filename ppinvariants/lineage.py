"""Beam lineage without ``beam_indices``: which beam row chose each returned token, from prefix fingerprints.

transformers 4.x returns no ``beam_indices`` when ``generate()`` is not asked for scores (streaming
mode); the monitor keeps a fingerprint of each beam row's ``input_ids`` per step instead, and
:func:`beam_lineage` matches the returned hypotheses' prefixes against them.
"""

from __future__ import annotations

from typing import Any

import torch

#: ``(base, modulus)`` of the two polynomial hashes in :func:`prefix_fingerprints`. Both moduli are
#: primes below 2**31, so every product of two residues fits in int64, and ``h1 * m2 + h2`` does too.
_HASHES: tuple[tuple[int, int], ...] = ((911_382_323, 2_147_483_647), (972_663_749, 1_000_000_007))


def _powers(n: int, base: int, mod: int, device: Any = None) -> torch.Tensor:
    """``[n]`` int64: ``base**i % mod`` for ``i < n``, by square-and-multiply over the bits of ``i``."""
    exp = torch.arange(n, dtype=torch.long, device=device)
    out = torch.ones(n, dtype=torch.long, device=device)
    b = base % mod
    for bit in range(max(n - 1, 0).bit_length()):
        out = torch.where((exp >> bit) & 1 == 1, out * b % mod, out)
        b = b * b % mod
    return out


def prefix_fingerprints(ids: torch.Tensor) -> torch.Tensor:
    """``[rows, L]`` int64: column ``t`` fingerprints the prefix ``ids[:, : t + 1]``.

    Two polynomial hashes ``sum_{i <= t} (ids[:, i] + 1) * base**i mod modulus`` (one cumulative sum
    over the columns each, :data:`_HASHES`), packed as ``h1 * modulus2 + h2``. Equal prefixes have
    equal fingerprints; different prefixes of the same length share one only if both hashes collide.
    """
    ids = ids.long()
    key = torch.zeros_like(ids)
    for base, mod in _HASHES:
        terms = (ids + 1) % mod * _powers(ids.shape[1], base, mod, ids.device)[None, :] % mod
        key = key * mod + terms.cumsum(dim=1) % mod  # each term < 2**31: the sum fits for L < 2**32
    return key


def beam_lineage(
    history: torch.Tensor, sequences: torch.Tensor, num_beams: int, num_return_sequences: int, prompt_length: int = 1
) -> torch.Tensor:
    """For each returned row and step, the beam row that chose its token, ``[rows, steps]``; ``-1`` where none did.

    ``history`` is ``[calls, batch * num_beams]``: the fingerprint (:func:`prefix_fingerprints`) of
    each beam row's ``input_ids`` at each logits-processor call, call ``t`` seeing the decoder start
    and ``t`` tokens. ``sequences`` are the returned ``[batch * num_return_sequences, 1 + steps]``.
    Returned row ``r`` (input ``r // num_return_sequences``) chose its token at step ``t`` from the
    beam row of its own input whose history at call ``t`` is ``sequences[r, : t + 1]``: the first
    such row (rows with equal histories have equal scores), else ``-1`` (after the hypothesis ended:
    its prefix then holds eos, which live beam rows do not); steps beyond the last call are ``-1``
    too. On the tiny models this equals generate()'s ``beam_indices`` (tests/test_streaming.py). A decoder-only
    model's rows start with the whole ``prompt_length``-wide prompt instead of the decoder start.
    """
    rows, steps = sequences.shape[0], sequences.shape[1] - prompt_length
    calls = min(steps, history.shape[0])
    want = prefix_fingerprints(sequences.cpu())[:, prompt_length - 1 : prompt_length - 1 + calls]  # [rows, calls]
    group = torch.arange(rows) // num_return_sequences
    beams = history[:calls].cpu().reshape(calls, -1, num_beams)[:, group, :].transpose(0, 1)  # [rows, calls, beams]
    hit = beams == want[:, :, None]
    found = torch.where(hit.any(dim=-1), group[:, None] * num_beams + hit.int().argmax(dim=-1), -1)
    return torch.cat([found, torch.full((rows, steps - calls), -1, dtype=found.dtype)], dim=1)


__all__ = ["beam_lineage", "prefix_fingerprints"]
