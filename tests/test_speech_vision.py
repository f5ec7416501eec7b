"""Speech and vision encoder-decoders: Whisper end to end (target, inputs, conventions, every invariant, the
new timestamp and decoder-prompt checks, a saved checkpoint directory, the shipped suite)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _records import tiny_target

from ppinvariants import capture
from ppinvariants.capturing import default_inputs, encode_inputs, timestamps_on
from ppinvariants.cli import main
from ppinvariants.conventions import ANY_LANGUAGE, forced_decoder_prompt
from ppinvariants.decoding import BEAM, GREEDY
from ppinvariants.errors import TargetError, UsageError
from ppinvariants.judge import run_invariants
from ppinvariants.record import GenerationRecord
from ppinvariants.rescoring import sequence_logprobs
from ppinvariants.runner import TIMESTAMPS, check_loaded
from ppinvariants.signals import default_audio, default_images
from ppinvariants.targets import load_target
from ppinvariants.zoo import ALL_ARCHITECTURES, ARCHITECTURES, SPEECH_VISION_ARCHITECTURES

#: Invariants fired by the tests of this module (tests/test_invariants.py counts them).
FIRING_TESTED = {"decoder_prompt_as_requested", "timestamps_paired_and_non_decreasing"}

_RECORDS: dict[str, GenerationRecord] = {}


def whisper_record(timestamps: bool = False) -> GenerationRecord:
    """A fresh copy (tests may alter its sequences) of the healthy greedy record of tiny:whisper."""
    key = "timestamps" if timestamps else "plain"
    if key not in _RECORDS:
        target = tiny_target("whisper")
        if timestamps:
            with timestamps_on(target) as stamped:
                _RECORDS[key] = capture(stamped, default_inputs(stamped), TIMESTAMPS)
        else:
            _RECORDS[key] = capture(target, default_inputs(target), GREEDY)
    rec = _RECORDS[key]
    return dataclasses.replace(rec, sequences=rec.sequences.clone())


def _status(rec: GenerationRecord, name: str) -> tuple[str, str]:
    [result] = [r for r in run_invariants(rec) if r.invariant == name]
    return result.status, result.reason


def test_whisper_stays_out_of_the_text_sets() -> None:
    assert SPEECH_VISION_ARCHITECTURES == ("whisper", "vision-encoder-decoder", "speech-encoder-decoder", "speech2text")
    assert not set(SPEECH_VISION_ARCHITECTURES) & (set(ARCHITECTURES) | set(ALL_ARCHITECTURES))


def test_default_inputs_are_deterministic_and_varied() -> None:
    a, b = default_audio(), default_audio()
    assert all(np.array_equal(x, y) and x.dtype == np.float32 and x.ndim == 1 for x, y in zip(a, b, strict=True))
    assert len({len(x) for x in a}) >= 4 and any(not x.any() for x in a)  # lengths differ; a silence
    assert len({im.size for im in default_images()}) == len(default_images())
    dithered = default_audio(exact_silence=False)
    quiet = [i for i, x in enumerate(a) if not x.any()]
    assert [len(x) for x in dithered] == [len(x) for x in a] and all(dithered[i].any() for i in quiet)
    assert all(np.array_equal(dithered[i], a[i]) for i in range(len(a)) if i not in quiet)
    assert max(float(np.abs(dithered[i]).max()) for i in quiet) < 1e-3


def test_whisper_target_conventions_and_inputs() -> None:
    target = tiny_target("whisper")
    assert target.modality == "audio" and target.processor is not None
    c = target.conventions
    tok = target.tokenizer.convert_tokens_to_ids
    assert c.decoder_prompt == tuple(
        tok(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
    )
    assert c.language_token_id == tok("<|en|>") and c.task_token_id == tok("<|transcribe|>")
    assert c.timestamp_begin == tok("<|0.00|>") and not c.takes_input_mask and c.input_prefix == ()
    assert "[forced decoder prompt]" in " ".join(c.describe())
    batch, truncated, labels = encode_inputs(target, default_inputs(target))
    assert set(batch) == {"input_features"} and truncated == [] and labels[0] == "audio 0.50 s"
    with timestamps_on(target) as stamped:
        assert stamped.conventions.decoder_prompt == c.decoder_prompt[:3]
    assert not getattr(target.model.generation_config, "return_timestamps", False)  # restored


def test_forced_prompt_of_a_config_that_detects_the_language() -> None:
    class Gen:
        no_timestamps_token_id, lang_to_id, task_to_id = 9, {"<|en|>": 3, "<|fr|>": 4}, {"transcribe": 6}
        language = None

    assert forced_decoder_prompt(Gen(), 1) == ((1, ANY_LANGUAGE, 6, 9), None, 6, (3, 4), 10)
    Gen.language = "fr"
    assert forced_decoder_prompt(Gen(), 1)[0] == (1, 4, 6, 9)


def test_texts_for_an_audio_model_are_one_clear_line() -> None:
    with pytest.raises(UsageError, match="takes audio inputs, not texts"):
        encode_inputs(tiny_target("whisper"), ["hello"])
    with pytest.raises(UsageError, match="1-D array"):
        encode_inputs(tiny_target("whisper"), [np.zeros((2, 3))])


@pytest.mark.parametrize("timestamps", [False, True], ids=["plain", "timestamps"])
def test_healthy_whisper_records_pass_every_invariant(timestamps: bool) -> None:
    rec = whisper_record(timestamps)
    bad = [r for r in run_invariants(rec) if r.status in ("fail", "error")]
    assert not bad, [(r.invariant, r.reason, r.violations[:1]) for r in bad]
    if timestamps:  # timestamps really appear, inside the text too, and are judged
        begin = rec.conventions.timestamp_begin
        inner = (rec.sequences[:, rec.prompt_length + 1 :] >= begin).any(dim=1)
        assert int(inner.sum()) >= 2
        assert _status(rec, "timestamps_paired_and_non_decreasing") == ("pass", "")
    else:
        status, reason = _status(rec, "timestamps_paired_and_non_decreasing")
        assert status == "skip" and "no timestamps" in reason
    status, reason = _status(rec, "inputs_follow_tokenizer_convention")
    assert status == "skip" and reason.startswith("whisper takes audio inputs (input_features)")
    status, reason = _status(rec, "batch_and_padding_invariance")
    assert (
        status == "pass"
        and "(whisper): judged on the batch reversed (not padded wider) and on each input alone" in reason
    )
    assert "takes no attention mask" in reason


def test_decoder_prompt_check_fires_on_another_language() -> None:
    rec = whisper_record()
    rec.sequences[2, 1] = tiny_target("whisper").tokenizer.convert_tokens_to_ids("<|fr|>")
    status, _ = _status(rec, "decoder_prompt_as_requested")
    [result] = [r for r in run_invariants(rec) if r.invariant == "decoder_prompt_as_requested"]
    assert status == "fail" and "language token is not the one requested" in result.violations[0].message
    assert result.violations[0].row == 2


def test_timestamp_check_fires_on_decreasing_and_unpaired_timestamps() -> None:
    rec = whisper_record(timestamps=True)
    begin, P = rec.conventions.timestamp_begin, rec.prompt_length
    rec.sequences[0, P] = begin + 5  # <|0.10|> first, then a smaller one later in a row that has one
    rows = [r for r in range(rec.sequences.shape[0]) if bool((rec.sequences[r, P + 1 :] >= begin).any())]
    assert rows
    rec.sequences[rows[0], P] = begin + 50
    [result] = [r for r in run_invariants(rec) if r.invariant == "timestamps_paired_and_non_decreasing"]
    assert result.status == "fail" and any("timestamps decrease" in v.message for v in result.violations)
    rec = whisper_record(timestamps=True)
    rec.sequences[0, P] = rec.sequences[0, P + 1] if int(rec.sequences[0, P + 1]) < begin else 5
    [result] = [r for r in run_invariants(rec) if r.invariant == "timestamps_paired_and_non_decreasing"]
    assert result.status == "fail" and "first generated token is not a timestamp" in result.violations[0].message


def test_a_clip_longer_than_whispers_window_is_noted_as_truncated() -> None:
    from ppinvariants.signals import clip

    target = tiny_target("whisper")  # a 1 s window (real checkpoints: 30 s)
    clips = [clip("tone", 1.5), clip("noise", 0.5, seed=1)]
    assert encode_inputs(target, clips)[1] == [0]
    assert encode_inputs(tiny_target("speech2text"), clips)[1] == []  # no fixed window: nothing cut
    report = check_loaded(target, texts=clips, decodings=[GREEDY])
    assert report.status == "pass"
    [note] = [n for n in report.notes if "truncated" in n]
    assert note.startswith("inputs [0] were longer than the feature extractor's window, 1 s") and "long-form" in note


def test_whisper_beam_summary_gives_its_one_reason_once() -> None:
    # Whisper's beam search returns raw logits of the first beam rows only: the replay and rescoring checks
    # skip for that one reason, and the summary line says it once, in one wording.
    target = check_loaded(tiny_target("whisper"), decodings=[BEAM])
    lost = {r.reason for r in target.results if r.status == "skip" and r.skip_kind == "lost"}
    assert len(lost) == 1 and "first beam rows" in next(iter(lost))
    assert target.summary.count("first beam rows") == 1 and "rebuilt" not in target.summary, target.summary


def test_sequence_logprobs_of_a_whisper_record_match_its_steps() -> None:
    rec = whisper_record()
    import torch

    with torch.no_grad():
        lp = sequence_logprobs(tiny_target("whisper").model, rec)
    assert lp.shape == (rec.sequences.shape[0],) and bool(torch.isfinite(lp).all())


def test_factory_with_a_processor_and_a_model_without_one(tmp_path: Path) -> None:
    path = tiny_target("whisper").spec and load_target("tiny:whisper")
    factory = tmp_path / "whisper_factory.py"
    factory.write_text(
        "from ppinvariants.targets import load_target\n"
        "def full():\n    t = load_target('tiny:whisper')\n    return t.model, t.tokenizer, t.processor\n"
        "def no_processor():\n    t = load_target('tiny:whisper')\n    return t.model, t.tokenizer\n"
    )
    target = load_target(f"{factory}:full")
    assert target.modality == "audio" and target.conventions.decoder_prompt == path.conventions.decoder_prompt
    with pytest.raises(TargetError, match="needs its processor"):
        load_target(f"{factory}:no_processor")


def _saved_whisper(tmp_path: Path, arch: str = "whisper") -> Path:
    target = load_target(f"tiny:{arch}")
    out = tmp_path / f"{arch}-ckpt"
    target.model.save_pretrained(out)
    target.processor.save_pretrained(out)
    return out


@pytest.mark.parametrize("arch", ["whisper", "speech2text"])
def test_saved_checkpoint_dir_checks_with_the_cli(
    arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _saved_whisper(tmp_path, arch)
    assert main(["check", str(out), "--decoding", "greedy", "-q"]) == 0, capsys.readouterr().out
    (out / "preprocessor_config.json").unlink(missing_ok=True)
    (out / "processor_config.json").unlink()
    with pytest.raises(TargetError, match="needs its processor saved next to it"):
        load_target(str(out))


def test_vision_encoder_decoder_takes_images_and_passes_greedy() -> None:
    target = tiny_target("vision-encoder-decoder")
    assert target.modality == "image" and not target.conventions.takes_input_mask
    batch, _, labels = encode_inputs(target, default_inputs(target))
    assert set(batch) == {"pixel_values"} and labels[0] == "image 32x32"
    assert batch["pixel_values"].shape[0] == len(default_images())
    rec = capture(target, default_inputs(target), GREEDY)
    bad = [r for r in run_invariants(rec) if r.status in ("fail", "error")]
    assert not bad, [(r.invariant, r.reason) for r in bad]
    assert len(set((rec.sequences == target.conventions.eos_token_ids[0]).int().argmax(dim=1).tolist())) >= 2
    with pytest.raises(UsageError, match="takes image inputs"):
        encode_inputs(target, ["a text"])


def test_speech_encoder_decoder_pads_clips_with_a_mask_and_passes_greedy() -> None:
    target = tiny_target("speech-encoder-decoder")
    assert target.modality == "audio" and target.conventions.takes_input_mask
    batch, _, _ = encode_inputs(target, default_inputs(target))
    assert set(batch) == {"input_values", "attention_mask"}
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == len(default_audio()) and int(lengths.max()) == batch["input_values"].shape[1]
    rec = capture(target, default_inputs(target), GREEDY)
    bad = [r for r in run_invariants(rec) if r.status in ("fail", "error")]
    assert not bad, [(r.invariant, r.reason) for r in bad]


def test_speech_encoder_decoder_has_a_finite_parameter_gradient_on_exact_silence() -> None:
    """Regression: the thorough gradient (every parameter) was NaN in the first convolution for the silent
    default clip: with every bias of the tiny wav2vec2 zero, exact zeros stayed zero through the encoder and
    thirteen zero-variance layer norms (each multiplying the gradient by 1/sqrt(eps)) overflowed float32.
    The feature encoder's convolutions now have non-zero biases, as trained checkpoints do."""
    target = tiny_target("speech-encoder-decoder")
    inputs = default_inputs(target)
    silent = [i for i, x in enumerate(inputs) if not x.any()]
    assert silent  # the default clips keep an exactly silent one
    batch, _, _ = encode_inputs(target, inputs)
    conv0 = target.model.encoder.feature_extractor.conv_layers[0].conv
    with torch.no_grad():
        first = conv0(batch["input_values"][silent[0]][None, None, :])
    assert float(first.var(dim=1).min()) > 0  # no zero-variance layer norm on silence
    rec = capture(target, inputs, GREEDY, evidence="thorough")
    assert rec.evidence.grad_scope == "every parameter" and rec.evidence.grad_finite
    status, reason = _status(rec, "sequence_logprob_is_differentiable")
    assert status == "pass", reason


