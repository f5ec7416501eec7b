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
from ppinvariants.capturing import capture
from ppinvariants.decoding import BEAM, DEFAULT_TEXTS, GREEDY
from ppinvariants.invariants import REGISTRY
from ppinvariants.judge import run_invariants
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
    decoding = base.replace(
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
    """The reference is the processor list the decoding asks for: without the n-gram rule the bans are
    unexplained, and a rule that never ran leaves its bans missing (naming the processor)."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor

    target = tiny_target("t5")
    # n = 1 bans every token already generated: bans occur from the second step on, whatever the text.
    rec = capture(target, list(DEFAULT_TEXTS), GREEDY.replace(name="ngram", no_repeat_ngram_size=1), evidence=False)
    assert REGISTRY["processor_masks_applied"].check(rec) == []
    assert REGISTRY["neg_inf_only_where_processors_explain"].check(rec) == []
    procs = rec.processing.processors
    without = LogitsProcessorList([p for p in procs if not isinstance(p, NoRepeatNGramLogitsProcessor)])
    rec.processing = dataclasses.replace(rec.processing, processors=without)
    rec.forget_derived()
    fired = REGISTRY["neg_inf_only_where_processors_explain"].check(rec)
    assert fired and "-inf not explained" in fired[0].message
    # And the other way round: a record generated without the rule, judged against a list that has it.
    plain = capture(target, list(DEFAULT_TEXTS), GREEDY, evidence=False)
    plain.processing = dataclasses.replace(
        plain.processing,
        processors=LogitsProcessorList([*plain.processing.processors, NoRepeatNGramLogitsProcessor(1)]),
    )
    missing = REGISTRY["processor_masks_applied"].check(plain)
    assert missing and "(set by NoRepeatNGramLogitsProcessor)" in missing[0].message


def test_renormalization_fires_when_scores_are_not_log_probs() -> None:
    target = tiny_target("bart")
    rec = capture(target, list(DEFAULT_TEXTS), GREEDY.replace(renormalize_logits=True), evidence=False)
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
    # The reference the scores are replayed against was built from the checkpoint's config, not defaults:
    assert {"NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor", "SuppressTokensLogitsProcessor"} <= set(
        rec.processing.names
    )
    assert rec.processing.names[-1] == "LogitNormalization"
