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


def _common_parsers() -> dict[str, argparse.ArgumentParser]:
    """Options shared by several commands, as argparse parent parsers (one definition, one help text)."""
    load = argparse.ArgumentParser(add_help=False)
    load.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    load.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    load.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    load.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")
    inputs = argparse.ArgumentParser(add_help=False)
    inputs.add_argument(
        "--text", action="append", metavar="TEXT", help="input text (repeatable; default: built-in set)"
    )
    inputs.add_argument("--seed", type=int, default=0, help="seed for generation (default 0)")
    _decoding_options(inputs)
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return {"load": load, "inputs": inputs, "threads": threads, "quiet": quiet}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ppinvariants",
        description="Invariant checks for seq2seq generate() outputs.",
        epilog="Run `ppinvariants COMMAND -h` for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"ppinvariants {__version__}")
    common = _common_parsers()
    load, inputs, threads, quiet = common["load"], common["inputs"], common["threads"], common["quiet"]
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    c = sub.add_parser(
        "check", parents=[load, inputs, threads], help="check targets (default: every built-in tiny model)"
    )
    c.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="checkpoint dir, tiny:<arch>, FILE.py:FUNC, package.module:FUNC, or a cached hub id",
    )
    c.add_argument("--json", metavar="PATH", help="write the JSON report to PATH")
    c.add_argument("-v", "--verbose", action="store_true", help="print conventions and skipped checks")
    c.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary line per target, and no progress lines"
    )
    c.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="judge per-step invariants inside generate(), keeping no step scores; the checks that need them are "
        "not judged, and the summary says how many (default: automatic, above 512 MiB of step tensors)",
    )
    c.add_argument(
        "--device-map",
        metavar="MAP",
        help="load each checkpoint sharded through transformers/accelerate instead of onto --device: auto, "
        'balanced, balanced_low_0, sequential, or a JSON object of module name to device (an int GPU, "cpu", "disk")',
    )
    c.add_argument(
        "--max-memory",
        metavar="JSON",
        help='with --device-map: memory per device, e.g. \'{"0": "20GiB", "cpu": "60GiB"}\'',
    )
    c.add_argument(
        "--offload-folder",
        metavar="DIR",
        help='with --device-map: where modules on "disk" are kept (default: a temporary folder, removed at exit)',
    )
    c.add_argument(
        "--strict",
        action="store_true",
        help="a check that applies but was not judged (streaming mode, missing evidence) fails; "
        "checks left to --thorough and checks that do not apply stay skipped",
    )
    c.add_argument(
        "--thorough",
        action="store_true",
        help="re-run the model for every consistency check: each input alone, every decoding twice, top-1 "
        "sampling, train mode, generate() with autograd (default: standard evidence, about 3x a bare generate)",
    )

    st = sub.add_parser(
        "selftest",
        parents=[threads, quiet],
        help="inject faults into tiny models and show which invariants catch them",
    )
    st.add_argument("--json", metavar="PATH", help="write the self-test table as JSON to PATH")
    st.add_argument("--fault", action="append", metavar="NAME", help="run only this fault (repeatable)")

    ex = sub.add_parser("explain", parents=[quiet], help="show a greedy generation token by token")
    ex.add_argument("target", metavar="TARGET")
    ex.add_argument(
        "text", metavar="TEXT", help="the input text; for a speech or vision model, a default input's number"
    )
    ex.add_argument("--top-k", type=int, default=5, help="next tokens shown per step (default 5)")
    ex.add_argument("--max-new-tokens", type=int, default=24)
    ex.add_argument("--plot", metavar="FILE.png", help="draw entropy and chosen-token probability per step")
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--dtype", default="float32")

    sn = sub.add_parser(
        "snapshot",
        parents=[load, inputs, quiet],
        help="record generated tokens and log-probs, to compare in another environment",
    )
    sn.add_argument("target", metavar="TARGET")
    sn.add_argument("-o", "--output", required=True, metavar="FILE", help="snapshot file to write (JSON)")

    cm = sub.add_parser(
        "compare", parents=[quiet], help="re-run a snapshot's inputs on TARGET; exit 1 on token changes or drift"
    )
    cm.add_argument("snapshot", metavar="FILE")
    cm.add_argument("target", nargs="?", metavar="TARGET", help="default: the snapshot's target")
    cm.add_argument("--atol", type=float, help="log-prob tolerance (default by dtype: fp32 1e-4, fp16 1e-2, bf16 5e-2)")
    cm.add_argument("--device", help="default: the snapshot's device")
    cm.add_argument("--dtype", help="default: the snapshot's dtype")
    cm.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    cm.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")

    cv = sub.add_parser(
        "coverage",
        parents=[threads, quiet],
        help="check every tiny architecture under greedy/beam/sample; print a table",
    )
    cv.add_argument("arch", nargs="*", metavar="ARCH", help="tiny architectures (default: all of the zoo)")
    cv.add_argument("--markdown", action="store_true", help="print the table as markdown")
    cv.add_argument("--thorough", action="store_true", help="thorough evidence, as `check --thorough`")
    return p


