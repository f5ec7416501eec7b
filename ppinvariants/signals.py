"""The default non-text inputs of a check, in the bottom layer: short audio clips and small images.

Generated offline and deterministically (a fixed seed), shared by capture, the runner and the zoo
(which calibrates its speech and vision models on them). Clips differ in length and kind (tone,
noise, silence, a chirp) so that padding and attention masks matter where a model takes one; images
differ in size, so that the image processor resizes each differently.
"""

from __future__ import annotations

from typing import Any

#: Sampling rate of the default clips when the feature extractor names none.
SAMPLING_RATE = 16000

#: (kind, seconds) of each default clip.
AUDIO_CLIPS: tuple[tuple[str, float], ...] = (
    ("tone", 0.5),
    ("noise", 0.8),
    ("silence", 0.3),
    ("chirp", 1.0),
    ("tone+noise", 0.6),
    ("tone", 0.15),
)


def clip(kind: str, seconds: float, sampling_rate: int = SAMPLING_RATE, seed: int = 0) -> Any:
    """One mono clip as a 1-D float32 numpy array in [-1, 1]: ``tone`` (440 Hz), ``noise`` (Gaussian),
    ``silence``, ``near-silence`` (silence dithered with Gaussian noise of std 1e-4), ``chirp`` (200 to
    2000 Hz) or ``tone+noise``; ``seconds`` long at ``sampling_rate``."""
    import numpy as np

    n = max(1, int(round(seconds * sampling_rate)))
    t = np.arange(n, dtype=np.float64) / sampling_rate
    rng = np.random.default_rng(seed)
    if kind == "tone":
        x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    elif kind == "noise":
        x = 0.3 * rng.standard_normal(n)
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "near-silence":  # silence dithered, as a recording's noise floor is (about -80 dBFS)
        x = 1e-4 * rng.standard_normal(n)
    elif kind == "chirp":
        f = 200.0 + (2000.0 - 200.0) * t / max(seconds, 1e-9)
        x = 0.5 * np.sin(2 * np.pi * np.cumsum(f) / sampling_rate)
    elif kind == "tone+noise":
        x = 0.4 * np.sin(2 * np.pi * 330.0 * t) + 0.1 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown clip kind {kind!r}")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def default_audio(sampling_rate: int = SAMPLING_RATE, *, exact_silence: bool = True) -> list[Any]:
    """The default clips of :data:`AUDIO_CLIPS` at ``sampling_rate``, each with its own seed.

    ``exact_silence=False`` dithers the silent clip (``near-silence``, same length and seed): for a feature
    extractor that normalises each utterance by its own variance (Speech2Text's utterance CMVN), an exactly
    silent clip has none, and its features are 0/0, not finite. A dithered one is still the quietest clip
    of the batch, and its features are finite."""
    kinds = [("near-silence" if k == "silence" and not exact_silence else k, s) for k, s in AUDIO_CLIPS]
    return [clip(kind, s, sampling_rate, seed=i) for i, (kind, s) in enumerate(kinds)]


def describe_audio(x: Any, sampling_rate: int = SAMPLING_RATE) -> str:
    """A short label of a clip for reports: ``audio 0.50 s``."""
    return f"audio {len(x) / sampling_rate:.2f} s"


#: (width, height) of each default image.
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (48, 24), (20, 40), (64, 64))


def image(width: int, height: int, seed: int = 0) -> Any:
    """One RGB PIL image: a colour gradient with a seeded noise pattern, ``width`` x ``height``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), np.full_like(x, 128.0)], axis=-1)
    pixels = np.clip(base + rng.integers(-40, 40, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def default_images() -> list[Any]:
    """The default images of :data:`IMAGE_SIZES`, each with its own seed."""
    return [image(w, h, seed=i) for i, (w, h) in enumerate(IMAGE_SIZES)]


def describe_image(img: Any) -> str:
    """A short label of an image for reports: ``image 32x32``."""
    return f"image {img.size[0]}x{img.size[1]}"
