"""Tiny composite checkpoints with a GPT-2 decoder, built offline: a ``VisionEncoderDecoderModel`` (ViT
encoder) and a ``SpeechEncoderDecoderModel`` (wav2vec2 encoder).

The checkpoint is the model, the zoo's byte-level BPE tokenizer (GPT-2 style, with ``<s>``, ``<pad>``,
``</s>``, ``<unk>``), a ViT image processor resizing to the encoder's input size, and a ``TrOCRProcessor``
naming both, saved with ``save_pretrained`` as a user's OCR checkpoint would be.

The speech one is saved likewise with a ``Wav2Vec2FeatureExtractor`` that returns an attention mask (layer
norm in the feature encoder, as the wav2vec2 checkpoints that take a mask have) and a ``Wav2Vec2Processor``.

Speech2Text (not a composite, but calibrated the same way) is saved with fairseq's sentencepiece model and
dictionary, a ``Speech2TextFeatureExtractor`` (log-mel filterbanks, utterance CMVN, an attention mask over
frames) and a ``Speech2TextProcessor``.

Calibration (deterministic, seconds): the weights are re-drawn larger (outputs then depend on the input),
pad gets no probability, and the eos row of the output projection a bias searched by bisection until greedy
rows on the default images end with eos at varied lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..signals import default_images
from .recipes import Recipe


def _with_gpt2_decoder(recipe: Recipe, encoder: Any, tokenizer: Any, kind: str) -> Any:
    """A ``{kind}Model`` (``VisionEncoderDecoder``, ``SpeechEncoderDecoder``) of ``encoder`` and a GPT-2 decoder
    with cross-attention sized by ``recipe.decoder_config``, whose start, eos and pad are the tokenizer's
    (start = bos); weights drawn with the recipe's seed, in eval mode."""
    import torch
    import transformers

    decoder = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        is_decoder=True,
        add_cross_attention=True,
        **recipe.decoder_config,
    )
    config = getattr(transformers, f"{kind}Config").from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(recipe.seed)
    return getattr(transformers, f"{kind}Model")(config=config).eval()


def build_vision_encoder_decoder(
    recipe: Recipe,
    out: Path,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Build the tiny ViT + GPT-2 model of ``recipe`` into ``out`` (its ``tokenizer`` already trained and
    saved there); ``scale_init`` re-draws the weights and ``least_squares`` fits the eos probe (the zoo's).
    Returns the calibration statistics."""
    import transformers

    side = int(recipe.config["image_size"])
    encoder = transformers.ViTConfig(**recipe.config)
    model = _with_gpt2_decoder(recipe, encoder, tokenizer, "VisionEncoderDecoder")
    _generation_config(model, tokenizer)
    image_processor = transformers.ViTImageProcessor(
        size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = transformers.TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)
    pixels = image_processor(default_images(), return_tensors="pt").pixel_values
    stats = _calibrate_inputs(model, {"pixel_values": pixels}, recipe, scale_init, least_squares)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return stats


def build_speech_encoder_decoder(
    recipe: Recipe,
    out: Path,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Build the tiny wav2vec2 + GPT-2 model of ``recipe`` into ``out`` (its ``tokenizer`` already trained and
    saved there), as :func:`build_vision_encoder_decoder` does. Returns the calibration statistics."""
    import transformers

    from ..signals import SAMPLING_RATE, default_audio

    encoder = transformers.Wav2Vec2Config(**recipe.config)
    model = _with_gpt2_decoder(recipe, encoder, tokenizer, "SpeechEncoderDecoder")
    _generation_config(model, tokenizer)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    processor = transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    batch = extractor(default_audio(), sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)
    inputs = {"input_values": batch.input_values, "attention_mask": batch.attention_mask}

    def init(m: Any, scale: float, seed: int) -> None:
        scale_init(m, scale, seed)  # zeroes every bias
        _draw_conv_biases(m.encoder, seed)

    stats = _calibrate_inputs(model, inputs, recipe, init, least_squares)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return stats


def _draw_conv_biases(encoder: Any, seed: int) -> None:
    """Draw the biases of the wav2vec2 ``encoder``'s feature-encoder convolutions (std 0.5), as a trained
    layer-normed wav2vec2 has them: non-zero.

    With every bias zero (as the zoo's re-drawn weights leave them), an exactly silent clip is a fixed point
    of the whole encoder: each convolution gives zeros, and each layer norm (seven in the feature encoder,
    then the feature projection's and the transformer's) normalises a zero vector. Its output is then finite,
    but the layer norm multiplies the gradient by 1/sqrt(eps) = 316, and thirteen of them in a row overflow
    float32 (about 6e39 at the first convolution's output): the gradient of the first convolution's weight
    becomes 0 * inf = NaN. A bias breaks the chain at the first convolution, as trained biases do: on silence
    its output is the bias, which varies across channels, so no layer norm sees a zero variance."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in encoder.feature_extractor.conv_layers:
            bias = layer.conv.bias
            bias.copy_(0.5 * torch.randn(bias.shape, generator=gen))


def build_speech2text(
    recipe: Recipe,
    out: Path,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Build the tiny Speech2Text of ``recipe`` into ``out`` (its ``tokenizer`` already trained and saved
    there), as :func:`build_vision_encoder_decoder` does; decoding starts with eos, as fairseq's does.
    Returns the calibration statistics."""
    import torch
    import transformers

    from ..signals import SAMPLING_RATE, default_audio

    config = transformers.Speech2TextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        **recipe.config,
    )
    torch.manual_seed(recipe.seed)
    model = transformers.Speech2TextForConditionalGeneration(config).eval()
    _generation_config(model, tokenizer)
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    bins = int(recipe.config["input_feat_per_channel"])
    extractor = transformers.Speech2TextFeatureExtractor(
        feature_size=bins, num_mel_bins=bins, sampling_rate=SAMPLING_RATE, return_attention_mask=True
    )
    processor = transformers.Speech2TextProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    # The extractor normalises each utterance by its variance: the default clips' silence dithered (see
    # default_audio), as the check's default inputs for this extractor are.
    clips = default_audio(SAMPLING_RATE, exact_silence=False)
    batch = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)
    inputs = {"input_features": batch.input_features, "attention_mask": batch.attention_mask}
    stats = _calibrate_inputs(model, inputs, recipe, scale_init, least_squares)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return stats


