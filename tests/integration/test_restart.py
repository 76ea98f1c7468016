"""The supervisor restarts a crashed server, never a stopped one, and gives up on a crash loop.

Real processes: the real redis-server (or a misbehaving stand-in) on a free port, started
through the library (the same supervisor as ``invoke start``) or the real tasks.py. Every
server and supervisor is killed by recorded PID after each test (conftest's
``_kill_leftovers``, and the state files the tests read here), also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.server import resp
from devserver.server.start import start as start_server
from devserver.server.status import status as server_status
from devserver.server.stop import stop as stop_server
from devserver.supervisor import fork
from tests import misbehaving_server
from tests.conftest import SettingsFactory, free_port, kill_recorded, popen_invoke, wait_dead
from tests.integration.test_cli import env_for, invoke, wait_foreground_ready

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def _state(settings: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(settings.state_file.read_text())
    return data


def _new_server(settings: Any, old_pid: int, timeout: float = 15) -> dict[str, Any]:
    """Wait until the state file names another server than ``old_pid`` and it answers PING
    (a hang guard: the test asserts how long it took separately)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = _state(settings)
        except (OSError, ValueError):
            state = {}
        fresh = state.get("pid") not in (None, old_pid) and state.get("status") == "running"
        if fresh and resp.ping("127.0.0.1", settings.port, timeout=0.25) == "ready":
            return state
        time.sleep(0.01)
    pytest.fail(f"no new server answered within {timeout}s: {state}")


def _log_once_restarted(log: Path, timeout: float = 15) -> str:
    """The server log once the supervisor has written its restart line (after its own PING
    check, which may finish a moment after ours)."""
    deadline = time.monotonic() + timeout
    while "restarted the server" not in (text := log.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.02)
    return text


def _kill_supervisor_of(state_file: Path, pid: int) -> None:
    """Cleanup for a supervisor whose state file may already be gone."""
    kill_recorded(state_file)
    try:
        psutil.Process(pid).kill()
    except psutil.Error:
        pass


def _supervisor_code(pid: int, timeout: float = 60) -> int | None:
    """The exit code of a supervisor this process forked (None when it was not forked)."""
    for handle in list(fork._forked_supervisors):
        if handle.pid == pid:
            return handle.wait(timeout)
    assert wait_dead(pid, timeout)
    return None


