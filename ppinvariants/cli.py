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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _check(args)
    except KeyboardInterrupt:
        sys.stderr.write("ppinvariants: interrupted\n")
        return EXIT_USAGE


def _check(args: argparse.Namespace) -> int:
    import dataclasses

    from . import testing
    from .capture import DEFAULT_DECODINGS, DEFAULT_TEXTS
    from .errors import PPIError
    from .report import render_text
    from .runner import check

    _quiet_transformers()
    specs = args.targets or [f"tiny:{a}" for a in testing.ARCHITECTURES]
    texts = args.text if args.text else list(DEFAULT_TEXTS)
    decodings = [dataclasses.replace(d, seed=args.seed) for d in DEFAULT_DECODINGS]
    progress = None
    if not args.quiet and sys.stderr.isatty():

        def progress(msg: str) -> None:
            sys.stderr.write(f"\r\033[K  checking {msg}")
            sys.stderr.flush()

    try:
        report = check(
            specs,
            texts=texts,
            decodings=decodings,
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            allow_pickle=args.allow_pickle,
            progress=progress,
        )
    except PPIError as e:
        sys.stderr.write(f"ppinvariants: error: {e}\n")
        return EXIT_USAGE
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
