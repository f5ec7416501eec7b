"""pytest plugin: check your own models' ``generate()`` outputs from your test suite.

Registered through the ``pytest11`` entry point, so it is active wherever ppinvariants is
installed. Importing it imports neither torch nor transformers: they load inside the fixtures.

Options (group ``ppinvariants``)::

    --ppi-model TARGET      a target to check (repeatable): checkpoint dir, tiny:<arch>,
                            FILE.py:FUNC, package.module:FUNC or a cached hub id
    --ppi-device DEVICE     cpu (default), cuda, cuda:N or auto
    --ppi-dtype DTYPE       float32 (default), float16 or bfloat16
    --ppi-trust-remote-code / --ppi-allow-pickle   as in ``ppinvariants check``
    --ppi-regen             rewrite the ``ppi_snapshot`` files instead of comparing against them
    --ppi-decoding NAME=JSON   a decoding (repeatable): generate() settings on top of the checkpoint's
                            generation config, NAME=@FILE.json, or greedy/beam/sample/checkpoint
    --ppi-generation-config FILE.json   a generation_config.json as a decoding (repeatable)

ini keys ``ppi_models`` (one target per line) and ``ppi_decodings`` (one decoding per line) pin targets
and decodings in ``pytest.ini`` / ``pyproject.toml``; the command-line options replace them.

Fixtures:

* ``ppi_target``: the loaded :class:`~ppinvariants.targets.Target` (session scope). Tests that
  request it, directly or through another fixture, are parametrized over the configured targets
  (test id: the target spec). Each target is loaded once per process. Without any configured
  target they are skipped ("no --ppi-model given"), unless the test carries
  ``@pytest.mark.ppi_default_targets(spec, ...)`` (the shipped suite defaults to every tiny model).
* ``ppi_decoding``: a :class:`~ppinvariants.decoding.Decoding`; tests that request it are parametrized
  over the configured decodings (test id: the decoding's name).
* ``ppi_capture``: ``(texts, decoding=GREEDY, **capture_kwargs) -> GenerationRecord`` for the current target.
* ``ppi_assert_invariants``: ``(record, invariants=None) -> list[Result]``; fails the test with
  the violations (message, context, reproduction line) and no traceback when an invariant fails.
* ``ppi_logprob_check``: ``(fn, **kwargs) -> LogprobCheck``: a training loop's own sequence log-prob function
  ``fn(model, sequences, attention_mask, prompt_length, ...)`` held against ``sequence_logprobs`` on the current
  target's captured batches (see :func:`ppinvariants.logprob_check.check_logprob_fn`); a row that differs
  fails the test with the diagnosis (row, input, expected and found, the likely cause) and no traceback.
* ``ppi_snapshot``: ``.check(target, texts=None, decodings=None, *, atol=None, basename=None)``
  compares generated tokens and log-probs against ``<test dir>/snapshots/<test name>.json``
  (pytest-regressions style: created on the first run, which fails; ``--ppi-regen`` rewrites it);
  see :class:`ppinvariants.snapshot.SnapshotFixture`.

Markers: ``ppi_gpu`` (skipped unless ``torch.cuda.is_available()``) and ``ppi_default_targets``.

Its length (about 590 lines): pytest finds options, hooks and fixtures in the one module the
``pytest11`` entry point names, so they stay together here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

from . import __version__

if TYPE_CHECKING:
    from .decoding import Decoding
    from .invariants import Invariant
    from .logprob_check import LogprobCheck
    from .record import GenerationRecord
    from .report import Result
    from .snapshot import SnapshotFixture
    from .targets import Target

__all__ = [
    "InvariantsFailed",
    "assert_invariants",
    "configured_decodings",
    "configured_targets",
    "render_failures",
    "strict_enabled",
]

NO_TARGET_REASON = "no --ppi-model given"
_CACHE = pytest.StashKey[dict]()
_NO_TARGET = pytest.StashKey[list]()  # node ids of the tests skipped for want of a target
_CONFIG: list[pytest.Config] = []  # the running config, for assert_invariants called outside a fixture


class InvariantsFailed(AssertionError):
    """Raised by :func:`assert_invariants` inside a Hypothesis test (so that Hypothesis can shrink
    it); the plugin reports it as its message and Hypothesis' notes, without a traceback."""


