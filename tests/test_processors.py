"""The -inf explanation follows the processors actually in effect, read from the effective generation config."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from _records import tiny_target

from ppinvariants import zoo
from ppinvariants.capture import BEAM, DEFAULT_TEXTS, GREEDY, capture
from ppinvariants.invariants import REGISTRY, run_invariants
from ppinvariants.targets import load_target

FIRING_TESTED = {"renormalized_scores_are_log_probs"}  # fires in test_renormalization_fires_when_...

PROCESSOR_CHECKS = [
    "neg_inf_only_where_processors_explain",
    "processor_masks_applied",
    "no_eos_before_min_length",
    "renormalized_scores_are_log_probs",
]


def _ordinary_ids(target, n: int) -> list[int]:  # noqa: ANN001
    special = set(target.tokenizer.all_special_ids)
    return [i for i in range(20, 400) if i not in special][:n]


def _statuses(rec) -> dict[str, str]:  # noqa: ANN001
    return {r.invariant: r.status for r in run_invariants(rec, [REGISTRY[n] for n in PROCESSOR_CHECKS])}


@pytest.mark.parametrize("base", [GREEDY, BEAM], ids=["greedy", "beam"])
def test_many_processors_at_once_are_all_explained(base) -> None:  # noqa: ANN001
    target = tiny_target("bart")
    a, b, c, d = _ordinary_ids(target, 4)
    decoding = dataclasses.replace(
        base,
        name=f"{base.name}-processors",
        min_new_tokens=4,
        no_repeat_ngram_size=2,
        bad_words_ids=((a,), (b, c)),
        renormalize_logits=True,
    )
    rec = capture(target, list(DEFAULT_TEXTS), decoding, evidence=False)
    statuses = _statuses(rec)
    assert set(statuses.values()) <= {"pass"}, statuses
    assert torch.isneginf(rec.scores[..., a]).all()  # the single-token bad word is banned everywhere


def test_no_repeat_ngram_bans_are_required_in_greedy_search() -> None:
    target = tiny_target("t5")
    decoding = dataclasses.replace(GREEDY, name="ngram", no_repeat_ngram_size=2)
    rec = capture(target, list(DEFAULT_TEXTS), decoding, evidence=False)
    assert REGISTRY["processor_masks_applied"].check(rec) == []
    assert REGISTRY["neg_inf_only_where_processors_explain"].check(rec) == []
    # Pretend the config had no n-gram rule: the same -inf are now unexplained.
    rec.generation_config["no_repeat_ngram_size"] = None
    fired = REGISTRY["neg_inf_only_where_processors_explain"].check(rec)
    if not fired:
        pytest.skip("no repeated bigram occurred in these generations")
    assert "-inf not explained" in fired[0].message
    # And the other way round: claim a 1-gram rule that never ran.
    rec.generation_config["no_repeat_ngram_size"] = 1
    assert any("history-dependent" in v.message for v in REGISTRY["processor_masks_applied"].check(rec))


def test_renormalization_fires_when_scores_are_not_log_probs() -> None:
    target = tiny_target("bart")
    rec = capture(target, list(DEFAULT_TEXTS), dataclasses.replace(GREEDY, renormalize_logits=True), evidence=False)
    assert REGISTRY["renormalized_scores_are_log_probs"].check(rec) == []
    rec.scores = rec.scores + 1.0
    [v, *_] = REGISTRY["renormalized_scores_are_log_probs"].check(rec)
    assert "do not sum to probability 1" in v.message and v.expected == "logsumexp 0"


def test_processors_set_in_the_checkpoint_generation_config_are_read(tmp_path: Path) -> None:
    src = zoo.tiny_checkpoint("bart")
    ckpt = tmp_path / "bart-with-generation-config"
    shutil.copytree(src, ckpt)
    target = tiny_target("bart")
    a, b = _ordinary_ids(target, 2)
    gen = json.loads((ckpt / "generation_config.json").read_text())
    gen.update(no_repeat_ngram_size=3, bad_words_ids=[[a]], suppress_tokens=[b], renormalize_logits=True)
    (ckpt / "generation_config.json").write_text(json.dumps(gen))
    loaded = load_target(str(ckpt))
    rec = capture(loaded, list(DEFAULT_TEXTS), GREEDY, evidence=False)
    assert rec.generation_config["no_repeat_ngram_size"] == 3
    assert _statuses(rec)["neg_inf_only_where_processors_explain"] == "pass"
    assert torch.isneginf(rec.scores[..., b]).all()
    # Had the check assumed defaults, the suppressed token would be unexplained:
    rec.generation_config["suppress_tokens"] = None
    assert any(v.token_id == b for v in REGISTRY["neg_inf_only_where_processors_explain"].check(rec))
