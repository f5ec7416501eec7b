"""Hypothesis strategies for ``generate()`` inputs and decoding configs, valid by construction.

* :func:`texts` draws input strings that encode to at least one ordinary (non-special) token and
  fit the model's positions;
* :func:`text_batches` draws lists of such strings with very different lengths, so that padding
  happens;
* :func:`chat_prompts` draws conversations (message lists) rendered with the tokenizer's chat
  template, ending with the prompt for the assistant's turn (decoder-only chat models);
* :func:`decodings` draws :class:`~ppinvariants.capturing.Decoding` configs that ``generate()``
  accepts: greedy search, beam search and sampling;
* :func:`audio_batches` draws lists of mono clips (silence, tones, noise, chirps) of different lengths
  for a speech model's feature extractor, and :func:`image_batches` lists of RGB images of different
  sizes for a vision model's image processor.

Every value is built valid (nothing is thrown away with ``.filter``), and every draw shrinks
towards the simplest case: one common word, one text, one user message, greedy search with no
optional setting.

Importing this module imports Hypothesis only; torch loads when a :class:`Decoding` is built.
Importing it also registers two settings profiles (see :func:`register_profiles`):
``ppi-ci`` (derandomized, no deadline, prints reproduction blobs) and ``ppi-dev``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .lengths import input_limit

if TYPE_CHECKING:
    from .decoding import Decoding

__all__ = ["audio_batches", "chat_prompts", "decodings", "image_batches", "register_profiles", "text_batches", "texts"]

#: Plain words every built-in tokenizer encodes to ordinary tokens; the first one is the shrink target.
WORDS: tuple[str, ...] = (
    "the hello world model river city music garden summer friend house book road tree water light "
    "people time year day night story language computer science mountain school market bird moon sun"
).split()

#: Whitespace oddities: tabs, newlines, non-breaking and wide spaces, zero-width characters.
WHITESPACE: tuple[str, ...] = (" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u200b", "\ufeff")

PUNCTUATION: tuple[str, ...] = tuple(".,;:!?-()[]{}\"'/\\@#$%&*+=<>|~`^_") + (
    "...",
    "—",
    "–",
    "“",
    "”",
    "«",
    "»",
    "¿",
    "¡",
)

#: Words repeated in long texts are at most this many times (the token limit cuts them anyway).
_MAX_REPEAT = 80
#: Extras (pieces after the guaranteed word) in one text.
_MAX_PIECES = 24
_DECODING_KINDS = ("greedy", "beam", "sample")

# Default strategies of :func:`decodings` (module-level, so every call shares them).
MAX_NEW_TOKENS: st.SearchStrategy[int] = st.integers(4, 16)
NUM_BEAMS: st.SearchStrategy[int] = st.integers(2, 4)
TEMPERATURES: st.SearchStrategy[float] = st.floats(0.3, 2.0)
TOP_KS: st.SearchStrategy[int] = st.integers(1, 50)
TOP_PS: st.SearchStrategy[float] = st.floats(0.1, 1.0)
LENGTH_PENALTIES: st.SearchStrategy[float] = st.floats(0.0, 2.0)
SEEDS: st.SearchStrategy[int] = st.integers(0, 2**31 - 1)


def register_profiles() -> None:
    """Register the Hypothesis settings profiles ``ppi-ci`` and ``ppi-dev`` (loading neither).

    * ``ppi-ci``: ``derandomize=True`` (the same examples on every run, so a CI gate is stable),
      ``deadline=None`` (generation time varies with the machine), ``print_blob=True`` (a failure
      prints the ``@reproduce_failure`` blob), 25 examples, no example database, and no shrink
      phase (each example runs the model: shrinking a failure could stall a CI job for minutes;
      the failing example is reported as drawn).
    * ``ppi-dev``: 10 examples, ``deadline=None``, the example database on (failures replay first).

    Load one with ``settings.load_profile("ppi-ci")`` or ``pytest --hypothesis-profile ppi-ci``.
    Both silence the ``too_slow`` and ``data_too_large`` health checks, which model calls trip.
    """
    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile(
        "ppi-ci",
        derandomize=True,
        deadline=None,
        print_blob=True,
        max_examples=25,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
        suppress_health_check=quiet,
    )
    settings.register_profile("ppi-dev", max_examples=10, deadline=None, suppress_health_check=quiet)


register_profiles()


# ----------------------------------------------------------------------------- tokenizer facts


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("eos_token_id", "pad_token_id", "bos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


def _special_strings(tokenizer: Any) -> list[str]:
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        tokens.update(added())
    return sorted((t for t in tokens if t), key=len, reverse=True)


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def _default_max_tokens(tokenizer: Any, model: Any = None) -> int:
    return input_limit(tokenizer, model).tokens


def _break_specials(text: str, specials: Sequence[str]) -> str:
    """``text`` with every special token string (``</s>``, ``en_XX``...) split by a space, so the
    tokenizer reads it as ordinary text. Splitting never creates a longer special string; the
    loop is bounded all the same."""
    for _ in range(8):
        hit = next((s for s in specials if s in text), None)
        if hit is None:
            return text
        cut = max(1, len(hit) // 2)
        text = text.replace(hit, hit[:cut] + " " + hit[cut:])
    for s in specials:  # pathological overlaps: drop what is left
        text = text.replace(s, " ")
    return text


# ----------------------------------------------------------------------------- texts


def _pieces(alphabet: st.SearchStrategy[str] | str | None) -> st.SearchStrategy[list[str]]:
    """One extra piece of a text, as a list of parts (long runs of a repeated word are split into
    parts so the token limit can cut them word by word)."""
    chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn")) if alphabet is None else alphabet
    words = st.sampled_from(WORDS)
    return st.one_of(
        words.map(lambda w: [" " + w]),
        st.integers(0, 10**6).map(lambda n: [f" {n}"]),
        st.sampled_from(PUNCTUATION).map(lambda p: [p]),
        st.sampled_from(WHITESPACE).map(lambda s: [s]),
        st.text(alphabet=chars, min_size=1, max_size=12).map(lambda t: [t]),
        st.builds(lambda w, n: [" " + w] * n, words, st.integers(2, _MAX_REPEAT)),
    )


@st.composite
def _texts(
    draw: st.DrawFn,
    tokenizer: Any,
    max_tokens: int | None,
    alphabet: st.SearchStrategy[str] | str | None,
    min_pieces: int,
    max_pieces: int,
) -> str:
    limit = _default_max_tokens(tokenizer) if max_tokens is None else max_tokens
    specials = _special_strings(tokenizer)
    word = draw(st.sampled_from(WORDS))
    if _token_count(tokenizer, word) > limit:
        raise InvalidArgument(f"max_tokens={limit} is too small: even {word!r} does not fit")
    if draw(st.booleans()):  # sentence case
        word = word.capitalize()
    lead = draw(st.sampled_from(("", " ", "  ", "\t", "\u00a0", "\n")))
    parts = [p for piece in draw(st.lists(_pieces(alphabet), min_size=min_pieces, max_size=max_pieces)) for p in piece]

    def build(n: int) -> str:
        return _break_specials(lead + word + "".join(parts[:n]), specials)

    # The longest prefix of the extras that fits, found by bisection; token counts grow with the
    # prefix almost everywhere, so the last step walks down until it really fits.
    lo, hi = 0, len(parts)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _token_count(tokenizer, build(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and _token_count(tokenizer, build(lo)) > limit:
        lo -= 1
    return build(lo)


def texts(
    *,
    tokenizer: Any,
    max_tokens: int | None = None,
    alphabet: st.SearchStrategy[str] | str | None = None,
    model: Any = None,
) -> st.SearchStrategy[str]:
    """Input strings for ``tokenizer``: a plain word, then up to 24 drawn extras.

    Extras are words, numbers, punctuation, whitespace oddities (tabs, newlines, non-breaking,
    wide and zero-width spaces), free unicode text (characters from ``alphabet``: a strategy or
    a string of characters; default any assigned, non-control, non-surrogate character) and long
    runs of a repeated word. Every value:

    * contains a word from :data:`WORDS`, so it encodes to at least one ordinary token;
    * contains no special token string (``</s>``, ``<pad>``, ``en_XX``...: these are split by a space);
    * encodes to at most ``max_tokens`` ids, special tokens included. The default is the smallest
      length limit of ``model``'s config (when given) and the tokenizer's ``model_max_length``,
      or 512 when none is stated: see :func:`ppinvariants.lengths.input_limit`. For a loaded
      target, ``max_tokens=max_input_tokens(target)`` (:mod:`ppinvariants.lengths`) is the same.
      Extras that do not fit are dropped.

    Shrinks towards ``"the"``.
    """
    if max_tokens is not None and max_tokens < 1:
        raise InvalidArgument(f"max_tokens={max_tokens} must be >= 1")
    limit = _default_max_tokens(tokenizer, model) if max_tokens is None else max_tokens
    return _texts(tokenizer, limit, alphabet, 0, _MAX_PIECES)


@st.composite
def _text_batches(draw: st.DrawFn, tokenizer: Any, min_size: int, max_size: int, max_tokens: int | None) -> list[str]:
    size = draw(st.integers(min_size, max_size))
    short = draw(_texts(tokenizer, max_tokens, None, 0, 0))
    if size == 1:
        return [short]
    # A long text: at least one run of a repeated word (>= 2 words more than the short one can hold).
    head = draw(_texts(tokenizer, max_tokens, None, 0, 0))
    long = head + draw(st.builds(lambda w, n: (" " + w) * n, st.sampled_from(WORDS), st.integers(12, 40)))
    limit = _default_max_tokens(tokenizer) if max_tokens is None else max_tokens
    if _token_count(tokenizer, long) > limit:  # cut the run word by word, by construction
        words = long.split(" ")
        while len(words) > 1 and _token_count(tokenizer, " ".join(words)) > limit:
            words.pop()
        long = " ".join(words)
    rest = draw(st.lists(_texts(tokenizer, max_tokens, None, 0, _MAX_PIECES), min_size=size - 2, max_size=size - 2))
    batch = [short, *rest]
    batch.insert(draw(st.integers(0, len(batch))), long)
    return batch


def text_batches(
    *,
    tokenizer: Any,
    min_size: int = 1,
    max_size: int = 6,
    max_tokens: int | None = None,
    model: Any = None,
) -> st.SearchStrategy[list[str]]:
    """Lists of ``min_size`` to ``max_size`` :func:`texts`, built so that padding happens.

    A batch of two or more holds a short text (a single word) and a long one (a word and a run
    of 12 to 40 repeated words), so their token counts differ whenever ``max_tokens`` leaves
    room for it (the default does; ``max_tokens`` and ``model`` as for :func:`texts`); the others
    are drawn freely. Shrinks towards ``["the"]``
    (or ``min_size`` texts).
    """
    if min_size < 1 or max_size < min_size:
        raise InvalidArgument(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidArgument(f"max_tokens={max_tokens} must be >= 1")
    limit = _default_max_tokens(tokenizer, model) if max_tokens is None else max_tokens
    return _text_batches(tokenizer, min_size, max_size, limit)


# ----------------------------------------------------------------------------- chat prompts


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """``messages`` through the tokenizer's chat template, with the assistant's turn opened."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


