"""start / stop / status of the one managed server of a project directory.

The library does not print: ``start`` reports log lines and progress through callbacks and
returns a result; failures are raised as DevServerError with a hint. Every signal goes
through an identity-checked psutil handle (see state.py); a stale state file is removed,
never acted on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import compat, datadir, resp
from .atomic import check_writable
from .binaries import Binary, choose_binary
from .catalog import build_launch, get_flavor
from .config import Settings
from .errors import StartError, StateError, StopError
from .ports import check_port_free
from .readiness import LineSink, LogEcho, wait_ready
from .state import ServerState, project_lock, read_state, remove_state, server_process
from .supervisor import Spec, launch_supervisor


@dataclass(frozen=True)
class StartResult:
    state: ServerState
    already_running: bool
    stale: ServerState | None = None
    broke_away: bool = True
    seconds: float = 0.0


@dataclass(frozen=True)
class StopResult:
    state: ServerState | None
    was_running: bool
    forced: bool = False
    stale: bool = False
    seconds: float = 0.0


def current_state(settings: Settings) -> tuple[ServerState | None, Any | None]:
    """(state, live psutil process) of our server; process None when stopped or stale."""
    state = read_state(settings.state_file)
    if state is None or state.status != "running":
        return state, None
    return state, server_process(state)


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
    """The supervisor's launch spec (JSON-able; it carries the password, so it goes on stdin)."""
    flavor = get_flavor(binary.flavor)
    launch = build_launch(flavor, settings, str(binary.path), os.environ)
    argv, env = list(launch.argv), dict(launch.env)
    if binary.via_wsl:
        argv = compat.wsl_argv(argv)
        env = compat.wsl_env(env, [flavor.password_env])
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
    }


@dataclass(frozen=True)
class Prepared:
    """A start that passed every check: what to launch, and what the caller reports."""

    spec: Spec
    binary: Binary
    data_dir: Path
    stale: ServerState | None


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
    if stale is not None:
        remove_state(settings.state_file)
    binary = choose_binary(settings)
    if on_binary:
        on_binary(binary)
    spec = build_spec(settings, binary)
    data_dir = settings.flavor_data_dir(binary.flavor)
    datadir.check_compatible(data_dir, binary.flavor, binary.version)
    check_port_free(settings.host, settings.port)
    _ensure_writable(data_dir, "data")
    _ensure_writable(settings.log_dir, "log")
    return Prepared(spec, binary, data_dir, stale)


