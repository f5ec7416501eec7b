"""Training a recipe's tokenizer offline: one deterministic trainer per tokenizer kind (:data:`TRAINERS`).

Sentencepiece (single-threaded) for the sentencepiece kinds; for byte-level BPE, ParlAI BPE, FSMT's
BPE and WordPiece, :func:`learn_bpe`, whose ties are broken by the pair itself, never by hash order.
"""

from __future__ import annotations

import json
import re
import shutil
import string
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .recipes import Recipe, corpus


def learn_bpe(
    words: Mapping[str, int],
    split: Callable[[str], tuple[str, ...]],
    symbols: list[str],
    capacity: int,
    *,
    join: Callable[[str, str], str] = str.__add__,
    min_frequency: int = 2,
) -> tuple[list[str], list[tuple[str, str, int]]]:
    """BPE on word counts: merge the most frequent adjacent pair until ``capacity`` symbols are known.

    ``split`` gives a word's initial symbols, ``symbols`` the initial vocabulary (in id order) and
    ``join`` the symbol a merge makes. Ties are broken by the pair itself, so the result does not
    depend on the order of ``words`` (unlike the ``tokenizers`` trainers, whose ties follow hash order).
    Returns the symbols (the initial ones, then each new merge result) and the merges with their
    counts, in the order learnt.
    """
    seqs = {w: split(w) for w in words}
    symbols = list(symbols)
    known = set(symbols)
    merges: list[tuple[str, str, int]] = []
    while len(symbols) < capacity:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, seq in seqs.items():
            for pair in zip(seq[:-1], seq[1:], strict=True):
                pairs[pair] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append((*best, pairs[best]))
        first, second = best
        joined = join(first, second)
        for w, seq in seqs.items():
            if first not in seq:
                continue
            merged: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == first and seq[i + 1] == second:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            seqs[w] = tuple(merged)
        if joined not in known:
            known.add(joined)
            symbols.append(joined)
    return symbols, merges


def _end_of_word(word: str) -> tuple[str, ...]:
    """subword-nmt's initial split: characters, the last one marked with ``</w>``."""
    return (*word[:-1], word[-1] + "</w>")


def _initial_symbols(words: Mapping[str, int], split: Callable[[str], tuple[str, ...]]) -> list[str]:
    return sorted({s for w in words for s in split(w)})


def _write_bpe_merges(path: Path, merges: list[tuple[str, str, int]], header: str = "#version: 0.2\n") -> None:
    path.write_text(header + "".join(f"{a} {b}\n" for a, b, _ in merges))


# ---------------------------------------------------------------------------- sentencepiece

# T5/Pegasus/Marian lay out <pad>=0 </s>=1 <unk>=2; fairseq (mBART) <s>=0 <pad>=1 </s>=2 <unk>=3; fairseq's own
# spm models (PLBart, M2M100) <unk>=0 <s>=1 </s>=2 and no pad: their tokenizers shift the pieces by one for <pad>.
_T5_IDS = dict(bos_id=-1, pad_id=0, eos_id=1, unk_id=2)
_FAIRSEQ_IDS = dict(bos_id=0, pad_id=1, eos_id=2, unk_id=3)
_SPM_DEFAULT_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
# Decoder-only: Llama and Mistral's spm BPE keeps spm's default layout (no pad); Gemma's names its specials
# <pad>=0 <eos>=1 <bos>=2 <unk>=3 and adds no dummy prefix space.
_LLAMA_SPM = dict(_SPM_DEFAULT_IDS, model_type="bpe")
_GEMMA_SPM = dict(
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    pad_piece="<pad>",
    eos_piece="<eos>",
    bos_piece="<bos>",
    unk_piece="<unk>",
    model_type="bpe",
    add_dummy_prefix=False,
)