def test_speech2text_takes_frames_with_a_mask_and_passes_greedy() -> None:
    target = tiny_target("speech2text")
    assert target.modality == "audio" and target.conventions.takes_input_mask
    inputs = default_inputs(target)
    assert all(x.any() for x in inputs)  # its silent clip dithered: the extractor normalises each utterance
    batch, _, _ = encode_inputs(target, inputs)
    assert set(batch) == {"input_features", "attention_mask"} and bool(torch.isfinite(batch["input_features"]).all())
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == len(inputs) and int(lengths.max()) == batch["input_features"].shape[1]
    rec = capture(target, inputs, GREEDY)
    bad = [r for r in run_invariants(rec) if r.status in ("fail", "error")]
    assert not bad, [(r.invariant, r.reason) for r in bad]
    eos = target.conventions.eos_token_ids[0]
    generated = rec.sequences[:, rec.prompt_length :]
    ends = (generated == eos).any(dim=1)
    assert int(ends.sum()) >= len(inputs) - 1  # most rows end (min_length=6 holds back early eos)
    assert len(set((generated[ends] == eos).int().argmax(dim=1).tolist())) >= 3  # at varied lengths


def test_audio_under_a_mask_is_padded_wider_and_a_mask_ignored_is_caught() -> None:
    from ppinvariants.evidence import widened_audio
    from ppinvariants.selftest import _encoder_ignores_mask

    target = tiny_target("speech2text")
    batch, _, _ = encode_inputs(target, default_inputs(target))
    wide = widened_audio(target, batch)
    extra = wide["input_features"].shape[1] - batch["input_features"].shape[1]
    assert extra == batch["input_features"].shape[1] // 8 and not wide["attention_mask"][:, -extra:].any()
    assert not wide["input_features"][:, -extra:].any()
    rec = capture(target, default_inputs(target), GREEDY)
    status, note = _status(rec, "batch_and_padding_invariance")
    assert status == "pass" and f"padded {extra} frames of input_features wider" in note
    # The longest clip (#3, unpadded in the batch) is left out: the conv subsampler reads frames past it.
    assert "input #3 not judged" in note and "convolutional subsampler" in note
    broken = load_target("tiny:speech2text")
    _encoder_ignores_mask(broken)
    status, _ = _status(capture(broken, default_inputs(broken), GREEDY), "batch_and_padding_invariance")
    assert status == "fail"
    status, note = _status(whisper_record(), "batch_and_padding_invariance")
    assert status == "pass" and "reversed (not padded wider)" in note and "no attention mask" in note


