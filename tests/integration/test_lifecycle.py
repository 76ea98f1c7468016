"""start / status / stop against a real redis-server on a free port, real processes only."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.errors import PortInUse, StartError
from devserver.server import resp
from devserver.server.start import StartResult
from devserver.server.start import start as start_server
from devserver.server.state import read_state
from devserver.server.status import status as server_status
from devserver.server.stop import stop as stop_server
from tests.conftest import SettingsFactory, free_port, popen_invoke
from tests.platforms import WINDOWS, exe_or_none, needs_posix


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_start_status_stop(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    lines: list[str] = []
    result = start_server(settings, on_line=lines.append)
    state = result.state
    assert not result.already_running
    assert resp.ping("127.0.0.1", settings.port) == "ready"
    assert any("Ready to accept connections" in line for line in lines)  # the log was echoed
    assert state.flavor == "redis" and state.version and state.port == settings.port
    server = psutil.Process(state.pid)
    if exe_or_none(server) is not None:  # psutil under Wine cannot read it
        assert server.exe() == state.exe  # (Debian's redis-server is a link to redis-check-rdb)
    if not WINDOWS:  # a group of its own there is CREATE_NEW_PROCESS_GROUP (test_compat)
        assert os.getpgid(state.pid) == state.pid  # its own process group
    assert state.supervisor_pid != os.getpid() and alive(state.supervisor_pid)

    info = server_status(settings)
    for key in (
        "running",
        "flavor",
        "version",
        "pid",
        "host",
        "port",
        "state_file",
        "log_file",
        "uptime_s",
    ):
        assert key in info
    assert info["running"] and info["pid"] == state.pid
    assert isinstance(info["clients"], int)  # status's own connection is not counted

    log = settings.log_file("redis").read_text()
    assert "[devserver] starting redis" in log
    first = log.splitlines()[0]
    assert first.startswith("[") and first[20:22] == "] "  # [YYYY-MM-DD HH:MM:SS]

    stopped = stop_server(settings)
    assert stopped.was_running and not stopped.forced
    assert wait_dead(state.pid) and wait_dead(state.supervisor_pid)
    assert not settings.state_file.exists()
    assert server_status(settings)["running"] is False
    log = settings.log_file("redis").read_text()
    assert "server exited with code 0" in log


def test_start_and_stop_are_idempotent(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    first = start_server(settings)
    again = start_server(settings)
    assert again.already_running and again.state.pid == first.state.pid
    assert stop_server(settings).was_running
    second_stop = stop_server(settings)
    assert not second_stop.was_running and not second_stop.stale


def test_stale_state_pointing_at_an_unrelated_live_process(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A state file that names the bystander's PID (as after PID reuse): wrong create time.
        settings.data_dir.mkdir(parents=True)
        fake = {
            "pid": bystander.pid,
            "create_time": 12345.0,
            "exe": "redis-server",
            "supervisor_pid": bystander.pid,
            "flavor": "redis",
            "version": "7",
            "host": "127.0.0.1",
            "port": settings.port,
            "log_file": "x",
            "started_at": 0,
        }
        settings.state_file.write_text(json.dumps(fake))
        assert server_status(settings)["running"] is False
        result = stop_server(settings)
        assert result.stale and not result.was_running
        assert bystander.poll() is None  # never signalled
        assert not settings.state_file.exists()

        settings.state_file.write_text(json.dumps(fake))
        started = start_server(settings)
        assert started.stale is not None and started.stale.pid == bystander.pid
        assert bystander.poll() is None
        stop_server(settings)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_kill_9_then_status_and_start(make_settings: SettingsFactory) -> None:
    settings = make_settings(restart="no")  # restart: no leaves a crashed server down
    state = start_server(settings).state
    if WINDOWS:  # kill -9 is TerminateProcess there: os.kill makes 9 the exit code
        os.kill(state.pid, 9)
        killed = "code 9"
    else:
        os.kill(state.pid, signal.SIGKILL)
        killed = "signal SIGKILL"
    assert wait_dead(state.pid) and wait_dead(state.supervisor_pid)
    info = server_status(settings)
    assert info["running"] is False and info["stale"] is True
    assert info["exit_status"] == killed
    assert f"server exited with {killed}" in settings.log_file("redis").read_text()
    result = start_server(settings)
    assert not result.already_running and result.state.pid != state.pid
    stop_server(settings)


def test_data_survives_stop_and_start(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    start_server(settings)
    resp.call("127.0.0.1", settings.port, [["SET", "k", "kept"], ["LPUSH", "q", "a", "b"]])
    stop_server(settings)
    start_server(settings)
    got = resp.call("127.0.0.1", settings.port, [["GET", "k"], ["LLEN", "q"]])
    assert got == ["kept", 2]
    stop_server(settings, save=True)
    assert (settings.data_dir / "redis" / "dump.rdb").exists()


def test_concurrent_starts_make_one_server(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    results: list[StartResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(start_server(settings))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.already_running for r in results) == [False, True]
    assert len({r.state.pid for r in results}) == 1
    servers = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "redis-server"
        and f"{settings.port}" in " ".join(p.info["cmdline"] or [])
    ]
    assert len(servers) == 1
    stop_server(settings)


def test_password_is_enforced_and_never_on_argv_or_in_logs(make_settings: SettingsFactory) -> None:
    secret = "pw-" + os.urandom(6).hex()
    settings = make_settings(password=secret)
    state = start_server(settings).state
    assert resp.ping("127.0.0.1", settings.port) == "auth"  # NOAUTH without it
    assert resp.ping("127.0.0.1", settings.port, password=secret) == "ready"
    cmdline = " ".join(psutil.Process(state.pid).cmdline())
    sup_cmdline = " ".join(psutil.Process(state.supervisor_pid).cmdline())
    assert secret not in cmdline and secret not in sup_cmdline
    assert secret not in settings.state_file.read_text()
    info = server_status(settings)
    assert "clients" in info  # INFO worked with the configured password
    stop_server(settings)
    assert wait_dead(state.pid)
    for path in [*settings.log_dir.rglob("*"), *settings.data_dir.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_stop_uses_the_supervisor_even_when_the_password_changed(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(password="first")
    state = start_server(settings).state
    changed = dataclasses.replace(settings, password="second")
    result = stop_server(changed)
    assert result.was_running and not result.forced
    assert wait_dead(state.pid)


def test_crash_on_start_shows_the_log_tail_and_leaves_nothing(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(extra_args="--no-such-option 1")
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert "exited during startup" in info.value.message
    assert "no-such-option" in info.value.hint  # Redis's own complaint, from the log tail
    assert not settings.state_file.exists()
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "no-such-option" in " ".join(p.info["cmdline"] or [])
    ]


def test_port_in_use_names_the_owner(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    with socket.create_server(("127.0.0.1", settings.port)), pytest.raises(PortInUse) as info:
        start_server(settings)
    assert str(settings.port) in info.value.message
    assert f"pid {os.getpid()}" in info.value.message
    assert not settings.state_file.exists()


def _fake_server(project: Path, body: str) -> None:
    """A stand-in "redis-server" in bin/ (found before PATH), written in Python."""
    exe = project / "bin" / "redis-server"
    exe.parent.mkdir(parents=True, exist_ok=True)
    version = "import sys\nif '--version' in sys.argv: print('Redis server v=0.0.1'); sys.exit()"
    exe.write_text(f"#!{sys.executable}\n{version}\n{body}\n")
    exe.chmod(0o755)


def test_startup_timeout_kills_what_it_started(
    make_settings: SettingsFactory, project: Path
) -> None:
    _fake_server(project, "import time, sys\nprint('booting', flush=True)\ntime.sleep(60)")
    settings = make_settings(startup_timeout="1")
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert "did not answer PING within 1s" in info.value.message
    assert "booting" in info.value.hint
    assert not settings.state_file.exists()
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(project / "bin" / "redis-server") in " ".join(p.info["cmdline"] or [])
    ]
    assert all(wait_dead(p.pid, 5) for p in leftovers)


def test_stop_escalates_when_shutdown_is_ignored(
    make_settings: SettingsFactory, project: Path
) -> None:
    # Answers PING (so start succeeds), ignores SHUTDOWN and SIGTERM: only a kill ends it.
    _fake_server(
        project,
        "\n".join(
            [
                "import signal, socket, sys, threading",
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
                "port = int(sys.argv[sys.argv.index('--port') + 1])",
                "srv = socket.create_server(('127.0.0.1', port))",
                "print('stubborn ready', flush=True)",
                "def serve(c):",
                "    while True:",
                "        data = c.recv(4096)",
                "        if not data: return",
                "        if b'PING' in data: c.sendall(b'+PONG\\r\\n')",
                "while True:",
                "    c, _ = srv.accept()",
                "    threading.Thread(target=serve, args=(c,), daemon=True).start()",
            ]
        ),
    )
    settings = make_settings(stop_timeout="1")
    state = start_server(settings).state
    result = stop_server(settings)
    assert result.was_running and result.forced
    assert wait_dead(state.pid)
    assert not settings.state_file.exists()


def test_status_of_a_fresh_project(make_settings: SettingsFactory) -> None:
    info: dict[str, Any] = server_status(make_settings())
    assert info["running"] is False and info["pid"] is None and info["stale"] is False


def test_state_file_written_by_supervisor_is_complete(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    start_server(settings)
    state = read_state(settings.state_file)
    assert state is not None
    raw = json.loads(settings.state_file.read_text())
    for key in (
        "pid",
        "create_time",
        "exe",
        "supervisor_pid",
        "flavor",
        "version",
        "host",
        "port",
        "log_file",
        "started_at",
    ):
        assert key in raw
    assert raw["pid"] == state.pid and raw["status"] == "running"
    stop_server(settings)


def test_older_binary_is_refused_on_newer_data(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    state = start_server(settings).state
    stop_server(settings)
    data_dir = settings.data_dir / "redis"
    marker = json.loads((data_dir / ".devserver-written-by.json").read_text())
    assert marker["version"] == state.version
    # Pretend a newer Redis wrote the data; the installed one is then too old for it.
    (data_dir / ".devserver-written-by.json").write_text(json.dumps({"version": "99.0.0"}))
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert str(data_dir) in info.value.message and "99.0.0" in info.value.message
    assert "never deletes" in info.value.hint
    assert (data_dir / "dump.rdb").exists()  # nothing was touched
    assert not settings.state_file.exists()


def test_ctrl_c_while_waiting_leaves_nothing_behind(project: Path) -> None:
    _fake_server(project, "import time\nprint('slow boot', flush=True)\ntime.sleep(60)")
    from tests.integration.test_cli import env_for

    env = env_for(project, free_port())
    proc = popen_invoke(env, "start")
    state_file = project / "data" / "server.json"
    deadline = time.monotonic() + 20
    while not state_file.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    server_pid = json.loads(state_file.read_text())["pid"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in err
    assert wait_dead(server_pid, 5)
    assert not state_file.exists()


def test_garnet_password_file_is_removed_after_a_failed_start(
    make_settings: SettingsFactory, project: Path
) -> None:
    record = project / "argv.txt"
    exe = project / "bin" / "GarnetServer"
    exe.parent.mkdir(parents=True)
    exe.write_text(
        f"#!{sys.executable}\nimport sys, time\n"
        f"open({str(record)!r}, 'w').write('\\n'.join(sys.argv))\ntime.sleep(60)\n"
    )
    exe.chmod(0o755)
    settings = make_settings(flavor="garnet", password="garnet-secret", startup_timeout="1")
    with pytest.raises(StartError):
        start_server(settings)
    argv = record.read_text().splitlines()
    secret = Path(argv[argv.index("--config-import-path") + 1])
    assert "garnet-secret" not in " ".join(argv)
    assert not secret.exists() and not secret.parent.exists()


def test_garbage_on_the_control_socket_does_not_break_stop(make_settings: SettingsFactory) -> None:
    settings = make_settings(stop_timeout="3")
    state = start_server(settings).state
    for junk in (b"\xff x y\n", b"nonsense\n", b""):
        with socket.create_connection(("127.0.0.1", state.control_port), timeout=2) as conn:
            conn.sendall(junk)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(64) in (b"denied\n", b"")
    result = stop_server(settings)
    assert result.was_running and not result.forced  # the supervisor still answered


def test_foreground_refuses_data_written_by_a_newer_version(make_settings: SettingsFactory) -> None:
    from devserver.supervisor.foreground import run_foreground

    settings = make_settings()
    data_dir = settings.data_dir / "redis"
    data_dir.mkdir(parents=True)
    (data_dir / ".devserver-written-by.json").write_text(json.dumps({"version": "99.0.0"}))
    with pytest.raises(StartError, match=r"99\.0\.0"):
        run_foreground(settings, sink=lambda text: None)
    assert not settings.state_file.exists()


@needs_posix("mode bits: the file gets an owner-only ACL there (tests/unit/test_compat_windows)")
def test_state_file_is_private(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    start_server(settings)
    assert settings.state_file.stat().st_mode & 0o777 == 0o600  # it holds the control token
    stop_server(settings)
