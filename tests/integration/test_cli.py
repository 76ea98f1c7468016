"""The tasks as a person runs them: exit codes, one-line errors, no tracebacks, JSON only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devserver.server import resp
from tests.conftest import ROOT, free_port, kill_recorded, popen_invoke
from tests.platforms import UNDER_WINE, WINDOWS


def env_for(project: Path, port: int, **extra: str) -> dict[str, str]:
    """Point the real tasks.py at a throwaway project through INVOKE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(
        {
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(port),
            "INVOKE_SERVER_BIN_DIR": str(project / "bin"),
            "INVOKE_SERVER_DATA_DIR": str(project / "data"),
            "INVOKE_SERVER_LOG_DIR": str(project / "logs"),
            "INVOKE_SERVER_STOP_TIMEOUT": "5",
            "NO_COLOR": "1",
        }
    )
    env.update(extra)
    return env


def invoke(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr  # one line says what went wrong
    for needle in needles:
        assert needle in result.stderr


def test_start_status_stop_through_invoke(project: Path) -> None:
    port = free_port()
    env = env_for(project, port)
    started = invoke(env, "start")
    assert started.returncode == 0, started.stderr
    assert f"ready on 127.0.0.1:{port}" in started.stderr
    assert "starting redis" in started.stderr  # flavor, version and binary are named
    assert "Ready to accept connections" in started.stdout  # the server's log was shown

    again = invoke(env, "start")
    assert again.returncode == 0 and "already running" in again.stderr

    status = invoke(env, "status", "--json")
    assert status.returncode == 0
    info = json.loads(status.stdout)  # nothing but JSON on stdout
    assert info["running"] is True and info["port"] == port and info["flavor"] == "redis"
    for key in ("version", "pid", "host", "state_file", "log_file", "uptime_s"):
        assert key in info

    human = invoke(env, "status")
    assert human.returncode == 0 and "running: redis" in human.stdout  # `status | grep` works
    assert f"127.0.0.1:{port}" in human.stdout and human.stderr == ""

    stopped = invoke(env, "stop")
    assert stopped.returncode == 0 and "stopped (graceful)" in stopped.stderr
    assert resp.ping("127.0.0.1", port) == "down"
    again = invoke(env, "stop")
    assert again.returncode == 0 and "not running" in again.stderr
    down = invoke(env, "status", "--json")
    assert down.returncode == 3  # LSB: not running, also in JSON mode
    assert json.loads(down.stdout)["running"] is False
    human_down = invoke(env, "status")
    assert human_down.returncode == 3 and "not running" in human_down.stdout


def test_status_exit_code_tells_scripts_whether_it_runs(project: Path) -> None:
    """Scripts test `invoke status`: 0 running, 3 not, 1 on errors."""
    env = env_for(project, free_port())
    never = invoke(env, "status")
    assert never.returncode == 3, never
    assert never.stdout.startswith("not running") and "Traceback" not in never.stderr
    as_json = invoke(env, "status", "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["running"] is False
    assert as_json.stderr == ""
    bad = invoke({**env, "INVOKE_SERVER_PORT": "abc"}, "status")
    assert bad.returncode == 1


def test_bad_options_fail_in_one_line(project: Path) -> None:
    env = env_for(project, free_port())
    assert_clean_failure(invoke(env, "start", "--port", "abc"), "--port", "'abc'")
    assert_clean_failure(invoke(env, "start", "--port", "70000"), "65535")
    assert_clean_failure(invoke(env, "start", "--flavor", "memcached"), "memcached")
    assert_clean_failure(
        invoke({**env, "INVOKE_SERVER_PORT": "abc"}, "status"), "server.port", "INVOKE_SERVER_PORT"
    )
    assert_clean_failure(invoke(env, "start", "--timeout", "-3"), "--timeout")
    assert not (project / "data" / "server.json").exists()


def test_corrupt_state_file_is_reported_with_a_hint(project: Path) -> None:
    env = env_for(project, free_port())
    (project / "data").mkdir()
    (project / "data" / "server.json").write_text("garbage{")
    result = invoke(env, "status")
    # Issue 9: an untrusted file is stale, reported in one line (not a failure of status).
    assert result.returncode in (0, 3) and "Traceback" not in result.stderr, result
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "not a state file" in warnings[0]
    assert "the next start replaces it" in warnings[0]


def test_missing_binary_says_how_to_get_one(project: Path) -> None:
    env = env_for(project, free_port(), INVOKE_SERVER_FLAVOR="dragonfly", PATH="/nonexistent")
    result = invoke(env, "start")
    assert_clean_failure(result, "invoke fetch")


def test_unwritable_log_dir(project: Path) -> None:
    blocker = project / "logs-file"
    blocker.write_text("not a directory")
    env = env_for(project, free_port(), INVOKE_SERVER_LOG_DIR=str(blocker / "logs"))
    assert_clean_failure(invoke(env, "start"), "log directory")
    assert not (project / "data" / "server.json").exists()


def wait_foreground_ready(
    proc: subprocess.Popen[str], project: Path, port: int, timeout: float = 20
) -> dict[str, object]:
    """Wait until a `start --foreground` has its server answering PING and recorded."""
    state_file = project / "data" / "server.json"
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline
        if resp.ping("127.0.0.1", port) == "ready" and state_file.exists():
            try:
                state: dict[str, object] = json.loads(state_file.read_text())
                return state
            except ValueError:
                pass  # being written (it is replaced atomically, so rarely)
        time.sleep(0.05)


@pytest.mark.skipif(
    UNDER_WINE, reason="Wine gives the suite no console to send Ctrl+Break through (WinError 12)"
)
def test_foreground_ctrl_c_stops_gracefully(project: Path) -> None:
    port = free_port()
    env = env_for(project, port)
    # Windows: Ctrl+C as the console event a process group can be sent (Ctrl+Break); the
    # tool's foreground treats both alike. os.kill(pid, SIGINT) would be TerminateProcess.
    group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if WINDOWS else {}
    proc = popen_invoke(env, "start", "--foreground", **group)
    try:
        # The server may answer PING a few ms before the foreground records it: wait for both.
        state = wait_foreground_ready(proc, project, port)
        status = json.loads(invoke(env, "status", "--json").stdout)
        assert status["running"] is True and status["pid"] == state["pid"]
        # What Ctrl+C in the terminal does.
        proc.send_signal(signal.CTRL_BREAK_EVENT if WINDOWS else signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Ready to accept connections" in out  # the console was a second sink
    assert "Traceback" not in err
    assert (
        not psutil.pid_exists(state["pid"])
        or psutil.Process(state["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    log = (project / "logs" / "redis.log").read_text()
    assert "User requested shutdown" in log or "Received SIGINT" in log or "ready to exit" in log
    assert "server exited with code 0" in log
    assert not (project / "data" / "server.json").exists()


def test_start_echo_survives_a_stdout_that_cannot_encode_the_log(tmp_path: Path) -> None:
    """A redirected stdout on Windows is cp1252 ("strict"): the log echo (here the start
    marker, which names the data folder) must replace what it cannot encode, not crash."""
    project = tmp_path / "prøjekt ✓ 日本"
    project.mkdir()
    port = free_port()
    env = env_for(project, port, PYTHONIOENCODING="cp1252")
    try:
        started = subprocess.run(
            [sys.executable, "-m", "invoke", "start"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
        out, err = started.stdout.decode("cp1252"), started.stderr.decode("cp1252", "replace")
        assert started.returncode == 0, err
        assert "Traceback" not in err
        assert "prøjekt ? ??" in out  # echoed, what cp1252 lacks replaced
    finally:
        subprocess.run(
            [sys.executable, "-m", "invoke", "stop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
        kill_recorded(project / "data" / "server.json")