def test_a_silent_clip_for_utterance_cmvn_is_one_clear_line() -> None:
    target = tiny_target("speech2text")
    clips = [*default_inputs(target)[:2], np.zeros(4800, dtype=np.float32)]
    with pytest.raises(UsageError, match=r"audio input #2: .*normalises each utterance by its own variance"):
        encode_inputs(target, clips)
    whisper = tiny_target("whisper")  # a log-mel extractor without per-utterance variance: silence is fine
    batch, _, _ = encode_inputs(whisper, clips)
    assert bool(torch.isfinite(batch["input_features"]).all())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vision-encoder-decoder", "speech-encoder-decoder", "speech2text"])
def test_composite_models_pass_check_in_record_and_streaming_mode(arch: str) -> None:
    for streaming in (False, True):
        report = check_loaded(load_target(f"tiny:{arch}"), streaming=streaming)
        assert report.status == "pass", [
            (r.invariant, r.decoding, r.reason) for r in report.results if r.status == "fail"
        ]


@pytest.mark.slow
def test_whisper_passes_check_in_record_and_streaming_mode() -> None:
    for streaming in (False, True):
        report = check_loaded(load_target("tiny:whisper"), streaming=streaming)
        assert report.status == "pass", [
            (r.invariant, r.decoding, r.reason) for r in report.results if r.status == "fail"
        ]
        assert "timestamps" in {r.decoding for r in report.results}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["whisper", "speech2text"])
