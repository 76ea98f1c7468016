"""Invoke tasks: parse options, call devserver/, turn its errors into one line and exit 1.

The collection is ``devserver.cli.tasks.ns``: a project's own ``tasks.py`` says
``from devserver.cli.tasks import ns`` and gets every task; the ``devserver`` console script
(devserver/cli/program.py) runs the same collection. Paths are relative to that project (see
:func:`project_root`), never to this installed package.

Kept thin on purpose: the logic lives in the devserver library (which never imports invoke),
so it can be tested without Invoke. Heavy imports (requests, redis-py) happen inside the
task that needs them, so ``invoke --list`` and ``invoke stop`` stay fast.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def _interrupted_while_loading() -> NoReturn:
    """Ctrl+C while this file is being loaded: one line and exit 130, not a traceback (a
    Ctrl+C during ``import invoke`` itself happens before any code of ours runs)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


try:
    import atexit
    import functools
    import gc
    import os
    import re
    import threading
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, TypeVar

    from invoke.collection import Collection
    from invoke.context import Context
    from invoke.exceptions import Exit
    from invoke.tasks import Task, task

    from devserver.cli import cliguard, console
    from devserver.config import Settings, fill_from_environment, load_settings
    from devserver.config_values import whole_number
    from devserver.errors import ConfigError, DevServerError
    from devserver.system import signals
except KeyboardInterrupt:
    _interrupted_while_loading()

F = TypeVar("F", bound=Callable[..., Any])
# Invoke merges invoke.yaml and the environment after importing this file: a bad shape
# there would be Invoke's traceback; this makes it one line (see devserver/cli/cliguard.py).
cliguard.install(console.error)

# Every command is a short-lived process whose interpreter, at exit, garbage-collects all
# the objects Invoke and the library created: measured at 50-70 ms of CPU per command on
# the 2-core bench machine (a fifth of `invoke start`'s own process). Freezing them (now,
# and again at exit) skips that traversal; refcounting still frees what it frees, atexit
# handlers and stream flushing still run, and new objects are still collected while a
# long command (tail -f, api) runs.
gc.freeze()
atexit.register(gc.freeze)


def _plain(value: Any) -> Any:
    """Invoke's DataProxy -> plain dicts, so the library sees ordinary Mappings."""
    if hasattr(value, "items") and not isinstance(value, (str, bytes)):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def project_root(ctx: Context) -> Path:
    """The user's project folder: bin/, data/, logs/ and .env are relative to it.

    For the ``invoke`` command it is the folder of the project's tasks.py (Invoke's loaded
    collection, which is also where Invoke read invoke.yaml); the ``devserver`` console script
    sets it to the current folder. Never this package's own folder, which may be a
    site-packages directory.
    """
    prefix = getattr(ctx.config, "_project_prefix", None)
    return Path(prefix) if prefix else Path.cwd()


def settings_from(ctx: Context, **overrides: Any) -> Settings:
    """Validated settings: invoke.yaml + environment + this task's options."""
    config = {
        name: _plain(ctx.config.get(name) or {})
        for name in ("server", "release", "verify", "api", "app")
    }
    config = fill_from_environment(config, os.environ)  # keys no invoke.yaml has
    return load_settings(config, project_root(ctx)).with_overrides(**overrides)


