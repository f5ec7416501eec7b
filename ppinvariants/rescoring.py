"""Teacher-forced rescoring: the model's own log-probs of given sequences, with gradient if asked.

This is the public entry for reinforcement-learning code that needs ``log p(y | x)`` of a
generated ``y`` with gradient: :func:`sequence_logprobs`, for encoder-decoder and decoder-only
models. It masks the padding after eos by the *first eos* (never by ``!= pad``: where pad is eos,
that would drop the real eos too), with ``where``, never ``* mask`` (padded positions can hold
``-inf``), and reads each token's log-prob with one ``gather``. For a decoder-only model the
sequences echo the left-padded prompt; the pass covers prompt and generated tokens with position
ids derived from the attention mask (``cumsum - 1``), as ``generate()`` and a training loop compute them.
"""

from __future__ import annotations

from typing import Any

import torch

from .masks import finished_mask


def is_decoder_only(model: Any) -> bool:
    """Whether ``model`` is a decoder-only language model (its config says it is not an encoder-decoder)."""
    return not bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def takes_position_ids(model: Any) -> bool:
    """Whether ``model``'s forward pass has a ``position_ids`` argument."""
    import inspect

    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids under left padding, as ``generate()`` and a training loop compute them: ``cumsum - 1``
    over the attention mask (padding positions get 1; they are masked out anyway)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def teacher_forced_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sequences: torch.Tensor,
    *,
    prompt_length: int = 1,
    position_ids: bool = True,
    encoder_inputs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Raw logits ``[rows, steps, V]`` of a full forward pass (no cache) over ``sequences``.

    ``encoder_inputs`` (a speech or vision model's ``input_features`` / ``input_values`` / ``pixel_values``,
    with ``attention_mask`` where its encoder takes one, one row per sequence) replace ``input_ids`` and
    ``attention_mask`` as the encoder's inputs; ``prompt_length`` is then the forced decoder prompt's length.

    Encoder-decoder: ``sequences`` start with the decoder start token, as ``generate()`` returns them,
    and ``input_ids``/``attention_mask`` are the encoder's inputs. Decoder-only: ``sequences`` echo the
    ``prompt_length`` columns of the left-padded prompt ``input_ids`` (``attention_mask`` its mask); the
    pass runs over the whole row, attending to the prompt's real tokens and every generated position,
    with position ids from the mask (:func:`positions_from_mask`; ``position_ids=False`` leaves them to
    the model). Step ``t``'s logits predict ``sequences[:, prompt_length + t]``. ``input_ids`` and
    ``attention_mask`` need one row per sequence (repeat them for ``num_return_sequences``).
    """
    device = next(model.parameters()).device
    if is_decoder_only(model):
        rows, width = sequences.shape
        mask = attention_mask.to(device)
        full_mask = torch.cat([mask, torch.ones(rows, width - mask.shape[1], dtype=mask.dtype, device=device)], dim=1)
        extra: dict[str, Any] = {}
        if position_ids and takes_position_ids(model):
            extra["position_ids"] = positions_from_mask(full_mask)
        out = model(input_ids=sequences.to(device), attention_mask=full_mask, use_cache=False, **extra)
        return out.logits[:, prompt_length - 1 : -1]
    if encoder_inputs is not None:
        out = model(
            **{k: v.to(device) for k, v in encoder_inputs.items()},
            decoder_input_ids=sequences[:, :-1].to(device),
            use_cache=False,
        )
        return out.logits[:, prompt_length - 1 :]
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        decoder_input_ids=sequences[:, :-1].to(device),
        use_cache=False,
    )
    return out.logits[:, prompt_length - 1 :]


def token_logprobs(logits: torch.Tensor, sequences: torch.Tensor, prompt_length: int = 1) -> torch.Tensor:
    """``log_softmax(logits)`` at each generated token of ``sequences``, ``[rows, steps]``, in float32."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(-1, sequences[:, prompt_length:].to(lp.device).unsqueeze(-1)).squeeze(-1)


def generation_mask(
    sequences: torch.Tensor, eos_token_ids: tuple[int, ...] | list[int], prompt_length: int = 1
) -> torch.Tensor:
    """``[rows, steps]``: 1 on generated tokens up to and including each row's first eos, 0 after.

    Never ``sequences != pad``: where pad is eos (a tokenizer without a pad token), that mask drops
    each row's real eos as well.
    """
    return finished_mask(sequences[:, prompt_length:], tuple(eos_token_ids))[0]


