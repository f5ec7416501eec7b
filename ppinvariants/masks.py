"""The one definition of "up to and including the first eos", in the bottom layer.

Capture, the invariants and the zoo (which may import nothing above this layer) all use it.
"""

from __future__ import annotations

import torch


def finished_mask(tokens: torch.Tensor, eos_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, has_eos)``: mask is 1 up to and including each row's first eos, 0 after it."""
    is_eos = torch.isin(tokens, torch.tensor(list(eos_ids), dtype=tokens.dtype, device=tokens.device))
    # eos strictly before position t <=> cumulative count of eos up to t-1 > 0
    before = (is_eos.int().cumsum(dim=1) - is_eos.int()) > 0
    return (~before).long(), is_eos.any(dim=1)
