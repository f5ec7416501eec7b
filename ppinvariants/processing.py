"""The logits processors and warpers a decoding asks for, and their replay on raw logits.

One implementation of what every processor does to the scores, shared by record mode and streaming
mode: transformers' own processor classes, built by the library's own ``_get_logits_processor``
from the generation config the user *intends* (the checkpoint's config merged with the decoding),
never from what ``generate()`` happened to build. Replaying that list on a step's raw logits gives
the processed scores ``generate()`` must have decided on: the ``-inf`` every ban sets, the values
every penalty, bias, warper and the final renormalisation change, in transformers' order, with a
forced token overriding every ban at its step. A setting the checkpoint reports but ``generate()``
dropped, applied twice or applied with another value shows up as a difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import _compat


def _is_warper(processor: Any) -> bool:
    """Sampling warpers (temperature, top-k, top-p, min-p, typical, epsilon, eta, top-h): class names end so."""
    return type(processor).__name__.endswith("LogitsWarper")


@dataclass
class Processing:
    """A reference processor list and how ``generate()`` feeds it.

    ``on_log_probs``: beam search applies the processors to ``log_softmax(logits)``, greedy search and
    sampling to the logits themselves. ``dtype``: what the processors compute in (float32 from
    transformers 4.46 on, the model's dtype before). ``device``: where the list's tensors live.
    """

    processors: Any  # transformers.LogitsProcessorList
    on_log_probs: bool
    dtype: torch.dtype
    device: torch.device

    @property
    def names(self) -> tuple[str, ...]:
        """Class names of the processors, in the order they run."""
        return tuple(type(p).__name__ for p in self.processors)

    @property
    def warps(self) -> bool:
        """Whether a sampling warper runs: its kept set depends on the scores' values (see :meth:`unstable`)."""
        return any(_is_warper(p) for p in self.processors)

    def step(self, input_ids: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The processed scores of one step, ``[rows, V]`` float32, from its raw logits and the tokens so far.

        A ``-inf`` in the raw logits is read as the dtype's lowest value: no processor explains it, so
        it stays a difference to report (the model itself banned a token).
        """
        # Several processors write into the tensor they are given: x is our own copy (clamp writes a new tensor).
        x = self._prepared(raw)
        return self.processors(input_ids.to(self.device), x).float()

    def _prepared(self, raw: torch.Tensor) -> torch.Tensor:
        """A new tensor of ``raw`` in the processing dtype and device, ``-inf`` read as the dtype's lowest value
        (``clamp(min=lowest)``: one pass that changes only ``-inf``, NaN stays NaN), log-softmaxed for beam search."""
        x = raw.detach().to(device=self.device, dtype=self.dtype)
        x = x.clamp(min=torch.finfo(x.dtype).min)
        if self.on_log_probs:
            x = torch.log_softmax(x, dim=-1)
        return x

    def culprit(self, input_ids: torch.Tensor, raw: torch.Tensor, row: int, token: int) -> int:
        """The index of the first processor that sets ``token``'s score in ``row`` to ``-inf`` (-1: none),
        replaying the step (``input_ids`` ``[rows, t]``, ``raw`` ``[rows, V]``: every row, since some
        processors map rows to inputs by the batch's shape) as :meth:`step` does."""
        x = self._prepared(raw)
        ids = input_ids.to(self.device)
        for i, proc in enumerate(self.processors):
            x = proc(ids, x.clone())
            if bool(torch.isneginf(x[row, token])):
                return i
        return -1

    def unstable(self, input_ids: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """``[rows, V]`` bool: tokens a warper keeps or removes depending on float rounding.

        A warper's kept set (top-p's cumulative mass, min-p's, typical's, epsilon's and eta's cut-offs)
        moves when the scores change by a rounding step; a kernel on another device or in another
        dtype may land either side. Replaying on logits scaled by ``1 - delta`` and ``1 + delta``
        (``delta`` a few rounding steps of the processing dtype) shows which tokens sit that close to
        the edge: their ``-inf`` state is not judged.
        """
        if not self.warps:
            return torch.zeros(raw.shape, dtype=torch.bool)
        delta = max(1e-5, 4 * torch.finfo(self.dtype).eps)
        raw = raw.to(self.device, torch.float32)
        low = torch.isneginf(self.step(input_ids, raw * (1 - delta)))
        high = torch.isneginf(self.step(input_ids, raw * (1 + delta)))
        here = torch.isneginf(self.step(input_ids, raw))
        unstable = (low != high) | (low != here)
        return unstable.cpu()


def build_processing(
    model: Any,
    generation_config: Any,
    *,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    device: Any,
    dtype: torch.dtype,
    user_processors: Any = None,
) -> Processing:
    """The reference :class:`Processing` for ``generation_config`` (length limits resolved), on ``device``.

    ``input_ids``/``attention_mask`` are the encoder inputs (encoder-decoder models), ``prompt_length`` the
    decoder prompt's length (1: the decoder start), ``dtype`` the model's dtype; ``user_processors`` a
    ``logits_processor=`` list passed to generate(), merged as generate() merges it.
    """
    processors = _compat.reference_logits_processors(
        model,
        generation_config,
        prompt_length=prompt_length,
        encoder_input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        device=device,
        user_processors=user_processors,
    )
    on_log_probs = int(generation_config.num_beams or 1) > 1
    processing_dtype = dtype if _compat.processes_in_model_dtype() else torch.float32
    return Processing(processors, on_log_probs, processing_dtype, torch.device(device))


def differences(found: torch.Tensor, expected: torch.Tensor, tolerance: float) -> dict[str, torch.Tensor]:
    """Where the processed scores ``found`` and the replay ``expected`` disagree, as bool masks of their shape.

    ``missing``: the replay is ``-inf`` and the found score is not (a ban not applied); ``unexplained``:
    the found score is ``-inf`` and the replay is not (a ban nobody configured); ``value``: both finite
    and further apart than ``tolerance`` (absolute and relative). NaN and ``+inf`` are left to the
    finiteness check. Record mode and streaming mode both judge through this function.
    """
    found = found.float()
    expected = expected.to(found.device, torch.float32)
    if torch.equal(found, expected):  # bit for bit (-inf == -inf; a NaN makes them unequal): nothing differs
        nothing = torch.zeros(found.shape, dtype=torch.bool, device=found.device)
        return {"missing": nothing, "unexplained": nothing, "value": nothing}
    exp_inf, found_inf = torch.isneginf(expected), torch.isneginf(found)
    finite = torch.isfinite(found) & torch.isfinite(expected)
    return {
        "missing": exp_inf & ~found_inf & ~torch.isnan(found),
        "unexplained": found_inf & ~exp_inf & ~torch.isnan(expected),
        "value": finite & ~torch.isclose(found, expected, rtol=tolerance, atol=tolerance),
    }


__all__ = ["Processing", "build_processing", "differences"]