def handled(func: F) -> F:
    """An expected failure becomes one line (plus hint) on stderr and exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DevServerError as exc:
            console.error(exc.message, exc.hint)
            raise Exit(code=1) from None
        except KeyboardInterrupt:
            # The task's own cleanup has run (start's is Ctrl+C-proof); from here on we only
            # exit, and another Ctrl+C must not turn that into a traceback.
            signals.ignore_interrupts()
            console.info("interrupted")
            raise Exit(code=130) from None
        except BrokenPipeError:  # `invoke verify | head -1`: the reader left before the end
            cliguard.reader_left()
            raise Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def _echo_while_read() -> Callable[[str], None]:
    """start's echo of the log: it stops (the server does not) when stdout's reader leaves.

    ``invoke start | head -3`` must still start the server; a BrokenPipeError out of the
    echo would abort the start and clean up the server it had just launched.
    """
    gone = False

    def echo(line: str) -> None:
        nonlocal gone
        if gone:
            return
        try:
            console.log_line(line)
        except BrokenPipeError:
            gone = True
            cliguard.reader_left()

    return echo


def _note_other_port(settings: Settings, state: Any) -> None:
    """env, run and cli follow the running server; say so when the port asked for differs.

    ``INVOKE_SERVER_PORT=6380 invoke env`` printed the running server's 6379 without a word
    (verify names the difference the same way, on stderr, so stdout stays clean).
    """
    if state is not None and state.port != settings.port:
        how = "INVOKE_SERVER_PORT" if "INVOKE_SERVER_PORT" in os.environ else "server.port"
        console.warn(
            f"the running server is on {state.port}; {how} says {settings.port}: using the "
            f"running server (`invoke restart --port {settings.port}` moves it)"
        )


_SOURCES = {
    "explicit": "server.binary",
    "bin": "installed in bin/",
    "path": "from PATH",
    "bundled": "bundled by a Python package",
}


def _describe(binary: Any) -> str:
    version = binary.version or "unknown version"
    return (
        f"{binary.flavor} {version} ({binary.path}, {_SOURCES.get(binary.source, binary.source)})"
    )


@task(
    help={
        "flavor": "server flavor: auto (default), dragonfly, redis or garnet",
        "port": "TCP port (default: server.port, 6379)",
        "foreground": "run in this terminal with the log on the console until Ctrl+C",
        "timeout": "seconds to wait for PING before giving up (default: server.startup_timeout)",
        "binary": "run this server executable (default: server.binary, else the tool's choice; "
        "`invoke fetch --list` shows the candidates)",
    }
)
@handled
def start(
    c: Context,
    flavor: str | None = None,
    port: str | None = None,
    foreground: bool = False,
    timeout: str | None = None,
    binary: str | None = None,
) -> None:
    """Start the server in the background; print its log until it answers PING."""
    console.tolerant_stdout()  # the log echo must survive a cp1252 stdout
    settings = settings_from(c, flavor=flavor, port=port, startup_timeout=timeout, binary=binary)
    announce = lambda b: console.info("starting " + _describe(b))  # noqa: E731
    if foreground:
        from devserver.supervisor.foreground import run_foreground

        code = run_foreground(settings, on_binary=announce, sink=sys.stdout.write)
        raise Exit(code=0 if code in (0, None) else 1)
    from devserver.supervisor.core import launch_supervisor

    early = launch_supervisor()  # its start-up overlaps the import and checks below
    with signals.interrupts_deferred():  # a Ctrl+C during the import: raised after it
        from devserver.server import process

    asked = {"port": port and settings.port, "flavor": flavor, "binary": binary}
    echo = _echo_while_read()
    result = process.start(settings, on_line=echo, on_binary=announce, supervisor=early)
    try:
        _report_start(result, asked)
    except KeyboardInterrupt:  # too late to undo: say what is true
        console.ok(f"{result.state.flavor} is running (pid {result.state.pid}); stop: invoke stop")


def _report_start(result: Any, asked: dict[str, Any]) -> None:
    state = result.state
    if result.stale is not None:
        console.warn(f"removed a stale state file (pid {result.stale.pid} is gone or not ours)")
    for warning in result.warnings:
        console.warn(warning)
    if result.already_running:
        _already_running(state, asked, result.supervised)
        return
    if not result.broke_away:
        console.warn(
            "could not break away from the launcher's job object: the server may stop "
            "when this terminal or launcher exits"
        )
    console.ok(
        f"{state.flavor} {state.version} ready on {state.host}:{state.port} "
        f"(pid {state.pid}) in {result.seconds:.2f}s; log: {state.log_file}"
    )


_NO_SAVE_HELP = (
    "skip the final snapshot (SHUTDOWN NOSAVE). Not a wipe: what the server already wrote "
    "(Redis's append-only file, earlier snapshots) is loaded again on the next start; "
    "`invoke reset` empties it"
)


def _already_running(state: Any, asked: dict[str, Any], supervised: bool = True) -> None:
    """Fine (exit 0) when nothing particular was asked; exit 1 naming what differs otherwise.
    A server whose supervisor is gone is said to be unsupervised (its log is not captured)."""
    from devserver.errors import StartError
    from devserver.server.running import differences, restart_hint

    where = f"(pid {state.pid}, {state.host}:{state.port})"
    differ = differences(state, asked)
    if differ:
        raise StartError(
            f"{state.flavor} {state.version} is already running {where}, "
            f"not the one asked for: {'; '.join(differ)}",
            hint=f"run `{restart_hint(asked)}` to replace it (or drop the option to use it)",
        )
    if not supervised:
        console.warn(
            f"{state.flavor} {state.version} is already running {where} but UNSUPERVISED: its "
            "supervisor is gone, so its log is not captured; run `invoke restart` to put it "
            "under a supervisor again"
        )
        return
    console.ok(f"{state.flavor} {state.version} is already running {where}")


@task(help={"no_save": _NO_SAVE_HELP})
@handled
def stop(c: Context, no_save: bool = False) -> None:
    """Stop the server: graceful SHUTDOWN, then SIGTERM, then a kill, within server.stop_timeout.

    Exits 1 when data may have been lost (the server refused to save, or had to be killed).
    """
    from devserver.server import process

    result = process.stop(settings_from(c), save=not no_save, on_progress=console.info)
    _report_stop(result)


def _report_stop(result: Any) -> None:
    """One line on how the server ended; exit 1 when data may have been lost."""
    left = (
        f"; the state file could not be removed ({result.state_left}), fix the data "
        "folder's permissions"
        if result.state_left
        else ""
    )
    if result.untrusted:
        console.warn(f"ignored an untrusted state file, nothing was signalled: {result.untrusted}")
    elif result.stale and result.state:
        console.warn(
            f"removed a stale state file: pid {result.state.pid} is gone or not ours "
            f"(nothing was signalled){left}"
        )
    elif not result.was_running:
        console.ok("the server is not running")
    if not result.was_running:
        if result.state_left:
            raise Exit(code=1)
        return
    state = result.state
    took = f"in {result.seconds:.2f}s"
    status = f", {result.exit_status}" if result.exit_status else ""
    name = f"{state.flavor} (pid {state.pid})"
    if result.method == "shutdown":
        saved = (
            f"; waited {result.saving_seconds:.1f}s past the budget while it saved"
            if result.saving_seconds
            else ""
        )
        code = f" (exit {result.exit_status})" if result.exit_status else ""
        console.ok(f"{name} stopped (graceful) {took}{code}{saved}{left}")
    elif result.method == "SIGTERM" and not result.data_at_risk:
        console.warn(f"{name} stopped by SIGTERM{status} {took}: {result.problem}{left}")
    else:
        how = "killed it" if result.method == "kill" else f"{result.method} ended it{status}"
        loss = (
            ": data written since the last successful save may be lost"
            if result.data_at_risk
            else " (a stop without saving, as asked)"
        )
        text = f"{name}: {result.problem}; {how}{loss} ({took}){left}"
        if result.data_at_risk:
            console.error(text, "the server log (`invoke tail`) may say why it did not stop")
            raise Exit(code=1)
        console.warn(text)
    if result.state_left:
        raise Exit(code=1)


# -- tail -----------------------------------------------------------------------------------

_TAIL_SHORT_FLAGS = {"lines": "n", "follow": "f", "grep": "g"}


class _TailTask(Task[Callable[..., Any]]):
    """``-n`` for ``--lines`` as in Unix tail.

    Invoke gives each option the first free letter of its name as a short flag (``--lines``
    would get ``-l``); this class uses ``_TAIL_SHORT_FLAGS`` instead, and no short flag for
    the rest, so ``-f`` is --follow and never --flavor.
    """

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = _TAIL_SHORT_FLAGS.get(name)
        opts["names"] = [opts["names"][0], *([short] if short else [])]
        return opts


def _tail_count(value: Any) -> int:
    return whole_number("-n/--lines", 50 if value is None else value, 0, 10**9)


def _tail_filter(grep: str | None, level: bool) -> Callable[[str], bool] | None:
    """--grep and --level as one predicate (None: every line)."""
    if grep is None and not level:
        return None
    try:
        pattern = re.compile(grep) if grep is not None else None
    except re.error as exc:
        raise ConfigError(f"invalid --grep regular expression {grep!r}: {exc}") from None

    def accept(line: str) -> bool:
        if level and console.level_of(line) == "info":
            return False
        return pattern is None or pattern.search(line) is not None

    return accept


def _tail_log_file(c: Context, flavor: str | None) -> tuple[Path, str]:
    """The log to read: --flavor, else the state file's server, else configured, else newest."""
    from devserver.server.state import read_state

    settings = settings_from(c, flavor=flavor)
    if settings.flavor != "auto" and flavor not in (None, "", "auto"):
        return settings.log_file(settings.flavor), ""
    try:
        state = read_state(settings.state_file)
    except DevServerError:
        state = None
    if state is not None and state.log_file:
        return Path(state.log_file), ""
    if settings.flavor != "auto":
        return settings.log_file(settings.flavor), ""
    logs = [p for p in settings.log_dir.glob("*.log") if p.is_file()]
    if logs:
        return max(logs, key=lambda p: p.stat().st_mtime), ""
    return settings.log_file("<flavor>"), str(settings.log_dir)


