"""A deliberately broken target for the plugin tests: tiny BART whose logits hide an ordinary token.

A forward hook on the output embedding sets the logit of one ordinary token to ``-inf`` at every
step, which no logits processor explains: ``neg_inf_only_where_processors_explain`` must fail.
"""

from __future__ import annotations

from typing import Any

from ppinvariants.targets import load_target

#: The ordinary token whose logit the hook sets to -inf.
HIDDEN_TOKEN = "Ġthe"


def make() -> tuple[Any, Any]:
    """``(model, tokenizer)`` of tiny BART with :data:`HIDDEN_TOKEN` masked to ``-inf``."""
    target = load_target("tiny:bart")
    model, tokenizer = target.model, target.tokenizer
    token_id = tokenizer.convert_tokens_to_ids(HIDDEN_TOKEN)
    assert token_id not in tokenizer.all_special_ids

    def hide(module: Any, inputs: Any, output: Any) -> Any:
        output = output.clone()
        output[..., token_id] = float("-inf")
        return output

    model.get_output_embeddings().register_forward_hook(hide)
    return model, tokenizer