def _train_sentencepiece(path: Path, ids: dict[str, Any]) -> Any:
    """A 512-piece model at ``path`` (single-threaded: deterministic); returns its processor.

    Unigram unless ``ids`` names another ``model_type``; ``ids`` holds the special pieces' ids and
    any other trainer option.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    options: dict[str, Any] = {"model_type": "unigram", **ids}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_prefix=str(path.with_suffix("")),
        vocab_size=512,
        character_coverage=1.0,
        byte_fallback=True,
        minloglevel=2,
        num_threads=1,
        seed_sentencepiece_size=100000,
        **options,
    )
    # The model records its trainer's options, the scratch path in model_prefix too: keep the bytes the
    # same from build to build.
    model = sentencepiece_model_pb2.ModelProto.FromString(path.read_bytes())
    model.trainer_spec.model_prefix = path.stem
    path.write_bytes(model.SerializeToString())
    return spm.SentencePieceProcessor(model_file=str(path))


def _sentencepiece(recipe: Recipe, out: Path, work: Path, *, ids: dict[str, Any], names: tuple[str, ...]) -> None:
    """The model file under each of ``names`` (T5's ``spiece.model``, fairseq's ``sentencepiece.bpe.model``,
    Llama's ``tokenizer.model``)."""
    _train_sentencepiece(work / "sp.model", ids)
    for name in names:
        shutil.copy(work / "sp.model", out / name)


def _sentencepiece_m2m(recipe: Recipe, out: Path, work: Path) -> None:
    """M2M100: fairseq's spm model plus its dictionary ``vocab.json`` (<s> <pad> </s> <unk>, then the
    pieces, spm's own specials left out)."""
    sp = _train_sentencepiece(work / "sp.model", _SPM_DEFAULT_IDS)
    shutil.copy(work / "sp.model", out / "sentencepiece.bpe.model")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(3, sp.get_piece_size()):
        vocab[sp.id_to_piece(i)] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))


def _sentencepiece_marian(recipe: Recipe, out: Path, work: Path) -> None:
    """Marian: the same spm model as ``source.spm`` and ``target.spm``, and ``vocab.json`` of its pieces."""
    sp = _train_sentencepiece(work / "sp.model", _T5_IDS)
    shutil.copy(work / "sp.model", out / "source.spm")
    shutil.copy(work / "sp.model", out / "target.spm")
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))


# ---------------------------------------------------------------------------- BPE and WordPiece