@task(
    klass=_TailTask,
    help={
        "lines": "show the last N lines (default 50)",
        "follow": "keep printing new lines until Ctrl+C (across rotation and restarts)",
        "grep": "show only lines matching this regular expression",
        "level": "show only warnings and errors",
        "flavor": "whose log: dragonfly, redis or garnet (default: the running server's)",
    },
)
@handled
def tail(
    c: Context,
    lines: str | None = None,
    follow: bool = False,
    grep: str | None = None,
    level: bool = False,
    flavor: str | None = None,
) -> None:
    """Print the server log's last lines; -f keeps following it (Ctrl+C ends it: exit 130)."""
    from devserver.tail import Follower, last_lines
    from devserver.tail import follow as follow_log

    count = _tail_count(lines)
    accept = _tail_filter(grep, level)
    path, unknown_dir = _tail_log_file(c, flavor)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a console code page must not crash it
    stop_event = threading.Event()
    if not path.exists():
        where = f"{unknown_dir}/<flavor>.log" if unknown_dir else str(path)
        console.info(
            f"no log yet: the server writes it to {where} once started "
            "(start it with `invoke start`)"
        )
        if not follow:
            return
        console.info("waiting for it to appear (Ctrl+C to stop)")
        while unknown_dir:  # which flavor? the first server started will tell (Ctrl+C: 130)
            stop_event.wait(0.1)
            path, unknown_dir = _tail_log_file(c, flavor)
    follower = Follower(path)  # before the last lines, so nothing in between is missed
    try:
        for line in last_lines(path, count, accept, end=follower.offset):
            console.log_line(line)
        if follow:
            for line in follow_log(path, stop_event, follower=follower):
                if accept is None or accept(line):
                    console.log_line(line)
    except KeyboardInterrupt:  # how -f ends: `handled` says "interrupted" and exits 130
        stop_event.set()
        raise
    except BrokenPipeError:  # e.g. `invoke tail | head`: the reader left, not an error
        cliguard.reader_left()


@task(
    help={
        "flavor": "server flavor for the new start",
        "port": "TCP port for the new start",
        "timeout": "seconds to wait for PING",
        "binary": "server executable for the new start (see `invoke start --help`)",
    }
)
def restart(
    c: Context,
    flavor: str | None = None,
    port: str | None = None,
    timeout: str | None = None,
    binary: str | None = None,
) -> None:
    """Stop the server (if running), then start it again."""
    stop(c)
    start(c, flavor=flavor, port=port, timeout=timeout, binary=binary)


# `status` exits 3 when the server is not running (LSB init-script convention), so scripts
# can test it: `invoke status >/dev/null || invoke start`.
STATUS_NOT_RUNNING = 3


@task(
    help={
        "json": "print one JSON object and nothing else on stdout "
        "(exit code still 0 running, 3 not running)",
    }
)
@handled
def status(c: Context, json: bool = False) -> None:
    """Is the server running? Flavor, version, pid, address, uptime, memory, clients, log.

    The report goes to stdout (so `invoke status | grep` works), warnings to stderr. Exit code
    0 when running, 3 when not (LSB), 1 on an error such as a bad setting.
    """
    from devserver.server import process

    info = process.status(settings_from(c))
    try:
        _status_report(info, json)
    except BrokenPipeError:  # `invoke status | grep -q running`: the exit code still tells
        cliguard.reader_left()
        raise Exit(code=0 if info["running"] else STATUS_NOT_RUNNING) from None


def _status_report(info: dict[str, Any], json: bool) -> None:
    """status's report on stdout; Exit(3) when the server is not running."""
    if json:
        console.print_json(info)
        if not info["running"]:
            raise Exit(code=STATUS_NOT_RUNNING)
        return
    if not info["running"]:
        if info.get("state_error"):
            console.warn(f"{info['state_error']}: ignored, the next start replaces it")
        elif info["stale"]:
            ended = info["exit_status"] or "an unknown status"
            console.warn(f"the last server ended with {ended}; its state file is stale")
        console.line("not running")
        if info["log_file"]:
            console.line(f"log: {info['log_file']}")
        raise Exit(code=STATUS_NOT_RUNNING)
    if info.get("supervised") is False:
        console.line(
            f"running UNSUPERVISED: {info['flavor']} {info['version']} (pid {info['pid']})",
            "yellow",
        )
        console.warn(
            "its supervisor is gone, so its log is not captured; `invoke restart` fixes that"
        )
    else:
        console.line(f"running: {info['flavor']} {info['version']} (pid {info['pid']})", "green")
    rows = [
        ("address", f"{info['host']}:{info['port']}"),
        ("uptime", console.human_seconds(info["uptime_s"] or 0)),
        (
            "memory",
            console.human_bytes(info.get("memory_rss_bytes", 0)) + " RSS"
            if "memory_rss_bytes" in info
            else "unknown",
        ),
        ("clients", str(info.get("clients", "unknown"))),
        ("binary", str(info["binary"])),
        ("log", str(info["log_file"])),
    ]
    for key, value in rows:
        console.line(f"  {key:<8} {value}")