def _generation_config(model: Any, tokenizer: Any) -> None:
    gen = model.generation_config
    gen.decoder_start_token_id = tokenizer.bos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.max_length = None
    gen._from_model_config = False  # else from_pretrained rebuilds it from config.json


def _generated(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False, num_beams=1)
    return out[:, 1:]


def _calibrate_inputs(
    model: Any,
    inputs: dict[str, Any],
    recipe: Recipe,
    scale_init: Callable[[Any, float, int], None],
    least_squares: Callable[[Any, Any], Any],
) -> dict[str, Any]:
    """Re-draw the weights, give pad no probability, and set the eos row as the zoo's text models get it
    (:func:`ppinvariants.zoo.build._calibrate_eos`): a least-squares probe of the decoder state that makes eos
    beat the best other token after a random "sentence-final" tenth of the vocabulary and lose otherwise,
    plus a bias searched by bisection, so that greedy rows on the default images end with eos after a median
    of 3 to 12 new tokens, at 2 or more lengths, most rows ending, on ``inputs`` (the encoded default inputs)."""
    import torch

    from ..masks import finished_mask

    scale_init(model, recipe.init_scale, recipe.seed)
    head = model.get_output_embeddings()
    gen = model.generation_config
    eos, pad, start = int(gen.eos_token_id), int(gen.pad_token_id), int(gen.decoder_start_token_id)
    rows = int(next(iter(inputs.values())).shape[0])
    g = torch.Generator().manual_seed(recipe.seed)
    texts = torch.randint(4, head.weight.shape[0], (rows * 8, 16), generator=g)
    ids = torch.cat([torch.full((texts.shape[0], 1), start), texts], dim=1)
    captured: list[Any] = []
    hook = head.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].detach()))
    with torch.no_grad():
        repeated = {k: v.repeat(8, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
        logits = model(**repeated, decoder_input_ids=ids, use_cache=False).logits
    hook.remove()
    h = captured[0].reshape(-1, captured[0].shape[-1])
    logits = logits.reshape(-1, logits.shape[-1])
    final_set = torch.rand(logits.shape[1], generator=g) < 0.1
    y = final_set[ids.reshape(-1)].float()
    others = logits.clone()
    others[:, [eos, pad]] = float("-inf")
    probe = least_squares(h, others.max(dim=1).values + (2 * y - 1))
    mean = h.mean(0)
    u = mean / mean.dot(mean)
    if pad not in (eos, start):
        head.weight.data[pad] = -20.0 * u
    base = probe

    def lengths(offset: float) -> Any:
        head.weight.data[eos] = base + offset * u
        mask, finished = finished_mask(_generated(model, inputs), (eos,))
        return mask.sum(dim=1), finished

    lo, hi, chosen = -16.0, 16.0, 0.0
    lens, finished = lengths(chosen)
    for _ in range(14):
        median = float(lens.float().median())
        ends = int(finished.sum()) >= len(lens) - 1
        if 3 <= median <= 12 and ends and len(set(lens.tolist())) >= 2:
            break
        if median > 12 or not ends:
            lo = chosen
        else:
            hi = chosen
        chosen = (lo + hi) / 2
        lens, finished = lengths(chosen)
    return {"eos_offset": chosen, "lengths": [int(x) for x in lens.tolist()], "finished": int(finished.sum())}