def _eos_of(model: Any) -> tuple[int, ...]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        raise ValueError("the model defines no eos_token_id: pass eos_token_ids=")
    return tuple(int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]))


def sequence_logprobs(
    model: Any,
    source: Any,
    attention_mask: torch.Tensor | None = None,
    sequences: torch.Tensor | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    eos_token_ids: tuple[int, ...] | list[int] | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """The model's exact log-probs of generated tokens, differentiable with respect to its parameters.

    ``source`` is one of:

    * a :class:`~ppinvariants.record.GenerationRecord` (everything is read from it);
    * the output of ``generate(..., return_dict_in_generate=True)`` (or its ``sequences`` tensor), with
      the batch it was generated from as ``input_ids=`` and ``attention_mask=`` (left-padded prompts for a
      decoder-only model, encoder inputs for an encoder-decoder one);
    * ``input_ids`` itself, then ``attention_mask`` and ``sequences`` (the original positional form).

    Rows of ``sequences`` may be a multiple of the input rows (``num_return_sequences``, beam outputs):
    each input is repeated for its rows. ``eos_token_ids`` defaults to the model's generation config
    (every id of a list). Returns, with ``reduction="sum"``, ``[rows]``: the sum over each row's generated
    tokens up to and including its first eos of ``log softmax(logits)[token]`` from one teacher-forced
    pass (no processors, temperature 1: the model's own distribution); with ``reduction="none"``,
    ``[rows, steps]`` per-token log-probs, 0 after the first eos. Call it under ``torch.no_grad()`` for
    a value only.
    """
    from .record import GenerationRecord  # the record type only; no capture

    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', not {reduction!r}")
    if isinstance(source, GenerationRecord) and source.encoder_inputs is not None:
        # A speech or vision record: its encoder inputs, and its forced decoder prompt's length.
        eos = tuple(int(e) for e in (eos_token_ids or source.conventions.eos_token_ids))
        per_input = max(1, int(source.sequences.shape[0]) // source.batch_size)
        logits = teacher_forced_logits(
            model,
            source.input_ids,
            source.attention_mask,
            source.sequences,
            prompt_length=source.prompt_length,
            encoder_inputs=source.model_inputs(repeat=per_input),
        )
        chosen = token_logprobs(logits, source.sequences, source.prompt_length)
        live = generation_mask(source.sequences, eos, source.prompt_length).to(chosen.device).bool()
        per_token = torch.where(live, chosen, torch.zeros_like(chosen))
        return per_token if reduction == "none" else per_token.sum(dim=1)
    if isinstance(source, GenerationRecord):
        input_ids, attention_mask, sequences = source.input_ids, source.attention_mask, source.sequences
        eos_token_ids = eos_token_ids or source.conventions.eos_token_ids
    elif isinstance(source, torch.Tensor) and sequences is not None:
        input_ids = source  # sequence_logprobs(model, input_ids, attention_mask, sequences)
    else:
        sequences = source if isinstance(source, torch.Tensor) else getattr(source, "sequences", None)
        if sequences is None:
            raise TypeError("source must be a GenerationRecord, generate()'s output, or sequences")
    if input_ids is None or attention_mask is None or sequences is None:
        raise TypeError("give input_ids= and attention_mask=: the batch the sequences were generated from")
    eos = tuple(int(e) for e in eos_token_ids) if eos_token_ids is not None else _eos_of(model)
    per_input = max(1, int(sequences.shape[0]) // int(input_ids.shape[0]))
    ids = input_ids.repeat_interleave(per_input, dim=0)
    mask_in = attention_mask.repeat_interleave(per_input, dim=0)
    prompt_length = int(input_ids.shape[1]) if is_decoder_only(model) else 1
    logits = teacher_forced_logits(model, ids, mask_in, sequences, prompt_length=prompt_length)
    chosen = token_logprobs(logits, sequences, prompt_length)
    live = generation_mask(sequences, eos, prompt_length).to(chosen.device).bool()
    per_token = torch.where(live, chosen, torch.zeros_like(chosen))
    return per_token if reduction == "none" else per_token.sum(dim=1)


__all__ = ["generation_mask", "positions_from_mask", "sequence_logprobs", "teacher_forced_logits", "token_logprobs"]