# --- fetch --------------------------------------------------------------------------------


class _FetchReporter:
    """How devserver.fetch reports progress: the library never prints, this does."""

    def info(self, text: str) -> None:
        console.info(text)

    def warn(self, text: str) -> None:
        console.warn(text)

    def progress(self, label: str, total: int | None) -> Any:
        return console.Progress(label, total)


def _fetch_report(result: Any) -> None:
    """One line saying which flavor and version will run, and where it came from."""
    source = _SOURCES.get(result.source, result.source)
    version = result.version or "unknown version"
    if result.action == "installed":
        manifest = result.manifest
        check = "sha256 verified" if manifest.get("verified") else "UNVERIFIED"
        says = f", it reports {manifest['exe_version']}" if manifest.get("exe_version") else ""
        console.ok(f"installed {result.flavor} {version} -> {result.path} ({check}{says})")
    elif result.action == "current":
        why = f" ({result.reason})" if result.reason else ""
        console.ok(
            f"{result.flavor} {version} is installed: {result.path}; nothing downloaded{why}"
        )
    elif result.action == "local":
        console.ok(
            f"{result.flavor}: nothing to download on this platform; start will use "
            f"{result.path} ({version}, {source})"
        )
    elif result.repeated:  # said in full the first time; the same situation again: one line
        console.info(
            f"release still unreachable ({result.short}): using the local {result.flavor} "
            f"{version} again ({result.path}, {source}); `invoke fetch --force` asks now"
        )
    else:
        console.warn(
            f"release unreachable ({result.reason}); using the local {result.flavor} "
            f"instead: {result.path} ({version}, {source})"
        )
        console.info(
            "hint: set server.flavor: redis in invoke.yaml (or INVOKE_SERVER_FLAVOR=redis) to "
            "skip the lookup; `invoke fetch --force` asks again now"
        )


@task(
    help={
        "flavor": "auto (default: dragonfly on Linux, else redis), dragonfly, redis or garnet",
        "version": "release tag to install, e.g. v1.24.0 (default: server.version, latest)",
        "upgrade": "look up the latest release and install it when it differs from bin/",
        "force": "download and reinstall even when the binary is already installed",
        "url": "install the archive at this URL instead of resolving a GitHub release",
        "sha256": "expected sha256 (64 hex digits) of the archive given by --url or --archive",
        "archive": "install from this local archive file (offline)",
        "allow_unverified": "install even when no sha256 is published or pinned (recorded)",
        "binary": "use this server executable: nothing is downloaded (sets it for this run)",
        "list": "list the server executables found (bin/, PATH, bundled), which one start "
        "would run and whether it can read the existing data; downloads nothing",
        "json": "with --list: print one JSON object and nothing else on stdout",
    }
)
@handled
def fetch(
    c: Context,
    flavor: str | None = None,
    version: str | None = None,
    upgrade: bool = False,
    force: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    archive: str | None = None,
    allow_unverified: bool = False,
    binary: str | None = None,
    list: bool = False,  # the option is --list; the builtin is not needed in here
    json: bool = False,
) -> None:
    """Download, verify and install the server into bin/ (no network call once installed)."""
    from devserver.fetch import release
    from devserver.fetch.options import FetchOptions

    settings = settings_from(c, flavor=flavor, version=version, binary=binary)
    if list or json:
        _fetch_list(settings, json)
        return
    options = FetchOptions(
        upgrade=upgrade,
        force=force,
        url=url or "",
        sha256=sha256 or "",
        archive=Path(archive) if archive else None,
        allow_unverified=allow_unverified,
    )
    _fetch_report(release.fetch(settings, options, _FetchReporter()))


def _fetch_list(settings: Settings, as_json: bool) -> None:
    """`fetch --list`: every candidate executable, the one start would run, and why."""
    from devserver.fetch import choice

    flavors = choice.auto_order() if settings.flavor == "auto" else (settings.flavor,)
    rows = choice.survey(settings, flavors)
    explicit = str(settings.binary) if settings.binary else None
    if as_json:
        console.print_json({"binary_setting": explicit, "binaries": rows})
        return
    if explicit:
        console.line(f"server.binary is set: start runs {explicit} and nothing else")
    if not rows:
        console.line(f"no server executable found for {', '.join(flavors)}")
        return
    readable = {True: "yes", False: "NO", None: "unknown"}
    console.table(
        ["flavor", "version", "source", "reads data", "chosen", "path"],
        [
            [
                r["flavor"],
                r["version"] or "?",
                _SOURCES.get(r["source"], r["source"]),
                readable[r["can_read_data"]]
                + (f" (written by {r['data_written_by']})" if r["data_written_by"] else ""),
                ("<- start runs this", "green") if r["chosen"] and not explicit else "",
                r["path"],
            ]
            for r in rows
        ],
    )


# --- verify -------------------------------------------------------------------------------


def _verify_iterations(settings: Settings, given: str | None) -> int:
    """--iterations, validated like the config keys (a bad value is one line, not a traceback)."""
    if given is None:
        return settings.verify.iterations
    return whole_number("--iterations", given, 1, 1_000_000, hint="pass e.g. --iterations 200")


def _print_verify_report(report: Any) -> None:
    """The human report on stdout: checks table, latency table, summary line."""
    console.line(f"verify {report.url}" + (f": {report.server}" if report.server else ""))
    console.line("")
    console.table(
        ["check", "result", "detail"],
        [[c.name, ("PASS", "green") if c.ok else ("FAIL", "red"), c.detail] for c in report.checks],
    )
    if report.latency:

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        console.line("")
        console.table(
            ["operation", "p50 ms", "p99 ms", "max ms", "threshold ms", "result"],
            [
                [
                    r.op,
                    num(r.p50),
                    num(r.p99),
                    num(r.max),
                    f"{r.threshold:g}",
                    ("FAIL", "red") if not r.ok else ("warn", "yellow") if r.warning else "ok",
                ]
                for r in report.latency.values()
            ],
        )
        for text in report.warnings:
            console.warn(text)  # shown, never failing: the median decides
    console.line("")
    failed = report.failed
    if failed:
        console.line(
            f"verify FAILED: {len(failed)} of {len(report.checks)} checks failed "
            f"({', '.join(c.name for c in failed)})",
            "red",
        )
    else:
        console.line(
            f"verify passed: all {len(report.checks)} checks"
            + (f" on {report.server}" if report.server else ""),
            "green",
        )