def _decoding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decoding",
        action="append",
        metavar="NAME=JSON",
        help="a decoding to run: any generate() settings on top of the checkpoint's generation config, e.g. "
        'beam5=\'{"num_beams": 5, "repetition_penalty": 1.3}\'; NAME=@FILE.json reads them from a file; a bare '
        "greedy, beam, sample or checkpoint picks a built-in (repeatable; default: greedy, beam, sample, checkpoint)",
    )
    p.add_argument(
        "--generation-config",
        action="append",
        metavar="FILE.json",
        help="a generation_config.json to run as a decoding named after the file (repeatable)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ppinvariants`: the commands, and exit 2 as for any incomplete command line
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import progress
    from .errors import PPIError

    sink = progress.stderr_sink(quiet=bool(getattr(args, "quiet", False)))
    try:
        if sink is not None and args.command in ("check", "coverage", "selftest"):
            sink(f"{args.command}, version {__version__} (progress lines on stderr; --quiet turns them off)")
        _quiet_transformers()
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        with progress.reporting(sink):
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
    finally:
        if sink is not None:
            sink.clear()


def _check(args: argparse.Namespace) -> int:

    from . import zoo
    from .decoding import DEFAULT_TEXTS, decodings_from_options
    from .report import render_text
    from .runner import check

    specs = args.targets or [f"tiny:{a}" for a in zoo.ARCHITECTURES]
    texts = args.text if args.text else list(DEFAULT_TEXTS)
    decodings = decodings_from_options(args.decoding, args.generation_config, seed=args.seed)
    report = check(
        specs,
        texts=texts,
        decodings=decodings,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        streaming=args.streaming,
        evidence="thorough" if args.thorough else "standard",
        strict=args.strict,
        device_map=args.device_map,
        max_memory=args.max_memory,
        offload_folder=args.offload_folder,
    )
    _clear_progress()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json())
    for t in report.targets:
        if t.error:
            sys.stderr.write(f"ppinvariants: error: {t.error}\n")
    if args.quiet:
        for t in report.targets:
            print(f"{t.target}: {t.summary}")
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
    from .progress import say

    report = run_selftest(faults, progress=say)
    _clear_progress()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report_json(report))
    print(report.render())
    return EXIT_OK if report.ok else EXIT_VIOLATION


def _explain(args: argparse.Namespace) -> int:

    from .capturing import encode
    from .decoding import GREEDY
    from .explain import explain, plot, render
    from .targets import load_target

    target = load_target(args.target, device=args.device, dtype=args.dtype)
    given: object = args.text
    if target.modality != "text":  # TEXT names one of the default clips or images
        from .capturing import default_inputs
        from .errors import UsageError

        defaults = default_inputs(target)
        if not args.text.isdigit() or int(args.text) >= len(defaults):
            raise UsageError(
                f"{args.target} takes {target.modality} inputs: give the number of a default input "
                f"(0 to {len(defaults) - 1}) as TEXT, not {args.text!r}"
            )
        given = defaults[int(args.text)]
    else:
        encode(target.tokenizer, [args.text], target.model)  # empty text etc.: one clear line
    decoding = GREEDY.replace(max_new_tokens=args.max_new_tokens, min_length=None)
    steps = explain(target, given, top_k=args.top_k, decoding=decoding)
    print(f"{args.target}: {args.text!r}")
    print(render(steps, vocab_size=int(target.model.get_output_embeddings().weight.shape[0])))
    if args.plot:
        print(f"plot written to {plot(steps, args.plot, target=args.target, text=args.text)}")
    return EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:

    from .decoding import decodings_from_options
    from .snapshot import take_snapshot, write_snapshot
    from .targets import load_target

    decodings = decodings_from_options(args.decoding, args.generation_config, seed=args.seed)
    target = load_target(
        args.target,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
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


def _clear_progress() -> None:
    """Wipe a progress line left on a terminal before the report is printed."""
    from .progress import _sinks

    for sink in _sinks:
        clear = getattr(sink, "clear", None)
        if clear is not None:
            clear()


def _coverage(args: argparse.Namespace) -> int:
    from . import zoo
    from .coverage import render_markdown, render_text, run_coverage

    unknown = [a for a in args.arch if a not in zoo.RECIPES and a not in zoo.UNAVAILABLE]
    if unknown:
        sys.stderr.write(f"ppinvariants: error: unknown tiny architecture(s) {', '.join(unknown)}\n")
        return EXIT_USAGE
    cov = run_coverage(args.arch or None, evidence="thorough" if args.thorough else "standard")
    _clear_progress()
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