class _UnloadableTarget:
    """What ``ppi_target`` holds for a target that cannot be loaded: the first test that needs it
    fails with the reason; the others are skipped as depending on that one."""

    def __init__(self, spec: str, error: Exception) -> None:
        self.spec, self.error = spec, error
        self.first: str | None = None

    def __repr__(self) -> str:
        return f"<ppinvariants target {self.spec} (cannot be loaded)>"


# ------------------------------------------------------------------------------ options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ppinvariants", "ppinvariants: invariant checks for seq2seq generate() outputs")
    group.addoption(
        "--ppi-model",
        action="append",
        default=[],
        dest="ppi_models",
        metavar="TARGET",
        help="target to check (repeatable): checkpoint dir, tiny:<arch>, FILE.py:FUNC, package.module:FUNC "
        "or a cached hub id; replaces the ppi_models ini key",
    )
    group.addoption("--ppi-device", default="cpu", metavar="DEVICE", help="cpu (default), cuda, cuda:N or auto")
    group.addoption("--ppi-dtype", default="float32", metavar="DTYPE", help="float32 (default), float16 or bfloat16")
    group.addoption(
        "--ppi-device-map",
        metavar="MAP",
        help="load checkpoints sharded through transformers/accelerate instead of onto --ppi-device: auto, balanced, "
        'balanced_low_0, sequential, or a JSON object of module name to device (an int GPU, "cpu", "disk")',
    )
    group.addoption("--ppi-max-memory", metavar="JSON", help="with --ppi-device-map: memory per device (JSON object)")
    group.addoption(
        "--ppi-offload-folder",
        metavar="DIR",
        help='with --ppi-device-map: where modules on "disk" are kept (default: a temporary folder)',
    )
    group.addoption("--ppi-trust-remote-code", action="store_true", help="allow a checkpoint's own model code to run")
    group.addoption("--ppi-allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin)")
    group.addoption(
        "--ppi-thorough",
        action="store_true",
        help="ppi_capture collects thorough evidence: each input alone, every decoding twice, top-1 sampling, "
        "train mode, generate() with autograd (default: standard evidence)",
    )
    group.addoption(
        "--ppi-regen",
        action="store_true",
        help="rewrite the snapshot files of ppi_snapshot instead of comparing against them",
    )
    group.addoption(
        "--ppi-decoding",
        action="append",
        default=[],
        dest="ppi_decodings",
        metavar="NAME=JSON",
        help="a decoding for the shipped suite and ppi_decoding (repeatable): any generate() settings on top of "
        "the checkpoint's generation config, NAME=@FILE.json, or a built-in name (greedy, beam, sample, "
        "checkpoint); replaces the ppi_decodings ini key (default: the four built-ins)",
    )
    group.addoption(
        "--ppi-generation-config",
        action="append",
        default=[],
        dest="ppi_generation_configs",
        metavar="FILE.json",
        help="a generation_config.json to run as a decoding named after the file (repeatable)",
    )
    group.addoption(
        "--ppi-strict",
        action="store_true",
        default=None,
        help="a check that applies but was not judged (streaming mode, missing evidence) fails the test "
        "instead of skipping it (also: ini key ppi_strict)",
    )
    group.addoption(
        "--ppi-quiet",
        action="store_true",
        help="no ppinvariants progress lines (the first build of a tiny model, loading a target) on the terminal",
    )
    group.addoption(
        "--ppi-require-target",
        action="store_true",
        default=None,
        help="no configured target is a usage error instead of skipped tests (for CI; also: ini key ppi_require_target)",
    )
    parser.addini("ppi_models", type="linelist", default=[], help="ppinvariants targets to check, one per line")
    parser.addini("ppi_strict", type="bool", default=False, help="as --ppi-strict")
    parser.addini("ppi_require_target", type="bool", default=False, help="as --ppi-require-target")
    parser.addini(
        "ppi_decodings",
        type="linelist",
        default=[],
        help="ppinvariants decodings, one per line: NAME=JSON settings, NAME=@FILE.json or a built-in name",
    )


def _flag(config: pytest.Config, name: str) -> bool:
    """``--name`` when given, else the ini key of the same name."""
    value = config.getoption(name, default=None)
    return bool(config.getini(name)) if value is None else bool(value)