@task(
    help={
        "url": "check this server instead of the configured one: "
        "redis://[user:password@]host:port/db, or rediss://... for TLS",
        "json": "print one JSON object (ok, url, checks, latency_ms, warnings) and nothing else "
        "on stdout",
        "iterations": "timed runs per operation for the latency figures "
        "(default: verify.iterations)",
    }
)
@handled
def verify(
    c: Context, url: str | None = None, json: bool = False, iterations: str | None = None
) -> None:
    """Check the server with redis-py: PING, SET/GET, the LPUSH/BRPOP queue, INFO, latency."""
    from devserver.errors import VerifyError
    from devserver.verify import runner
    from devserver.verify import target as targets

    settings = settings_from(c)
    count = _verify_iterations(settings, iterations)
    if url is not None:
        target = targets.from_url(url)
    else:
        asked = settings.port if "INVOKE_SERVER_PORT" in os.environ else None
        target = targets.from_settings(settings, asked)
        note = targets.port_note(settings, asked, "INVOKE_SERVER_PORT")
        if note:
            console.warn(note)
    try:
        report = runner.run(target, count, settings.verify.thresholds_ms)
    except VerifyError as exc:
        if json:  # JSON consumers always get their object, here with the failed connection
            console.print_json(runner.failure_report(target, exc.message).as_json())
        raise
    if json:
        console.print_json(report.as_json())
    else:
        _print_verify_report(report)
    if not report.ok:
        first = report.failed[0]
        raise VerifyError(
            f"verify failed: {first.name}: {first.detail}", hint=_verify_hint(first.name)
        )


def _verify_hint(check: str) -> str:
    if check == "latency":
        return (
            "the median round trip from this machine to the server was over its limit "
            "(verify.thresholds_ms in invoke.yaml, e.g. INVOKE_VERIFY_THRESHOLDS_MS_CONNECT=50); "
            "a busy machine or a remote server may need larger limits"
        )
    if check == "cleanup":
        return "verify's keys expire on their own within 10 minutes"
    return (
        "the application needs this to work: see the table above, and the server's log "
        "(`invoke tail`)"
    )


@task(help={"args": "extra pytest arguments, e.g. '-k stop -x'"})
def test(c: Context, args: str = "") -> None:
    """Run the test suite (the same command CI runs)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task(
    help={
        "quick": "every row with fewer rounds (a few minutes on 2 cores)",
        "json": 'print {"machine": {...}, "results": [rows]} and nothing else on stdout',
        "markdown": "print the README's performance table",
        "only": "rows to run, comma-separated names or prefixes (e.g. tail, start)",
        "from_json": "render a saved --json result instead of measuring",
    }
)
def bench(
    c: Context,
    quick: bool = False,
    json: bool = False,
    markdown: bool = False,
    only: str = "",
    from_json: str = "",
) -> None:
    """Benchmarks: each row ours vs a baseline measured in the same run, against its goal."""
    import subprocess

    try:
        from benchmarks.run import bench_python
    except ImportError:  # a project using the packaged collection has no benchmarks/ of ours
        raise Exit("bench runs devserver's own benchmarks/: not found in this project", 1) from None

    flags = [f"--{n}" for n, on in (("quick", quick), ("json", json), ("markdown", markdown)) if on]
    flags += [
        *(["--only", only] if only else []),
        *(["--from-json", from_json] if from_json else []),
    ]
    code = subprocess.call([bench_python(), "-m", "benchmarks", *flags], cwd=project_root(c))
    if code:
        raise Exit(code=code)


# --- One command: up / down / env / api (issue 6) -------------------------------------------


@task(help={"no_save": _NO_SAVE_HELP})
def down(c: Context, no_save: bool = False) -> None:
    """Stop what `invoke up` started: the application processes (from any shell), the server.

    An API started on its own with `invoke api` is stopped too (`invoke run`'s one-off
    commands are not: docker compose's `down` leaves `run` alone as well).
    """
    try:
        _stop_app_processes(c)
    except Exit:  # already reported; the server is stopped all the same, then exit 1
        stop(c, no_save=no_save)
        raise
    stop(c, no_save=no_save)


@handled
def _stop_app_processes(c: Context) -> None:
    from devserver.app import records as owned

    settings = settings_from(c)
    left: list[str] = []
    for who in ("up", "api"):
        done = owned.stop_recorded(settings, settings.stop_timeout, who)
        if done.stale:
            what = "application processes" if who == "up" else "`invoke api`'s API"
            console.warn(f"removed a stale record of {what} (none of them runs)")
        elif done.stopped and who == "api":
            console.ok("stopped the API that `invoke api` runs")
        elif done.stopped:
            by = "`invoke up` stopped" if done.by_owner else "stopped"
            console.ok(f"{by} the application processes: {', '.join(done.stopped)}")
        left += done.left
    if left:
        raise DevServerError(
            f"application processes still running after a kill: {', '.join(left)}",
            hint="check them with your OS's process tools",
        )


@task(
    optional=["write"],
    help={
        "write": "merge into a .env file instead of printing (default: .env in the project)",
        "shell": "print POSIX sh `export NAME='value'` lines for eval \"$(invoke env --shell)\"",
    },
)
@handled
def env(c: Context, write: Any = None, shell: bool = False) -> None:
    """Print the application's settings (REDIS_URL, api.env) in .env format, or merge them."""
    from devserver.app import env as app
    from devserver.server import process

    settings = settings_from(c)
    state, proc = process.current_state(settings)
    if proc is None:
        state = None
        console.warn("the server is not running: these are the configured settings")
    _note_other_port(settings, state)
    values = app.connection_env(settings, state)
    if shell:
        from devserver.app.shellenv import export_lines

        sys.stdout.write(export_lines(values))
        sys.stdout.flush()
        return
    if write is None or write is False:
        sys.stdout.write(app.format_env(values))
        sys.stdout.flush()
        return
    path = settings.root / ".env" if write is True else Path(str(write)).expanduser()
    result = app.merge_env_file(path, values)
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("updated", result.updated),
            ("added", result.added),
            ("unchanged", result.unchanged),
        )
        if names
    ]
    verb = "wrote" if result.written else "nothing to change in"
    console.ok(f"{verb} {result.path} ({'; '.join(parts)}); other lines untouched")