def test_kill_9_brings_a_new_server_back_on_the_same_port_with_its_data(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    first = start_server(settings).state
    try:
        resp.call("127.0.0.1", settings.port, [["SET", "before", "crash"], ["LPUSH", "q", "job"]])
        time.sleep(1.5)  # the append-only file is synced every second
        began = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        state = _new_server(settings, first.pid)
        took = time.monotonic() - began
        assert took < 4.0, f"the restart took {took:.1f}s (0.5 s back-off + start-up)"
        assert state["supervisor_pid"] == first.supervisor_pid  # the same supervisor
        assert state["port"] == settings.port and state["restarts"] == 1
        assert state["start_ticks"] != first.start_ticks  # the new server's own identity
        got = resp.call("127.0.0.1", settings.port, [["GET", "before"], ["LLEN", "q"]])
        assert got == ["crash", 1]
        info = server_status(settings)
        assert info["running"] is True and info["pid"] == state["pid"]
        assert info["restarts"] == 1
        assert info["last_exit"]["status"] == "signal SIGKILL"
        assert info["last_exit"]["signal"] == "SIGKILL" and info["last_exit"]["at"]
        log = _log_once_restarted(settings.log_file("redis"))
        assert "server exited with signal SIGKILL" in log
        restarted = [line for line in log.splitlines() if "restarted the server" in line]
        assert len(restarted) == 1 and "restart 1" in restarted[0], restarted
        assert f"pid {state['pid']} answers PING" in restarted[0]
        result = stop_server(settings)  # the restarted server stops like the first one
        assert result.was_running and result.method == "shutdown"
        assert wait_dead(state["pid"]) and wait_dead(first.supervisor_pid)
        assert not settings.state_file.exists()
    finally:
        _kill_supervisor_of(settings.state_file, first.supervisor_pid)


def test_stop_and_a_client_shutdown_never_restart(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    state = start_server(settings).state
    try:
        with pytest.raises(resp.ConnectionClosed):  # SHUTDOWN from any client: exit code 0
            resp.call("127.0.0.1", settings.port, [["SHUTDOWN", "NOSAVE"]])
        assert wait_dead(state.pid) and wait_dead(state.supervisor_pid)
        info = server_status(settings)
        assert info["running"] is False and info["restarts"] == 0
        assert info["exit_status"] == "code 0"
        assert resp.ping("127.0.0.1", settings.port) == "down"

        state = start_server(settings).state
        stop_server(settings)
        assert wait_dead(state.supervisor_pid)
        time.sleep(1.0)  # longer than the first back-off: a restart would be up by now
        assert resp.ping("127.0.0.1", settings.port) == "down"
        assert "restarted" not in settings.log_file("redis").read_text()
    finally:
        _kill_supervisor_of(settings.state_file, state.supervisor_pid)


def test_invoke_restart_and_reset_never_restart(project: Path) -> None:
    port = free_port()
    env = env_for(project, port)
    state_file = project / "data" / "server.json"
    try:
        assert invoke(env, "start").returncode == 0
        first = json.loads(state_file.read_text())
        assert invoke(env, "restart").returncode == 0
        second = json.loads(state_file.read_text())
        assert second["pid"] != first["pid"] and wait_dead(first["supervisor_pid"])
        time.sleep(1.0)  # a restart of the first server would have replaced the record
        assert json.loads(state_file.read_text())["pid"] == second["pid"]
        info = json.loads(invoke(env, "status", "--json").stdout)
        assert info["running"] is True and info["restarts"] == 0 and info["last_exit"] is None

        assert invoke(env, "reset", "--yes").returncode == 0
        assert wait_dead(second["supervisor_pid"])
        time.sleep(1.0)
        assert resp.ping("127.0.0.1", port) == "down"
        assert not state_file.exists()
        log = (project / "logs" / "redis.log").read_text()
        assert "restarted the server" not in log
    finally:
        kill_recorded(state_file)


def test_a_crash_loop_ends_with_the_supervisor_giving_up(
    project: Path, make_settings: SettingsFactory, redis_server_path: Path
) -> None:
    misbehaving_server.install(project / "bin", "crash_after_pong")
    settings = make_settings()
    first = start_server(settings).state
    try:
        began = time.monotonic()
        code = _supervisor_code(first.supervisor_pid)
        took = time.monotonic() - began
        assert took < settings.restart_window, took
        if code is not None:
            assert code == 3  # "gave up", as systemd's failed unit
        assert resp.ping("127.0.0.1", settings.port) == "down"  # nothing listens
        info = server_status(settings)
        assert info["running"] is False and info["restarts"] == 5
        assert info["gave_up"] == (
            "crashed 6 times in 60 s, gave up; last exit: code 1; see `invoke tail`"
        )
        log = settings.log_file("redis").read_text()
        assert log.count("restarted the server") == 5
        assert "the server crashed 6 times in 60 s, gave up" in log
        status = invoke(env_for(project, settings.port), "status")
        assert status.returncode == 3
        assert "crashed 6 times in 60 s, gave up" in status.stderr

        (project / "bin" / "redis-server").unlink()  # the real server: a plain start works
        (project / "bin" / "redis-server").symlink_to(redis_server_path)
        again = start_server(settings)
        assert not again.already_running and again.stale is not None
        assert server_status(settings)["restarts"] == 0
        stop_server(settings)
    finally:
        _kill_supervisor_of(settings.state_file, first.supervisor_pid)


def test_kill_9_repeated_past_the_limit_gives_up(make_settings: SettingsFactory) -> None:
    settings = make_settings(restart_limit="2")
    first = start_server(settings).state
    try:
        pid = first.pid
        for _ in range(2):
            os.kill(pid, signal.SIGKILL)
            pid = _new_server(settings, pid)["pid"]
        os.kill(pid, signal.SIGKILL)
        code = _supervisor_code(first.supervisor_pid, timeout=30)
        if code is not None:
            assert code == 3
        info = server_status(settings)
        assert info["running"] is False and info["restarts"] == 2
        assert info["gave_up"].startswith("crashed 3 times in 60 s, gave up; last exit: signal")
        assert resp.ping("127.0.0.1", settings.port) == "down"
    finally:
        _kill_supervisor_of(settings.state_file, first.supervisor_pid)


def test_restart_no_leaves_a_crashed_server_down(project: Path) -> None:
    port = free_port()
    env = env_for(project, port, INVOKE_SERVER_RESTART="no")
    state_file = project / "data" / "server.json"
    try:
        assert invoke(env, "start").returncode == 0
        state = json.loads(state_file.read_text())
        os.kill(state["pid"], signal.SIGKILL)
        assert wait_dead(state["supervisor_pid"])
        assert resp.ping("127.0.0.1", port) == "down"
        status = invoke(env, "status", "--json")
        assert status.returncode == 3
        info = json.loads(status.stdout)
        assert info["running"] is False and info["restarts"] == 0
        assert info["exit_status"] == "signal SIGKILL"
        assert info["last_exit"]["status"] == "signal SIGKILL"
        plain = invoke(env, "status")
        assert "the last server ended with signal SIGKILL" in plain.stderr
    finally:
        kill_recorded(state_file)


def test_a_stop_during_the_back_off_cancels_the_restart(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    first = start_server(settings).state
    try:
        os.kill(first.pid, signal.SIGKILL)
        second = _new_server(settings, first.pid)
        os.kill(second["pid"], signal.SIGKILL)  # the second crash: a 1 s back-off
        deadline = time.monotonic() + 10
        while _state(settings).get("status") != "restarting":
            assert time.monotonic() < deadline, _state(settings)
            time.sleep(0.01)
        assert server_status(settings)["restarting"] is True
        result = stop_server(settings)
        assert not result.was_running and result.stale  # the crashed server's record
        assert wait_dead(first.supervisor_pid, timeout=10)  # it gave up the restart and ended
        assert resp.ping("127.0.0.1", settings.port) == "down"
        assert not settings.state_file.exists()
        log = settings.log_file("redis").read_text()
        assert "not restarted: a stop or start of this project came first" in log
        assert log.count("restarted the server") == 1
    finally:
        _kill_supervisor_of(settings.state_file, first.supervisor_pid)


def test_foreground_restarts_too_and_says_so(project: Path) -> None:
    with _foreground_server_killed(project) as (proc, port, state, state_file):
        deadline = time.monotonic() + 15
        while True:
            again = json.loads(state_file.read_text()) if state_file.exists() else {}
            fresh = again.get("pid") not in (None, state["pid"]) and again["status"] == "running"
            if fresh and resp.ping("127.0.0.1", port) == "ready":
                break
            assert proc.poll() is None and time.monotonic() < deadline, again
            time.sleep(0.02)
        assert again["restarts"] == 1 and again["supervisor_pid"] == state["supervisor_pid"]
        log = project / "logs" / "redis.log"
        while "restarted the server" not in log.read_text():  # its PING check is done
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # Ctrl+C: the graceful stop, no restart after it
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "restarted the server after it crashed (signal SIGKILL): restart 1" in out + err
        assert not state_file.exists() and resp.ping("127.0.0.1", port) == "down"


def test_a_start_during_the_back_off_keeps_its_own_server(make_settings: SettingsFactory) -> None:
    """A start that takes over the project while the old supervisor waits to restart wins:
    the old supervisor neither restarts nor stops the new start's server on its way out (it
    used to look for a server left behind and found the new one, carrying the same marker)."""
    settings = make_settings()
    first = start_server(settings).state
    second_sup = 0
    try:
        os.kill(first.pid, signal.SIGKILL)
        second = _new_server(settings, first.pid)
        os.kill(second["pid"], signal.SIGKILL)  # the second crash: a 1 s back-off
        deadline = time.monotonic() + 10
        while _state(settings).get("status") != "restarting":
            assert time.monotonic() < deadline, _state(settings)
            time.sleep(0.01)
        taken = start_server(settings).state  # the old record is stale: a fresh start
        second_sup = taken.supervisor_pid
        assert taken.supervisor_pid != first.supervisor_pid
        assert wait_dead(first.supervisor_pid, timeout=15)  # it gave up the restart and ended
        assert psutil.pid_exists(taken.pid) and _state(settings)["pid"] == taken.pid
        assert resp.ping("127.0.0.1", settings.port) == "ready"
        log = settings.log_file("redis").read_text()
        assert "not restarted: a stop or start of this project came first" in log
        assert "left" not in log.split("not restarted")[-1].split("\n")[0]
        assert stop_server(settings).was_running
    finally:
        _kill_supervisor_of(settings.state_file, first.supervisor_pid)
        if second_sup:
            _kill_supervisor_of(settings.state_file, second_sup)


def test_foreground_ctrl_c_during_the_back_off_says_why_nothing_restarted(project: Path) -> None:
    with _foreground_server_killed(project) as (proc, port, _state, state_file):
        deadline = time.monotonic() + 15
        while True:
            again = json.loads(state_file.read_text()) if state_file.exists() else {}
            if again.get("status") == "restarting":
                break
            assert proc.poll() is None and time.monotonic() < deadline, again
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)  # Ctrl+C during the 0.5 s back-off
        proc.communicate(timeout=30)
        log = (project / "logs" / "redis.log").read_text()
        said = "not restarted: stopped during the back-off"
        assert said in log or "not restarted: a stop or start of this project came first" in log
        assert "restarted the server after" not in log
        assert resp.ping("127.0.0.1", port) == "down"


@contextlib.contextmanager
def _foreground_server_killed(
    project: Path,
) -> Iterator[tuple[subprocess.Popen[str], int, dict[str, object], Path]]:
    """``invoke start --foreground`` ready, then its server killed -9; the process, port,
    first state and state file; everything it started is killed afterwards."""
    port = free_port()
    state_file = project / "data" / "server.json"
    proc = popen_invoke(env_for(project, port), "start", "--foreground")
    try:
        state = wait_foreground_ready(proc, project, port)
        time.sleep(0.5)  # the foreground supervisor notes the first PONG itself, in a thread
        os.kill(int(str(state["pid"])), signal.SIGKILL)
        yield proc, port, state, state_file
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_recorded(state_file)
