"""start / stop / status of the one managed server of a project directory.

The library does not print: ``start`` reports log lines and progress through callbacks and
returns a result; failures are raised as DevServerError with a hint. Every signal goes
through an identity-checked psutil handle (see state.py); a stale state file is removed,
never acted on.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devserver.catalog import build_launch, get_flavor
from devserver.config import Settings
from devserver.errors import StartError, StateError
from devserver.fetch.binaries import Binary
from devserver.fetch.choice import choose_binary
from devserver.server import datadir, resp
from devserver.server.ports import check_port_free
from devserver.server.readiness import LineSink, LogEcho, wait_ready
from devserver.server.state import (
    ServerState,
    configured_names,
    current_state,
    project_lock,
    read_state,
    remove_state,
    server_process,
    supervisor_alive,
    untrusted_state,
)
from devserver.server.stopping import StopResult, stop
from devserver.supervisor.bootstrap import can_fork, encode_spec, fork_supervisor
from devserver.supervisor.core import PACKAGE_PARENT, Spec, launch_supervisor, supervisor_env
from devserver.supervisor.owner import identity
from devserver.system import kill, signals, spawn, wsl
from devserver.system.atomic import check_writable
from devserver.system.posix import Child

__all__ = ["StartResult", "StopResult", "current_state", "start", "status", "stop"]

# The supervisor as ``start`` holds it: spawned (Popen) or forked from this process (Child).
SupProc = subprocess.Popen[bytes] | Child


@dataclass(frozen=True)
class StartResult:
    state: ServerState
    already_running: bool
    stale: ServerState | None = None
    broke_away: bool = True
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # e.g. the log file cannot be written (the server runs)
    supervised: bool = True  # already running, but its supervisor is gone: log not captured


def _ensure_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
    except OSError as exc:
        raise StartError(
            f"the {what} directory {path} is not writable ({exc.strerror})",
            hint=f"fix its permissions or set server.{what}_dir",
        ) from None


def build_spec(settings: Settings, binary: Binary) -> Spec:
    """The supervisor's launch spec (plain values; it carries the password, so it goes on
    stdin)."""
    flavor = get_flavor(binary.flavor)
    launch = build_launch(flavor, settings, str(binary.path), os.environ)
    argv, env = list(launch.argv), dict(launch.env)
    if binary.via_wsl:
        argv = wsl.server_argv(argv)
        env = wsl.utf8_env(wsl.wsl_env(env, [flavor.password_env]))
    stop_save, terminate = flavor.stop_plan(save=True)
    return {
        "argv": argv,
        "public_argv": argv,
        "env": env,
        "cwd": str(settings.flavor_data_dir(flavor.name)),
        "flavor": flavor.name,
        "version": binary.version,
        "binary": str(binary.path),
        "host": settings.host,
        "port": settings.port,
        "state_file": str(settings.state_file),
        "log_file": str(settings.log_file(flavor.name)),
        "log_max_bytes": settings.log_max_bytes,
        "log_backups": settings.log_backups,
        "password": settings.password,
        "stdin_config": launch.stdin_config,
        "secret_file": list(launch.secret_file) if launch.secret_file else None,
        "stop_save": stop_save,
        "stop_nosave": flavor.stop_plan(save=False)[0],
        "terminate_after_stop": terminate,
        "owner_pid": 0,
        "owner_create_time": 0.0,
    }


@dataclass(frozen=True)
class Prepared:
    """A start that passed every check: what to launch, and what the caller reports."""

    spec: Spec
    binary: Binary
    data_dir: Path
    stale: ServerState | None
    warnings: tuple[str, ...] = ()
    log_writable: bool = True  # else no marker will appear in it: the echo must not wait


def prepare(
    settings: Settings,
    stale: ServerState | None,
    on_binary: Callable[[Binary], None] | None = None,
) -> Prepared:
    """Everything a start checks before launching (call with the project lock held).

    Shared by the background start and ``start --foreground``, which have already found
    that no server of ours runs (``stale`` is the state file's content if one was left):
    removes the stale state, chooses the binary, refuses data written by a newer version, a
    taken port, unwritable folders.
    """
    warnings = []
    untrusted = untrusted_state(settings) if stale is None else ""
    if stale is not None or untrusted:
        try:
            remove_state(settings.state_file)
        except OSError as exc:
            raise StartError(
                f"cannot remove the stale state file {settings.state_file} ({exc.strerror})",
                hint=f"fix the permissions of {settings.data_dir} (an immutable folder?)",
            ) from None
    if untrusted:
        warnings.append(f"replaced an untrusted state file: {untrusted}")
    binary = choose_binary(settings)
    if on_binary:
        on_binary(binary)
    if binary.via_wsl:
        wsl.check_default_distro()  # before anything else costs time: a hint, not a crash
        # Dragonfly rewrites it at start; an old one must never name the new server.
        wsl.pidfile(settings, binary.flavor).unlink(missing_ok=True)
    spec = build_spec(settings, binary)
    data_dir = settings.flavor_data_dir(binary.flavor)
    datadir.check_compatible(data_dir, binary.flavor, binary.version)
    check_port_free(settings.host, settings.port)
    _ensure_writable(data_dir, "data")
    # The state file's folder too: a server whose state cannot be recorded would be
    # untracked (the supervisor stops it if the write fails anyway, e.g. on a full disk).
    _ensure_writable(settings.state_file.parent, "data")
    _ensure_writable(settings.log_dir, "log")
    log_warnings = _log_warnings(Path(spec["log_file"]))
    warnings.extend(log_warnings)
    return Prepared(spec, binary, data_dir, stale, tuple(warnings), not log_warnings)


def _log_warnings(log_file: Path) -> list[str]:
    """A log file we cannot append to is not fatal (the server runs; its lines are dropped
    and counted), but the person must know: nothing they see later comes from it."""
    try:
        with open(log_file, "ab"):
            pass
    except OSError as exc:
        return [
            f"the log file {log_file} cannot be written ({exc.strerror}): the server runs, "
            "but its output is lost until that is fixed"
        ]
    return []


def start(
    settings: Settings,
    on_line: LineSink | None = None,
    on_binary: Callable[[Binary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    supervisor: tuple[subprocess.Popen[bytes], bool] | None = None,
    owner_pid: int = 0,
) -> StartResult:
    """Start the server in the background and return once it answers PING.

    Already running: returns ``already_running=True`` and touches nothing. Failure (exit at
    once, timeout): kills what it started, removes the state file, raises StartError with
    the log's last lines in the hint. ``supervisor`` is one the caller launched early with
    :func:`launch_supervisor` (its start-up then overlaps our checks); it is told to exit,
    by closing its stdin without a spec, when nothing is to be started. ``owner_pid``: the
    server is stopped once that process has exited (supervisor/owner.py; ephemeral
    servers).

    Ctrl+C before the server was handed to its supervisor undoes the start (and raises
    KeyboardInterrupt); once handed over, a Ctrl+C is too late to matter and the start
    returns normally: the caller is never told "interrupted" about a server left running.

    With no ``supervisor`` given, on Linux in a single-threaded process, the supervisor is
    forked from this process once the checks passed (``bootstrap.fork_supervisor``: no new
    interpreter before the server's spawn); elsewhere one is spawned at once, as above.
    """
    began = clock()
    sup: SupProc | None
    if supervisor is not None:
        sup, broke_away = supervisor
    elif can_fork():
        sup, broke_away = None, True
    else:
        sup, broke_away = launch_supervisor()
    result: StartResult | None = None
    try:
        with signals.interrupt_once() as hurried:
            result = _start(
                settings, sup, broke_away, on_line, on_binary, clock, began, hurried, owner_pid
            )
    except KeyboardInterrupt:
        if result is None:
            raise
    assert result is not None
    return result


def _start(
    settings: Settings,
    sup: SupProc | None,
    broke_away: bool,
    on_line: LineSink | None,
    on_binary: Callable[[Binary], None] | None,
    clock: Callable[[], float],
    began: float,
    hurried: Callable[[], bool],
    owner_pid: int = 0,
) -> StartResult:
    """The body of :func:`start`, run where a second Ctrl+C cannot abort the cleanup.

    ``sup`` None: fork the supervisor once the checks passed (no thread may start before)."""
    launched = handed_over = False
    try:
        with project_lock(settings.lock_file, wait=settings.startup_timeout):
            state, proc = current_state(settings)
            if state is not None and proc is not None:
                if sup is not None:
                    _discard(sup)
                return StartResult(state, True, supervised=supervisor_alive(state))
            ready = prepare(settings, state, on_binary)
            if owner_pid:
                ready.spec["owner_pid"], ready.spec["owner_create_time"] = identity(owner_pid)
            echo = LogEcho(Path(ready.spec["log_file"]), on_line)
            launched = True  # from here on the supervisor may be running a server
            forked = False
            if sup is None and can_fork():  # checked again: still one thread?
                python = spawn.python_for_background()
                # A Ctrl+C now is delivered once ``sup`` holds the fork, so the undo sees it.
                with signals.sigint_blocked():
                    try:
                        sup = fork_supervisor(ready.spec, python, supervisor_env(), PACKAGE_PARENT)
                        forked = True
                    except OSError:
                        pass  # no fork (EAGAIN, ENOMEM, EMFILE): spawn a supervisor instead
            if not forked:
                sup = sup or launch_supervisor()[0]
                assert sup.stdin is not None
                sup.stdin.write(encode_spec(ready.spec))
                sup.stdin.flush()
            assert sup is not None
            report = SupervisorReport(sup)
            try:
                state = wait_ready(settings, sup, echo, clock, clock(), report.failure)
            except StartError as exc:
                if echo.load_failure and datadir.has_data(ready.data_dir):
                    exc.hint += (
                        f"\n(the data in {ready.data_dir} is kept; if the server cannot load "
                        "it, run the version that wrote it, or move the folder aside)"
                    )
                raise
            datadir.record_version(ready.data_dir, ready.binary.version)
            assert sup.stdin is not None
            sup.stdin.write(b"ok\n")  # the lifeline: the supervisor keeps the server now
            sup.stdin.close()
            handed_over = True
    except KeyboardInterrupt:
        if not handed_over:  # Ctrl+C while checking or waiting: undo
            _undo(settings, sup, launched, hurried)
            raise
    except BaseException:  # a failed check or a failed start
        _undo(settings, sup, launched, hurried)
        raise
    try:
        echo.settle(state.pid if state is not None and ready.log_writable else 0)
    except KeyboardInterrupt:
        pass  # only the last log lines' echo is cut short: the server runs, tracked
    assert state is not None  # wait_ready's, as it was handed over
    return StartResult(state, False, ready.stale, broke_away, clock() - began, ready.warnings)


def _undo(
    settings: Settings, sup: SupProc | None, launched: bool, hurried: Callable[[], bool]
) -> None:
    if sup is None:
        return  # nothing was forked or spawned yet
    if launched:
        _abandon(settings, sup, hurried)
    else:
        _discard(sup)


class SupervisorReport:
    """What a detached supervisor says on its stdout before it recorded the state: at most
    one JSON line naming a start-up failure (after it stopped the server).

    Read only once the supervisor has exited (then the pipe ends at once: nothing else holds
    its write end), by a short-lived thread so that no platform needs a non-blocking pipe and
    a read can never hang ``start``. No thread runs during a normal start: one would stop
    the next ``process.start`` of this process from forking its supervisor
    (``bootstrap.can_fork``).
    """

    def __init__(self, sup: SupProc) -> None:
        self.sup = sup
        self.lines: list[bytes] = []

    def _read(self, stream: Any) -> None:
        try:
            for line in stream:
                self.lines.append(line)
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def failure(self, wait: float = 1.0) -> StartError | None:
        """The reported failure, if any (waits up to ``wait`` s for the pipe to end)."""
        import threading

        stream = self.sup.stdout
        if stream is None or self.sup.poll() is None:
            return None
        reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        reader.start()
        reader.join(wait)
        for line in list(self.lines):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("error"):
                return StartError(str(data["error"]), hint=str(data.get("hint") or ""))
        return None


def _discard(sup: SupProc, timeout: float = 10) -> None:
    """Let a supervisor end on its own (with no spec it exits at once; after its server died
    it logs the exit and cleans up), reap it, and kill it only if it does not end in time."""
    if sup.stdin is not None and not sup.stdin.closed:
        sup.stdin.close()
    try:
        sup.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_supervisor(sup)


def _kill_supervisor(sup: SupProc) -> None:
    """Kill the supervisor and what it runs. Through psutil's tree, because on Windows a
    venv's python.exe is a launcher: Popen's pid is not the supervisor's own."""
    import psutil

    try:
        kill.kill_tree(psutil.Process(sup.pid))
    except psutil.Error:
        pass
    sup.wait()


def _abandon(
    settings: Settings,
    sup: SupProc,
    hurried: Callable[[], bool] = lambda: False,
    timeout: float = 2.0,
) -> None:
    """Undo a failed start, completely and fast (tens of milliseconds).

    Closing the supervisor's stdin without ``ok`` tells it the start was given up: it kills
    the server (recorded or not yet), logs it, removes a password file and exits. Only if it
    has not ended within ``timeout``, or another Ctrl+C asks to hurry (``hurried``), do we
    kill the server by its recorded identity and the supervisor's tree ourselves. The state
    file goes last. Runs under :func:`signals.interrupt_once`, so Ctrl+C cannot cut it short.
    """
    if sup.stdin is not None:
        try:
            sup.stdin.close()
        except OSError:
            pass  # the supervisor is gone already
    deadline = time.monotonic() + timeout
    delay = 0.001
    while sup.poll() is None and time.monotonic() < deadline and not hurried():
        time.sleep(delay)
        delay = min(delay * 1.5, 0.02)
    if sup.poll() is None:
        try:
            state = read_state(settings.state_file)
        except StateError:
            state = None
        proc = server_process(state, configured_names(settings)) if state is not None else None
        if state is not None and proc is not None:
            _kill_server(settings, state, proc)
        _kill_supervisor(sup)
    try:
        remove_state(settings.state_file)
    except OSError:
        pass  # an unwritable data folder: the entry names a dead process, so it reads as stale


def _kill_server(settings: Settings, state: ServerState, proc: Any) -> None:
    """Kill a server at once (a failed start); under WSL the Linux process first."""
    wsl.kill_now(settings, state)
    kill.kill_tree(proc)


def status(settings: Settings) -> dict[str, Any]:
    """The status object (``invoke status --json``): running or not, and what we know."""
    state, proc = current_state(settings)
    untrusted = "" if state is not None else untrusted_state(settings)
    flavor = state.flavor if state else (settings.flavor if settings.flavor != "auto" else "")
    info: dict[str, Any] = {
        "running": proc is not None,
        "flavor": flavor or None,
        "version": state.version if state else None,
        "pid": state.pid if state and proc is not None else None,
        "host": state.host if state else settings.host,
        "port": state.port if state else settings.port,
        "state_file": str(settings.state_file),
        "log_file": state.log_file if state else _log_for(settings, flavor),
        "uptime_s": round(time.time() - state.create_time, 1) if state and proc else None,
        "binary": state.binary if state else None,
        "stale": (state is not None and proc is None) or bool(untrusted),
        "exit_status": state.exit_status if state else None,
        # False: the server runs but its supervisor is gone, so nobody captures its log
        # (`invoke restart` fixes it; `invoke stop` still stops it).
        "supervised": supervisor_alive(state) if state and proc is not None else None,
    }
    if untrusted:
        info["state_error"] = untrusted
    if proc is not None and state is not None:
        info.update(_server_info(state, settings, proc))
    return info


def _log_for(settings: Settings, flavor: str) -> str | None:
    return str(settings.log_file(flavor)) if flavor else None


def _server_info(state: ServerState, settings: Settings, proc: Any) -> dict[str, Any]:
    """Memory and clients: from INFO when we can authenticate, else from the OS."""
    extra: dict[str, Any] = {}
    try:
        extra["memory_rss_bytes"] = proc.memory_info().rss
    except Exception:
        pass
    try:
        reply = resp.call(
            resp.connect_host(state.host),
            state.port,
            [["INFO"]],
            timeout=1.0,
            password=settings.password,
        )[0]
    except (OSError, resp.RespError, resp.ConnectionClosed):
        return extra
    fields = dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    if "connected_clients" in fields:
        extra["clients"] = int(fields["connected_clients"])
    if "used_memory" in fields:
        extra["used_memory_bytes"] = int(fields["used_memory"])
    return extra