def start(
    settings: Settings,
    on_line: LineSink | None = None,
    on_binary: Callable[[Binary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    supervisor: tuple[subprocess.Popen[bytes], bool] | None = None,
) -> StartResult:
    """Start the server in the background and return once it answers PING.

    Already running: returns ``already_running=True`` and touches nothing. Failure (exit at
    once, timeout): kills what it started, removes the state file, raises StartError with
    the log's last lines in the hint. ``supervisor`` is one the caller launched early with
    :func:`launch_supervisor` (its start-up then overlaps our checks); it is told to exit,
    by closing its stdin without a spec, when nothing is to be started.
    """
    began = clock()
    sup, broke_away = supervisor or launch_supervisor()
    assert sup.stdin is not None
    launched = False
    try:
        with project_lock(settings.lock_file, wait=settings.startup_timeout):
            state, proc = current_state(settings)
            if state is not None and proc is not None:
                _discard(sup)
                return StartResult(state, already_running=True)
            ready = prepare(settings, state, on_binary)
            echo = LogEcho(Path(ready.spec["log_file"]), on_line)
            sup.stdin.write(json.dumps(ready.spec).encode("utf-8"))
            sup.stdin.close()
            launched = True
            try:
                state = wait_ready(settings, sup, echo, clock, clock())
            except StartError as exc:
                if echo.load_failure and datadir.has_data(ready.data_dir):
                    exc.hint += (
                        f"\n(the data in {ready.data_dir} is kept; if the server cannot load "
                        "it, run the version that wrote it, or move the folder aside)"
                    )
                raise
            datadir.record_version(ready.data_dir, ready.binary.version)
    except BaseException:  # a failed check, a failed start, or Ctrl+C while waiting
        if launched:
            _abandon(settings, sup)
        else:
            _discard(sup)
        raise
    echo.settle()
    return StartResult(state, False, ready.stale, broke_away, clock() - began)


def _discard(sup: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Let a supervisor end on its own (with no spec it exits at once; after its server died
    it logs the exit and cleans up), reap it, and kill it only if it does not end in time."""
    if sup.stdin is not None and not sup.stdin.closed:
        sup.stdin.close()
    try:
        sup.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_supervisor(sup)


def _kill_supervisor(sup: subprocess.Popen[bytes]) -> None:
    """Kill the supervisor and what it runs. Through psutil's tree, because on Windows a
    venv's python.exe is a launcher: Popen's pid is not the supervisor's own."""
    import psutil

    try:
        compat.kill_tree(psutil.Process(sup.pid))
    except psutil.Error:
        pass
    sup.wait()


def _abandon(settings: Settings, sup: subprocess.Popen[bytes]) -> None:
    """Undo a failed start: kill the server we started, let its supervisor finish (it removes
    a password file and logs the exit), kill the supervisor only if it does not; drop the state.
    """
    try:
        state = read_state(settings.state_file)
    except StateError:
        state = None
    if state is not None:
        proc = server_process(state)
        if proc is not None:
            compat.kill_tree(proc)
    _discard(sup, timeout=5)
    remove_state(settings.state_file)


def _ask_supervisor(state: ServerState, save: bool, timeout: float) -> bool:
    """Ask our supervisor to shut the server down; False when it cannot be reached.

    The supervisor answers once the server accepted SHUTDOWN, which can take a while when it
    saves a large dataset: no answer within ``timeout`` still means the request is under way.
    """
    if not state.control_port:
        return False
    try:
        with socket.create_connection(("127.0.0.1", state.control_port), timeout=2) as conn:
            mode = "save" if save else "nosave"
            conn.sendall(f"{state.control_token} stop {mode}\n".encode())
            conn.settimeout(timeout)
            try:
                answer = conn.recv(256).decode("utf-8", "replace").strip()
            except TimeoutError:
                return True
    except OSError:
        return False
    return answer == "ok"


def _wait_gone(proc: Any, timeout: float) -> bool:
    """Wait until the process has exited; a zombie counts as gone.

    Polled rather than psutil's ``wait``: for a process that is not our child (the detached
    supervisor, reparented to init) psutil keeps waiting on a zombie until it is reaped.
    """
    import psutil

    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def stop(settings: Settings, save: bool = True) -> StopResult:
    """Stop our server: graceful SHUTDOWN, then escalate on the server only; drop the state."""
    began = time.monotonic()
    with project_lock(settings.lock_file, wait=settings.stop_timeout):
        state, proc = current_state(settings)
        if state is None:
            return StopResult(None, was_running=False)
        if proc is None:
            remove_state(settings.state_file)
            return StopResult(state, was_running=False, stale=True)
        flavor = get_flavor(state.flavor)
        asked = _ask_supervisor(state, save, settings.stop_timeout)
        if not asked:  # no supervisor to ask: send the flavor's stop commands ourselves
            commands, terminate = flavor.stop_plan(save)
            try:
                if commands:
                    resp.call(
                        resp.connect_host(state.host),
                        state.port,
                        commands,
                        timeout=settings.stop_timeout,
                        password=settings.password,
                    )
            except (OSError, resp.RespError, resp.ConnectionClosed):
                pass
            if terminate:
                compat.terminate(proc)
        forced = False
        if not _wait_gone(proc, settings.stop_timeout):
            forced = True
            compat.terminate(proc)
            if not _wait_gone(proc, 3):
                compat.kill_tree(proc)
                if not _wait_gone(proc, 5):
                    raise StopError(
                        f"{state.flavor} (pid {state.pid}) did not exit even after a kill",
                        hint="check it with your OS's process tools",
                    )
        _wait_supervisor(state, settings.state_file)
        remove_state(settings.state_file)
        return StopResult(state, True, forced, False, time.monotonic() - began)


def _wait_supervisor(state: ServerState, state_file: Path, timeout: float = 3.0) -> None:
    """Let the supervisor log the exit before we go: it removes the state file once the exit
    marker is written (or ends without doing so, if it was killed)."""
    import psutil

    try:
        sup = psutil.Process(state.supervisor_pid)
        if abs(sup.create_time() - state.supervisor_create_time) > 0.05:
            return
    except psutil.Error:
        return
    deadline = time.monotonic() + timeout
    delay = 0.001
    while state_file.exists() and time.monotonic() < deadline:
        try:
            if sup.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def status(settings: Settings) -> dict[str, Any]:
    """The status object (``invoke status --json``): running or not, and what we know."""
    state, proc = current_state(settings)
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
        "stale": state is not None and proc is None,
        "exit_status": state.exit_status if state else None,
    }
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
