"""Inputs longer than a model accepts are truncated to the smallest limit its config and tokenizer
state, whatever the config calls it, and said once per target; generate() never sees them whole."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppinvariants import zoo
from ppinvariants.capturing import capture
from ppinvariants.decoding import GREEDY
from ppinvariants.lengths import FALLBACK_LIMIT, input_limit, max_input_tokens
from ppinvariants.runner import check_loaded
from ppinvariants.strategies import text_batches, texts
from ppinvariants.targets import Target, load_target

NO_LIMIT = int(1e30)  # transformers' model_max_length when a tokenizer states none


def cfg(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**kw)


@pytest.mark.parametrize(
    ("config", "tokenizer_limit", "expected"),
    [
        (cfg(max_position_embeddings=1024), 512, (512, "tokenizer.model_max_length")),
        (cfg(max_position_embeddings=128), 512, (128, "config.max_position_embeddings")),
        # LED: max_position_embeddings is null; the encoder's limit has its own name.
        (
            cfg(max_position_embeddings=None, max_encoder_position_embeddings=256),
            NO_LIMIT,
            (256, "config.max_encoder_position_embeddings"),
        ),
        (cfg(n_positions=64), NO_LIMIT, (64, "config.n_positions")),
        (cfg(max_source_positions=1500), NO_LIMIT, (1500, "config.max_source_positions")),
        # EncoderDecoderModel: the limit lives in the nested encoder config.
        (cfg(encoder=cfg(max_position_embeddings=96)), NO_LIMIT, (96, "config.encoder.max_position_embeddings")),
        (cfg(), NO_LIMIT, (FALLBACK_LIMIT, "default")),
        (cfg(max_position_embeddings=0, n_positions=True), None, (FALLBACK_LIMIT, "default")),
    ],
    ids=["tokenizer", "config", "led", "n_positions", "source", "nested", "none", "nonsense"],
)
def test_the_smallest_stated_limit_wins(config: SimpleNamespace, tokenizer_limit: int | None, expected: tuple) -> None:
    tokenizer = SimpleNamespace(model_max_length=tokenizer_limit)
    limit = input_limit(tokenizer, SimpleNamespace(config=config))
    assert (limit.tokens, limit.source) == expected
    assert max_input_tokens(SimpleNamespace(tokenizer=tokenizer, model=SimpleNamespace(config=config))) == expected[0]


_TARGETS: dict[str, Target] = {}


def _target(arch: str, *, no_tokenizer_limit: bool = True) -> Target:
    """A tiny target whose tokenizer states no limit (as many factory-built tokenizers do), so that
    only the config's limit protects generate()."""
    if arch not in _TARGETS:
        _TARGETS[arch] = load_target(f"tiny:{arch}")
    target = _TARGETS[arch]
    if no_tokenizer_limit:
        target.tokenizer.model_max_length = NO_LIMIT
    return target


def _long_input_is_truncated_and_generates(arch: str) -> None:
    target = _target(arch)
    limit = max_input_tokens(target)
    assert limit < FALLBACK_LIMIT or arch in ("t5", "mt5", "umt5", "longt5", "switch_transformers"), limit
    long_text = " ".join(["river"] * (10 * limit))
    record = capture(target, [long_text, "Hello world."], GREEDY, evidence=False)
    assert record.truncated == [0]
    assert record.input_ids.shape[1] == limit
    assert record.sequences.shape[0] == 2


FAST_ARCHS = ["led", "bart", "bert2bert"]


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_a_text_ten_times_the_limit_is_truncated_not_a_crash(arch: str) -> None:
    _long_input_is_truncated_and_generates(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in zoo.ALL_ARCHITECTURES if a not in zoo.UNAVAILABLE])
def test_a_text_ten_times_the_limit_on_every_zoo_architecture(arch: str) -> None:
    _long_input_is_truncated_and_generates(arch)


def test_truncation_is_reported_once_per_target_with_the_limit() -> None:
    target = _target("led")
    report = check_loaded(target, texts=["word " * 2000, "Hello world."])
    assert report.status == "pass", [(r.invariant, r.decoding, r.reason) for r in report.results if r.status == "fail"]
    [note] = [n for n in report.notes if "truncated" in n]
    assert "inputs [0] were truncated" in note and "128 tokens (config.max_encoder_position_embeddings)" in note
    assert not [r for r in report.results if "truncated" in r.reason]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_strategies_default_to_the_model_limit(data: st.DataObject) -> None:
    target = _target("led")
    limit = max_input_tokens(target)
    batch = data.draw(text_batches(tokenizer=target.tokenizer, model=target.model, max_size=3))
    batch.append(data.draw(texts(tokenizer=target.tokenizer, model=target.model)))
    for text in batch:
        assert len(target.tokenizer(text)["input_ids"]) <= limit