def _api_not_configured() -> None:
    console.info(
        "no API command configured, so there is nothing to run.\n"
        "Set api.command in invoke.yaml, e.g.\n"
        "  api:\n"
        "    command: python -m myapp.api\n"
        "or the INVOKE_API_COMMAND environment variable; it runs with REDIS_URL set."
    )


@task
@handled
def api(c: Context) -> None:
    """Run the application's API (api.command) in the foreground with REDIS_URL exported.

    Exits with the API command's own exit code. Ctrl+C goes to the API; the server keeps running.
    It is recorded like `up`'s processes, so `invoke down` from another shell stops it too.
    """
    from devserver.app import env as app
    from devserver.app import records as owned

    settings = settings_from(c)
    if not settings.api.command:
        _api_not_configured()
        return
    state = app.running_server(settings)
    other = owned.running_owner(settings, "api")
    if other is not None:
        raise DevServerError(
            f"the API already runs under another `invoke api` (pid {other})",
            hint="stop it with Ctrl+C in that terminal, or `invoke down` (which stops the "
            "server too)",
        )
    leftover = owned.stop_recorded(settings, settings.stop_timeout, "api")
    if leftover.stopped:
        console.warn("stopped the API a killed `invoke api` left running")
    values = app.connection_env(settings, state)
    console.info(
        f"running the API: {settings.api.command}  "
        f"(REDIS_URL={app.redact_url(values['REDIS_URL'])}, cwd {settings.root})"
    )
    try:
        result = app.run_api(
            settings.api.command,
            values,
            settings.root,
            on_started=lambda pid: owned.record(settings, {"api": pid}, "api"),
        )
        by_down = owned.stop_was_requested(settings, "api")
    finally:
        owned.clear(settings, "api")
    if by_down:
        console.ok("`invoke down` stopped the API (it stops the server next)")
        return
    if result.interrupted:
        console.info(f"the API stopped (exit code {result.code}); {_server_now(settings)}")
    elif result.code != 0:
        console.warn(f"the API command exited with code {result.code}")
    if result.code != 0:
        raise Exit(code=result.code)


def _up_header(number: int, step: str, text: str = "") -> None:
    """The one-line header of each `up` step, so a long scroll shows where it is."""
    console.info(
        console.paint(f"==> up {number}/4: {step}" + (f": {text}" if text else ""), "bold")
    )


def _binary_missing(c: Context, flavor: str | None = None) -> tuple[str, str]:
    """("", what is ready) when fetch's flavor is already usable, else (why fetch must run, "").

    Checked here rather than always calling fetch so a ready machine goes straight to start;
    a pinned server.version that differs from what bin/ holds counts as missing.
    """
    from devserver.fetch import choice, release
    from devserver.fetch.manifest import read_manifest

    settings = settings_from(c, flavor=flavor)
    name = release.target_flavor(settings)
    try:
        binary = choice.find_binary(settings, name)
    except DevServerError:
        return f"no {name} binary yet", ""
    if binary.source == "bin" and settings.version != "latest":
        installed = str((read_manifest(settings, name) or {}).get("version", ""))
        if installed.lstrip("vV") != settings.version.lstrip("vV"):
            return f"server.version {settings.version} is not the installed {installed or '?'}", ""
    return "", _describe(binary)


def _up_step(c: Context, number: int, step: str, run: Callable[..., None], note: str = "") -> None:
    """Run one step of `up`; its failure (already reported by the task) stops the chain."""
    _up_header(number, step, note)
    try:
        run(c)
    except Exit as exc:
        if exc.code == 130:  # Ctrl+C: the usual code, no "failed" message
            raise
        log = "" if step == "verify" else ", and the server log with `invoke tail`"
        console.error(
            f"up stopped: the {step} step failed",
            f"see the messages above{log}; fix it and run `invoke up` again",
        )
        raise Exit(code=1) from None


@task(
    help={
        "port": "TCP port for the server (default: server.port); a running server on another "
        "port is an error naming `invoke restart --port`",
        "flavor": "server flavor: auto, dragonfly, redis or garnet (default: server.flavor)",
        "no_verify": "skip the verify step (start, then straight to the application)",
        "no_fetch": "never download: use the installed or local binary (start fails without)",
    }
)
def up(
    c: Context,
    port: str | None = None,
    flavor: str | None = None,
    no_verify: bool = False,
    no_fetch: bool = False,
) -> None:
    """Fetch (only if the binary is missing), start, verify, then the application's processes.

    The processes are api.command (as "api") and app.processes in invoke.yaml (or a Procfile),
    each with REDIS_URL and api.env exported and its output prefixed with its name; the first
    to end stops the others and gives `up` its exit code; Ctrl+C stops them all (the server
    keeps running); `invoke down` from another shell stops them and the server. The first step
    that fails stops the chain: exit 1 with the step named. Already running is fine.
    Detached (`up -d` in docker compose: the server only, in the background) is `invoke start`.
    """
    from devserver.app import env as app

    try:
        _refuse_a_differing_server(c, port, flavor)
        if no_fetch:
            _up_header(1, "fetch", "skipped (--no-fetch)")
        else:
            why, ready = _binary_missing(c, flavor)
            if why:
                _up_step(c, 1, "fetch", lambda c: fetch(c, flavor=flavor), why)
            else:
                _up_header(1, "fetch", f"skipped, {ready} is ready")
        _up_step(c, 2, "start", lambda c: start(c, flavor=flavor, port=port))
        if no_verify:
            _up_header(3, "verify", "skipped (--no-verify)")
        else:
            _up_step(c, 3, "verify", verify)
        settings = settings_from(c)
        commands = _app_commands(settings)
        if commands:
            _up_header(4, "app", ", ".join(commands))
            _up_app(settings, commands)
            return
        url = app.redact_url(
            app.connection_env(settings, app.running_server(settings))["REDIS_URL"]
        )
    except DevServerError as exc:  # from up's own checks; the steps report their own
        console.error(exc.message, exc.hint)
        raise Exit(code=1) from None
    _up_header(
        4,
        "app",
        "skipped, nothing configured (set api.command or app.processes in invoke.yaml)",
    )
    checked = "running (not verified: --no-verify)" if no_verify else "running and verified"
    console.ok(
        f"up: the server is {checked} at {url} "
        "(`invoke env` prints it for .env files; `invoke down` stops it)"
    )


