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


def cache_drift():
    """BART whose incremental (cached, one-token) decoder steps get shifted logits: cache drift."""
    model, tok = healthy()

    def hook(_module, inputs, output):
        if inputs[0].shape[1] == 1:  # one new position: incremental decoding with a cache
            output = output + 0.3 * torch.linspace(-1, 1, output.shape[-1])
        return output

    model.get_output_embeddings().register_forward_hook(hook)
    return model, tok


def encoder_ignores_mask():
    """BART whose encoder drops the attention mask: padding leaks into every padded row."""
    model, tok = healthy()
    encoder = model.get_encoder()
    forward = encoder.forward

    def no_mask(*args, **kwargs):
        kwargs["attention_mask"] = None
        return forward(*args, **kwargs)

    encoder.forward = no_mask
    return model, tok


def noisy_in_eval():
    """BART with dropout-like noise on its logits even in eval mode: non-deterministic."""
    model, tok = healthy()

    def hook(_module, _inputs, output):
        return output + 2.0 * torch.randn(output.shape, generator=_NOISE)

    model.get_output_embeddings().register_forward_hook(hook)
    return model, tok


_NOISE = torch.Generator().manual_seed(1234)  # not reset by torch.manual_seed: a nondeterministic source


def detached_logits():
    """BART whose logits are detached from the parameters: no gradient for RL."""
    model, tok = healthy()
    model.get_output_embeddings().register_forward_hook(lambda _m, _i, output: output.detach())
    return model, tok