@st.composite
def _chat_prompts(draw: st.DrawFn, tokenizer: Any, max_turns: int, system: bool, limit: int, floor: int) -> str:
    with_system = system and draw(st.booleans())
    turns = draw(st.integers(1, max_turns))  # user turns; an assistant reply between two of them
    roles = (["system"] if with_system else []) + ["user", "assistant"] * (turns - 1) + ["user"]
    # Each content on its own fits an equal share of what the template's own tokens leave (at least one word).
    overhead = _token_count(tokenizer, _render(tokenizer, [{"role": r, "content": ""} for r in roles]))
    share = max(floor, (limit - overhead) // len(roles))
    contents = [draw(_texts(tokenizer, share, None, 0, _MAX_PIECES // 2)) for _ in roles]
    messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
    # Token counts of the parts need not add up exactly: drop the oldest exchanges (and the system message),
    # then cut the last message character by character, down to its first one, until the rendered prompt fits.
    while _token_count(tokenizer, _render(tokenizer, messages)) > limit:
        first = 1 if messages[0]["role"] == "system" else 0
        if len(messages) - first >= 3:
            del messages[first : first + 2]
        elif first:
            del messages[0]
        else:
            content = messages[-1]["content"]
            keep = len(content) - len(content.lstrip()) + 1  # its leading whitespace and first character

            def fits(n: int, content: str = content) -> bool:
                return _token_count(tokenizer, _render(tokenizer, [{"role": "user", "content": content[:n]}])) <= limit

            if not fits(keep):
                raise InvalidArgument(f"max_tokens={limit} is too small for one message in this chat template")
            lo, hi = keep, len(content)  # the longest prefix that fits, by bisection
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            messages[-1]["content"] = content[:lo]
    return _render(tokenizer, messages)


def chat_prompts(
    *,
    tokenizer: Any,
    max_turns: int = 3,
    system: bool = True,
    max_tokens: int | None = None,
    model: Any = None,
) -> st.SearchStrategy[str]:
    """Conversations rendered with ``tokenizer``'s chat template, ready for the assistant's reply.

    A conversation is an optional system message (where ``system``), then 1 to ``max_turns`` user turns
    with an assistant reply between each two, ending with a user turn; it is rendered with
    ``apply_chat_template(..., tokenize=False, add_generation_prompt=True)``, so the string ends where the
    model's reply starts. Each message's content is a :func:`texts` value (a plain word first, no special
    token string inside), so the only special tokens are the template's own. The rendered prompt encodes
    to at most ``max_tokens`` ids (default and ``model`` as for :func:`texts`): where the parts' token
    counts add up to more, the oldest exchanges are dropped, then the system message, then the last message is cut to the longest prefix that fits.

    Draw batches with ``st.lists(chat_prompts(tokenizer=tok), min_size=2)``. Shrinks towards a single user
    message ``"the"``. A tokenizer without a chat template is an ``InvalidArgument``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidArgument(f"{type(tokenizer).__name__} has no chat template: draw texts() instead")
    if max_turns < 1:
        raise InvalidArgument(f"max_turns={max_turns} must be >= 1")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidArgument(f"max_tokens={max_tokens} must be >= 1")
    limit = _default_max_tokens(tokenizer, model) if max_tokens is None else max_tokens
    floor = max(_token_count(tokenizer, v) for w in WORDS for v in (w, w.capitalize()))  # any first word fits
    return _chat_prompts(tokenizer, max_turns, system, limit, floor)


# ----------------------------------------------------------------------------- decodings


def _ordinary_ids(tokenizer: Any) -> list[int]:
    """Token ids the tokenizer can produce from ordinary text: not special, not eos/pad/bos/unk,
    not an added token (language codes...), not the decoder start (which is one of those)."""
    excluded = _special_ids(tokenizer)
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        excluded.update(added().values())
    return [i for i in range(len(tokenizer)) if i not in excluded]


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def _decodings(
    draw: st.DrawFn,
    tokenizer: Any,
    max_new_tokens: st.SearchStrategy[int],
    num_beams: st.SearchStrategy[int],
    temperature: st.SearchStrategy[float],
    top_k: st.SearchStrategy[int],
    top_p: st.SearchStrategy[float],
    length_penalty: st.SearchStrategy[float],
    seed: st.SearchStrategy[int],
    kinds: tuple[str, ...],
    bad_words: bool,
    ordinary: list[int],
) -> Decoding:
    from .decoding import Decoding

    kind = draw(st.sampled_from(kinds))
    new = draw(max_new_tokens)
    if new < 1:
        raise InvalidArgument(f"max_new_tokens drew {new}; it must draw integers >= 1")
    fields: dict[str, Any] = {"max_new_tokens": new, "seed": draw(seed)}
    # At most one length floor: with both set, transformers ignores min_length (and warns).
    # min_length counts the decoder start: any value up to 1 + max_new_tokens can be met.
    floor = draw(st.sampled_from((None, "min_length", "min_new_tokens")))
    if floor == "min_length":
        fields["min_length"] = draw(st.integers(0, 1 + new))
    elif floor == "min_new_tokens":
        fields["min_new_tokens"] = draw(st.integers(0, new))
    if kind == "beam":
        beams = draw(num_beams)
        if beams < 2:
            raise InvalidArgument(f"num_beams drew {beams}; beam search needs num_beams >= 2")
        fields["num_beams"] = beams
        fields["num_return_sequences"] = draw(st.integers(1, beams))
        fields["length_penalty"] = draw(_optional(length_penalty))
    elif kind == "sample":
        fields["do_sample"] = True
        fields["num_return_sequences"] = draw(st.integers(1, 3))
        fields["temperature"] = draw(_optional(temperature))
        fields["top_k"] = draw(_optional(top_k))
        fields["top_p"] = draw(_optional(top_p))
    if bad_words and ordinary:
        words = draw(st.lists(st.lists(st.sampled_from(ordinary), min_size=1, max_size=2), max_size=3))
        fields["bad_words_ids"] = tuple(tuple(w) for w in words) or None
    name = {"greedy": "hyp-greedy", "beam": "hyp-beam", "sample": "hyp-sample"}[kind]
    return Decoding(name, **fields)


def decodings(
    *,
    tokenizer: Any,
    max_new_tokens: st.SearchStrategy[int] = MAX_NEW_TOKENS,
    num_beams: st.SearchStrategy[int] = NUM_BEAMS,
    temperature: st.SearchStrategy[float] = TEMPERATURES,
    top_k: st.SearchStrategy[int] = TOP_KS,
    top_p: st.SearchStrategy[float] = TOP_PS,
    length_penalty: st.SearchStrategy[float] = LENGTH_PENALTIES,
    seed: st.SearchStrategy[int] = SEEDS,
    kinds: Sequence[str] = _DECODING_KINDS,
    bad_words: bool = True,
) -> st.SearchStrategy[Decoding]:
    """:class:`~ppinvariants.capturing.Decoding` configs that ``generate()`` accepts.

    ``kinds`` picks among ``"greedy"``, ``"beam"`` (``num_beams`` from ``num_beams``, which must
    draw >= 2; ``1 <= num_return_sequences <= num_beams``; optional ``length_penalty``) and
    ``"sample"`` (1 to 3 return sequences; optional ``temperature``, ``top_k``, ``top_p``).
    Every kind draws ``max_new_tokens`` (>= 1), at most one length floor: ``min_length`` in
    ``[0, 1 + max_new_tokens]`` (it counts the decoder start) or ``min_new_tokens`` in
    ``[0, max_new_tokens]`` (with both, transformers ignores ``min_length``), a ``seed``, and (with ``bad_words``) up to three ``bad_words_ids`` of
    one or two ids drawn from the tokenizer's ordinary ids (never a special or added token, so
    never eos, pad, unk, a language code or the decoder start).

    Group (diverse) beam search is never drawn: :class:`Decoding` has no ``num_beam_groups`` /
    ``diversity_penalty`` fields, and transformers 5.x no longer has it in ``generate()`` (it moved
    to the Hub).

    Shrinks towards greedy search with only ``max_new_tokens`` and ``seed`` set.
    """
    unknown = [k for k in kinds if k not in _DECODING_KINDS]
    if unknown or not kinds:
        raise InvalidArgument(f"kinds must be a non-empty subset of {_DECODING_KINDS}, got {tuple(kinds)!r}")
    return _decodings(
        tokenizer,
        max_new_tokens,
        num_beams,
        temperature,
        top_k,
        top_p,
        length_penalty,
        seed,
        tuple(kinds),
        bad_words,
        _ordinary_ids(tokenizer) if bad_words else [],
    )


#: Clip kinds of :func:`audio_batches`, the shrink target first.
AUDIO_KINDS: tuple[str, ...] = ("silence", "tone", "noise", "chirp", "tone+noise")


@st.composite
def _clips(draw: st.DrawFn, sampling_rate: int, max_seconds: float, min_samples: int, dither: float) -> Any:
    import numpy as np

    from .signals import clip

    kind = draw(st.sampled_from(AUDIO_KINDS), label="kind")
    n = draw(st.integers(min_samples, max(min_samples, int(max_seconds * sampling_rate))), label="samples")
    seed = draw(st.integers(0, 2**16), label="seed")
    gain = draw(st.sampled_from((1.0, 0.5, 0.01, 2.0)), label="gain")
    x = clip(kind, n / sampling_rate, sampling_rate, seed=seed)[:n] * gain
    if dither:
        x = x + dither * np.random.default_rng(seed + 1).standard_normal(len(x))
    return x.clip(-1.0, 1.0).astype("float32")


def audio_batches(
    *,
    sampling_rate: int = 16000,
    min_size: int = 1,
    max_size: int = 4,
    max_seconds: float = 1.0,
    min_seconds: float = 0.0,
    dither: float = 0.0,
) -> st.SearchStrategy[list[Any]]:
    """Lists of ``min_size`` to ``max_size`` mono clips: 1-D float32 numpy arrays in [-1, 1] at
    ``sampling_rate``, ``min_seconds`` (at least 1 sample) to ``max_seconds`` long (so padding happens), of
    silence, a tone, noise, a chirp or a tone in noise, at one of a few gains. Valid by construction; shrinks
    towards one clip of silence, as short as allowed.

    ``dither`` adds seeded Gaussian noise of that std to every clip, as a recording's noise floor: for a
    feature extractor that normalises each utterance by its own variance (Speech2Text's), exact silence, or
    a clip shorter than two frames, has none and is refused as bad input; draw for it with, e.g.,
    ``min_seconds=0.05, dither=1e-4``."""
    if min_size < 1 or max_size < min_size:
        raise InvalidArgument(f"audio_batches: need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if min_seconds < 0 or min_seconds > max_seconds or dither < 0:
        raise InvalidArgument(
            f"audio_batches: need 0 <= min_seconds <= max_seconds and dither >= 0, got {min_seconds}, "
            f"{max_seconds}, {dither}"
        )
    min_samples = max(1, int(round(min_seconds * sampling_rate)))
    return st.lists(_clips(sampling_rate, max_seconds, min_samples, dither), min_size=min_size, max_size=max_size)


@st.composite
def _images(draw: st.DrawFn, max_side: int) -> Any:
    from .signals import image

    width = draw(st.integers(1, max_side), label="width")
    height = draw(st.integers(1, max_side), label="height")
    return image(width, height, seed=draw(st.integers(0, 2**16), label="seed"))


def image_batches(*, min_size: int = 1, max_size: int = 4, max_side: int = 96) -> st.SearchStrategy[list[Any]]:
    """Lists of ``min_size`` to ``max_size`` RGB PIL images, 1 to ``max_side`` pixels a side (a gradient with
    seeded noise), so that the image processor resizes each differently. Valid by construction; shrinks
    towards one 1x1 image."""
    if min_size < 1 or max_size < min_size:
        raise InvalidArgument(f"image_batches: need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    return st.lists(_images(max_side), min_size=min_size, max_size=max_size)