def _refuse_a_differing_server(c: Context, port: str | None, flavor: str | None) -> None:
    """`up --port/--flavor` while this project's server runs otherwise: one error, no step run.

    Checked before the fetch step (which could download the other flavor for nothing) and
    reported once: through the start step it was start's error plus "up stopped: the start
    step failed", two errors for one cause.
    """
    if not port and flavor in (None, "", "auto"):
        return
    from devserver.server import process
    from devserver.server.running import differences, restart_hint

    settings = settings_from(c, flavor=flavor, port=port)
    state, proc = process.current_state(settings)
    if state is None or proc is None:
        return
    asked = {"port": port and settings.port, "flavor": flavor}
    differ = differences(state, asked)
    if differ:
        raise DevServerError(
            f"up: {state.flavor} {state.version} is already running (pid {state.pid}, "
            f"{state.host}:{state.port}), not the one asked for: {'; '.join(differ)}",
            hint=f"run `{restart_hint(asked)}` to replace it, then `invoke up` again "
            "(or drop the option to use the running server)",
        )


def _app_commands(settings: Settings) -> dict[str, str]:
    from devserver.app.procs import app_processes

    return app_processes(settings.api.command, settings.app.processes, settings.root / "Procfile")


_PREFIX_COLOURS = ("cyan", "yellow", "green", "bold", "dim")


def _up_app(settings: Settings, commands: dict[str, str]) -> None:
    """Run the application processes until one ends; say what still runs afterwards."""
    from devserver.app import env as app
    from devserver.app import procs
    from devserver.app import records as owned

    other = owned.running_owner(settings)
    if other is not None:
        raise DevServerError(
            f"the application processes already run under another `invoke up` (pid {other})",
            hint="stop them with `invoke down` (or Ctrl+C in that terminal)",
        )
    leftover = owned.stop_recorded(settings, settings.stop_timeout)  # of an `up` that was killed
    if leftover.stopped:
        console.warn(
            f"stopped what a killed `invoke up` left running: {', '.join(leftover.stopped)}"
        )
    state = app.running_server(settings)
    values = app.connection_env(settings, state)
    width = max(len(n) for n in commands)
    colours = {n: _PREFIX_COLOURS[i % len(_PREFIX_COLOURS)] for i, n in enumerate(commands)}
    console.info(f"REDIS_URL={app.redact_url(values['REDIS_URL'])}; cwd {settings.root}")

    def on_line(name: str, text: str) -> None:
        prefix = console.paint(f"{name:<{width}} |", colours[name], sys.stdout)
        sys.stdout.write(f"{prefix} {text}\n")
        sys.stdout.flush()

    def on_event(name: str, text: str) -> None:
        console.info(console.paint(f"{name:<{width}} |", colours[name]) + f" [up] {text}")

    try:
        result = procs.run_processes(
            commands,
            procs.process_env(os.environ, values),
            settings.root,
            on_line,
            on_event,
            on_started=lambda pids: owned.record(settings, pids),
            stop_requested=lambda: owned.stop_was_requested(settings),
            grace=settings.stop_timeout,
        )
    finally:
        owned.clear(settings)
    _up_app_summary(settings, result)
    if result.code != 0:
        raise Exit(code=result.code)


def _up_app_summary(settings: Settings, result: Any) -> None:
    """One line that matches what is running now (the server may have been stopped too)."""
    if result.reason == "stopped":
        console.ok("`invoke down` stopped the application processes (it stops the server next)")
        return
    what = (
        "Ctrl+C: stopped the application processes"
        if result.reason == "interrupted"
        else f"{result.first} exited (code {result.code}), so the others were stopped"
    )
    console.info(f"{what}; {_server_now(settings)}")


def _server_now(settings: Settings) -> str:
    """Whether the server still runs, checked now (it may have been stopped meanwhile)."""
    from devserver.server import process

    try:
        state, proc = process.current_state(settings)
    except DevServerError:
        state, proc = None, None
    if state is not None and proc is not None:
        return "the server keeps running: stop it with `invoke down`"
    return "the server is not running any more (`invoke up` starts it)"


# --- Daily use (issue 11): reset, run, cli ----------------------------------------------------