def strict_enabled(config: pytest.Config | None = None) -> bool:
    """Whether ``--ppi-strict`` (or the ini key ``ppi_strict``) is on for this run."""
    config = config if config is not None else _CONFIG[0] if _CONFIG else None
    return config is not None and _flag(config, "ppi_strict")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ppi_gpu: the test needs a CUDA GPU (skipped when torch sees none)")
    config.addinivalue_line(
        "markers",
        "ppi_default_targets(*specs): targets for ppi_target when no --ppi-model / ppi_models is configured",
    )
    # Registered by pytest-xdist too; here as well, so that the marks are known without it.
    config.addinivalue_line("markers", "xdist_group(name): run with --dist loadgroup, the group stays on one worker")
    if getattr(config, "workerinput", None) is not None and getattr(config.option, "loadgroup", False):
        config.pluginmanager.register(_LoadGroupSuffix(), "ppinvariants-loadgroup-suffix")
    config.stash[_CACHE] = {}
    config.stash[_NO_TARGET] = []
    _CONFIG[:] = [config]
    # `--hypothesis-profile ppi-ci` must find the profile registered before Hypothesis loads it.
    profile = config.getoption("hypothesis_profile", default=None)
    if isinstance(profile, str) and profile.startswith("ppi-"):
        from . import strategies  # noqa: F401 - registers the profiles on import


class _LoadGroupSuffix:
    """Under ``--dist loadgroup``, on an xdist worker: give the items of a ``ppi:`` xdist group the ``@group``
    suffix xdist's scheduler reads, where xdist's own hook could not.

    pytest-xdist (3.8) writes the suffix into ``item._nodeid``; pytest 9.2 builds node ids from a structured
    ``item._id``, so the write has no effect and every test is scheduled alone, silently
    (pytest-dev/pytest-xdist#1386, fix proposed in #1388). Only items that carry a ``ppi:`` group and lack
    the suffix are touched, with xdist's own naming (the sorted group names joined by ``_``).
    """

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            names = sorted(
                {
                    str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")
                }
            )
            suffix = "@" + "_".join(names)
            if not any(n.startswith("ppi:") for n in names) or item.nodeid.endswith(suffix):
                continue
            ident = getattr(item, "_id", None)
            parse = getattr(type(ident), "parse", None)
            if callable(parse):
                item._id = parse(item.nodeid + suffix)


def configured_targets(config: pytest.Config) -> list[str]:
    """The targets of this run: ``--ppi-model`` values if any were given, else the ``ppi_models`` ini lines."""
    given = [s for s in config.getoption("ppi_models", default=None) or [] if s.strip()]
    return given or [s for s in config.getini("ppi_models") if s.strip()]


def configured_decodings(config: pytest.Config) -> list[Decoding]:
    """The decodings of this run: ``--ppi-decoding`` / ``--ppi-generation-config`` values if any were given,
    else the ``ppi_decodings`` ini lines, else the built-in defaults (greedy, beam, sample, checkpoint).
    A bad setting stops the run with one line naming it."""
    from .decoding import decodings_from_options
    from .errors import PPIError

    specs = [s for s in config.getoption("ppi_decodings", default=None) or [] if s.strip()]
    files = [s for s in config.getoption("ppi_generation_configs", default=None) or [] if s.strip()]
    if not specs and not files:
        specs = [s for s in config.getini("ppi_decodings") if s.strip()]
    try:
        return decodings_from_options(specs, files)
    except PPIError as e:
        raise pytest.UsageError(f"ppinvariants: {e}") from None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def pytest_report_header(config: pytest.Config) -> list[str]:
    targets = configured_targets(config)
    shown = ", ".join(targets) if targets else f"none ({NO_TARGET_REASON}; the shipped suite uses every tiny model)"
    return [
        f"ppinvariants {__version__} (torch {_version('torch')}, transformers {_version('transformers')}): "
        f"targets: {shown}; "
        + (
            f"device map {config.getoption('ppi_device_map')}"
            if config.getoption("ppi_device_map", default=None)
            else f"device {config.getoption('ppi_device')}"
        )
        + f", dtype {config.getoption('ppi_dtype')}"
    ]


