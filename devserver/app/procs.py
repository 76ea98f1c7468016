"""Several application processes at once (``invoke up``): an API and a worker, Procfile-style.

Why not honcho (the anchor for this, 2.0.0): on Windows it starts each command with
``shell=True`` and stops it with TerminateProcess on that pid, which is cmd.exe's, so the
application under it keeps running; it runs one ``multiprocessing`` child per command; and it
neither exposes the pids with an identity to record nor lets another shell (``invoke down``)
stop what it started. What we need is small: spawn through appproc.spawn_app, one reader
thread per process prefixing its lines, stop all when one ends, record pid + identity.

The first process to exit ends the run: the others are asked to stop (appproc.ask_app_to_stop:
the main process alone, so a worker finishes its jobs), and after ``grace`` seconds everything
any of them started, orphans included, is killed (app/teardown.py); the first one's exit code
is the result (Ctrl+C: 130; stopped by ``invoke down``: 0). The run only ends once nothing it
started runs, or what survived a kill is in ``RunResult.left``. The library prints nothing:
lines and events go to callbacks.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from devserver.app.teardown import KILL_WAIT_S, Trees, terminate
from devserver.errors import ConfigError, DevServerError
from devserver.system import appproc, apptree, kill, signals


class AppError(DevServerError):
    """An application process could not be started."""


@dataclass(frozen=True)
class RunResult:
    """How the run ended: ``first`` is the process that ended it (None: Ctrl+C or down)."""

    code: int
    first: str | None
    reason: str  # "exited", "interrupted" or "stopped" (invoke down)
    left: tuple[str, ...] = ()  # "name: prog (pid N)" of what still runs after the kill
    signal: str = ""  # "interrupted" by which: "SIGINT" (Ctrl+C), "SIGTERM", "SIGHUP"


LineSink = Callable[[str, str], None]  # (process name, line)
Spawn = Callable[[str, Mapping[str, str], Path], "subprocess.Popen[bytes]"]

_PROC_LINE_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:\s*(.+)$")


def parse_procfile(text: str) -> dict[str, str]:
    """``name: command`` lines as foreman and honcho read them (# comments, blanks skipped)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROC_LINE_RE.match(line)
        if not match:
            raise ConfigError(
                f"Procfile line {number} is not 'name: command': {line!r}",
                hint="write one process per line, e.g. 'worker: python -m myapp.worker'",
            )
        found[match.group(1)] = match.group(2).strip()
    return found


def app_processes(
    api_command: str, processes: Mapping[str, str], procfile: Path | None
) -> dict[str, str]:
    """What ``up`` runs: ``api.command`` as "api", plus app.processes (else the Procfile)."""
    extra = dict(processes)
    if not extra and procfile is not None and procfile.is_file():
        extra = parse_procfile(procfile.read_text(encoding="utf-8"))
    result = {"api": api_command} if api_command else {}
    if "api" in result and "api" in extra:
        raise ConfigError(
            "two processes are named 'api': api.command and app.processes (or the Procfile)",
            hint="leave api.command empty, or rename the other process",
        )
    result.update(extra)
    return result


def process_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for an application process: ours + REDIS_URL/api.env, with the
    folder of the interpreter running the tool (a venv's scripts) first on PATH, so a bare
    ``python`` in a command is the venv's, as after activating it."""
    env = dict(base)
    env.update(extra)
    scripts = os.path.dirname(sys.executable)
    key = next((k for k in env if k.upper() == "PATH"), "PATH")
    parts = [p for p in env.get(key, "").split(os.pathsep) if p]
    env[key] = os.pathsep.join([scripts, *[p for p in parts if p != scripts]])
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the prefixing reader as printed
    return env


def _read_lines(name: str, stream: IO[bytes], out: queue.Queue[tuple[str, str | None]]) -> None:
    """A reader thread: bytes decoded as UTF-8 with replacement, one queue item per line."""
    for raw in iter(stream.readline, b""):
        out.put((name, raw.decode("utf-8", "replace").rstrip("\r\n")))
    out.put((name, None))


@contextmanager
def _interrupts(flag: threading.Event, got: list[str]) -> Iterator[None]:
    """Ctrl+C / SIGTERM / a hang-up set a flag the loop acts on, and ``got`` says which
    (main thread only; else nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, _frame: object) -> None:
        got.append(signal.Signals(number).name)
        flag.set()

    previous = {n: signal.signal(n, handler) for n in signals.interrupt_signals()}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def run_processes(
    commands: Mapping[str, str],
    env: Mapping[str, str],
    cwd: Path,
    on_line: LineSink,
    on_event: LineSink,
    on_started: Callable[[dict[str, int]], None] = lambda pids: None,
    stop_requested: Callable[[], bool] = lambda: False,
    grace: float = 5.0,
    spawn: Spawn = appproc.spawn_app,
    run: str = "",
) -> RunResult:
    """Run every command until the first one ends (or Ctrl+C, or a stop request); stop the rest.

    ``on_started`` gets {name: pid} once all are running (``up`` records them for
    ``invoke down``); ``stop_requested`` is polled about every 0.1 s. ``run``: the token each
    process carries in its environment (apptree.tag_env), by which its descendants are found.
    """
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    interrupted = threading.Event()
    run = run or apptree.new_run()
    got: list[str] = []
    with _interrupts(interrupted, got):
        try:
            for name, command in commands.items():
                try:
                    procs[name] = spawn(command, {**env, **apptree.tag_env(run, name)}, cwd)
                except OSError as exc:
                    raise AppError(
                        f"cannot start the {name} process ({command!r}): {exc.strerror or exc}",
                        hint="check app.processes / api.command in invoke.yaml",
                    ) from None
                stream = procs[name].stdout
                assert stream is not None  # spawn_app pipes it
                threading.Thread(
                    target=_read_lines, args=(name, stream, lines), daemon=True
                ).start()
                on_event(name, f"started (pid {procs[name].pid}): {command}")
            on_started({name: proc.pid for name, proc in procs.items()})
            trees = Trees(run, {name: apptree.handle(proc.pid) for name, proc in procs.items()})
            shells = {name for name, command in commands.items() if appproc.through_shell(command)}
            result = _supervise(
                procs, lines, on_line, on_event, interrupted, stop_requested, grace, trees, shells
            )
            if result.reason == "interrupted" and got:
                result = replace(result, signal=got[0])
            return result
        except BaseException:
            for proc in procs.values():
                appproc.kill_app(proc)
            raise


def _supervise(
    procs: dict[str, subprocess.Popen[bytes]],
    lines: queue.Queue[tuple[str, str | None]],
    on_line: LineSink,
    on_event: LineSink,
    interrupted: threading.Event,
    stop_requested: Callable[[], bool],
    grace: float,
    trees: Trees,
    shells: set[str],
) -> RunResult:
    """The loop: print lines, notice the first exit or a stop, stop the rest, drain output.

    It ends once every process and everything they started has ended (their output read to
    the end), or, ``KILL_WAIT_S`` after the kill at the end of ``grace``, with what is left.
    """
    open_streams = set(procs)
    codes: dict[str, int] = {}
    first: str | None = None
    reason = ""
    deadline: float | None = None
    killed = False
    next_check = 0.0
    while open_streams or len(codes) < len(procs) or (reason and trees.remaining()):
        try:
            name, text = lines.get(timeout=0.1)
            if text is None:
                open_streams.discard(name)
            else:
                on_line(name, text)
        except queue.Empty:
            pass
        for name, proc in procs.items():
            if name not in codes and proc.poll() is not None:
                codes[name] = kill.exit_code(proc.returncode)
                on_event(name, f"exited with {kill.describe_exit(proc.returncode)}")
                if not reason:
                    first, reason = name, "exited"
        if not reason and interrupted.is_set():
            reason = "interrupted"
        if not reason and time.monotonic() >= next_check:  # a file read: not on every line
            next_check = time.monotonic() + 0.1
            if stop_requested():
                reason = "stopped"
        if reason and deadline is None:
            deadline = time.monotonic() + grace
            _ask_all(procs, codes, trees, shells, on_event)
        if reason:
            trees.refresh()
        if deadline is not None and time.monotonic() > deadline:
            if killed:
                break  # what is left survived a kill: reported below
            killed = True
            for name in sorted({name for name, _proc in trees.remaining()}):
                on_event(name, f"did not stop within {grace:g}s: killing it")
            for proc in procs.values():
                appproc.kill_app(proc)
            trees.kill_all()
            deadline = time.monotonic() + KILL_WAIT_S
    left = tuple(trees.left()) if killed else ()
    if reason == "interrupted":
        return RunResult(130, None, reason, left)
    if reason == "stopped":
        return RunResult(0, None, reason, left)
    assert first is not None
    return RunResult(codes[first], first, reason, left)


def _ask_all(
    procs: dict[str, subprocess.Popen[bytes]],
    codes: dict[str, int],
    trees: Trees,
    shells: set[str],
    on_event: LineSink,
) -> None:
    """The start of the stop: the main processes are asked; what an exited one left behind
    (its own children, re-parented) has no main process to stop it in order and is asked
    directly."""
    trees.refresh(scan=True)
    for name, proc in procs.items():
        if name not in codes:
            on_event(name, "stopping")
            if not appproc.ask_app_to_stop(proc, name in shells):
                on_event(name, "cannot be asked to stop (no shared console): killing it")
                appproc.kill_app(proc)
    for name in sorted(codes):
        orphans = trees.orphans([name])
        if orphans:
            pids = ", ".join(str(proc.pid) for proc in orphans)
            on_event(name, f"stopping what it left running (pid {pids})")
            terminate(orphans)
