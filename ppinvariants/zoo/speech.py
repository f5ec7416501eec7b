"""Tiny speech checkpoints: Whisper, built offline from a config, with its processor saved next to it.

A Whisper checkpoint is a model, a byte-level BPE tokenizer with Whisper's special tokens (eos first
after the text pieces, then ``<|startoftranscript|>``, languages, tasks, ``<|notimestamps|>`` and the
timestamp tokens last, as the timestamp processor requires), a :class:`WhisperFeatureExtractor` whose
``feature_size`` is the config's ``num_mel_bins`` and whose window (``chunk_length``) is the encoder's
input width, and a generation config with ``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``,
``suppress_tokens`` and ``begin_suppress_tokens``, so that ``generate()`` builds Whisper's forced
decoder prompt and its timestamp processor as it does for a real checkpoint.

Calibration (deterministic, seconds): the eos row of the output embedding gets a bias searched by
bisection until greedy rows on the default clips end with eos at varied lengths, and the timestamp
rows a smaller one, so that with ``return_timestamps=True`` timestamps are chosen inside the text too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..signals import default_audio
from .recipes import Recipe, corpus
from .tokenizers import learn_bpe

#: Whisper's special tokens after the text pieces, in id order (eos must come first: the timestamp
#: processor masks every id below eos as "text", and every id from ``<|notimestamps|>`` + 1 on as a timestamp).
LANGUAGES = ("en", "fr", "de")
TASKS = ("transcribe", "translate")


def whisper_specials(n_timestamps: int) -> list[str]:
    """The special tokens of the tiny Whisper tokenizer, in id order (timestamps ``<|0.00|>`` on, 0.02 s apart)."""
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{lang}|>" for lang in LANGUAGES],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *[f"<|{i * 0.02:.2f}|>" for i in range(n_timestamps)],
    ]


def write_whisper_tokenizer(recipe: Recipe, out: Path) -> Any:
    """Train a byte-level BPE on the zoo corpus, add Whisper's specials after it and save a
    ``WhisperTokenizer`` into ``out``; returns it."""
    import transformers
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(piece for line in corpus() for piece, _ in pre.pre_tokenize_str(line))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols, merges = learn_bpe(words, tuple, alphabet, 400)
    specials = whisper_specials(int(recipe.tokenizer_config["timestamps"]))
    vocab = {t: i for i, t in enumerate([*symbols, *specials])}
    tokenizer = transformers.WhisperTokenizer(
        vocab=vocab,
        merges=[(a, b) for a, b, _ in merges],
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.model_max_length = int(recipe.config["max_target_positions"])
    return tokenizer


def build_whisper(
    recipe: Recipe,
    out: Path,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
) -> dict[str, Any]:
    """Build the tiny Whisper of ``recipe`` into ``out`` (model, tokenizer, feature extractor, processor,
    generation config); ``scale_init`` re-draws the weights and ``least_squares`` fits the probes (the zoo's). Returns the calibration statistics."""
    import torch
    import transformers

    tokenizer = write_whisper_tokenizer(recipe, out)
    tid = tokenizer.convert_tokens_to_ids
    eos = tid("<|endoftext|>")
    no_ts = tid("<|notimestamps|>")
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer),
        decoder_start_token_id=tid("<|startoftranscript|>"),
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        **recipe.config,
    )
    frames = 2 * config.max_source_positions
    extractor = transformers.WhisperFeatureExtractor(
        feature_size=config.num_mel_bins, sampling_rate=16000, hop_length=160, chunk_length=frames * 160 // 16000
    )
    processor = transformers.WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    torch.manual_seed(recipe.seed)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    gen = model.generation_config
    gen.decoder_start_token_id = config.decoder_start_token_id
    gen.eos_token_id = eos
    gen.pad_token_id = eos
    gen.bos_token_id = eos
    gen.no_timestamps_token_id = no_ts
    gen.lang_to_id = {f"<|{lang}|>": tid(f"<|{lang}|>") for lang in LANGUAGES}
    gen.task_to_id = {task: tid(f"<|{task}|>") for task in TASKS}
    gen.is_multilingual = True
    gen.language = "en"
    gen.task = "transcribe"
    gen.prev_sot_token_id = tid("<|startofprev|>")
    gen.max_initial_timestamp_index = 10
    # A couple of text pieces suppressed everywhere, and at the first step the space and eos (as Whisper's).
    gen.suppress_tokens = [tid("#"), tid("$")]
    gen.begin_suppress_tokens = [tid("Ġ"), eos]
    gen.forced_decoder_ids = None
    gen.max_length = None
    gen._from_model_config = False  # else from_pretrained rebuilds it from config.json, without the above
    stats = _calibrate(model, processor, recipe.seed, recipe.init_scale, scale_init, least_squares)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return stats