# ------------------------------------------------------------------------------ collection


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``ppi_target`` over the configured targets (or the test's default targets), and
    ``ppi_decoding`` over the configured decodings."""
    if "ppi_target" in metafunc.fixturenames:
        _parametrize_targets(metafunc)
    if "ppi_decoding" in metafunc.fixturenames:
        decodings = configured_decodings(metafunc.config)
        metafunc.parametrize("ppi_decoding", decodings, ids=[d.name for d in decodings], indirect=True)


def _parametrize_targets(metafunc: pytest.Metafunc) -> None:
    specs = configured_targets(metafunc.config)
    if not specs:
        marker = metafunc.definition.get_closest_marker("ppi_default_targets")
        specs = list(marker.args) if marker is not None else []
    if specs:
        # One xdist group per target: under `-n N --dist loadgroup` each target's tests run on one worker,
        # which loads that checkpoint once.
        params = [pytest.param(spec, id=spec, marks=pytest.mark.xdist_group(f"ppi:{spec}")) for spec in specs]
        metafunc.parametrize("ppi_target", params, indirect=True, scope="session")
    else:
        skipped = pytest.param(None, marks=pytest.mark.skip(reason=NO_TARGET_REASON), id="no-ppi-model")
        metafunc.parametrize("ppi_target", [skipped], indirect=True, scope="session")


def _no_target(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "ppi_target" in callspec.params and callspec.params["ppi_target"] is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    waiting = [item.nodeid for item in items if _no_target(item)]
    config.stash[_NO_TARGET] = waiting
    if waiting and _flag(config, "ppi_require_target"):
        raise pytest.UsageError(
            f"ppinvariants: {len(waiting)} tests need a target and none is configured (--ppi-require-target): "
            "give --ppi-model=TARGET or the ini key ppi_models"
        )
    gpu_items = [item for item in items if item.get_closest_marker("ppi_gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="ppi_gpu: no CUDA GPU available (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say once, at the end, that tests were skipped for want of a target: a run that checked nothing
    must not read as a pass."""
    waiting = config.stash.get(_NO_TARGET, [])
    if not waiting or getattr(config, "workerinput", None) is not None:
        return
    terminalreporter.write_sep("=", "ppinvariants: no target configured", yellow=True)
    terminalreporter.write_line(
        f"{len(waiting)} test{'s' if len(waiting) != 1 else ''} needing a model were skipped ({NO_TARGET_REASON}): "
        "give --ppi-model=TARGET or the ini key ppi_models; --ppi-require-target (ini ppi_require_target = true) "
        "makes this an error"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    """One error per unloadable target: its first test fails with the reason, the rest are skipped."""
    result = yield
    funcargs = getattr(item, "funcargs", {})
    loaded = funcargs.get("ppi_target")
    if isinstance(loaded, _UnloadableTarget):
        reason = f"ppinvariants: cannot load target {loaded.spec}: {loaded.error}{_hint(loaded.error)}"
        if loaded.first is None:
            loaded.first = item.nodeid
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"depends on {loaded.first}, which failed: cannot load target {loaded.spec}")
    return result


def _hint(error: Exception) -> str:
    """The command line options of this plugin, where the message names those of ``ppinvariants check``."""
    text = str(error)
    hints = [(opt, f"--ppi-{opt[2:]}") for opt in ("--device", "--dtype", "--trust-remote-code", "--allow-pickle")]
    found = [f"{ppi}" for opt, ppi in hints if opt in text]
    return f" (in pytest: {', '.join(found)})" if found else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Failures of tests on a target read short: an invariant failure is its message (and Hypothesis'
    notes: the falsifying example, the reproduction blob), never test or library source; any other
    exception in such a test is shown in the short traceback style, without printing the model."""
    report = yield
    excinfo = call.excinfo
    if not report.failed or excinfo is None or call.when != "call":
        return report
    if excinfo.errisinstance(InvariantsFailed):
        exc = excinfo.value
        notes = [str(n) for n in getattr(exc, "__notes__", []) or []]
        if notes:
            exc.args = (str(exc) + "\n\n" + "\n".join(notes),)
        report.longrepr = excinfo.getrepr(style="value")
    elif excinfo.errisinstance(pytest.fail.Exception) and not getattr(excinfo.value, "pytrace", True):
        return report  # already a message without a traceback
    elif "ppi_target" in getattr(item, "fixturenames", ()) and item.config.getoption("tbstyle", "auto") == "auto":
        report.longrepr = excinfo.getrepr(style="short", funcargs=False, showlocals=False, truncate_locals=True)
    return report


# ------------------------------------------------------------------------------ fixtures


def _load(config: pytest.Config, spec: str) -> Target:
    """The loaded target for ``spec``, from this process's cache; a load error is cached too and
    fails the test with its one-line message (``ppi_target`` itself fails only the first test)."""
    from .errors import PPIError
    from .progress import reporting
    from .targets import load_target

    cache: dict[str, Any] = config.stash[_CACHE]
    if spec not in cache:
        try:
            with reporting(None if config.getoption("ppi_quiet", default=False) else _TerminalProgress(config)):
                cache[spec] = load_target(
                    spec,
                    device=config.getoption("ppi_device"),
                    dtype=config.getoption("ppi_dtype"),
                    trust_remote_code=config.getoption("ppi_trust_remote_code"),
                    allow_pickle=config.getoption("ppi_allow_pickle"),
                    device_map=config.getoption("ppi_device_map", default=None),
                    max_memory=config.getoption("ppi_max_memory", default=None),
                    offload_folder=config.getoption("ppi_offload_folder", default=None),
                )
        except PPIError as e:
            cache[spec] = e
    loaded = cache[spec]
    if isinstance(loaded, Exception):
        pytest.fail(f"ppinvariants: cannot load target {spec}: {loaded}{_hint(loaded)}", pytrace=False)
    return loaded


class _TerminalProgress:
    """Progress of a target's load (the first build of a tiny model takes a while) as ``ppinvariants | ...``
    lines on the terminal while pytest captures the test's output, so that a first run in a CI log never
    looks stalled; ``--ppi-quiet`` turns them off. On an xdist worker, which has no terminal, on stderr."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def __call__(self, message: str) -> None:
        from .progress import PREFIX

        capman = self.config.pluginmanager.getplugin("capturemanager")
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            if reporter is not None and getattr(self.config, "workerinput", None) is None:
                reporter.write_line(f"{PREFIX}{message}")
            else:
                sys.stderr.write(f"{PREFIX}{message}\n")
                sys.stderr.flush()


@pytest.fixture(scope="session")
def ppi_target(request: pytest.FixtureRequest) -> Target:
    """The :class:`~ppinvariants.targets.Target` this test runs against, loaded once per process.

    A target that cannot be loaded fails the first test that needs it, with the reason; the others
    are skipped as depending on that test (one error per target, not one per test)."""
    spec = getattr(request, "param", None)
    if spec is None:
        pytest.skip(NO_TARGET_REASON)
    try:
        return _load(request.config, spec)
    except pytest.fail.Exception:
        return _UnloadableTarget(spec, request.config.stash[_CACHE][spec])  # type: ignore[return-value]


@pytest.fixture
def ppi_decoding(request: pytest.FixtureRequest) -> Decoding:
    """The :class:`~ppinvariants.decoding.Decoding` this test runs under: each of ``--ppi-decoding`` /
    ``--ppi-generation-config`` / the ``ppi_decodings`` ini key, else each built-in (greedy, beam,
    sample, checkpoint)."""
    return request.param


@pytest.fixture
def ppi_capture(ppi_target: Target, request: pytest.FixtureRequest) -> Callable[..., GenerationRecord]:
    """A function ``(texts, decoding=GREEDY, **kwargs) -> GenerationRecord`` that runs
    :func:`ppinvariants.capturing.capture` on the current target (``kwargs`` go to ``capture``;
    ``evidence`` defaults to ``"thorough"`` under ``--ppi-thorough``, else ``"standard"``).
    Invalid inputs or decoding configs fail the test with a one-line message; an exception raised
    by ``generate()`` itself propagates with its traceback."""
    from .capturing import capture
    from .decoding import GREEDY
    from .errors import PPIError

    def _capture(texts: Sequence[str], decoding: Decoding = GREEDY, **kwargs: Any) -> GenerationRecord:
        from ._compat import quiet_transformers

        __tracebackhide__ = True
        kwargs.setdefault("evidence", "thorough" if request.config.getoption("ppi_thorough") else "standard")
        try:
            with quiet_transformers():  # no per-call padding warnings in the captured output
                return capture(ppi_target, list(texts), decoding, **kwargs)
        except PPIError as e:
            pytest.fail(f"ppinvariants: {e}", pytrace=False)

    return _capture


@pytest.fixture
def ppi_logprob_check(ppi_target: Target) -> Callable[..., LogprobCheck]:
    """A function ``(fn, **kwargs) -> LogprobCheck`` that runs :func:`ppinvariants.logprob_check.check_logprob_fn`
    on the current target (``kwargs``: ``texts``, ``decodings``, ``atol``). A row on which ``fn`` differs from
    ``sequence_logprobs`` fails the test with the diagnosis; a bad input or function fails it with one line."""
    from ._compat import quiet_transformers
    from .errors import PPIError
    from .logprob_check import LogprobMismatchError, check_logprob_fn

    def _check(fn: Callable[..., Any], **kwargs: Any) -> LogprobCheck:
        __tracebackhide__ = True
        try:
            with quiet_transformers():
                return check_logprob_fn(fn, ppi_target, **kwargs)
        except LogprobMismatchError as e:
            pytest.fail(str(e), pytrace=False)
        except PPIError as e:
            pytest.fail(f"ppinvariants: {e}", pytrace=False)

    return _check


@pytest.fixture
def ppi_assert_invariants() -> Callable[..., list[Result]]:
    """The function :func:`assert_invariants`."""
    return assert_invariants


@pytest.fixture
def ppi_snapshot(request: pytest.FixtureRequest) -> SnapshotFixture:
    """A :class:`~ppinvariants.snapshot.SnapshotFixture`: ``ppi_snapshot.check(target)`` compares against
    ``<test dir>/snapshots/<test name>.json`` (a spec string loads with the ``--ppi-*`` options)."""
    from .snapshot import SnapshotFixture

    return SnapshotFixture(
        request.path.parent / "snapshots",
        request.node.name,
        regen=bool(request.config.getoption("ppi_regen")),
        load=lambda spec: _load(request.config, spec),
    )


# ------------------------------------------------------------------------------ assertions


def render_failures(results: Iterable[Result], *, max_violations: int = 5) -> str:
    """The failed and errored results as text: a head line per result (with its reason, or its first
    violation), its first ``max_violations`` violation messages with their decoded context, and
    the reproduction line."""
    from .report import render_result

    lines: list[str] = []
    for r in results:
        if r.status in ("fail", "error"):
            lines.extend(render_result(r, reason=_short(r), max_violations=max_violations))
    return "\n".join(lines)


def _short(result: Result) -> str:
    """A reason that fits pytest's ``-ra`` line: the result's reason, or its first violation."""
    if result.reason:
        return result.reason
    if result.violations:
        first = result.violations[0].message.removeprefix(f"{result.invariant}: ")
        n = result.total_violations or len(result.violations)
        return f"{n} violation{'s' if n != 1 else ''}, first: {first}"
    return "failed"


def assert_invariants(
    record: GenerationRecord, invariants: Iterable[str | Invariant] | None = None, *, strict: bool | None = None
) -> list[Result]:
    """Run ``invariants`` (names or :class:`~ppinvariants.invariants.Invariant` objects; all when
    None) on ``record`` and return the results. When any result is ``fail`` or ``error``, fail the
    test with :func:`render_failures` (``pytest.fail(..., pytrace=False)``; inside a Hypothesis
    test an :class:`InvariantsFailed` assertion instead, so that Hypothesis can shrink it and print
    the falsifying example and its notes; the plugin shows it without a traceback). ``skip`` (not
    applicable) and ``xfail`` (a known upstream issue) results do not fail the test. ``strict``
    (default: ``--ppi-strict`` / the ini key ``ppi_strict``): a check that applies but was not
    judged (streaming mode, missing evidence) fails."""
    from .invariants import get
    from .judge import run_invariants
    from .report import strict_results

    __tracebackhide__ = True
    chosen = None
    if invariants is not None:
        items = list(invariants)
        names = [i for i in items if isinstance(i, str)]
        try:
            by_name = dict(zip(names, get(names), strict=True))
        except KeyError as e:
            pytest.fail(f"ppinvariants: unknown invariant {e.args[0]!r}", pytrace=False)
        chosen = [by_name[i] if isinstance(i, str) else i for i in items]
    results = run_invariants(record, chosen)
    if strict_enabled() if strict is None else strict:
        results = strict_results(results)
    failed = [r for r in results if r.status in ("fail", "error")]
    if failed:
        names_failed = ", ".join(dict.fromkeys(r.invariant for r in failed))
        head = f"ppinvariants: {names_failed} failed on {record.target} ({record.decoding.name}): {_short(failed[0])}"
        message = head + "\n" + render_failures(failed)
        if _in_hypothesis_test():
            # pytest.fail(pytrace=False) would hide Hypothesis' falsifying example and notes.
            raise InvariantsFailed(message)
        pytest.fail(message, pytrace=False)
    return results


def _in_hypothesis_test() -> bool:
    if "hypothesis" not in sys.modules:
        return False
    from hypothesis.control import currently_in_test_context

    return currently_in_test_context()
