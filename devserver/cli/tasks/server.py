"""The server's own tasks: start, stop, restart, status, tail."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from devserver.cli import cliguard, console
from devserver.cli.invoke_args import TailTask, handled, settings_from
from devserver.cli.report import (
    STATUS_NOT_RUNNING,
    describe_binary,
    note_other_port,
    report_start,
    report_status,
    report_stop,
)
from devserver.config_values import whole_number
from devserver.errors import ConfigError, DevServerError
from devserver.system import signals, spawn
from devserver.tail import Follower, last_lines
from devserver.tail import follow as follow_log

NO_SAVE_HELP = (
    "skip the final snapshot (SHUTDOWN NOSAVE). Not a wipe: what the server already wrote "
    "(Redis's append-only file, earlier snapshots) is loaded again on the next start; "
    "`invoke reset` empties it"
)


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
    announce = lambda b: console.info("starting " + describe_binary(b))  # noqa: E731
    if foreground:
        # Windows venv: in a process outside the venv redirector's job, which a closed
        # console would kill before the graceful stop (see the function).
        code = spawn.foreground_outside_launcher_job()
        if code is None:
            # The server layer: imported when a task runs (see the package comment).
            from devserver.supervisor.foreground import run_foreground

            code = run_foreground(settings, on_binary=announce, sink=sys.stdout.write)
        raise Exit(code=0 if code in (0, None) else 1)
    # The supervisor is launched first and the server layer imported after it, so the two
    # overlap (see the package comment on imports).
    from devserver.server.marker import SUPERVISOR, marker_env
    from devserver.supervisor.launch import launch_supervisor

    # its start-up overlaps the import and checks below
    early = launch_supervisor(marker_env(settings, SUPERVISOR))
    with signals.interrupts_deferred():  # a Ctrl+C during the import: raised after it
        from devserver.server.start import start as start_server

    asked = {"port": port and settings.port, "flavor": flavor, "binary": binary}
    echo = _echo_while_read()
    result = start_server(settings, on_line=echo, on_binary=announce, supervisor=early)
    if result.already_running and port is None:  # --port differing is refused below
        note_other_port(settings, result.state)  # INVOKE_SERVER_PORT or invoke.yaml's differs
    try:
        report_start(result, asked)
    except KeyboardInterrupt:  # too late to undo: say what is true
        console.ok(f"{result.state.flavor} is running (pid {result.state.pid}); stop: invoke stop")


@task(help={"no_save": NO_SAVE_HELP})
@handled
def stop(c: Context, no_save: bool = False) -> None:
    """Stop the server: graceful SHUTDOWN, then SIGTERM, then a kill, within server.stop_timeout.

    Exits 1 when data may have been lost (the server refused to save, or had to be killed).
    """
    from devserver.server.stop import (
        stop as stop_server,  # the server layer: imported when a task runs
    )

    result = stop_server(settings_from(c), save=not no_save, on_progress=console.info)
    report_stop(result)


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
    from devserver.server.state import read_state  # the server layer: imported when tail runs

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
    klass=TailTask,
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
    count = _tail_count(lines)
    accept = _tail_filter(grep, level)
    path, unknown_dir = _tail_log_file(c, flavor)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a console code page must not crash it
    stop_event = threading.Event()
    if path.parent.exists() and not path.parent.is_dir():
        raise DevServerError(
            f"the log folder {path.parent} is not a folder (a file is in its place), so no "
            "log can be written or read there",
            hint="move that file aside (a running server's output is lost until then; "
            "`invoke restart` once fixed), or set server.log_dir",
        )
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
    from devserver.server.status import (
        status as server_status,  # the server layer: imported when a task runs
    )

    info = server_status(settings_from(c))
    try:
        report_status(info, json)
    except BrokenPipeError:  # `invoke status | grep -q running`: the exit code still tells
        cliguard.reader_left()
        raise Exit(code=0 if info["running"] else STATUS_NOT_RUNNING) from None
