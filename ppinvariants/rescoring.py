"""Teacher-forced rescoring: the model's own log-probs of given sequences, with gradient if asked.

This is the public entry for reinforcement-learning code that needs ``log p(y | x)`` of a
generated ``y`` with gradient: :func:`sequence_logprobs`. It masks the padding after eos
(``where``, never ``* mask``, since padded positions can hold ``-inf``) and reads each token's
log-prob with one ``gather``.
"""

from __future__ import annotations

from typing import Any

import torch


def teacher_forced_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, sequences: torch.Tensor
) -> torch.Tensor:
    """Raw logits ``[rows, steps, V]`` of a full forward pass (no cache) over ``sequences``.

    ``sequences`` starts with the decoder start token, as ``generate()`` returns it; the logits at
    step ``t`` are those that predict ``sequences[:, t + 1]``. ``input_ids``/``attention_mask`` must
    have one row per sequence (repeat them for ``num_return_sequences``).
    """
    device = next(model.parameters()).device
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        decoder_input_ids=sequences[:, :-1].to(device),
        use_cache=False,
    )
    return out.logits


def token_logprobs(logits: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at each generated token of ``sequences``, ``[rows, steps]``, in float32."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(-1, sequences[:, 1:].to(lp.device).unsqueeze(-1)).squeeze(-1)


def generation_mask(sequences: torch.Tensor, eos_token_ids: tuple[int, ...] | list[int]) -> torch.Tensor:
    """``[rows, steps]``: 1 on generated tokens up to and including each row's first eos, 0 after."""
    from .record import finished_mask  # one definition of "up to and including the first eos"

    return finished_mask(sequences[:, 1:], tuple(eos_token_ids))[0]


def sequence_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sequences: torch.Tensor,
    *,
    eos_token_ids: tuple[int, ...] | list[int],
) -> torch.Tensor:
    """Sequence log-probs ``[rows]`` under the model, differentiable with respect to its parameters.

    The sum over each row's generated tokens up to and including its first eos of
    ``log softmax(logits)[token]``, from a teacher-forced forward pass. Call it under
    ``torch.no_grad()`` for a value only.
    """
    logits = teacher_forced_logits(model, input_ids, attention_mask, sequences)
    chosen = token_logprobs(logits, sequences)
    mask = generation_mask(sequences, eos_token_ids).to(chosen.device)
    return torch.where(mask.bool(), chosen, torch.zeros_like(chosen)).sum(dim=1)
