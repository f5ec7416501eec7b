"""The offline tiny model zoo: seeded random seq2seq checkpoints built from a config.

Each recipe trains its tokenizer locally (sentencepiece, byte-level BPE or WordPiece from
``tokenizers``, or a small deterministic BPE for FSMT) on a small generated corpus, builds a
two-layer model from a config, and calibrates it so that it behaves like a real model where the
invariants need it:

* outputs depend on the input (the init is scaled up from the default, which otherwise makes
  every hidden state look alike after layer norm);
* greedy generations end with eos after a handful of tokens, so that padding after eos really
  occurs in batches (a random model almost never picks eos on its own: we add a bias towards
  eos through the eos row of the output embedding and search its size).

Built checkpoints are written with ``save_pretrained`` (safetensors) into a cache folder keyed
by a hash of the recipe, so tests and the CLI load them through the same ``from_pretrained``
path as a user's checkpoint. Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import shutil
import string
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZOO_VERSION = "3"  # bump whenever building or calibration changes: cached checkpoints are keyed by it

_WORDS = (
    "the quick brown fox jumps over lazy dog a model rewrites sentences numbers appear too hello world "
    "how are you today paraphrase generation beam search score logits probability token padding end "
    "start river mountain city music science history language computer garden summer winter friend "
    "family school market story light water green small large people time year work life day night "
    "house book road tree bird cat moon sun star sea ship train open close write read speak think"
).split()


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """A deterministic corpus of short English-like sentences with digits and punctuation."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 16))]
        line = " ".join(words).capitalize() + rng.choice(".!?,;")
        if rng.random() < 0.3:
            line += f" {rng.randint(0, 9999)}"
        if rng.random() < 0.1:
            line = f'"{line}" ({rng.choice(_WORDS)})'
        lines.append(line)
    return lines


def calibration_texts(n: int = 16, seed: int = 1) -> list[str]:
    """Inputs used to calibrate a tiny model's eos bias (disjoint seed from the tokenizer corpus)."""
    return corpus(n, seed)


