"""Issue 9 (part B): stop within its budget, and an honest account of how the server ended.

Real redis-server where it can show the fault, and tests/misbehaving_server.py where a
server must misbehave on purpose (hang on SHUTDOWN, +OK and stay up, ignore SIGTERM, refuse
with -ERR, save slowly). No timing assertions: what is checked is which escalation ended the
server and what the tool said; benchmarks/bench_stop.py measures the durations.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from devserver.server import resp
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from tests import misbehaving_server
from tests.conftest import SettingsFactory, free_port, popen_invoke
from tests.integration.test_cli import env_for, invoke
from tests.integration.test_lifecycle import _fake_server, alive, wait_dead


def _redis_procs(port: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if f"{port}" in " ".join(p.info["cmdline"] or [])
        and "redis" in (p.info["name"] or "") + " ".join(p.info["cmdline"] or [])
        and p.pid != psutil.Process().pid
        and p.status() != psutil.STATUS_ZOMBIE
    ]


def test_idle_and_garbage_control_clients_do_not_delay_stop(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(stop_timeout="5")
    state = start_server(settings).state
    idle = [
        socket.create_connection(("127.0.0.1", state.control_port), timeout=5) for _ in range(5)
    ]
    half = socket.create_connection(("127.0.0.1", state.control_port), timeout=5)
    half.sendall(b"not a full line")  # garbage without an end
    try:
        result = stop_server(settings)
        # Before the fix the single-threaded accept loop served the idle clients first:
        # the stop ran out of time, sent SIGTERM and said "forced".
        assert result.was_running and result.method == "shutdown" and not result.forced
        assert result.exit_status == "code 0"
        assert wait_dead(state.pid) and wait_dead(state.supervisor_pid)
    finally:
        for conn in [*idle, half]:
            conn.close()


def test_a_dead_supervisor_costs_no_connect_timeout(make_settings: SettingsFactory) -> None:
    """The control port names nothing (as after the supervisor died): stop goes straight to
    the server itself, and says so."""
    settings = make_settings(stop_timeout="3")
    state = start_server(settings).state
    raw = json.loads(settings.state_file.read_text())
    raw["control_port"] = free_port()
    settings.state_file.write_text(json.dumps(raw))
    result = stop_server(settings)
    assert result.method == "shutdown" and not result.data_at_risk
    assert wait_dead(state.pid)


@pytest.mark.parametrize(
    ("behaviour", "method", "problem", "at_risk"),
    [
        ("hang", "SIGTERM", "SHUTDOWN got no answer", False),
        ("ok_stays", "SIGTERM", "accepted SHUTDOWN but was still running", False),
        ("hang,ignore_term", "kill", "SHUTDOWN got no answer", True),
        ("ok_stays,ignore_term", "kill", "accepted SHUTDOWN", True),
        ("refuse,ignore_term", "kill", "the server refused to stop: ERR Errors trying", True),
        ("refuse", "SIGTERM", "the server refused to stop", False),
    ],
)
def test_stop_escalates_within_one_budget_and_says_how(
    make_settings: SettingsFactory,
    project: Path,
    behaviour: str,
    method: str,
    problem: str,
    at_risk: bool,
) -> None:
    misbehaving_server.install(project / "bin", behaviour)
    settings = make_settings(stop_timeout="1.5")
    state = start_server(settings).state
    result = stop_server(settings)
    assert result.was_running and result.method == method, result
    assert problem in result.problem, result
    assert result.data_at_risk is at_risk
    assert result.forced
    if method == "SIGTERM":
        assert result.exit_status == "code 0"  # the supervisor told how it ended
    assert wait_dead(state.pid)
    assert not settings.state_file.exists()


@pytest.mark.parametrize("behaviour", ["slow_save", "ok_then_save"])
def test_a_visible_save_is_waited_for_past_the_budget(
    make_settings: SettingsFactory, project: Path, behaviour: str
) -> None:
    """Redis logs its save; Dragonfly answers +OK, then its snapshot files grow."""
    misbehaving_server.install(project / "bin", behaviour)
    settings = make_settings(stop_timeout="1", save_timeout="60")
    state = start_server(settings).state
    progress: list[str] = []
    result = stop_server(settings, on_progress=progress.append)
    # Killed at the budget, the save would be cut short: dump.rdb missing or partial.
    assert result.method == "shutdown" and result.exit_status == "code 0", result
    assert result.saving_seconds > 0 and not result.data_at_risk
    assert any("saving its data" in line for line in progress)
    assert (settings.data_dir / "redis" / "dump.rdb").stat().st_size == 30 * 4096
    assert wait_dead(state.pid)


def test_a_save_that_outlives_save_timeout_is_killed(
    make_settings: SettingsFactory, project: Path
) -> None:
    misbehaving_server.install(project / "bin", "slow_save,ignore_term", save_seconds=60)
    settings = make_settings(stop_timeout="1", save_timeout="1")
    state = start_server(settings).state
    result = stop_server(settings)
    assert result.method == "kill" and result.data_at_risk, result
    assert wait_dead(state.pid)


def _immutable(path: Path, on: bool) -> bool:
    done = subprocess.run(
        ["chattr", "+i" if on else "-i", str(path)], capture_output=True, check=False
    )
    return done.returncode == 0


needs_chattr = pytest.mark.skipif(not shutil.which("chattr"), reason="needs chattr (e2fsprogs)")


@needs_chattr
def test_a_refused_save_with_real_redis_is_reported_and_exits_1(project: Path) -> None:
    port = free_port()
    env = env_for(project, port, INVOKE_SERVER_STOP_TIMEOUT="2")
    assert invoke(env, "start").returncode == 0
    resp.call("127.0.0.1", port, [["SET", "k", "v"]])
    data = project / "data" / "redis"
    if not _immutable(data, True):
        pytest.skip("this filesystem has no immutable attribute")
    try:
        stopped = invoke(env, "stop")
    finally:
        _immutable(data, False)
    assert stopped.returncode == 1, stopped
    assert "Traceback" not in stopped.stderr
    assert "the server refused to stop: ERR Errors trying to SHUTDOWN" in stopped.stderr
    assert "killed it: data written since the last successful save may be lost" in stopped.stderr
    assert not _redis_procs(port)
    assert not (project / "data" / "server.json").exists()


def test_wrong_password_without_a_supervisor_is_named(make_settings: SettingsFactory) -> None:
    settings = make_settings(password="first", stop_timeout="3")
    state = start_server(settings).state
    raw = json.loads(settings.state_file.read_text())
    raw["control_port"] = free_port()  # the supervisor cannot be reached
    settings.state_file.write_text(json.dumps(raw))
    result = stop_server(dataclasses.replace(settings, password="second"))
    # Redis handles SIGTERM as a graceful shutdown that saves: nothing is at risk, but the
    # refused SHUTDOWN is said, not hidden behind "graceful".
    assert result.method == "SIGTERM" and not result.data_at_risk, result
    assert "supervisor did not answer" in result.problem
    assert "WRONGPASS" in result.problem or "invalid password" in result.problem
    assert wait_dead(state.pid)


def test_cli_says_which_escalation_it_used(project: Path) -> None:
    misbehaving_server.install(project / "bin", "hang")
    env = env_for(project, free_port(), INVOKE_SERVER_STOP_TIMEOUT="1")
    assert invoke(env, "start").returncode == 0
    stopped = invoke(env, "stop")
    assert stopped.returncode == 0, stopped
    assert "stopped by SIGTERM" in stopped.stderr and "SHUTDOWN got no answer" in stopped.stderr


def test_stop_during_a_start_waiting_for_ping_cancels_it(project: Path) -> None:
    _fake_server(project, "import time\nprint('slow boot', flush=True)\ntime.sleep(60)")
    env = env_for(project, free_port(), INVOKE_SERVER_STARTUP_TIMEOUT="40")
    starting = popen_invoke(env, "start")
    state_file = project / "data" / "server.json"
    try:
        deadline = time.monotonic() + 20
        while not state_file.exists():
            assert time.monotonic() < deadline and starting.poll() is None
            time.sleep(0.02)
        raw = json.loads(state_file.read_text())
        stopped = invoke(env, "stop")
        _, err = starting.communicate(timeout=30)
    finally:
        if starting.poll() is None:
            starting.kill()
    # Before: "another start or stop of this project is in progress" after stop_timeout,
    # and the server still booting.
    assert stopped.returncode == 0, stopped
    assert "Traceback" not in stopped.stderr + err
    assert starting.returncode == 1 and "cancelled by `invoke stop`" in err
    assert wait_dead(raw["pid"], 10) and wait_dead(raw["supervisor_pid"], 10)
    assert not state_file.exists()
    assert not alive(raw["pid"])