@task(
    help={
        "flavor": "whose data: dragonfly, redis or garnet (default: the running server's, "
        "else server.flavor)",
        "yes": "do not ask for confirmation (needed without a terminal, e.g. in scripts)",
    }
)
@handled
def reset(c: Context, flavor: str | None = None, yes: bool = False) -> None:
    """Stop the server, then delete this flavor's data folder (data/<flavor>/): an empty server.

    Asks first (type y); without a terminal it refuses unless --yes is given. Nothing outside
    data/<flavor>/ is touched; another flavor's running server is left alone.
    """
    from devserver.server import process
    from devserver.server import reset as wipe
    from devserver.server.state import project_lock

    settings = settings_from(c)
    state, proc = process.current_state(settings)
    running = state.flavor if state is not None and proc is not None else None
    name = wipe.pick_flavor(settings, flavor, running)
    found = wipe.footprint(settings, name)
    what = f"{found.path} ({found.files} files, {console.human_bytes(found.size)})"
    if not found.exists and running != name:
        console.ok(f"nothing to reset: {found.path} does not exist")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"reset would delete {what}, and there is no terminal to confirm it",
                hint="pass --yes to delete it without asking",
            )
        stopping = f" and stop the running {name} server" if running == name else ""
        sys.stderr.write(f"delete {what}{stopping}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            console.info("nothing deleted")
            return
    if running == name:
        stopped = process.stop(settings, save=False)  # its last snapshot is about to go anyway
        if stopped.was_running and stopped.state is not None:
            console.ok(f"{name} (pid {stopped.state.pid}) stopped")
    with project_lock(settings.lock_file, wait=settings.stop_timeout):
        again, live = process.current_state(settings)  # a start may have raced us
        if again is not None and live is not None and again.flavor == name:
            raise ConfigError(
                f"{name} was started again while resetting; nothing deleted",
                hint="stop it, then run `invoke reset` again",
            )
        wipe.remove(settings, name)
    console.ok(f"deleted {what}; the next start begins empty")


@task(name="run")
@handled
def run_command(c: Context) -> None:
    """Run a one-off command with REDIS_URL and api.env exported: invoke run -- CMD ARGS.

    Everything after `--` is the command, its words kept exactly as your shell passed them
    (quotes included); its exit code is passed on. Works while the server is stopped too
    (REDIS_URL is then the configured address, with a warning).
    """
    from devserver.app import env as app
    from devserver.app import procs
    from devserver.app.shellenv import run_command as run_words
    from devserver.app.shellenv import words_after_dashdash
    from devserver.server import process

    words = words_after_dashdash(sys.argv, ("run",))
    if not words:
        raise ConfigError(
            "no command given", hint="put it after `--`: invoke run -- python -m myapp.migrate"
        )
    settings = settings_from(c)
    state, proc = process.current_state(settings)
    if proc is None:
        state = None
        console.warn("the server is not running: REDIS_URL is the configured address")
    _note_other_port(settings, state)
    values = app.connection_env(settings, state)
    code = run_words(words, procs.process_env(os.environ, values), Path.cwd())
    if code != 0:
        raise Exit(code=code)


def _cli_words() -> tuple[bool, list[str] | None]:
    """(positional?, words after `--`): `invoke cli PING` takes one word as the command."""
    from devserver.app.shellenv import words_after_dashdash

    argv = sys.argv
    after = argv[argv.index("cli") + 1 :] if "cli" in argv else []
    positional = bool(after) and not after[0].startswith("-")
    return positional, words_after_dashdash(argv, ("cli",))


class _CliTask(Task[Callable[..., Any]]):
    """``invoke cli PING``: the first word after ``cli`` is the command when one is given.

    Invoke's positional arguments are required, and an optional one cannot be declared; so
    ``command`` is made positional only when the command line has such a word (it is read
    from sys.argv when the parser is built). More words need ``--``, as for ``invoke run``.
    """

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        self.positional = ["command"] if _cli_words()[0] else []
        _refuse_stray_cli_words()
        return list(super().get_arguments(ignore_unknown_help))


def _refuse_stray_cli_words() -> None:
    """``invoke cli GET k``: say how to pass several words instead of "No idea what 'k' is!".

    Raised as Invoke's ParseError while the parser is built, so Invoke prints it as its own
    parse failure (one line + hint, exit 1) before it would trip over ``k``.
    """
    from invoke.exceptions import ParseError

    from devserver.cli.redis_prompt import stray_word

    argv = sys.argv[1:]
    if "--" in argv:
        argv = argv[: argv.index("--")]  # words after `--` belong to the task before it
    if "cli" not in argv:
        return
    after = argv[argv.index("cli") + 1 :]
    tasks = {t.name for t in globals().values() if isinstance(t, Task)}
    word = stray_word(after, sorted(tasks))
    if word is not None:
        import shlex

        words = [w for w in after if not w.startswith("-")]
        plain = all(re.fullmatch(r"[\w.:*@%+=,/-]+", w) for w in words)
        quoted = f"   (or quote them: invoke cli '{' '.join(words)}')" if plain else ""
        raise ParseError(
            f"error: `invoke cli` takes the command as one word (Invoke would run {word!r} as "
            "the next task)\n"
            f"hint: put several words after --: invoke cli -- {shlex.join(words)}{quoted}"
        )


@task(
    klass=_CliTask,
    help={
        "command": "the command as one word, e.g. PING or 'SET k \"v w\"' (split as "
        'redis-cli does); or the words after --: invoke cli -- SET k "v w"',
        "raw": "print replies as plain text (the default when stdout is not a terminal)",
    },
)
@handled
def cli(c: Context, command: str | None = None, raw: bool = False) -> None:
    """A Redis prompt on the managed server, AUTH done (no redis-cli needed).

    `invoke cli PING` or `invoke cli -- SET k "v w"` runs one command (an error reply: exit 1);
    `invoke cli` alone is interactive (quit or Ctrl+D leaves); commands piped on stdin run
    one per line.
    """
    from devserver.app import env as app
    from devserver.cli import redis_prompt as redis_cli
    from devserver.server import resp

    words = redis_cli.split_command(command) if command else (_cli_words()[1] or [])
    settings = settings_from(c)
    state = app.running_server(settings, needed_by="`invoke cli`")
    _note_other_port(settings, state)
    session = redis_cli.Session(resp.connect_host(state.host), state.port, settings.password)
    plain = raw or not sys.stdout.isatty()
    try:
        if words:
            try:
                reply = session.call(words)
            except resp.RespError as exc:
                raise redis_cli.CliError(f"{exc}", hint=f"the server refused {words[0]}") from None
            sys.stdout.write(redis_cli.format_reply(reply, plain) + "\n")
            return
        prompt = f"{state.host}:{state.port}> "
        interactive = sys.stdin.isatty()
        if interactive:
            console.info(
                f"{state.flavor} {state.version} on {state.host}:{state.port}; quit to leave"
            )
            redis_cli.enable_line_editing()

        def read() -> str | None:
            try:
                return input(prompt) if interactive else (sys.stdin.readline() or None)
            except EOFError:
                return None

        code = redis_cli.repl(session, read, sys.stdout, sys.stderr, raw=plain)
    finally:
        session.close()
    if code:
        raise Exit(code=code)


# The collection a project's tasks.py imports (``from devserver.cli.tasks import ns``) and the
# ``devserver`` console script runs: every task of this module, found the way Invoke would
# find them in a tasks.py of its own, so a task added above is in it without a list to update.
ns = Collection.from_module(sys.modules[__name__])
