"""``ppinvariants`` command line: a thin shell over :mod:`ppinvariants.runner`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other bad input
        sys.stderr.write(f"ppinvariants: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ppinvariants", description="Invariant checks for seq2seq generate() outputs.")
    p.add_argument("--version", action="version", version=f"ppinvariants {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="check targets (default: every built-in tiny model)")
    c.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="checkpoint dir, tiny:<arch>, FILE.py:FUNC, package.module:FUNC, or a cached hub id",
    )
    c.add_argument("--json", metavar="PATH", help="write the JSON report to PATH")
    c.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    c.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    c.add_argument("--text", action="append", metavar="TEXT", help="input text (repeatable; default: built-in set)")
    c.add_argument("--seed", type=int, default=0, help="seed for generation (default 0)")
    c.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    c.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")
    c.add_argument("-v", "--verbose", action="store_true", help="print conventions and skipped checks")
    c.add_argument("-q", "--quiet", action="store_true", help="print only the summary line per target")
    c.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    c.add_argument(
        "--streaming",
        action="store_true",
        default=None,
        help="judge per-step invariants inside generate(), keeping no step scores (default: automatic by size)",
    )
    c.add_argument(
        "--thorough",
        action="store_true",
        help="re-run the model for every consistency check: each input alone, every decoding twice, top-1 "
        "sampling, train mode, generate() with autograd (default: standard evidence, about 3x a bare generate)",
    )

    st = sub.add_parser("selftest", help="inject faults into tiny models and show which invariants catch them")
    st.add_argument("--json", metavar="PATH", help="write the self-test table as JSON to PATH")
    st.add_argument("--fault", action="append", metavar="NAME", help="run only this fault (repeatable)")
    st.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")

    ex = sub.add_parser("explain", help="show a greedy generation token by token")
    ex.add_argument("target", metavar="TARGET")
    ex.add_argument("text", metavar="TEXT")
    ex.add_argument("--top-k", type=int, default=5, help="next tokens shown per step (default 5)")
    ex.add_argument("--max-new-tokens", type=int, default=24)
    ex.add_argument("--plot", metavar="FILE.png", help="draw entropy and chosen-token probability per step")
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--dtype", default="float32")

    sn = sub.add_parser("snapshot", help="record generated tokens and log-probs, to compare in another environment")
    sn.add_argument("target", metavar="TARGET")
    sn.add_argument("-o", "--output", required=True, metavar="FILE", help="snapshot file to write (JSON)")
    sn.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    sn.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    sn.add_argument("--text", action="append", metavar="TEXT", help="input text (repeatable; default: built-in set)")
    sn.add_argument("--seed", type=int, default=0, help="seed for generation (default 0)")
    sn.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    sn.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")

    cm = sub.add_parser("compare", help="re-run a snapshot's inputs on TARGET; exit 1 on token changes or drift")
    cm.add_argument("snapshot", metavar="FILE")
    cm.add_argument("target", nargs="?", metavar="TARGET", help="default: the snapshot's target")
    cm.add_argument("--atol", type=float, help="log-prob tolerance (default by dtype: fp32 1e-4, fp16 1e-2, bf16 5e-2)")
    cm.add_argument("--device", help="default: the snapshot's device")
    cm.add_argument("--dtype", help="default: the snapshot's dtype")
    cm.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    cm.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")

    cv = sub.add_parser("coverage", help="check every tiny architecture under greedy/beam/sample; print a table")
    cv.add_argument("arch", nargs="*", metavar="ARCH", help="tiny architectures (default: all of the zoo)")
    cv.add_argument("--markdown", action="store_true", help="print the table as markdown")
    cv.add_argument("--thorough", action="store_true", help="thorough evidence, as `check --thorough`")
    cv.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .errors import PPIError

    try:
        _quiet_transformers()
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return _COMMANDS[args.command](args)
    except PPIError as e:
        sys.stderr.write(f"ppinvariants: error: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("ppinvariants: interrupted\n")
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr.close()
        return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    import dataclasses

    from . import zoo
    from .capture import DEFAULT_DECODINGS, DEFAULT_TEXTS
    from .report import render_text
    from .runner import check

    specs = args.targets or [f"tiny:{a}" for a in zoo.ARCHITECTURES]
    texts = args.text if args.text else list(DEFAULT_TEXTS)
    decodings = [dataclasses.replace(d, seed=args.seed) for d in DEFAULT_DECODINGS]
    progress = _progress(quiet=args.quiet)
    report = check(
        specs,
        texts=texts,
        decodings=decodings,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        progress=progress,
        streaming=args.streaming,
        evidence="thorough" if args.thorough else "standard",
    )
    if progress:
        sys.stderr.write("\r\033[K")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json())
    for t in report.targets:
        if t.error:
            sys.stderr.write(f"ppinvariants: error: {t.error}\n")
    if args.quiet:
        for t in report.targets:
            print(f"{t.target}: {t.status}")
    else:
        print(render_text(report, verbose=args.verbose))
    return report.exit_code


def _selftest(args: argparse.Namespace) -> int:
    from .selftest import FAULTS, report_json, run_selftest

    faults = FAULTS
    if args.fault:
        known = {f.name: f for f in FAULTS}
        unknown = [n for n in args.fault if n not in known]
        if unknown:
            from .errors import UsageError

            raise UsageError(f"unknown fault {unknown[0]!r}; known: {', '.join(known)}")
        faults = tuple(known[n] for n in args.fault)
    progress = _progress(quiet=False)
    report = run_selftest(faults, progress=progress)
    if progress:
        sys.stderr.write("\r\033[K")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report_json(report))
    print(report.render())
    return EXIT_OK if report.ok else EXIT_VIOLATION


def _explain(args: argparse.Namespace) -> int:
    import dataclasses

    from .capture import GREEDY, encode
    from .explain import explain, plot, render
    from .targets import load_target

    target = load_target(args.target, device=args.device, dtype=args.dtype)
    encode(target.tokenizer, [args.text], target.model)  # empty text etc.: one clear line
    decoding = dataclasses.replace(GREEDY, max_new_tokens=args.max_new_tokens, min_length=None)
    steps = explain(target, args.text, top_k=args.top_k, decoding=decoding)
    print(f"{args.target}: {args.text!r}")
    print(render(steps, vocab_size=int(target.model.get_output_embeddings().weight.shape[0])))
    if args.plot:
        print(f"plot written to {plot(steps, args.plot)}")
    return EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:
    import dataclasses

    from .capture import DEFAULT_DECODINGS
    from .snapshot import take_snapshot, write_snapshot
    from .targets import load_target

    target = load_target(
        args.target,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    decodings = [dataclasses.replace(d, seed=args.seed) for d in DEFAULT_DECODINGS]
    snapshot = take_snapshot(target, args.text or None, decodings)
    path = write_snapshot(snapshot, args.output)
    rows = sum(len(run["rows"]) for run in snapshot["runs"])
    print(
        f"ppinvariants: snapshot of {args.target} ({len(snapshot['inputs'])} inputs, "
        f"{', '.join(d.name for d in decodings)}: {rows} rows) written to {path}"
    )
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from .snapshot import compare_snapshot, load_snapshot
    from .targets import load_target

    snapshot = load_snapshot(args.snapshot)  # a missing or corrupt file: one line, exit 2, before loading a model
    env = snapshot["environment"]
    target = load_target(
        args.target or snapshot["target"],
        device=args.device or str(env.get("device", "cpu")),
        dtype=args.dtype or str(env.get("dtype", "float32")),
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    comparison = compare_snapshot(snapshot, target, atol=args.atol)
    print(comparison.render())
    return EXIT_OK if comparison.ok else EXIT_VIOLATION


def _progress(*, quiet: bool):  # noqa: ANN202 - a callable or None
    if quiet or not sys.stderr.isatty():
        return None

    def progress(msg: str) -> None:
        sys.stderr.write(f"\r\033[K  {msg}")
        sys.stderr.flush()

    return progress


def _coverage(args: argparse.Namespace) -> int:
    from . import zoo
    from .coverage import render_markdown, render_text, run_coverage

    unknown = [a for a in args.arch if a not in zoo.RECIPES and a not in zoo.UNAVAILABLE]
    if unknown:
        sys.stderr.write(f"ppinvariants: error: unknown tiny architecture(s) {', '.join(unknown)}\n")
        return EXIT_USAGE
    cov = run_coverage(args.arch or None, evidence="thorough" if args.thorough else "standard")
    print(render_markdown(cov) if args.markdown else render_text(cov))
    return cov.exit_code


_COMMANDS = {"check": _check, "selftest": _selftest, "explain": _explain, "snapshot": _snapshot, "compare": _compare}
_COMMANDS["coverage"] = _coverage


def _quiet_transformers() -> None:
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", message=".*sacremoses.*")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
