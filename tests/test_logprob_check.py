"""check_logprob_fn: a user's own sequence log-prob function held against sequence_logprobs on captured batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _records import tiny_target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppinvariants import _compat, check_logprob_fn
from ppinvariants.errors import UsageError
from ppinvariants.logprob_check import LogprobMismatchError
from ppinvariants.strategies import chat_prompts, text_batches

pytestmark = pytest.mark.skipif(
    not _compat.checks_decoder_only(), reason="decoder-only models are checked with transformers 5 only"
)


def _token_logprobs(model: Any, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> Any:
    """A training loop's teacher-forced pass: positions from the mask, each generated token's log-prob."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(sequences, attention_mask=attention_mask, position_ids=positions).logits
    lp = logits[:, prompt_length - 1 : -1].log_softmax(-1)
    return lp.gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)


def right(model: Any, sequences: Any, attention_mask: Any, prompt_length: int, eos_token_id: list[int]) -> Any:
    """Masked up to and including each row's first eos."""
    lp = _token_logprobs(model, sequences, attention_mask, prompt_length)
    is_eos = torch.isin(sequences[:, prompt_length:], torch.tensor(eos_token_id)).int()
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    return lp.masked_fill(after_eos, 0.0).sum(dim=1)


def not_pad(model: Any, sequences: Any, attention_mask: Any, prompt_length: int, pad_token_id: int) -> Any:
    """The classic bug: the generated tokens masked as ``!= pad``."""
    lp = _token_logprobs(model, sequences, attention_mask, prompt_length)
    return (lp * (sequences[:, prompt_length:] != pad_token_id)).sum(dim=1)


def no_positions(model: Any, sequences: Any, attention_mask: Any, prompt_length: int, **kw: Any) -> Any:
    """Position ids left to the model: numbered from the first column, left padding included."""
    logits = model(sequences, attention_mask=attention_mask).logits
    lp = logits[:, prompt_length - 1 : -1].log_softmax(-1).gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)
    is_eos = torch.isin(sequences[:, prompt_length:], torch.tensor(kw["eos_token_id"])).int()
    return lp.masked_fill((is_eos.cumsum(dim=1) - is_eos) > 0, 0.0).sum(dim=1)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "llama"])
def test_a_right_function_agrees(arch: str) -> None:
    result = check_logprob_fn(right, tiny_target(arch))
    assert result.ok and result.rows == 16, result.render()  # 8 greedy and 8 sampled rows


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_not_pad_mask_is_caught_where_pad_is_eos(arch: str) -> None:
    with pytest.raises(LogprobMismatchError) as info:
        check_logprob_fn(not_pad, tiny_target(arch))
    message = str(info.value)
    assert "expected" in message and "found" in message and "row" in message
    assert "misses exactly its eos token's log-prob" in message and "!= pad_token_id" in message
    result = check_logprob_fn(not_pad, tiny_target(arch), raise_on_mismatch=False)
    assert not result.ok
    assert all(m.found > m.expected for m in result.mismatches)  # the eos log-prob (negative) left out


def test_a_not_pad_mask_is_right_where_pad_is_its_own_token_and_never_generated() -> None:
    assert check_logprob_fn(not_pad, tiny_target("gemma")).ok
    # OPT samples its pad token now and then mid-row: there `!= pad` drops a real token, and that is caught.
    result = check_logprob_fn(not_pad, tiny_target("opt"), raise_on_mismatch=False)
    assert not result.ok and not result.hints


def test_positions_ignoring_the_mask_are_caught_on_absolute_positions() -> None:
    result = check_logprob_fn(no_positions, tiny_target("gpt2"), raise_on_mismatch=False)
    assert not result.ok and not result.hints


def test_a_function_returning_the_wrong_shape_is_one_clear_error() -> None:
    def per_token(model: Any, sequences: Any, attention_mask: Any, prompt_length: int) -> Any:
        return torch.zeros(sequences.shape[0], 3)

    with pytest.raises(UsageError, match=r"one value per row, a tensor of shape \(8,\), not \(8, 3\)"):
        check_logprob_fn(per_token, tiny_target("gpt2"))


@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_right_function_agrees_on_drawn_batches(data: Any) -> None:
    # As a user drives it with Hypothesis: left-padded prompt batches, and chat prompts where there is a template.
    gpt2, qwen2 = tiny_target("gpt2"), tiny_target("qwen2")
    batch = data.draw(text_batches(tokenizer=gpt2.tokenizer, min_size=2, max_size=4, max_tokens=40))
    assert check_logprob_fn(right, gpt2, texts=batch).ok
    chats = data.draw(st.lists(chat_prompts(tokenizer=qwen2.tokenizer, max_tokens=100), min_size=2, max_size=3))
    assert check_logprob_fn(right, qwen2, texts=chats).ok