def _bytelevel_bpe(recipe: Recipe, out: Path, work: Path) -> None:
    """GPT-2 style byte-level BPE (BART, LED, MVP, Blenderbot): ``vocab.json`` (the specials, the 256
    byte symbols, then the merges) and ``merges.txt``, as BART checkpoints ship them."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)  # what BartTokenizer splits words with
    words = Counter(piece for line in corpus() for piece, _ in pre.pre_tokenize_str(line))
    specials = list(recipe.special_tokens or ("<s>", "<pad>", "</s>", "<unk>"))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols, merges = learn_bpe(words, tuple, alphabet, 600 - len(specials))
    vocab = {t: i for i, t in enumerate([*specials, *symbols])}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    _write_bpe_merges(out / "merges.txt", merges)


def _wordpiece(recipe: Recipe, out: Path, work: Path, *, name: str) -> None:
    """BERT's lower-cased WordPiece, learnt as BPE with ``##`` continuation pieces (as the ``tokenizers``
    WordPiece trainer does): one token a line, in id order, in ``name``."""
    from tokenizers import normalizers, pre_tokenizers

    normalize = normalizers.BertNormalizer(lowercase=True).normalize_str  # as BertTokenizer(do_lower_case=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for line in corpus() for w, _ in pre.pre_tokenize_str(normalize(line)))

    def split(word: str) -> tuple[str, ...]:
        return (word[0], *("##" + c for c in word[1:]))

    specials = list(recipe.special_tokens)
    symbols, _ = learn_bpe(
        words, split, _initial_symbols(words, split), 512 - len(specials), join=lambda a, b: a + b[2:]
    )
    (out / name).write_text("".join(f"{t}\n" for t in [*specials, *symbols]))


def _parlai_words(text: str) -> list[str]:
    """Pre-tokenize as BlenderbotSmallTokenizer does: lower case, punctuation and quotes split off."""
    out: list[str] = []
    for token in re.findall(r"\S+\n?", text):
        token = re.sub("([.,!?()])", r" \1", token)
        token = re.sub("(')", r" \1 ", token)
        out.extend(t.lower() for t in token.split() if t)
    return out


def _parlai_bpe(recipe: Recipe, out: Path, work: Path) -> None:
    """ParlAI's BPE files (BlenderbotSmall): ``</w>`` ends a word in merges.txt; in vocab.json a
    non-final piece carries ``@@`` and a final piece is bare."""
    specials = ["__null__", "__start__", "__end__", "__unk__"]
    words = Counter(w for line in corpus() for w in _parlai_words(line))
    symbols, merges = learn_bpe(words, _end_of_word, _initial_symbols(words, _end_of_word), 600 - len(specials))
    vocab = {t: i for i, t in enumerate(specials)}
    for piece in symbols:
        vocab.setdefault(piece[: -len("</w>")] if piece.endswith("</w>") else piece + "@@", len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    _write_bpe_merges(out / "merges.txt", merges)


_FSMT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's dictionary: ids 0-3


def train_fsmt_bpe(
    words: Counter[str], vocab_size: int, min_frequency: int = 2
) -> tuple[list[str], list[tuple[str, str, int]]]:
    """subword-nmt style BPE on word counts, as FSMT's vocabulary needs it: ``</w>`` ends a word.

    The symbols are the corpus's characters by frequency, the rest of printable ASCII and the
    Latin-1 letters, then each merge's result (see :func:`learn_bpe`).
    """
    alphabet: Counter[str] = Counter()
    for w, n in words.items():
        for s in _end_of_word(w):
            alphabet[s] += n
    symbols = sorted(alphabet, key=lambda s: (-alphabet[s], s))
    # Every printable ASCII character and Latin-1 letter, inside and at the end of a word, as a real
    # (en-de) vocabulary has them: the check's inputs hold characters the corpus does not (``:``, ``ü``).
    for c in string.printable.strip() + "".join(chr(i) for i in range(0xC0, 0x100) if chr(i).isalpha()):
        symbols += [s for s in (c, c + "</w>") if s not in alphabet]
    return learn_bpe(words, _end_of_word, symbols, vocab_size - len(_FSMT_SPECIALS), min_frequency=min_frequency)


def _fsmt_bpe(recipe: Recipe, out: Path, work: Path) -> None:
    """FSMT's (fairseq/XLM) BPE files: ``vocab-src.json`` and ``vocab-tgt.json`` map a word-final piece
    with ``</w>`` and a non-final piece bare, after ``<s> <pad> </s> <unk>``; ``merges.txt`` holds one
    ``first second`` merge a line, in rank order, no header (as ``FSMTTokenizer.save_vocabulary`` writes it).

    The corpus is pre-tokenized by FSMTTokenizer's own Moses pipeline (constructed on placeholder
    files), so the BPE is learnt on exactly the words the tokenizer will split.
    """
    from transformers import FSMTTokenizer

    specials = {t: i for i, t in enumerate(_FSMT_SPECIALS)}
    files = {"src_vocab_file": work / "vocab-src.json", "tgt_vocab_file": work / "vocab-tgt.json"}
    for path in files.values():
        path.write_text(json.dumps(specials))
    (work / "merges.txt").write_text("")
    moses = FSMTTokenizer(
        merges_file=str(work / "merges.txt"), **{k: str(v) for k, v in files.items()}, **recipe.tokenizer_config
    )
    lang = moses.src_lang
    words: Counter[str] = Counter()
    for line in corpus():
        text = line.lower() if moses.do_lower_case else line
        words.update(t for t in moses.moses_tokenize(moses.moses_pipeline(text, lang=lang), lang=lang) if t)
    symbols, merges = train_fsmt_bpe(words, vocab_size=640)  # about 320 characters, then merges
    vocab = dict(specials)
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for name in ("vocab-src.json", "vocab-tgt.json"):
        (out / name).write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    _write_bpe_merges(out / "merges.txt", merges, header="")


#: The trainer of each tokenizer kind (``Recipe.tokenizer``): ``trainer(recipe, out, work)`` writes the
#: tokenizer's files into ``out``, using ``work`` as scratch space.
TRAINERS: dict[str, Callable[[Recipe, Path, Path], None]] = {
    "sentencepiece-t5": partial(_sentencepiece, ids=_T5_IDS, names=("spiece.model",)),
    "sentencepiece-fairseq": partial(_sentencepiece, ids=_FAIRSEQ_IDS, names=("sentencepiece.bpe.model",)),
    "sentencepiece-fairseq-offset": partial(_sentencepiece, ids=_SPM_DEFAULT_IDS, names=("sentencepiece.bpe.model",)),
    "sentencepiece-m2m": _sentencepiece_m2m,
    "sentencepiece-llama": partial(_sentencepiece, ids=_LLAMA_SPM, names=("tokenizer.model",)),
    "sentencepiece-gemma": partial(_sentencepiece, ids=_GEMMA_SPM, names=("tokenizer.model",)),
    "sentencepiece-marian": _sentencepiece_marian,
    "bytelevel-bpe": _bytelevel_bpe,
    "parlai-bpe": _parlai_bpe,
    "fsmt-bpe": _fsmt_bpe,
    "wordpiece": partial(_wordpiece, name="vocab.txt"),
    "wordpiece-prophetnet": partial(_wordpiece, name="prophetnet.tokenizer"),
}


def write_tokenizer(recipe: Recipe, out: Path) -> None:
    """Train ``recipe``'s tokenizer and write its files and ``tokenizer_config.json`` into ``out``."""
    work = out / "_work"
    work.mkdir()
    TRAINERS[recipe.tokenizer](recipe, out, work)
    shutil.rmtree(work)
    cfg = {"tokenizer_class": recipe.tokenizer_class, "model_max_length": 128, **recipe.tokenizer_config}
    if not recipe.tokenizer_class_saved:
        del cfg["tokenizer_class"]
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
