"""The Hypothesis strategies yield only inputs and configs that ``generate()`` accepts, for every tiny model."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import transformers
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ppinvariants import _compat
from ppinvariants.capturing import _max_positions, capture
from ppinvariants.decoding import Decoding
from ppinvariants.strategies import chat_prompts, decodings, register_profiles, text_batches, texts
from ppinvariants.targets import Target, load_target
from ppinvariants.zoo import ARCHITECTURES

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The strategies are judged on generate() itself: no evidence re-runs, when capture() gathers them.
CAPTURE_KWARGS = {"evidence": False} if "evidence" in inspect.signature(capture).parameters else {}

_TARGETS: dict[str, Target] = {}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def target(request: pytest.FixtureRequest) -> Target:
    """Each tiny model, loaded once per module."""
    if request.param not in _TARGETS:
        _TARGETS[request.param] = load_target(f"tiny:{request.param}")
    return _TARGETS[request.param]


def _specials(tok: Any) -> set[int]:
    ids = set(tok.all_special_ids)
    ids.update(i for i in (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, tok.unk_token_id) if i is not None)
    return ids


def _assert_valid_text(target: Target, text: str, limit: int) -> None:
    tok = target.tokenizer
    assert isinstance(text, str) and text.strip()
    ids = tok(text, verbose=False)["input_ids"]
    assert len(ids) <= limit, (len(ids), limit, text)
    assert set(ids) - _specials(tok), f"{text!r} encodes to special tokens only: {ids}"
    assert not [s for s in tok.all_special_tokens if s and s in text], text


@settings(FAST, max_examples=60)
@given(data=st.data())
def test_texts_encode_to_ordinary_tokens_and_fit_the_positions(target: Target, data: Any) -> None:
    text = data.draw(texts(tokenizer=target.tokenizer))
    _assert_valid_text(target, text, _max_positions(target.tokenizer, target.model))


@settings(FAST, max_examples=30)
@given(data=st.data(), max_tokens=st.integers(8, 24))
def test_texts_respect_max_tokens_and_alphabet(target: Target, data: Any, max_tokens: int) -> None:
    text = data.draw(texts(tokenizer=target.tokenizer, max_tokens=max_tokens, alphabet="xyzé ü\t"))
    _assert_valid_text(target, text, max_tokens)


@settings(FAST, max_examples=30)
@given(data=st.data(), sizes=st.tuples(st.integers(1, 4), st.integers(0, 3)))
def test_text_batches_have_the_asked_size_and_pad(target: Target, data: Any, sizes: tuple[int, int]) -> None:
    min_size, extra = sizes
    batch = data.draw(text_batches(tokenizer=target.tokenizer, min_size=min_size, max_size=min_size + extra))
    assert min_size <= len(batch) <= min_size + extra
    limit = _max_positions(target.tokenizer, target.model)
    for text in batch:
        _assert_valid_text(target, text, limit)
    if len(batch) > 1:
        mask = target.tokenizer(batch, padding=True, return_tensors="pt")["attention_mask"]
        assert (mask == 0).any(), f"no padding in {batch!r}"


@settings(FAST, max_examples=80)
@given(data=st.data())
def test_decodings_are_consistent_configs(target: Target, data: Any) -> None:
    d = data.draw(decodings(tokenizer=target.tokenizer))
    d.validate()
    assert d.min_length is None or d.min_length <= 1 + d.max_new_tokens
    assert d.min_new_tokens is None or d.min_new_tokens <= d.max_new_tokens
    if not d.do_sample:
        assert d.num_return_sequences <= d.num_beams
        assert d.temperature is None and d.top_k is None and d.top_p is None
    banned = {i for word in d.bad_words_ids or () for i in word}
    forbidden = _specials(target.tokenizer) | {
        target.conventions.decoder_start_token_id,
        target.conventions.pad_token_id,
    }
    forbidden |= set(target.conventions.eos_token_ids)
    assert not banned & forbidden, banned & forbidden
    assert all(0 <= i < len(target.tokenizer) for i in banned)
    _validate_strictly(transformers.GenerationConfig(**d.generate_kwargs()))


def _validate_strictly(config) -> None:  # noqa: ANN001
    """``config.validate(strict=True)`` (5.x): raise on any inconsistency; 4.x has no ``strict`` and
    only warns, so its warnings are raised as errors."""
    import inspect
    import warnings

    if "strict" in inspect.signature(config.validate).parameters:
        config.validate(strict=True)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.validate()


@settings(FAST, max_examples=15, derandomize=True)
@given(data=st.data())
def test_generate_accepts_drawn_batches_and_decodings(target: Target, data: Any) -> None:
    batch = data.draw(text_batches(tokenizer=target.tokenizer, max_size=4), label="texts")
    decoding = data.draw(decodings(tokenizer=target.tokenizer), label="decoding")
    record = capture(target, batch, decoding, **CAPTURE_KWARGS)
    assert not record.truncated
    assert record.sequences.shape[0] == len(batch) * decoding.num_return_sequences
    assert 1 <= record.steps <= decoding.max_new_tokens


def test_everything_shrinks_to_the_simplest_value() -> None:
    tok = load_target("tiny:bart").tokenizer
    assert find(texts(tokenizer=tok), lambda _: True) == "the"
    assert find(text_batches(tokenizer=tok), lambda _: True) == ["the"]
    assert find(decodings(tokenizer=tok), lambda _: True) == Decoding("hyp-greedy", max_new_tokens=4, seed=0)


def test_invalid_arguments_are_refused() -> None:
    tok = load_target("tiny:bart").tokenizer
    for make in (
        lambda: text_batches(tokenizer=tok, min_size=3, max_size=2),
        lambda: text_batches(tokenizer=tok, min_size=0),
        lambda: texts(tokenizer=tok, max_tokens=0),
        lambda: decodings(tokenizer=tok, kinds=("group_beam",)),
        lambda: decodings(tokenizer=tok, kinds=()),
        lambda: decodings(tokenizer=tok, kinds=("beam",), num_beams=st.just(1)),
        lambda: decodings(tokenizer=tok, max_new_tokens=st.just(0)),
    ):
        with pytest.raises(InvalidArgument):
            find(make(), lambda _: True)


def test_profiles_are_registered() -> None:
    register_profiles()
    ci = settings.get_profile("ppi-ci")
    assert ci.print_blob and ci.derandomize and ci.database is None
    assert Phase.shrink not in ci.phases and Phase.generate in ci.phases  # a failure is reported as drawn
    assert ci.derandomize and ci.deadline is None and ci.print_blob and ci.database is None
    assert settings.get_profile("ppi-dev").deadline is None


# ----------------------------------------------------------------------------- chat prompts (decoder-only)

_chat_only_5 = pytest.mark.skipif(
    not _compat.checks_decoder_only(), reason="decoder-only models are checked with transformers 5 only"
)


@_chat_only_5
@settings(FAST, max_examples=40)
@given(data=st.data(), max_tokens=st.integers(40, 128))  # one message takes 34 tokens here
def test_chat_prompts_follow_the_template_and_fit(data: Any, max_tokens: int) -> None:
    tok = load_target("tiny:qwen2").tokenizer
    prompt = data.draw(chat_prompts(tokenizer=tok, max_tokens=max_tokens))
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert len(tok(prompt)["input_ids"]) <= max_tokens
    # The template's own special tokens only: each message is <|im_start|>role\n...<|im_end|>\n.
    turns = prompt.split("<|im_start|>")[1:-1]
    assert turns and all(t.endswith("<|im_end|>\n") and t.count("<|im_end|>") == 1 for t in turns)
    roles = [t.split("\n", 1)[0] for t in turns]
    assert roles[-1] == "user" and set(roles) <= {"system", "user", "assistant"}


@_chat_only_5
def test_chat_prompts_shrink_to_one_user_message_and_refuse_bad_arguments() -> None:
    tok = load_target("tiny:qwen2").tokenizer
    simplest = find(chat_prompts(tokenizer=tok), lambda _: True)
    assert simplest == "<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n"
    for make in (
        lambda: chat_prompts(tokenizer=load_target("tiny:gpt2").tokenizer),  # no chat template
        lambda: chat_prompts(tokenizer=tok, max_turns=0),
        lambda: chat_prompts(tokenizer=tok, max_tokens=0),
        lambda: chat_prompts(tokenizer=tok, max_tokens=3),  # not even one message fits
    ):
        with pytest.raises(InvalidArgument):
            find(make(), lambda _: True)


@_chat_only_5
@settings(FAST, max_examples=3, derandomize=True)
@given(data=st.data())
def test_drawn_chat_batches_pass_every_check_on_tiny_qwen2(data: Any) -> None:
    from ppinvariants.decoding import GREEDY, for_decoder_only
    from ppinvariants.judge import run_invariants

    target = load_target("tiny:qwen2")
    batch = data.draw(st.lists(chat_prompts(tokenizer=target.tokenizer, max_tokens=100), min_size=2, max_size=3))
    record = capture(target, batch, for_decoder_only(GREEDY))
    failed = [(r.invariant, r.reason) for r in run_invariants(record) if r.status in ("fail", "error")]
    assert not failed, failed


def test_a_failing_example_prints_the_target_in_one_line() -> None:
    """Hypothesis prints a failing example's arguments with its pretty printer, which lists a dataclass field
    by field: the target must stay one line, never the model's printout."""
    from hypothesis.vendor.pretty import pretty

    from ppinvariants.targets import load_target

    text = pretty(load_target("tiny:bart"))
    assert text == "Target('tiny:bart', BartForConditionalGeneration, cpu, float32)"