def test_shipped_suite_on_a_saved_speech_dir(arch: str, tmp_path: Path) -> None:
    out = _saved_whisper(tmp_path, arch)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "ppinvariants.suite",
            f"--ppi-model={out}",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_explain_shows_whisper_tokens_against_time(capsys: pytest.CaptureFixture[str]) -> None:
    from ppinvariants.explain import explain

    target = tiny_target("whisper")
    steps = explain(target, default_inputs(target)[3])
    begin = target.conventions.timestamp_begin
    assert steps[0].token_id >= begin and steps[0].time == 0.0  # the first generated token is a timestamp
    times = [s.time for s in steps]
    assert times == sorted(times) and times[-1] > 0.0
    assert main(["explain", "tiny:whisper", "3", "-q"]) == 0 and " s\n" in capsys.readouterr().out
    assert main(["explain", "tiny:whisper", "hello", "-q"]) == 2
    assert "takes audio inputs: give the number of a default input" in capsys.readouterr().err


def test_snapshot_and_compare_a_whisper_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "whisper.json"
    assert main(["snapshot", "tiny:whisper", "-o", str(path), "--decoding", "greedy", "-q"]) == 0
    assert main(["compare", str(path), "tiny:whisper", "-q"]) == 0, capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("arch", SPEECH_VISION_ARCHITECTURES)
