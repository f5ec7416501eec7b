"""The tiny zoo behaves like real models where the checks need it, offline and cached."""

from __future__ import annotations

import json
import time

import torch
from _records import healthy_record, tiny_target

from ppinvariants import testing
from ppinvariants.capture import GREEDY, finished_mask, generated_tokens


def test_every_recipe_builds_a_safetensors_checkpoint_with_its_tokenizer(arch: str) -> None:
    path = testing.tiny_checkpoint(arch)
    names = {p.name for p in path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not {"pytorch_model.bin"} & names
    meta = json.loads((path / "ppinvariants-recipe.json").read_text())
    assert meta["arch"] == arch and meta["key"] == testing.RECIPES[arch].key()


def test_built_checkpoints_are_cached_by_recipe_hash(arch: str) -> None:
    first = testing.tiny_checkpoint(arch)
    start = time.perf_counter()
    again = testing.tiny_checkpoint(arch)
    assert again == first
    assert time.perf_counter() - start < 0.5  # a cache hit, not a rebuild
    assert testing.RECIPES[arch].key() in first.name


def test_outputs_depend_on_the_input(arch: str) -> None:
    rec = healthy_record(arch, "greedy")
    distinct = {tuple(r.tolist()) for r in rec.sequences}
    assert len(distinct) >= len(rec.texts) // 2, f"{arch}: generations barely depend on the input"


def test_greedy_generations_end_with_eos_and_padding_occurs(arch: str) -> None:
    rec = healthy_record(arch, "greedy")
    mask, has_eos = finished_mask(generated_tokens(rec), rec.conventions.eos_token_ids)
    assert has_eos.float().mean() >= 0.5, f"{arch}: too few rows end with eos"
    assert (mask == 0).any(), f"{arch}: no padding after eos in the batch"
    lengths = mask.sum(dim=1)
    assert len(set(lengths.tolist())) >= 3, f"{arch}: lengths do not vary"


def test_calibration_stats_are_recorded(arch: str) -> None:
    meta = json.loads((testing.tiny_checkpoint(arch) / "ppinvariants-recipe.json").read_text())
    cal = meta["calibration"]
    assert cal["finished_fraction"] >= 0.5 and cal["distinct_outputs"] >= 8


def test_unknown_arch_is_a_clear_error() -> None:
    import pytest

    with pytest.raises(KeyError, match="unknown tiny architecture"):
        testing.tiny_checkpoint("nope")


def test_generation_is_seed_stable(arch: str) -> None:
    from ppinvariants.capture import capture

    target = tiny_target(arch)
    a = capture(target, ["Hello world."], GREEDY)
    b = capture(target, ["Hello world."], GREEDY)
    assert torch.equal(a.sequences, b.sequences)