def _generated(model: Any, feats: Any, **kwargs: Any) -> Any:
    """Greedy generations (at most 20 new tokens) of the clips' features, the decoder prompt left out."""
    import torch

    with torch.no_grad():
        out = model.generate(
            input_features=feats,
            max_new_tokens=20,
            do_sample=False,
            num_beams=1,
            return_dict_in_generate=True,
            output_scores=True,
            force_unique_generate_call=True,  # one call: no seeking over segments
            **kwargs,
        )
    return out.sequences[:, out.sequences.shape[1] - len(out.scores) :]


def _states(model: Any, feats: Any) -> tuple[Any, Any]:
    """The decoder states (the output projection's inputs) of greedy generation on ``feats`` without
    timestamps, and the best text-piece logit (ids below eos) at each."""
    import torch

    head = model.get_output_embeddings()
    eos = int(model.generation_config.eos_token_id)
    captured: list[Any] = []
    hook = head.register_forward_hook(lambda _m, inp, out: captured.append((inp[0].detach(), out.detach())))
    _generated(model, feats)
    hook.remove()
    h = torch.cat([c[0].reshape(-1, c[0].shape[-1]) for c in captured])
    best = torch.cat([c[1].reshape(-1, c[1].shape[-1])[:, :eos].max(dim=1).values for c in captured])
    return h, best


def _calibrate(
    model: Any,
    processor: Any,
    seed: int,
    scale: float,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
) -> dict[str, Any]:
    """Re-draw the weights larger (outputs then depend on the clip), then calibrate the output projection's
    rows, like a trained Whisper:

    * the timestamp rows get a linear probe of the decoder state (least squares) of the best text piece's
      logit, minus a margin, minus 0.05 per timestamp (no ties): no single timestamp beats the best text
      piece, so greedy rows choose none without timestamps, while with ``return_timestamps=True`` their
      summed probability often does, and the timestamp processor then forces one, as in a trained Whisper.
      The margin is the first of a few with which both hold on the default clips (2 rows or more with a
      timestamp inside the text);
    * the eos row gets a bias (bisection) so that greedy rows on the default clips end with eos after a
      median of 4 to 12 new tokens, at 3 or more different lengths, at least 5 of 6 rows ending.
    """
    import torch

    from ..masks import finished_mask

    scale_init(model, scale, seed)
    head = model.get_output_embeddings()
    # untie: the eos and timestamp rows change, the decoder's input embedding of those tokens does not
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    gen = model.generation_config
    eos, ts0 = int(gen.eos_token_id), int(gen.no_timestamps_token_id) + 1
    feats = processor.feature_extractor(default_audio(), sampling_rate=16000, return_tensors="pt").input_features
    h, best = _states(model, feats)
    probe = least_squares(h, best)
    mean = h.mean(0)
    u = mean / mean.dot(mean)
    base_eos = head.weight.data[eos].clone()
    n_ts = head.weight.shape[0] - ts0
    slope = 0.05 * torch.arange(n_ts, dtype=head.weight.dtype)[:, None] * u[None, :]

    def timestamps_at(margin: float) -> tuple[int, int]:
        head.weight.data[ts0:] = (probe - margin * u)[None, :] - slope
        plain = _generated(model, feats)
        stamped = _generated(model, feats, return_timestamps=True)
        inner = (stamped[:, 1:] >= ts0).any(dim=1)
        return int((plain >= ts0).sum()), int(inner.sum())

    margin, counts = 0.0, (0, 0)
    for margin in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0):
        counts = timestamps_at(margin)
        if counts[0] == 0 and counts[1] >= 2:
            break

    def lengths(offset: float) -> Any:
        head.weight.data[eos] = base_eos + offset * u
        mask, finished = finished_mask(_generated(model, feats), (eos,))
        return mask.sum(dim=1), finished

    lo, hi, chosen = -16.0, 16.0, 0.0
    lens, finished = lengths(chosen)
    for _ in range(14):
        median = float(lens.float().median())
        if 4 <= median <= 12 and int(finished.sum()) >= 5 and len(set(lens.tolist())) >= 3:
            break
        if median > 12 or int(finished.sum()) < 5:
            lo = chosen
        else:
            hi = chosen
        chosen = (lo + hi) / 2
        lens, finished = lengths(chosen)
    return {
        "timestamp_margin": margin,
        "timestamps_without": counts[0],
        "rows_with_inner_timestamps": timestamps_at(margin)[1],
        "eos_offset": chosen,
        "lengths": [int(x) for x in lens.tolist()],
        "finished": int(finished.sum()),
    }


def whisper_recipe_json(recipe: Recipe, stats: dict[str, Any]) -> str:
    """The ``ppinvariants-recipe.json`` text of a built speech or vision checkpoint."""
    return json.dumps({"arch": recipe.arch, "key": recipe.key(), "calibration": stats}, indent=1)
