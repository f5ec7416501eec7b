"""Conventions are derived from config, generation config and tokenizer, never from the model's name."""

from __future__ import annotations

import copy

import pytest
from _records import tiny_target

from ppinvariants.conventions import derive_conventions
from ppinvariants.errors import TargetError


def _names(target, ids):  # noqa: ANN001
    return [target.tokenizer.convert_ids_to_tokens(i) for i in ids]


def test_bart_starts_generations_with_eos_then_forced_bos() -> None:
    t = tiny_target("bart")
    c = t.conventions
    assert _names(t, [c.decoder_start_token_id]) == ["</s>"]
    assert _names(t, [c.forced_bos_token_id]) == ["<s>"]
    assert _names(t, c.input_prefix) == ["<s>"] and _names(t, c.input_suffix) == ["</s>"]
    assert c.pad_token_id == t.tokenizer.pad_token_id == 1


@pytest.mark.parametrize("arch", ["pegasus", "t5", "marian"])
def test_pad_started_models_wrap_inputs_as_text_then_eos(arch: str) -> None:
    t = tiny_target(arch)
    c = t.conventions
    assert _names(t, [c.decoder_start_token_id]) == ["<pad>"]
    assert c.input_prefix == () and _names(t, c.input_suffix) == ["</s>"]
    assert c.forced_bos_token_id is None


def test_mbart_appends_the_language_code_and_forces_the_target_language() -> None:
    t = tiny_target("mbart")
    c = t.conventions
    assert _names(t, c.input_suffix) == ["</s>", "en_XX"]
    assert _names(t, [c.forced_bos_token_id]) == ["ro_RO"]


def test_conventions_follow_the_generation_config_not_the_name() -> None:
    t = tiny_target("bart")
    gen = copy.deepcopy(t.model.generation_config)
    gen.decoder_start_token_id = 0
    gen.forced_bos_token_id = None
    c = derive_conventions(t.model, t.tokenizer, gen)
    assert c.decoder_start_token_id == 0 and c.forced_bos_token_id is None


def test_describe_prints_the_wrapping() -> None:
    lines = tiny_target("bart").conventions.describe()
    assert lines[0].startswith("input:") and "<s>(0) X </s>(2)" in lines[0]
    assert "</s>(2) <s>(0) [forced]" in lines[1]


def test_missing_pad_token_is_a_clear_error() -> None:
    t = tiny_target("bart")
    tok = copy.deepcopy(t.tokenizer)
    tok.pad_token = None
    model = copy.deepcopy(t.model)
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    with pytest.raises(TargetError, match="no pad token"):
        derive_conventions(model, tok)
