"""Factories for ``FILE.py:FUNC`` targets: healthy, deliberately broken, and bad ones."""

from __future__ import annotations

import copy

import torch

from ppinvariants.targets import load_target


def healthy():
    t = load_target("tiny:bart")
    return t.model, t.tokenizer


def nan_logits():
    """BART whose logits turn NaN at one vocabulary entry: an fp16-overflow-like fault."""
    model, tok = healthy()

    def hook(_module, _inputs, output):
        output = output.clone()
        output[..., 17] = float("nan")
        return output

    model.get_output_embeddings().register_forward_hook(hook)
    return model, tok


def banned_token():
    """BART whose logits put -inf on an ordinary token no processor asked to ban."""
    model, tok = healthy()

    def hook(_module, _inputs, output):
        output = output.clone()
        output[..., 42] = float("-inf")
        return output

    model.get_output_embeddings().register_forward_hook(hook)
    return model, tok


def no_pad_token():
    model, tok = healthy()
    tok = copy.deepcopy(tok)
    tok.pad_token = None
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    return model, tok


def decoder_only():
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = healthy()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(tok)))
    return model, tok


def raises():
    raise RuntimeError("weights server unreachable")


def wrong_return():
    return "not a model"