def test_two_fresh_builds_are_byte_identical(arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ppinvariants.zoo import tiny_checkpoint

    builds = []
    for name in ("a", "b"):
        monkeypatch.setenv("PPINVARIANTS_CACHE", str(tmp_path / name))
        builds.append(tiny_checkpoint(arch))
    files = [{p.relative_to(b).as_posix(): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()} for b in builds]
    assert files[0].keys() == files[1].keys()
    assert [k for k in files[0] if files[0][k] != files[1][k]] == []


def test_audio_and_image_strategies_are_valid_and_shrink_to_the_simplest() -> None:
    from hypothesis import find, given, settings

    from ppinvariants.strategies import audio_batches, image_batches

    @settings(max_examples=20, deadline=None, database=None)
    @given(clips=audio_batches(max_size=3, max_seconds=0.2), images=image_batches(max_size=3, max_side=24))
    def valid(clips: list, images: list) -> None:
        assert 1 <= len(clips) <= 3 and 1 <= len(images) <= 3
        for x in clips:
            assert x.ndim == 1 and x.dtype == np.float32 and 1 <= len(x) <= 3200 and np.abs(x).max() <= 1.0
        assert all(im.mode == "RGB" and 1 <= min(im.size) and max(im.size) <= 24 for im in images)

    valid()
    simplest = find(audio_batches(), lambda clips: True, settings=settings(database=None))
    assert len(simplest) == 1 and len(simplest[0]) == 1 and not simplest[0].any()  # one sample of silence
    # For an extractor that normalises each utterance (Speech2Text): 50 ms at least, dithered silence.
    dithered = find(audio_batches(min_seconds=0.05, dither=1e-4), lambda clips: True, settings=settings(database=None))
    assert len(dithered) == 1 and len(dithered[0]) == 800 and dithered[0].any() and np.abs(dithered[0]).max() < 1e-3
    assert [im.size for im in find(image_batches(), lambda ims: True, settings=settings(database=None))] == [(1, 1)]
