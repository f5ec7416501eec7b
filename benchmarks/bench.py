"""Overhead and memory of ppinvariants' checks against bare ``generate()``, measured in one run.

(a) bare ``generate(output_scores=True)`` vs generate + capture + every record-level check (no
    re-runs), for a random BART-large-size model (``BartConfig()`` defaults) and a wide-vocabulary Pegasus-like
    model, at 1 and 2 torch threads;
(b) the default check (standard evidence re-runs) and ``--thorough``, over the three default
    decodings, vs bare ``generate()`` (no scores) of the same decodings;
(c) the peak RSS rise of record mode and of streaming mode over bare generate (no scores), at
    batch 64 x 64 steps, each mode in a fresh subprocess;
(d) a per-element Python loop reading chosen-token log-probs vs the vectorized gather check;
(e) the shipped pytest suite on tiny models with 1 worker vs 2 pytest-xdist workers (``--dist loadgroup``).
(f) on a GPU (``--device cuda``): the peak GPU memory of bare generate() (no scores), record mode and
    streaming mode at batch 64 x 64, each over the loaded model (target: streaming <= 1.1x bare).

Usage: ``python benchmarks/bench.py [--quick] [--device cpu|cuda] [--dtype float32|float16|bfloat16]
[--models bart-large,pegasus-96k] [--sections abcdef]``. Models are random (built offline from configs);
``min_length`` above ``max_new_tokens`` bans eos, so every run generates exactly the same length.
``pegasus-large`` (Pegasus-large's 16+16 layers of width 1024 and 96k vocabulary) is for a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import transformers

from ppinvariants.capturing import capture
from ppinvariants.decoding import DEFAULT_DECODINGS, DEFAULT_TEXTS, Decoding
from ppinvariants.invariants import REGISTRY
from ppinvariants.judge import run_invariants
from ppinvariants.record import chosen_logprobs, generated_tokens, step_logprobs
from ppinvariants.runner import check_loaded
from ppinvariants.targets import _finish, load_target

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


#: The benchmark's random models: BART-large's and Pegasus-large's sizes, and a 96k-vocabulary Pegasus small
#: enough for a 2-core CPU.
KINDS = ("bart-large", "pegasus-large", "pegasus-96k")


def build_model(kind: str) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a random model of ``kind`` (one of :data:`KINDS`), float32 on the CPU, with
    the tiny zoo's tokenizer of the same family widened to the model's vocabulary."""
    torch.manual_seed(0)
    if kind == "bart-large":  # BartConfig()'s defaults are BART-large: vocab 50265, d_model 1024, 12+12 layers
        model, tok_from = transformers.BartForConditionalGeneration(transformers.BartConfig()), "tiny:bart"
    elif kind == "pegasus-large":  # Pegasus-large's sizes: 16+16 layers, d_model 1024, vocab 96103 (for a GPU)
        config = transformers.PegasusConfig(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        model, tok_from = transformers.PegasusForConditionalGeneration(config), "tiny:pegasus"
    elif kind == "pegasus-96k":  # Pegasus vocabulary (96103) with smaller layers, to stay runnable on a 2-core CPU
        config = transformers.PegasusConfig(
            vocab_size=96103,
            d_model=256,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=1024,
            decoder_ffn_dim=1024,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        model, tok_from = transformers.PegasusForConditionalGeneration(config), "tiny:pegasus"
    else:
        raise SystemExit(f"bench.py: unknown model {kind!r}: use one of {', '.join(KINDS)}")
    tokenizer = load_target(tok_from).tokenizer
    # The zoo's tokenizer has a few hundred tokens; widen it to the model's vocabulary so that every
    # generated id has a text, as with a real checkpoint (else generated_ids_within_tokenizer fires and
    # the checks are timed building violation messages, not passing).
    width = model.get_output_embeddings().weight.shape[0]
    tokenizer.add_tokens([f"<bench_{i}>" for i in range(width - len(tokenizer))], special_tokens=True)
    return model, tokenizer


def build(kind: str, device: str = "cpu", dtype: str = "float32") -> Any:
    """A random model of ``kind`` (see :func:`build_model`) as a ppinvariants Target on ``device`` in ``dtype``."""
    from ppinvariants.targets import resolve_device, resolve_dtype

    return _finish(kind, *build_model(kind), resolve_device(device), resolve_dtype(dtype))


# Factories for `ppinvariants check benchmarks/bench.py:bart_large` and the shipped suite's --ppi-model
# (benchmarks/gpu.sh runs both on the GPU): the same random models, moved by --device and --dtype.
def bart_large() -> tuple[Any, Any]:
    return build_model("bart-large")


def pegasus_large() -> tuple[Any, Any]:
    return build_model("pegasus-large")


def pegasus_96k() -> tuple[Any, Any]:
    return build_model("pegasus-96k")


def fixed(steps: int, name: str = "greedy") -> Decoding:
    """The default check's decoding ``name`` (greedy, beam, sample), generating exactly ``steps`` tokens
    (eos banned throughout)."""
    base = next(d for d in DEFAULT_DECODINGS if d.name == name)
    return base.replace(max_new_tokens=steps, min_length=steps + 2, min_new_tokens=None)


def texts(n: int) -> list[str]:
    return [DEFAULT_TEXTS[i % len(DEFAULT_TEXTS)] for i in range(n)]


def bare(target: Any, batch_texts: list[str], decoding: Decoding, scores: bool = True) -> None:
    enc = target.tokenizer(batch_texts, return_tensors="pt", padding=True).to(target.device)
    with torch.no_grad():
        target.model.generate(**enc, **decoding.generate_kwargs(), output_scores=scores, return_dict_in_generate=True)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_times(base: Callable[[], Any], other: Callable[[], Any], reps: int) -> tuple[float, float, float]:
    """``(base, other, ratio)``: median times of ``base`` and ``other`` run in alternation (each once to warm
    up), and the median of the per-pair ratios ``other / base``. A load that drifts on a shared machine then
    weighs on both sides of each ratio alike, instead of on whichever ran in the noisy seconds."""
    base()
    other()
    pairs = []
    for _ in range(reps):
        pair = []
        for fn in (base, other):
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            pair.append(time.perf_counter() - t0)
        pairs.append(pair)
    return (
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        statistics.median(p[1] / p[0] for p in pairs),
    )


def record_checks(target: Any, batch_texts: list[str], decoding: Decoding) -> None:
    record = capture(target, batch_texts, decoding, evidence=False)
    run_invariants(record)


#: The standard evidence's pieces (Evidence.seconds keys), as the breakdown names them.
_PIECES = {
    "grad": "teacher-forced pass + the pass with autograd and its backward",
    "layouts": "teacher-forced reversed batch + each input alone",
    "rerun": "sampling's determinism re-run",
}


def breakdown(target: Any, batch_texts: list[str], decodings: list[Decoding], t_gen: float) -> str:
    """One default check's time split into capture, each standard evidence piece and judging, each as a
    multiple of ``t_gen`` (bare generate() of the same decodings): where a ratio above 1 comes from."""
    parts: dict[str, float] = {"capture (generate with scores and logits)": 0.0}
    parts.update({name: 0.0 for name in _PIECES.values()})
    parts["judging every invariant"] = 0.0
    for d in decodings:
        _sync()
        t0 = time.perf_counter()
        record = capture(target, batch_texts, d, evidence="standard")
        _sync()
        spent = sum(record.evidence.seconds.values())
        parts["capture (generate with scores and logits)"] += time.perf_counter() - t0 - spent
        for key, seconds in record.evidence.seconds.items():
            parts[_PIECES.get(key, key)] = parts.get(_PIECES.get(key, key), 0.0) + seconds
        t0 = time.perf_counter()
        run_invariants(record)
        parts["judging every invariant"] += time.perf_counter() - t0
    return "; ".join(f"{name} {seconds / t_gen:.2f}" for name, seconds in parts.items())


def naive_vs_vectorized(record: Any, reps: int) -> tuple[float, float]:
    """Seconds for a notebook-style per-element loop vs the vectorized gather/indexing comparison."""

    def naive() -> None:
        lp = step_logprobs(record)
        toks = generated_tokens(record)
        gathered = chosen_logprobs(record)
        for r in range(toks.shape[0]):
            for t in range(toks.shape[1]):
                assert abs(float(lp[r, t, int(toks[r, t])]) - float(gathered[r, t])) <= 1e-4

    def vectorized() -> None:
        REGISTRY["chosen_logprob_gather_matches_indexing"].check(record)

    return median_time(naive, reps), median_time(vectorized, reps)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(mode: str, kind: str, rows: int, steps: int) -> None:
    """In a fresh process: run one mode and print how far its peak RSS rose above the RSS before it (MiB).

    Building a random BART-large-size model peaks at about 2 GiB (initialisation temporaries), above what a
    small generation adds: the peak mark is reset after the build where the kernel allows it.
    """
    torch.set_num_threads(2)
    target = build(kind)
    batch_texts, decoding = texts(rows), fixed(steps)
    bare(target, batch_texts[:2], fixed(2), scores=False)  # allocator and kernels warm, as in every mode
    resettable = _reset_peak()
    before = _status_mib("VmRSS") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode == "bare":
        bare(target, batch_texts, decoding, scores=False)
    elif mode == "record":
        record_checks(target, batch_texts, decoding)
    else:
        from ppinvariants.streaming import run_streaming

        run_streaming(target, batch_texts, decoding)
    after = _status_mib("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "before": before, "peak": after, "rise": after - before}))


def memory(kind: str, rows: int, steps: int) -> dict[str, float]:
    """Peak RSS rise (MiB) of each mode over the loaded model, each mode in a fresh process."""
    out = {}
    for mode in ("bare", "record", "streaming"):
        cmd = [sys.executable, __file__, "--_memory", mode, kind, str(rows), str(steps)]
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        out[mode] = json.loads(line)["rise"]
    return out


def gpu_memory(target: Any, rows: int, steps: int) -> dict[str, float]:
    """Peak GPU memory (MiB) each mode allocates above the loaded model, in this process (CUDA only)."""
    from ppinvariants.streaming import run_streaming

    batch_texts, decoding = texts(rows), fixed(steps)
    modes = {
        "bare": lambda: bare(target, batch_texts, decoding, scores=False),
        "bare+scores": lambda: bare(target, batch_texts, decoding, scores=True),
        "record": lambda: record_checks(target, batch_texts, decoding),
        "streaming": lambda: run_streaming(target, batch_texts, decoding),
    }
    out = {}
    bare(target, batch_texts[:2], fixed(2), scores=False)  # kernels and allocator warm
    for mode, fn in modes.items():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        out[mode] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def suite_seconds(specs: list[str], workers: int) -> float:
    """Wall time of the shipped suite (``pytest --pyargs ppinvariants.suite``) on ``specs`` with ``workers``
    pytest-xdist workers (0: in-process), one torch thread per worker, run from an empty directory."""
    import os
    import tempfile

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "ppinvariants.suite"]
    cmd += [f"--ppi-model={spec}" for spec in specs] + ["-n", str(workers)]
    if workers:
        cmd += ["--dist", "loadgroup"]  # each target's tests on one worker, which loads it once
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as cwd:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"the suite failed ({done.returncode}): {done.stdout[-500:]}")
    return elapsed


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"machine: {cpu}, {torch.get_num_threads()} torch threads available; python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )


README_START, README_END = "<!-- performance:start -->", "<!-- performance:end -->"


def write_readme(argv: list[str], load: float, said: list[str], rows: list[str]) -> None:
    """Replace README.md's performance block with this run: the date, the command, the machine and its
    load at the start, every line the run printed, and the table. Never hand-edited: the figures in the
    README are the ones a named run printed."""
    import datetime
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    command = " ".join(["python", "benchmarks/bench.py", *argv])
    block = (
        f"Measured on {datetime.date.today().isoformat()} by `{command}`, one run, load average {load:.1f} "
        "at the start. What the run printed:\n\n```\n"
        + "\n".join(line.strip("\n") for line in said)
        + "\n```\n\n"
        + "\n".join(rows)
    )
    i, j = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:i] + "\n" + block + "\n" + text[j:], encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small workloads, fewer repetitions")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the models run")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    p.add_argument(
        "--models", default="bart-large,pegasus-96k", help="comma-separated: bart-large, pegasus-96k, pegasus-large"
    )
    p.add_argument("--sections", default="abcdef", help="which measurements to run (default: all of abcdef)")
    p.add_argument(
        "--readme",
        action="store_true",
        help="write the results, dated, into README.md's performance block (between its markers)",
    )
    p.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._memory:
        mode, kind, rows, steps = args._memory
        memory_child(mode, kind, int(rows), int(steps))
        return
    import os

    load = os.getloadavg()[0]
    said: list[str] = []

    def say(line: str) -> None:
        print(line)
        said.append(line)

    on_gpu = args.device.startswith("cuda")
    # 2 shared cores: (a)/(b) run at batch 4 x 16 (not the default 8 x 8-text, 24-token workload) to fit ~10 min
    reps = 3
    batch, steps = (4, 8) if args.quick else (4, 16)
    mem_rows, mem_steps = (16, 16) if args.quick else (64, 64)
    d_rows, d_steps = (4, 8) if args.quick else (16, 32)
    sections = set(args.sections)
    say(environment())
    if on_gpu:
        say(f"device: {torch.cuda.get_device_name(torch.device(args.device))}, dtype {args.dtype}")
    say(
        f"workload: batch {batch} x {steps} new tokens (eos banned); (a) greedy, (b) the default check's three "
        f"decodings (greedy, beam 4/2, sampling); ratios: medians over {reps} alternating pairs ((a) under a second: {3 * reps}), --thorough 1 run\n"
    )
    table = []
    for kind in args.models.split(","):
        target = build(kind, args.device, args.dtype)
        bt, dec = texts(batch), fixed(steps)
        for threads in (1, 2) if "a" in sections else ():
            torch.set_num_threads(threads)
            _sync()
            t0 = time.perf_counter()
            bare(target, bt, dec)  # also the warm-up
            _sync()
            reps_a = reps if time.perf_counter() - t0 > 1.0 else 3 * reps
            # Short runs: more pairs where one costs under a second (the 96k model), 3 for BART-large at 1 thread.
            t_bare, t_rec, ratio = paired_times(
                partial(bare, target, bt, dec), partial(record_checks, target, bt, dec), reps_a
            )
            say(f"(a) {kind} {threads} thr: bare {t_bare:.3f}s, +capture+checks {t_rec:.3f}s, ratio {ratio:.3f}")
            table.append((f"(a) capture + record checks / bare generate, {kind}, {threads} thr", ratio, "<= 1.05"))
        torch.set_num_threads(2)
        if "b" in sections:
            decs = [fixed(steps, d.name) for d in DEFAULT_DECODINGS if d.name in ("greedy", "beam", "sample")]
            t_gen, t_std, r_std = paired_times(
                lambda: [bare(target, bt, d, scores=False) for d in decs],  # noqa: B023
                partial(check_loaded, target, texts=bt, decodings=decs, streaming=False),
                reps,
            )
            t_cap = median_time(lambda: [capture(target, bt, d, evidence=False) for d in decs], reps)  # noqa: B023
            t_thr = median_time(
                partial(check_loaded, target, texts=bt, decodings=decs, streaming=False, evidence="thorough"), 1
            )
            say(
                f"(b) {kind}, greedy + beam + sample: generate() alone {t_gen:.2f}s; capture (scores, logits) "
                f"{t_cap:.2f}s; default check {t_std:.2f}s (ratio {r_std:.2f}); --thorough {t_thr:.2f}s "
                f"(ratio {t_thr / t_gen:.2f})"
            )
            say(
                f"(b) {kind}, where the default check's time goes, in bare generate() calls: {breakdown(target, bt, decs, t_gen)}"
            )
            table.append((f"(b) default check / bare generate, 3 decodings, {kind}", r_std, "<= 1.5"))
            table.append((f"(b) check --thorough / bare generate, 3 decodings, {kind}", t_thr / t_gen, "(no target)"))
        if "d" in sections:
            record = capture(target, texts(d_rows), fixed(d_steps), evidence=False)
            t_naive, t_vec = naive_vs_vectorized(record, reps)
            say(f"(d) {kind}, {d_rows} x {d_steps}: naive loop {t_naive * 1e3:.1f} ms, vectorized {t_vec * 1e3:.1f} ms")
            table.append((f"(d) naive Python loop / vectorized gather check, {kind}", t_naive / t_vec, "speed-up"))
        if "f" in sections and on_gpu:
            mem = gpu_memory(target, mem_rows, mem_steps)
            say(
                f"(f) {kind} {args.dtype} batch {mem_rows} x {mem_steps}: peak GPU memory above the model: "
                + ", ".join(f"{mode} {mib:.0f} MiB" for mode, mib in mem.items())
            )
            table.append(
                (
                    f"(f) streaming / bare generate peak GPU memory, {kind}, {args.dtype}",
                    mem["streaming"] / mem["bare"],
                    "<= 1.1",
                )
            )
        target = None  # the model is freed before the next one is built
    if "e" in sections:
        specs = ["tiny:bart"] if args.quick else ["tiny:bart", "tiny:t5"]
        suite_seconds(specs, 0)  # builds/loads the tiny models once, outside the timing
        serial = statistics.median(suite_seconds(specs, 0) for _ in range(2))
        parallel = statistics.median(suite_seconds(specs, 2) for _ in range(2))
        say(
            f"(e) shipped suite on {' '.join(specs)}: 1 worker {serial:.1f}s, 2 workers (-n 2 --dist loadgroup) {parallel:.1f}s"
        )
        table.append((f"(e) shipped suite, 1 worker / 2 workers, {' + '.join(specs)}", serial / parallel, "speed-up"))
    if "c" in sections and not on_gpu:
        mem = memory("bart-large", mem_rows, mem_steps)
        rec_extra, stream_extra = mem["record"] - mem["bare"], mem["streaming"] - mem["bare"]
        say(
            f"(c) bart-large batch {mem_rows} x {mem_steps}: peak RSS rise over the loaded model: generate() alone "
            f"{mem['bare']:.0f} MiB, record mode {mem['record']:.0f} MiB (+{rec_extra:.0f} over generate), "
            f"streaming {mem['streaming']:.0f} MiB (+{stream_extra:.0f})"
        )
        table.append(
            (
                f"(c) streaming extra / record extra peak RSS, {mem_rows}x{mem_steps}",
                stream_extra / rec_extra if rec_extra > 0 else float("nan"),
                "<= 0.10",
            )
        )
    rows = ["| measurement | value | target |", "|---|---|---|"]
    rows += [f"| {name} | {value:.3f} | {target} |" for name, value, target in table]
    print("\n" + "\n".join(rows))
    if args.readme:
        write_readme(sys.argv[1:], load, said, rows)


if __name__ == "__main__":
    main()
