"""The zoo's recipes: what each tiny architecture is built from (data only, each architecture once).

Also the generated corpus the tokenizers are trained and the models calibrated on. How a recipe
becomes a checkpoint is :mod:`ppinvariants.zoo.build`; how its tokenizer is trained,
:mod:`ppinvariants.zoo.tokenizers`.

Its length is the table itself: one recipe per architecture (20 seq2seq, 7 decoder-only), data only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

#: Bump whenever building, tokenizer training or calibration changes: cached checkpoints are keyed by it.
ZOO_VERSION = "4"

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
    tokenizer: str  # a key of ppinvariants.zoo.tokenizers.TRAINERS
    tokenizer_class: str
    config_class: str
    config: dict[str, Any]
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    init_scale: float = 8.0
    # The weights' seed, fixed per recipe: the build is deterministic, and this seed is one with which
    # the model behaves like a real one on the check's inputs (greedy rows end with eos at varied lengths).
    seed: int = 0
    special_tokens: tuple[str, ...] = ()  # byte-level BPE / WordPiece specials, in id order
    model_class: str = ""  # "" = AutoModelForSeq2SeqLM.from_config; "EncoderDecoderModel" = bert2bert
    decoder_config: dict[str, Any] = field(default_factory=dict)  # EncoderDecoderModel: the decoder's config
    # False: tokenizer_config.json names no tokenizer_class, and AutoTokenizer picks the tokenizer by the
    # config's model type instead, from its own table.
    tokenizer_class_saved: bool = True
    note: str = ""  # what differs from the real checkpoints of this architecture, if anything

    def key(self) -> str:
        import transformers

        blob = json.dumps(
            {
                "recipe": asdict(self),
                "zoo": ZOO_VERSION,
                # A built checkpoint may not load the same way under another transformers major version.
                "transformers": transformers.__version__.split(".")[0],
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

#: Every recipe the zoo knows, the default set first.
RECIPES: dict[str, Recipe] = {
    # --- the default set: what ``ppinvariants check`` with no target checks (about a minute on a CPU)
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
        config=dict(_T5_LIKE),
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
    # --- further architectures, checked by ``ppinvariants coverage`` (and ``check tiny:<arch>``)
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
        # transformers 4.x's AutoTokenizer table maps blenderbot-small to the slow tokenizer only, but a
        # tokenizer_class named in tokenizer_config.json makes it look up BlenderbotSmallTokenizerFast, which
        # reads ParlAI's BPE files as byte-level BPE and fails ("Token `ar` out of vocabulary").
        tokenizer_class_saved=False,
        seed=1,  # seed 0 ends the greedy rows at only 2 lengths
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
        seed=1,  # seed 0 ends the greedy rows at only 2 lengths
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
        seed=1,  # seed 0 ends the greedy rows at only 2 lengths
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
        seed=1,  # seed 0 ends only 4 of 8 greedy rows with eos
    ),
}

#: The default set: what ``ppinvariants check`` with no target checks (kept small: about a minute on a CPU).
ARCHITECTURES: tuple[str, ...] = ("bart", "pegasus", "t5", "marian", "mbart")

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

# --- decoder-only (causal) language models: AutoModelForCausalLM, prompts padded on the left
_CAUSAL = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=128,
)
_LLAMA_LIKE = dict(_CAUSAL, num_key_value_heads=2)
_CAUSAL_LM = "AutoModelForCausalLM"
#: A ChatML template (Qwen's): turns end with <|im_end|>, which is therefore an eos id next to <|endoftext|>.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CAUSAL_RECIPES: dict[str, Recipe] = {
    # GPT-2: byte-level BPE, no BOS added, no pad token (pad = eos, as users set it).
    "gpt2": Recipe(
        arch="gpt2",
        tokenizer="bytelevel-bpe",
        tokenizer_class="GPT2Tokenizer",
        config_class="GPT2Config",
        config=dict(n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=0, eos_token_id=0),
        tokenizer_config=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
        special_tokens=("<|endoftext|>",),
        model_class=_CAUSAL_LM,
    ),
    # OPT: GPT-2's BPE with fairseq's specials; the tokenizer adds </s> as BOS; pad is its own token.
    "opt": Recipe(
        arch="opt",
        tokenizer="bytelevel-bpe",
        tokenizer_class="GPT2Tokenizer",
        config_class="OPTConfig",
        config=dict(
            hidden_size=32,
            ffn_dim=64,
            word_embed_proj_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=128,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
        tokenizer_config=dict(
            bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", add_bos_token=True
        ),
        special_tokens=("<s>", "<pad>", "</s>", "<unk>"),
        model_class=_CAUSAL_LM,
    ),
    # Qwen2: byte-level BPE, a ChatML chat template, two eos ids (<|im_end|>, <|endoftext|>), pad <|endoftext|>
    # (so pad is one of the eos ids).
    "qwen2": Recipe(
        arch="qwen2",
        tokenizer="bytelevel-bpe",
        tokenizer_class="Qwen2Tokenizer",
        config_class="Qwen2Config",
        config=dict(_LLAMA_LIKE, bos_token_id=None, eos_token_id="<|im_end|>", pad_token_id="<|endoftext|>"),
        tokenizer_config=dict(
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            bos_token=None,
            chat_template=CHATML_TEMPLATE,
        ),
        generation=dict(eos_token_id=["<|im_end|>", "<|endoftext|>"], pad_token_id="<|endoftext|>"),
        # <|im_start|> first: pad (<|endoftext|>) is then not id 0, which beam search would not pad with (#47286)
        special_tokens=("<|im_start|>", "<|endoftext|>", "<|im_end|>"),
        model_class=_CAUSAL_LM,
    ),
    # Llama (2): sentencepiece BPE with byte fallback, <unk> 0, <s> 1, </s> 2; the tokenizer adds <s> as BOS;
    # no pad token (pad = eos, as users set it); grouped-query attention.
    "llama": Recipe(
        arch="llama",
        tokenizer="sentencepiece-llama",
        tokenizer_class="LlamaTokenizer",
        config_class="LlamaConfig",
        config=dict(_LLAMA_LIKE, num_key_value_heads=1, bos_token_id=1, eos_token_id=2),
        tokenizer_config=dict(add_bos_token=True, add_eos_token=False),
        model_class=_CAUSAL_LM,
    ),
    # Mistral: Llama's tokenizer conventions (<s> added, no pad), grouped-query attention, a sliding window.
    "mistral": Recipe(
        arch="mistral",
        tokenizer="sentencepiece-llama",
        tokenizer_class="LlamaTokenizer",
        config_class="MistralConfig",
        config=dict(_LLAMA_LIKE, num_key_value_heads=1, sliding_window=4096, bos_token_id=1, eos_token_id=2),
        tokenizer_config=dict(add_bos_token=True, add_eos_token=False),
        model_class=_CAUSAL_LM,
    ),
    # Gemma: sentencepiece BPE, <pad> 0 (its own token), <eos> 1, <bos> 2, <unk> 3; the tokenizer adds <bos>;
    # tied embeddings scaled by sqrt(hidden), one key-value head.
    "gemma": Recipe(
        arch="gemma",
        tokenizer="sentencepiece-gemma",
        tokenizer_class="GemmaTokenizer",
        config_class="GemmaConfig",
        config=dict(_CAUSAL, num_key_value_heads=1, head_dim=16, pad_token_id=0, eos_token_id=1, bos_token_id=2),
        tokenizer_config=dict(
            bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", add_bos_token=True
        ),
        model_class=_CAUSAL_LM,
    ),
    # Phi (-2): CodeGen's byte-level BPE, <|endoftext|> as bos, eos and unk, no BOS added, no pad token;
    # partial rotary embeddings.
    "phi": Recipe(
        arch="phi",
        tokenizer="bytelevel-bpe",
        tokenizer_class="CodeGenTokenizer",
        config_class="PhiConfig",
        config=dict(_CAUSAL, num_key_value_heads=2, partial_rotary_factor=0.5, bos_token_id=0, eos_token_id=0),
        tokenizer_config=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
        special_tokens=("<|endoftext|>",),
        model_class=_CAUSAL_LM,
    ),
}

#: The decoder-only architectures: ``tiny:<arch>`` targets, kept out of the default seq2seq sets.
CAUSAL_ARCHITECTURES: tuple[str, ...] = tuple(CAUSAL_RECIPES)

#: Architectures the zoo cannot build here, and why (listed by ``ppinvariants coverage``).
UNAVAILABLE: dict[str, str] = {}

for _arch, (_package, _recipe, _why) in _OPTIONAL.items():
    if importlib.util.find_spec(_package) is not None:
        RECIPES[_arch] = _recipe
    else:
        UNAVAILABLE[_arch] = _why

#: Speech and vision encoder-decoders (Whisper, the composites, Speech2Text): built by :mod:`ppinvariants.zoo.speech`
#: and :mod:`ppinvariants.zoo.vision` with their processor saved next to them; ``tiny:<arch>`` targets kept out
#: of the default and text sets.
SPEECH_VISION_RECIPES: dict[str, Recipe] = {
    # Whisper: 8 mel bins, a 1 s window (100 frames, 50 encoder positions), byte-level BPE with Whisper's
    # specials and 51 timestamp tokens (<|0.00|> to <|1.00|>).
    "whisper": Recipe(
        arch="whisper",
        tokenizer="whisper",
        tokenizer_class="WhisperTokenizer",
        config_class="WhisperConfig",
        config=dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=8,
            max_source_positions=50,
            max_target_positions=64,
        ),
        tokenizer_config=dict(timestamps=51),
        model_class="WhisperForConditionalGeneration",
        seed=0,
        note="1 s window and 8 mel bins (real checkpoints: 30 s, 80 or 128)",
    ),
    # VisionEncoderDecoder: a ViT encoder (32x32 images, 8x8 patches) and a GPT-2 decoder with cross-attention,
    # the zoo's byte-level BPE, a ViT image processor and a TrOCRProcessor.
    "vision-encoder-decoder": Recipe(
        arch="vision-encoder-decoder",
        tokenizer="bytelevel-bpe",
        tokenizer_class="GPT2Tokenizer",
        config_class="ViTConfig",
        config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            num_channels=3,
        ),
        decoder_config=dict(n_embd=32, n_layer=2, n_head=2, n_positions=128),
        tokenizer_config=dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"),
        special_tokens=("<s>", "<pad>", "</s>", "<unk>"),
        model_class="VisionEncoderDecoderModel",
        note="32x32 images in 8x8 patches (real OCR checkpoints: 384x384 in 16x16)",
    ),
    # SpeechEncoderDecoder: a wav2vec2 encoder (layer-normed feature encoder, so it takes an attention mask over
    # padded audio) and a GPT-2 decoder, the zoo's byte-level BPE, a Wav2Vec2FeatureExtractor and processor.
    # Its feature encoder's convolutions have biases, drawn non-zero (as the layer-normed wav2vec2 checkpoints'
    # trained ones are; see ppinvariants.zoo.vision.build_speech_encoder_decoder): with every bias zero, an
    # exactly silent clip stays exactly zero through the whole encoder, and its gradient overflows.
    "speech-encoder-decoder": Recipe(
        arch="speech-encoder-decoder",
        tokenizer="bytelevel-bpe",
        tokenizer_class="GPT2Tokenizer",
        config_class="Wav2Vec2Config",
        config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            feat_extract_norm="layer",
            conv_bias=True,
            do_stable_layer_norm=True,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        decoder_config=dict(n_embd=32, n_layer=2, n_head=2, n_positions=128),
        tokenizer_config=dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"),
        special_tokens=("<s>", "<pad>", "</s>", "<unk>"),
        model_class="SpeechEncoderDecoderModel",
        note="a 32-wide wav2vec2 (real checkpoints: 768 or 1024)",
    ),
    # Speech2Text: 8 log-mel filterbank features per frame (Speech2TextFeatureExtractor, utterance CMVN), two
    # strided convolutions, an encoder and decoder as small as BART's here; fairseq's sentencepiece model and
    # dictionary (<s> <pad> </s> <unk>, then the pieces) and a Speech2TextProcessor. It takes an attention mask
    # over frames. Embeddings unscaled: with the output layer tied to them, scaled ones make the tiny random
    # decoder repeat its input token.
    "speech2text": Recipe(
        arch="speech2text",
        tokenizer="sentencepiece-m2m",
        tokenizer_class="Speech2TextTokenizer",
        config_class="Speech2TextConfig",
        config=dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            input_feat_per_channel=8,
            input_channels=1,
            conv_channels=32,
            conv_kernel_sizes=(5, 5),
            max_source_positions=64,
            max_target_positions=64,
            scale_embedding=False,
        ),
        model_class="Speech2TextForConditionalGeneration",
        note="8 mel bins, 32 wide, embeddings unscaled (real checkpoints: 80 bins, 256 or wider, scaled)",
    ),
}
SPEECH_VISION_ARCHITECTURES: tuple[str, ...] = tuple(SPEECH_VISION_RECIPES)

#: Every seq2seq architecture of the zoo: the default set plus the further ones (those built here).
ALL_ARCHITECTURES: tuple[str, ...] = tuple(RECIPES)
RECIPES.update(CAUSAL_RECIPES)
RECIPES.update(SPEECH_VISION_RECIPES)
