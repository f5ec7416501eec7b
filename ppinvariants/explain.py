"""Token-by-token view of one greedy generation, as the notebook behind this project printed it.

For each step: the prefix so far, the top-k next tokens with probabilities, the chosen token's
log-prob, and the entropy of the step distribution; optionally a plot of entropy and chosen-token
probability per step (matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _compat
from .capturing import capture, timestamps_on
from .decoding import GREEDY, Decoding
from .errors import UsageError
from .record import finished_mask, generated_tokens, log_probs, vocab_summary


@dataclass(frozen=True)
class Step:
    step: int
    prefix: str
    token_id: int
    token: str
    logprob: float
    entropy: float
    top: list[tuple[int, str, float]]  # (id, token, probability)
    text: str = ""  # the chosen token decoded (" polic" where the piece reads 'Ġpolic')
    prefix_text: str = ""  # the prefix decoded, special tokens kept
    time: float | None = None  # seconds of the latest timestamp token so far (Whisper with timestamps)


def explain(target: Any, text: Any, *, top_k: int = 5, decoding: Decoding = GREEDY) -> list[Step]:
    """Generate from ``text`` greedily and describe every step up to the first eos (vectorized per step tensor).

    For a speech or vision target ``text`` is one input it takes (a clip, an image). A model with timestamp
    tokens (Whisper) generates with timestamps on, and each step carries the time of the latest timestamp
    so far (tokens against time)."""
    if getattr(target.conventions, "timestamp_begin", None) is not None:
        with timestamps_on(target) as stamped:
            return _explain(stamped, text, top_k, decoding)
    return _explain(target, text, top_k, decoding)


def _explain(target: Any, text: Any, top_k: int, decoding: Decoding) -> list[Step]:
    record = capture(target, [text], decoding, evidence=False)
    lp = log_probs(record.scores[0])  # [steps, V]: row 0 is the only row in greedy search
    p = lp.exp()
    entropies = vocab_summary(record.scores[0]).entropy  # as step_entropy_within_bounds reads it
    top_p, top_i = p.topk(min(top_k, p.shape[-1]), dim=-1)
    tokens = generated_tokens(record)[0]
    chosen = lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    mask, _ = finished_mask(generated_tokens(record), record.conventions.eos_token_ids)
    n = int(mask[0].sum())
    tok = target.tokenizer
    ids = record.sequences[0].tolist()
    names = tok.convert_ids_to_tokens(ids)
    # The first generated column: after the decoder start, a speech or vision model's whole forced decoder
    # prompt (Whisper's start, language, task), or a decoder-only model's prompt; the prefix shows all of it.
    start = record.prompt_length
    begin = getattr(record.conventions, "timestamp_begin", None)
    precision = _compat.timestamp_precision(target.model)
    now: float | None = None
    steps = []
    for t in range(n):  # one line per step for a human: bounded by the generation length
        if begin is not None and int(tokens[t]) >= begin:
            now = (int(tokens[t]) - begin) * precision
        steps.append(
            Step(
                step=t,
                prefix=" ".join(str(x) for x in names[: start + t]),
                token_id=int(tokens[t]),
                token=str(names[start + t]),
                logprob=float(chosen[t]),
                entropy=float(entropies[t]),
                top=[
                    (int(i), str(tok.convert_ids_to_tokens(int(i))), float(q))
                    for i, q in zip(top_i[t].tolist(), top_p[t].tolist(), strict=True)
                ],
                text=_decode(tok, [ids[start + t]]),
                prefix_text=_decode(tok, ids[: start + t]),
                time=now,
            )
        )
    return steps


def _decode(tokenizer: Any, ids: list[int]) -> str:
    """``ids`` as text (special tokens kept, no clean-up of spaces), or "" where the tokenizer cannot."""
    try:
        return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    except Exception:  # noqa: BLE001 - an id outside the tokenizer: the piece is shown instead
        return ""


def render(steps: list[Step], *, vocab_size: int | None = None) -> str:
    """Three lines per step: the prefix (decoded text, then the pieces), the chosen token (piece and
    decoded text), its log-prob and the entropy, and the top tokens."""
    lines = []
    bound = f" (max log V = {math.log(vocab_size):.2f})" if vocab_size else ""
    for s in steps:
        top = ", ".join(f"{t!r} {q:.3f}" for _, t, q in s.top)
        prefix = f"{s.prefix_text!r}  [{s.prefix}]" if s.prefix_text else s.prefix
        lines.append(f"step {s.step:>3}  prefix: {prefix}")
        shown = f"{s.token!r} = {s.text!r}" if s.text and s.text != s.token else repr(s.token)
        at = "" if s.time is None else f"  at {s.time:.2f} s"
        lines.append(
            f"          chose {shown} (id {s.token_id}) log-prob {s.logprob:.4f}  entropy {s.entropy:.3f}{bound}{at}"
        )
        lines.append(f"          top: {top}")
    return "\n".join(lines)


def plot(steps: list[Step], path: str | Path, *, target: str = "", text: str = "") -> Path:
    """Draw per-step entropy and chosen-token probability to a PNG at ``path``, titled with the
    ``target`` and the input ``text``; each point is labelled with the decoded token."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'ppinvariants[plot]'") from None
    xs = [s.step for s in steps]
    fig, ax1 = plt.subplots(figsize=(8, 3.5))
    ax1.plot(xs, [s.entropy for s in steps], marker="o", color="tab:blue", label="entropy (nats)")
    ax1.set_xlabel("step")
    ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax1.set_ylabel("entropy (nats)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(xs, [math.exp(s.logprob) for s in steps], marker="s", color="tab:orange", label="p(chosen)")
    ax2.set_ylabel("p(chosen token)", color="tab:orange")
    ax2.set_ylim(0, 1.05)
    ax1.margins(x=0.08, y=0.3)  # room for the labels inside the frame
    for s in steps:
        label = (s.text or s.token).strip() or repr(s.text or s.token)
        ax1.annotate(
            label[:14],
            (s.step, s.entropy),
            fontsize=7,
            rotation=45,
            xytext=(2, 4),
            textcoords="offset points",
            annotation_clip=True,
        )
    shown = text if len(text) <= 60 else text[:57] + "..."
    title = "ppinvariants explain" + (f": {target}" if target else "") + (f", input {shown!r}" if text else "")
    fig.suptitle(f"{title}\nper-step entropy and chosen-token probability (greedy)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