@dataclass(frozen=True)
class Recipe:
    """How to build one tiny architecture: tokenizer kind, config class and its arguments."""

    arch: str
    tokenizer: str  # "sentencepiece-t5" | "sentencepiece-fairseq" | "bytelevel-bpe" | "fsmt-bpe" | ...
    tokenizer_class: str
    config_class: str
    config: dict[str, Any]
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    init_scale: float = 8.0
    seed: int = 0
    # Fields added with the extended zoo; left out of the key at their defaults, so the
    # checkpoints of the original recipes keep their cache keys.
    special_tokens: tuple[str, ...] = ()  # byte-level BPE / WordPiece specials, in id order
    model_class: str = ""  # "" = AutoModelForSeq2SeqLM.from_config; "EncoderDecoderModel" = bert2bert
    decoder_config: dict[str, Any] = field(default_factory=dict)  # EncoderDecoderModel: the decoder's config
    note: str = ""  # what differs from the real checkpoints of this architecture, if anything

    def key(self) -> str:
        import transformers

        fields = {k: v for k, v in self.__dict__.items() if k not in _NEW_FIELDS or v != _NEW_FIELDS[k]}
        blob = json.dumps(
            {
                "recipe": fields,
                "zoo": ZOO_VERSION,
                # A built checkpoint may not load the same way under another transformers major version.
                "transformers": transformers.__version__.split(".")[0],
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_NEW_FIELDS: dict[str, Any] = {"special_tokens": (), "model_class": "", "decoder_config": {}, "note": ""}

_SMALL = {"max_position_embeddings": 128}
_BART_LIKE = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    dropout=0.1,
    **_SMALL,
)

RECIPES: dict[str, Recipe] = {
    "bart": Recipe(
        arch="bart",
        tokenizer="bytelevel-bpe",
        tokenizer_class="BartTokenizer",
        config_class="BartConfig",
        # Real BART: generations start with </s> (decoder_start) and are forced to <s> next.
        config=dict(_BART_LIKE, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
        generation=dict(forced_bos_token_id=0, forced_eos_token_id=2),
    ),
    "pegasus": Recipe(
        arch="pegasus",
        tokenizer="sentencepiece-t5",
        tokenizer_class="PegasusTokenizer",
        config_class="PegasusConfig",
        config=dict(_BART_LIKE, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        tokenizer_config={"offset": 0},
        generation=dict(forced_eos_token_id=1),
    ),
    "t5": Recipe(
        arch="t5",
        tokenizer="sentencepiece-t5",
        tokenizer_class="T5Tokenizer",
        config_class="T5Config",
        config=dict(
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            dropout_rate=0.1,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        ),
        tokenizer_config={"extra_ids": 0},
    ),
    "marian": Recipe(
        arch="marian",
        tokenizer="sentencepiece-marian",
        tokenizer_class="MarianTokenizer",
        config_class="MarianConfig",
        config=dict(_BART_LIKE, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1),
    ),
    "mbart": Recipe(
        arch="mbart",
        tokenizer="sentencepiece-fairseq",
        tokenizer_class="MBartTokenizer",
        config_class="MBartConfig",
        config=dict(_BART_LIKE, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
        tokenizer_config={"src_lang": "en_XX", "tgt_lang": "ro_RO"},
        # mBART-50 style: the first generated token is forced to the target-language code.
        generation=dict(forced_bos_token="ro_RO", forced_eos_token_id=2),
    ),
}

#: The default set: what ``ppinvariants check`` with no target checks (kept small: about a minute on a CPU).
ARCHITECTURES: tuple[str, ...] = tuple(RECIPES)

_T5_LIKE = dict(
    d_model=32,
    d_kv=16,
    d_ff=64,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    dropout_rate=0.1,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
_BERT_LIKE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    **_SMALL,
)

#: Further architectures, checked by ``ppinvariants coverage`` (and ``check tiny:<arch>``).
RECIPES.update(
    {
        "m2m100": Recipe(
            arch="m2m100",
            tokenizer="sentencepiece-m2m",
            tokenizer_class="M2M100Tokenizer",
            config_class="M2M100Config",
            config=dict(_BART_LIKE, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
            tokenizer_config={"src_lang": "en", "tgt_lang": "fr"},
            # As in the M2M100 docs: the first generated token is forced to the target-language code.
            generation=dict(forced_bos_token="__fr__"),
            seed=1,  # seed 0 ends too few greedy rows with eos under min_length=6
        ),
        "blenderbot": Recipe(
            arch="blenderbot",
            tokenizer="bytelevel-bpe",
            special_tokens=("<pad>", "<s>", "</s>", "<unk>"),  # blenderbot-400M: pad 0, bos 1, eos 2
            tokenizer_class="BlenderbotTokenizer",
            config_class="BlenderbotConfig",
            config=dict(_BART_LIKE, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
        ),
        "blenderbot_small": Recipe(
            arch="blenderbot_small",
            tokenizer="parlai-bpe",
            tokenizer_class="BlenderbotSmallTokenizer",
            config_class="BlenderbotSmallConfig",
            # blenderbot_small-90M: __null__ 0, __start__ 1, __end__ 2, __unk__ 3.
            config=dict(_BART_LIKE, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
        ),
        "led": Recipe(
            arch="led",
            tokenizer="bytelevel-bpe",
            tokenizer_class="LEDTokenizer",
            config_class="LEDConfig",
            config=dict(
                {k: v for k, v in _BART_LIKE.items() if k != "max_position_embeddings"},
                max_encoder_position_embeddings=128,
                max_decoder_position_embeddings=128,
                attention_window=[8, 8],
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                decoder_start_token_id=2,
            ),
            seed=2,  # seed 0 gives nearly input-independent greedy outputs
        ),
        "pegasus_x": Recipe(
            arch="pegasus_x",
            tokenizer="sentencepiece-t5",
            tokenizer_class="PegasusTokenizer",
            config_class="PegasusXConfig",
            config=dict(
                _BART_LIKE,
                num_global_tokens=4,
                block_size=8,
                stagger_local_blocks=True,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            ),
            tokenizer_config={"offset": 0},
        ),
        "bigbird_pegasus": Recipe(
            arch="bigbird_pegasus",
            tokenizer="sentencepiece-t5",
            tokenizer_class="PegasusTokenizer",
            config_class="BigBirdPegasusConfig",
            # Block-sparse attention needs inputs longer than (5 + 2 * random blocks) * block_size
            # tokens and falls back to full attention below that; tiny inputs use full attention.
            config=dict(
                _BART_LIKE,
                attention_type="original_full",
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
                decoder_start_token_id=0,
            ),
            tokenizer_config={"offset": 0},
        ),
        "plbart": Recipe(
            arch="plbart",
            tokenizer="sentencepiece-fairseq-offset",
            tokenizer_class="PLBartTokenizer",
            config_class="PLBartConfig",
            # As in the PLBart docs: generation starts with the target-language code.
            config=dict(_BART_LIKE, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id="__en_XX__"),
            tokenizer_config={"src_lang": "python", "tgt_lang": "en_XX", "language_codes": "base"},
        ),
        "mvp": Recipe(
            arch="mvp",
            tokenizer="bytelevel-bpe",
            tokenizer_class="MvpTokenizer",
            config_class="MvpConfig",
            config=dict(_BART_LIKE, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
            generation=dict(forced_eos_token_id=2),
        ),
        "mt5": Recipe(
            arch="mt5",
            tokenizer="sentencepiece-t5",
            tokenizer_class="T5Tokenizer",
            config_class="MT5Config",
            config=dict(_T5_LIKE, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
            tokenizer_config={"extra_ids": 0},
        ),
        "umt5": Recipe(
            arch="umt5",
            tokenizer="sentencepiece-t5",
            tokenizer_class="T5Tokenizer",
            config_class="UMT5Config",
            config=dict(_T5_LIKE, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
            tokenizer_config={"extra_ids": 0},
        ),
        "longt5": Recipe(
            arch="longt5",
            tokenizer="sentencepiece-t5",
            tokenizer_class="T5Tokenizer",
            config_class="LongT5Config",
            config=dict(_T5_LIKE, encoder_attention_type="transient-global", local_radius=4, global_block_size=4),
            tokenizer_config={"extra_ids": 0},
        ),
        "switch_transformers": Recipe(
            arch="switch_transformers",
            tokenizer="sentencepiece-t5",
            tokenizer_class="T5Tokenizer",
            config_class="SwitchTransformersConfig",
            config=dict(
                _T5_LIKE,
                num_experts=2,
                expert_capacity=64,
                num_sparse_encoder_layers=1,
                num_sparse_decoder_layers=1,
            ),
            tokenizer_config={"extra_ids": 0},
        ),
        "prophetnet": Recipe(
            arch="prophetnet",
            tokenizer="wordpiece-prophetnet",
            special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[X_SEP]"),
            tokenizer_class="ProphetNetTokenizer",
            config_class="ProphetNetConfig",
            # prophetnet-large-uncased: pad 0, and [SEP] is bos, eos and decoder start.
            config=dict(
                hidden_size=32,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                num_encoder_layers=2,
                num_decoder_layers=2,
                num_encoder_attention_heads=2,
                num_decoder_attention_heads=2,
                ngram=2,
                num_buckets=8,
                relative_max_distance=32,
                dropout=0.1,
                pad_token_id=0,
                bos_token_id="[SEP]",
                eos_token_id="[SEP]",
                decoder_start_token_id="[SEP]",
                **_SMALL,
            ),
        ),
        "bert2bert": Recipe(
            arch="bert2bert",
            tokenizer="wordpiece",
            special_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
            tokenizer_class="BertTokenizer",
            config_class="BertConfig",
            model_class="EncoderDecoderModel",
            config=dict(_BERT_LIKE),
            decoder_config=dict(_BERT_LIKE, is_decoder=True, add_cross_attention=True),
            # As in the warm-starting docs (bert2bert_cnn_daily_mail): the tokenizer's bos/eos are [CLS]/[SEP].
            tokenizer_config={"bos_token": "[CLS]", "eos_token": "[SEP]"},
            # As in the EncoderDecoderModel docs: start with [CLS], end with [SEP].
            generation=dict(decoder_start_token_id="[CLS]", eos_token_id="[SEP]", pad_token_id="[PAD]"),
        ),
    }
)

#: Architectures that need a package ppinvariants does not depend on: (package, recipe, why without it).
_OPTIONAL: dict[str, tuple[str, Recipe, str]] = {
    "fsmt": (
        "sacremoses",
        Recipe(
            arch="fsmt",
            tokenizer="fsmt-bpe",
            tokenizer_class="FSMTTokenizer",
            config_class="FSMTConfig",
            # facebook/wmt19-en-de: <s> 0, <pad> 1, </s> 2 (eos and decoder start), <unk> 3; separate
            # source and target dictionaries (the same one here), untied output projection.
            config=dict(
                _BART_LIKE,
                langs=["en", "de"],
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                decoder_start_token_id=2,
                forced_eos_token_id=2,
            ),
            tokenizer_config={"langs": ["en", "de"], "do_lower_case": False},
            # At the default scale 8 the decoder's states hardly depend on its previous tokens (post-norm
            # layers, cross-attention dominating), so greedy rows end at the first step or never; at 3
            # most seeds end them after a few tokens (seed 5: 11 distinct outputs of 16, 5 lengths).
            init_scale=3.0,
            seed=5,
            note="source and target dictionaries are the same English BPE (real FSMT checkpoints have two languages)",
        ),
        "FSMTTokenizer needs the sacremoses package (Moses tokenization) as soon as it is constructed; "
        "sacremoses is not a dependency of ppinvariants (it is in the test extra: pip install sacremoses), "
        "and an FSMT checkpoint with another tokenizer would not behave like FSMT",
    ),
}

#: Architectures the zoo cannot build here, and why (listed by ``ppinvariants coverage``).
UNAVAILABLE: dict[str, str] = {}

for _arch, (_package, _recipe, _why) in _OPTIONAL.items():
    if importlib.util.find_spec(_package) is not None:
        RECIPES[_arch] = _recipe
    else:
        UNAVAILABLE[_arch] = _why

#: Every architecture of the zoo: the default set plus the further ones (those built here).
ALL_ARCHITECTURES: tuple[str, ...] = tuple(RECIPES)


def cache_root() -> Path:
    """Where built tiny checkpoints live: ``$PPINVARIANTS_CACHE`` or ``~/.cache/ppinvariants``."""
    env = os.environ.get("PPINVARIANTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ppinvariants"


def tiny_checkpoint(arch: str) -> Path:
    """Path of the built checkpoint for ``arch``, building it on first use (a few seconds)."""
    if arch in UNAVAILABLE:
        raise KeyError(f"tiny architecture {arch!r} cannot be built here: {UNAVAILABLE[arch]}")
    if arch not in RECIPES:
        raise KeyError(f"unknown tiny architecture {arch!r}; known: {', '.join(ALL_ARCHITECTURES)}")
    recipe = RECIPES[arch]
    final = cache_root() / "tiny" / f"{arch}-{recipe.key()}"
    if (final / "config.json").exists() and (final / "ppinvariants-recipe.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Build into a private folder and rename it into place, so that concurrent builders
    # (pytest-xdist workers) never see a half-written checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=final.parent))
    try:
        _build(recipe, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "ppinvariants-recipe.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------- tokenizers


def _train_sentencepiece(path: Path, *, fairseq: bool, spm_default: bool = False) -> None:
    import sentencepiece as spm

    # T5/Pegasus/Marian lay out <pad>=0 </s>=1 <unk>=2; fairseq (mBART) lays out <s>=0 <pad>=1 </s>=2 <unk>=3.
    ids = dict(bos_id=0, pad_id=1, eos_id=2, unk_id=3) if fairseq else dict(bos_id=-1, pad_id=0, eos_id=1, unk_id=2)
    if spm_default:
        # The layout of fairseq's own spm models (PLBart, M2M100): <unk>=0 <s>=1 </s>=2, no pad;
        # their tokenizers shift the pieces by one to make room for <pad>.
        ids = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_prefix=str(path.with_suffix("")),
        vocab_size=512,
        model_type="unigram",
        character_coverage=1.0,
        byte_fallback=True,
        minloglevel=2,
        num_threads=1,
        seed_sentencepiece_size=100000,
        **ids,
    )


def _write_tokenizer(recipe: Recipe, out: Path) -> None:
    work = out / "_work"
    work.mkdir()
    if recipe.tokenizer == "bytelevel-bpe":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            corpus(),
            vocab_size=600,
            min_frequency=2,
            special_tokens=list(recipe.special_tokens or ("<s>", "<pad>", "</s>", "<unk>")),
            show_progress=False,
        )
        bpe.save_model(str(out))  # vocab.json + merges.txt, as BART checkpoints ship them
    elif recipe.tokenizer == "parlai-bpe":
        _write_parlai_bpe(out)
    elif recipe.tokenizer == "fsmt-bpe":
        _write_fsmt_bpe(out, work, recipe.tokenizer_config)
    elif recipe.tokenizer in ("wordpiece", "wordpiece-prophetnet"):
        from tokenizers import BertWordPieceTokenizer

        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(
            corpus(), vocab_size=512, min_frequency=2, special_tokens=list(recipe.special_tokens), show_progress=False
        )
        wp.save_model(str(work))
        name = "prophetnet.tokenizer" if recipe.tokenizer == "wordpiece-prophetnet" else "vocab.txt"
        shutil.copy(work / "vocab.txt", out / name)
    elif recipe.tokenizer == "sentencepiece-fairseq-offset":
        _train_sentencepiece(work / "sp.model", fairseq=False, spm_default=True)
        shutil.copy(work / "sp.model", out / "sentencepiece.bpe.model")
    elif recipe.tokenizer == "sentencepiece-m2m":
        import sentencepiece as spm

        _train_sentencepiece(work / "sp.model", fairseq=False, spm_default=True)
        shutil.copy(work / "sp.model", out / "sentencepiece.bpe.model")
        sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
        # fairseq's dictionary: <s> <pad> </s> <unk>, then the pieces (spm's own specials left out).
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for i in range(3, sp.get_piece_size()):
            vocab[sp.id_to_piece(i)] = len(vocab)
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    elif recipe.tokenizer == "sentencepiece-t5":
        _train_sentencepiece(work / "sp.model", fairseq=False)
        shutil.copy(work / "sp.model", out / "spiece.model")
    elif recipe.tokenizer == "sentencepiece-fairseq":
        _train_sentencepiece(work / "sp.model", fairseq=True)
        shutil.copy(work / "sp.model", out / "sentencepiece.bpe.model")
    elif recipe.tokenizer == "sentencepiece-marian":
        import sentencepiece as spm

        _train_sentencepiece(work / "sp.model", fairseq=False)
        shutil.copy(work / "sp.model", out / "source.spm")
        shutil.copy(work / "sp.model", out / "target.spm")
        sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
        vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    else:  # pragma: no cover - recipes are fixed above
        raise ValueError(recipe.tokenizer)
    shutil.rmtree(work)
    cfg = {"tokenizer_class": recipe.tokenizer_class, "model_max_length": 128, **recipe.tokenizer_config}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))


def _parlai_words(text: str) -> list[str]:
    """Pre-tokenize as BlenderbotSmallTokenizer does: lower case, punctuation and quotes split off."""
    import re

    out: list[str] = []
    for token in re.findall(r"\S+\n?", text):
        token = re.sub("([.,!?()])", r" \1", token)
        token = re.sub("(')", r" \1 ", token)
        out.extend(t.lower() for t in token.split() if t)
    return out


def _write_parlai_bpe(out: Path) -> None:
    """ParlAI's BPE files (BlenderbotSmall): ``</w>`` ends a word in merges.txt; in vocab.json a
    non-final piece carries ``@@`` and a final piece is bare."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["__null__", "__start__", "__end__", "__unk__"]
    tok = Tokenizer(models.BPE(unk_token="__unk__", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=600, min_frequency=2, special_tokens=specials, end_of_word_suffix="</w>", show_progress=False
    )
    tok.train_from_iterator([" ".join(_parlai_words(line)) for line in corpus()], trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = {}
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        name = piece if piece in specials else (piece[: -len("</w>")] if piece.endswith("</w>") else piece + "@@")
        vocab.setdefault(name, len(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


_FSMT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's dictionary: ids 0-3


def _train_bpe(
    words: Counter[str], vocab_size: int, min_frequency: int = 2
) -> tuple[list[str], list[tuple[str, str, int]]]:
    """subword-nmt style BPE on word counts: ``</w>`` ends a word; ties are broken by the pair itself,
    so the result does not depend on hash order (unlike the ``tokenizers`` trainer).

    Returns the symbols (the corpus's characters by frequency, the rest of printable ASCII and the
    Latin-1 letters, then each merge's result) and the merges with their counts, in the order learnt.
    """
    seqs = {w: (*w[:-1], w[-1] + "</w>") for w in words}
    alphabet: Counter[str] = Counter()
    for w, n in words.items():
        for s in seqs[w]:
            alphabet[s] += n
    symbols = sorted(alphabet, key=lambda s: (-alphabet[s], s))
    # Every printable ASCII character and Latin-1 letter, inside and at the end of a word, as a real
    # (en-de) vocabulary has them: the check's inputs hold characters the corpus does not (``:``, ``ü``).
    for c in string.printable.strip() + "".join(chr(i) for i in range(0xC0, 0x100) if chr(i).isalpha()):
        symbols += [s for s in (c, c + "</w>") if s not in alphabet]
    known = set(symbols)
    merges: list[tuple[str, str, int]] = []
    while len(_FSMT_SPECIALS) + len(symbols) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, n in words.items():
            seq = seqs[w]
            for pair in zip(seq[:-1], seq[1:], strict=True):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append((*best, pairs[best]))
        first, second = best
        for w, seq in seqs.items():
            merged: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == first and seq[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            seqs[w] = tuple(merged)
        if first + second not in known:
            known.add(first + second)
            symbols.append(first + second)
    return symbols, merges


def _write_fsmt_bpe(out: Path, work: Path, tokenizer_config: dict[str, Any]) -> None:
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
        merges_file=str(work / "merges.txt"), **{k: str(v) for k, v in files.items()}, **tokenizer_config
    )
    lang = moses.src_lang
    words: Counter[str] = Counter()
    for line in corpus():
        text = line.lower() if moses.do_lower_case else line
        words.update(t for t in moses.moses_tokenize(moses.moses_pipeline(text, lang=lang), lang=lang) if t)
    symbols, merges = _train_bpe(words, vocab_size=640)  # about 320 characters, then merges
    vocab = dict(specials)
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for name in ("vocab-src.json", "vocab-tgt.json"):
        (out / name).write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
    (out / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b, _ in merges))


# ---------------------------------------------------------------------------- models


def _scale_init(model: Any, scale: float, seed: int) -> None:
    """Re-draw every weight matrix with a larger std, so hidden states differ between inputs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / fan_in**0.5) * 0.35)
            elif "bias" in name:
                p.zero_()


def _output_head(model: Any) -> Any:
    """The layer that computes the logits: ``get_output_embeddings()``, except for FSMT, whose
    ``get_output_embeddings()`` is the decoder's input embedding while its logits come from a
    separate, untied ``decoder.output_projection``."""
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    projection = getattr(decoder, "output_projection", None)
    return projection if projection is not None else model.get_output_embeddings()


def _restore_fixed_positions(model: Any) -> None:
    """Put FSMT's sinusoidal position table back after :func:`_scale_init` re-drew it: it is a
    parameter, but fixed in real checkpoints, and regenerated as sinusoids when a longer input needs
    more positions. (The other zoo models keep the re-drawn tables they have always been built with.)"""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "SinusoidalPositionalEmbedding" and hasattr(module, "get_embedding"):
                module.weight.copy_(module.get_embedding(*module.weight.shape, module.padding_idx))


def _greedy_lengths(model: Any, batch: dict[str, Any], max_new_tokens: int) -> tuple[list[int], int]:
    """Generated lengths (up to and including the first eos) and the number of distinct outputs."""
    import torch

    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    gen = out[:, 1:]
    is_eos = torch.isin(gen, eos_ids)
    has = is_eos.any(dim=1)
    first = torch.where(has, is_eos.int().argmax(dim=1) + 1, torch.full_like(has, gen.shape[1], dtype=torch.long))
    distinct = len({tuple(r.tolist()) for r in gen})
    return first.tolist(), distinct


def _calibrate_eos(model: Any, tokenizer: Any, recipe: Recipe) -> dict[str, Any]:
    """Rewrite the eos row of the output embedding so that greedy decoding ends like a real model's.

    Two parts, both linear in the hidden state ``h`` that feeds the output projection:

    * a probe: least-squares weights that make the eos logit beat the best other logit when the
      previous token belongs to a random "sentence-final" set ``S`` (10 % of the vocabulary), and
      lose otherwise, fitted on teacher-forced decoder states of corpus sentences;
    * an offset ``b * u``, with ``u`` the mean hidden state scaled so ``u . h`` is about 1, i.e. a
      bias on the eos logit, searched by bisection.

    Where pad is neither eos nor the decoder start, its row is set to ``-20 u``, so pad is never generated mid-sentence, as in real models.
    The target is a median greedy length of 4 to 16 new tokens with at least 85 % of the rows
    ending in eos within 24 new tokens, and varied lengths (padding appears in batches).
    """
    import torch

    head = _output_head(model)
    eos = model.config.eos_token_id
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    enc = tokenizer(corpus(256, seed=2), return_tensors="pt", padding=True)
    labels = tokenizer(text_target=corpus(256, seed=3), return_tensors="pt", padding=True).input_ids
    dec_in = torch.cat([torch.full((labels.shape[0], 1), start), labels[:, :-1]], dim=1)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].detach()))
    with torch.no_grad():
        # use_cache=False: a full pass over every position (4.x FSMT decodes only the last one with a cache)
        logits = model(**enc, decoder_input_ids=dec_in, use_cache=False).logits
    hook.remove()
    keep = dec_in.reshape(-1) != tokenizer.pad_token_id
    states = captured[0]
    if states.dim() == 4:  # ProphetNet: [batch, ngram, length, hidden]; the logits are those of the next token
        states = states[:, 0]
    h = states.reshape(-1, states.shape[-1])[keep]
    logits = logits.reshape(-1, logits.shape[-1])[keep]
    prev = dec_in.reshape(-1)[keep]
    gen = torch.Generator().manual_seed(recipe.seed)
    final_set = torch.rand(logits.shape[1], generator=gen) < 0.1
    y = final_set[prev].float()
    pad = tokenizer.pad_token_id
    others = logits.clone()
    others[:, [eos, pad]] = float("-inf")
    target = others.max(dim=1).values + (2 * y - 1)
    probe = torch.linalg.lstsq(h, target[:, None]).solution[:, 0]
    mean = h.mean(0)
    u = mean / mean.dot(mean)
    if pad not in (eos, start):
        # Real models give pad (almost) no probability; a random one would generate it mid-sentence.
        # (Not where pad is also the decoder start: with tied embeddings that would wreck the start.)
        head.weight.data[pad] = -20.0 * u

    batch = tokenizer(calibration_texts(), return_tensors="pt", padding=True)

    def stats_at(offset: float) -> tuple[float, float, int, int]:
        head.weight.data[eos] = probe + offset * u
        lens, distinct = _greedy_lengths(model, batch, 24)
        lens_t = torch.tensor(lens, dtype=torch.float)
        return lens_t.median().item(), (lens_t < 24).float().mean().item(), distinct, len(set(lens))

    lo, hi = -16.0, 16.0
    chosen, stats = 0.0, stats_at(0.0)
    for _ in range(12):
        median, finished, _distinct, _nlens = stats
        if 4 <= median <= 16 and finished >= 0.85:
            break
        if median > 16 or finished < 0.85:
            lo = chosen  # generations too long: raise the eos bias
        else:
            hi = chosen
        chosen = (lo + hi) / 2
        stats = stats_at(chosen)
    median, finished, distinct, nlens = stats
    return {
        "offset": chosen,
        "median_new_tokens": median,
        "finished_fraction": finished,
        "distinct_outputs": distinct,
        "distinct_lengths": nlens,
    }


_MAX_ATTEMPTS = 8


def _behaviour(model: Any, tokenizer: Any) -> dict[str, Any]:
    """How the model generates on the default check's inputs (greedy, min_length 6, 24 new tokens).

    ``ok`` when at least 5 of 8 rows end with eos, padding follows eos in the batch, the rows end at
    3 or more different lengths, and at least half of the outputs are distinct.
    """
    import torch

    from .decoding import DEFAULT_TEXTS
    from .record import finished_mask  # the inputs the checks use, not only the calibration corpus

    batch = tokenizer(list(DEFAULT_TEXTS), return_tensors="pt", padding=True, truncation=True, max_length=128)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=1, min_length=6, max_new_tokens=24)
    eos = model.generation_config.eos_token_id
    gen = out[:, 1:]
    mask, finished = finished_mask(gen, tuple(eos if isinstance(eos, list) else [eos]))
    lengths = mask.sum(dim=1)
    n = gen.shape[0]
    stats = {
        "finished": int(finished.sum()),
        "padding": bool((mask == 0).any()),
        "lengths": len(set(lengths.tolist())),
        "distinct": len({tuple(r.tolist()) for r in gen}),
    }
    ok = stats["finished"] >= (5 * n + 7) // 8 and stats["padding"] and stats["lengths"] >= 3
    ok = ok and stats["distinct"] >= n // 2
    score = stats["finished"] + stats["lengths"] + stats["distinct"] / n + (2 if stats["padding"] else 0)
    return {**stats, "ok": bool(ok), "score": score}


def _build(recipe: Recipe, out: Path) -> None:
    import torch
    import transformers

    _write_tokenizer(recipe, out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))

    def ids(values: dict[str, Any]) -> dict[str, Any]:
        # A token written as text (a language code, [SEP]) stands for its id in this tokenizer.
        return {
            k: tokenizer.convert_tokens_to_ids(v) if k.endswith("_token_id") and isinstance(v, str) else v
            for k, v in values.items()
        }

    config_cls: Callable[..., Any] = getattr(transformers, recipe.config_class)
    # len(tokenizer) for the original recipes; M2M100Tokenizer's language codes lie past it.
    known = [
        *tokenizer.all_special_ids,
        *tokenizer.get_vocab().values(),
        *getattr(tokenizer, "lang_code_to_id", {}).values(),
    ]
    vocab_size = max(len(tokenizer), 1 + max(known))
    sizes = {"vocab_size": vocab_size}
    if hasattr(tokenizer, "src_vocab_size") and hasattr(tokenizer, "tgt_vocab_size"):
        # FSMT: a source and a target dictionary (embeddings and output projection sized by each).
        sizes = {"src_vocab_size": tokenizer.src_vocab_size, "tgt_vocab_size": tokenizer.tgt_vocab_size}
    config = config_cls(**sizes, **ids(recipe.config))
    torch.manual_seed(recipe.seed)
    gen = ids(recipe.generation)
    if recipe.model_class == "EncoderDecoderModel":
        decoder = config_cls(vocab_size=vocab_size, **ids(recipe.decoder_config))
        config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(config, decoder)
        for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            setattr(config, key, gen[key])
        model = transformers.EncoderDecoderModel(config=config)
    else:
        model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    model.eval()
    if "forced_bos_token" in gen:
        gen["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(gen.pop("forced_bos_token"))
    for key in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
        # The generation config was derived from the config before the token names were resolved.
        if isinstance(recipe.config.get(key), str) and key not in gen:
            gen[key] = getattr(config, key)
    for key, value in gen.items():
        setattr(model.generation_config, key, value)
    # Generation defaults of the checkpoint: tiny models are checked with explicit lengths.
    model.generation_config.max_length = None
    # The tokenizers library's BPE/WordPiece trainers are not deterministic on ties (their merge order
    # depends on hash-map iteration), so the same recipe can give a slightly different tokenizer on
    # another machine. Each attempt re-draws the weights with the next seed until the model behaves like
    # a real one on the check's own inputs; the seed used is recorded next to the checkpoint.
    best: tuple[int, dict[str, Any], dict[str, Any]] | None = None
    for attempt in range(_MAX_ATTEMPTS):
        seed = recipe.seed + attempt
        _scale_init(model, recipe.init_scale, seed)
        _restore_fixed_positions(model)
        stats = _calibrate_eos(model, tokenizer, dataclasses.replace(recipe, seed=seed))
        behaviour = _behaviour(model, tokenizer)
        if behaviour["ok"]:
            best = (seed, stats, behaviour)
            break
        if best is None or behaviour["score"] > best[2]["score"]:
            best = (seed, stats, behaviour)
    assert best is not None
    seed, stats, behaviour = best
    if seed != recipe.seed + attempt:  # the last attempt was not the best: rebuild the best one
        _scale_init(model, recipe.init_scale, seed)
        _restore_fixed_positions(model)
        stats = _calibrate_eos(model, tokenizer, dataclasses.replace(recipe, seed=seed))
    stats = {**stats, "seed": seed, "behaviour": behaviour}
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "ppinvariants-recipe.json").write_text(
        json.dumps({"arch": recipe.arch, "key": recipe.key(), "calibration": stats}, indent=1)
    )
