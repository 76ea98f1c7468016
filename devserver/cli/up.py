"""The steps of `invoke up`: fetch only when needed, start, verify, then the application's
processes with their output prefixed, each step's failure said once."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit

from devserver.app import env as app
from devserver.cli import console, invoke_args
from devserver.cli.invoke_args import settings_from
from devserver.cli.report import describe_binary, server_now
from devserver.config import Settings
from devserver.errors import DevServerError, PortInUse

# The fetch, server and app layers are imported in the functions that use them: before its
# start step `up` imports only what that far needs (start overlaps importing the server layer
# with launching the supervisor); --no-fetch imports no fetch layer; the app layer comes after.


def up_header(number: int, step: str, text: str = "") -> None:
    """The one-line header of each `up` step, so a long scroll shows where it is."""
    console.info(
        console.paint(f"==> up {number}/4: {step}" + (f": {text}" if text else ""), "bold")
    )


def binary_missing(c: Context, flavor: str | None = None) -> tuple[str, str]:
    """("", what is ready) when fetch's flavor is already usable, else (why fetch must run, "").

    Checked here rather than always calling fetch so a ready machine goes straight to start;
    a pinned server.version that differs from what bin/ holds counts as missing.
    """
    from devserver.fetch import choice, release  # the fetch layer, unless --no-fetch
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
    return "", describe_binary(binary)


def up_step(c: Context, number: int, step: str, run: Callable[..., None], note: str = "") -> None:
    """Run one step of `up`; its failure (already reported by the task) stops the chain."""
    up_header(number, step, note)
    try:
        run(c)
    except Exit as exc:
        if exc.code == 130:  # Ctrl+C: the usual code, no "failed" message
            raise
        log = ", and the server log with `invoke tail`" if _server_may_have_logged(step) else ""
        console.error(
            f"up stopped: the {step} step failed",
            f"see the messages above{log}; fix it and run `invoke up` again",
        )
        raise Exit(code=1) from None


def _server_may_have_logged(step: str) -> bool:
    """Only a start that got as far as running the server has a log that may say why: not
    fetch or verify, nor a start refused before it (the port taken by another program)."""
    refused = any(isinstance(exc, PortInUse) for exc in invoke_args.last_failure)
    return step == "start" and not refused


def refuse_a_differing_server(c: Context, port: str | None, flavor: str | None) -> None:
    """`up --port/--flavor` while this project's server runs otherwise: one error, no step run.

    Checked before the fetch step (which could download the other flavor for nothing) and
    reported once: through the start step it was start's error plus "up stopped: the start
    step failed", two errors for one cause.
    """
    if not port and flavor in (None, "", "auto"):
        return
    # The server layer, only for --port/--flavor.
    from devserver.server.running import differences, restart_hint
    from devserver.server.state import current_state

    settings = settings_from(c, flavor=flavor, port=port)
    state, proc = current_state(settings)
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


def app_commands(settings: Settings) -> dict[str, str]:
    from devserver.app.procs import app_processes  # the app layer: after the server is up

    return app_processes(settings.api.command, settings.app.processes, settings.root / "Procfile")


_PREFIX_COLOURS = ("cyan", "yellow", "green", "bold", "dim")


def up_app(settings: Settings, commands: dict[str, str]) -> None:
    """Run the application processes until one ends; say what still runs afterwards."""
    from devserver.app import procs  # the app layer: after the server is up
    from devserver.app import records as owned
    from devserver.system import appproc, apptree

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
    watch = ServerWatch(settings.state_file)

    def on_line(name: str, text: str) -> None:
        prefix = console.paint(f"{name:<{width}} |", colours[name], sys.stdout)
        sys.stdout.write(f"{prefix} {text}\n")
        sys.stdout.flush()

    def on_event(name: str, text: str) -> None:
        console.info(console.paint(f"{name:<{width}} |", colours[name]) + f" [up] {text}")

    run = apptree.new_run()
    shells = [name for name, command in commands.items() if appproc.through_shell(command)]
    try:
        result = procs.run_processes(
            commands,
            procs.process_env(os.environ, values),
            settings.root,
            on_line,
            on_event,
            on_started=lambda pids: owned.record(settings, pids, run=run, shells=shells),
            stop_requested=lambda: watch.poll() or owned.stop_was_requested(settings),
            grace=settings.stop_timeout,
            run=run,
        )
    finally:
        owned.clear(settings)
    if not result.left:  # else it did not stop them all: said below, never "stopped"
        _up_app_summary(settings, result)
    if result.left:
        console.error(
            f"still running after a kill: {'; '.join(result.left)}",
            "check them with your OS's process tools",
        )
        raise Exit(code=1)
    if result.code != 0:
        raise Exit(code=result.code)


class ServerWatch:
    """What the server's supervisor did while `up` runs the application: a crash, the
    restart, giving up. Read from the state file the supervisor rewrites each time, at most
    every half second and only when its modification time moved (one stat otherwise)."""

    EVERY = 0.5

    def __init__(self, state_file: Path) -> None:
        self.path = state_file
        self.stamp = self._stamp()
        self.seen = self._read()
        self.next = 0.0

    def _stamp(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def poll(self) -> bool:
        """Say what changed, if anything; always False (it never asks `up` to stop)."""
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.EVERY
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        before, state = self.seen, self._read()
        self.seen = state
        restarts = state.get("restarts") or 0
        if state.get("gave_up") and not before.get("gave_up"):
            console.warn(f"[up] the server {state['gave_up']}")
        elif state.get("status") == "restarting" and before.get("status") != "restarting":
            console.warn(
                f"[up] the server crashed ({state.get('exit_status')}): its supervisor restarts it"
            )
        elif state.get("status") == "running" and restarts != (before.get("restarts") or 0):
            console.info(f"[up] the server was restarted (restart {restarts}, pid {state['pid']})")
        return False


def _up_app_summary(settings: Settings, result: Any) -> None:
    """One line that matches what is running now (the server may have been stopped too)."""
    if result.reason == "stopped":
        console.ok("`invoke down` stopped the application processes (it stops the server next)")
        return
    by = {"": "Ctrl+C", "SIGINT": "Ctrl+C", "SIGBREAK": "Ctrl+Break", "SIGHUP": "a hang-up"}
    what = (
        f"{by.get(result.signal, result.signal)}: stopped the application processes"
        if result.reason == "interrupted"
        else f"{result.first} exited (code {result.code}), so the others were stopped"
    )
    console.info(f"{what}; {server_now(settings)}")
