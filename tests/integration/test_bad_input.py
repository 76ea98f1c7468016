"""Issue 9 (part B): corrupt state files, data-dir and log-file problems, a moved project.

Each case through the real tasks (``python -m invoke``) where the person would meet it: one
line, no traceback, nothing left running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devserver.server import resp
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from tests import misbehaving_server
from tests.conftest import ROOT, SettingsFactory, free_port, kill_recorded
from tests.integration.test_cli import env_for, invoke
from tests.integration.test_lifecycle import wait_dead

GOOD = {
    "pid": 1234567,
    "create_time": 1.0,
    "exe": "redis-server",
    "supervisor_pid": 0,
    "flavor": "redis",
    "version": "7",
    "host": "127.0.0.1",
    "port": 6379,
    "log_file": "x.log",
    "started_at": 0,
}


def _corrupt(case: str) -> bytes:
    if case == "not-utf8":
        return b'{"pid": "\xff\xfe"}'
    if case == "deeply-nested":
        return b"[" * 100_000
    changes = {
        "create-time-string": {"create_time": "yesterday"},
        "create-time-null": {"create_time": None},
        "exe-number": {"exe": 5},
        "pid-bool": {"pid": True},
    }[case]
    return json.dumps({**GOOD, **changes}).encode()


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result


@pytest.mark.parametrize(
    "case",
    [
        "not-utf8",
        "deeply-nested",
        "create-time-string",
        "create-time-null",
        "exe-number",
        "pid-bool",
    ],
)
def test_a_corrupt_state_file_is_stale_and_replaced(project: Path, case: str) -> None:
    port = free_port()
    env = env_for(project, port)
    state_file = project / "data" / "server.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_bytes(_corrupt(case))

    status = invoke(env, "status")
    _no_traceback(status)
    assert "not a state file this tool wrote" in status.stderr
    assert "pid True" not in status.stderr  # a boolean is not a pid
    as_json = invoke(env, "status", "--json")
    _no_traceback(as_json)
    info = json.loads(as_json.stdout)
    assert info["running"] is False and info["stale"] is True and info["state_error"]

    stopped = invoke(env, "stop")
    _no_traceback(stopped)
    assert stopped.returncode == 0 and "nothing was signalled" in stopped.stderr

    state_file.write_bytes(_corrupt(case))  # and the next start replaces it
    started = invoke(env, "start")
    _no_traceback(started)
    assert started.returncode == 0, started
    assert "replaced an untrusted state file" in started.stderr
    assert resp.ping("127.0.0.1", port) == "ready"
    assert invoke(env, "stop").returncode == 0


@pytest.mark.parametrize("where", ["proc", "file"])
def test_an_unusable_data_dir_is_one_line(project: Path, where: str) -> None:
    if where == "proc":
        data = Path("/proc/nope")
    else:
        data = project / "a-file"
        data.write_text("not a folder")
    port = free_port()
    env = env_for(project, port, INVOKE_SERVER_DATA_DIR=str(data))
    for task in ("start", "stop", "status"):
        result = invoke(env, task)
        _no_traceback(result)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) <= 1, result.stderr
        if task == "start":
            assert result.returncode == 1 and str(data) in result.stderr
    assert resp.ping("127.0.0.1", port) == "down"


def _immutable(path: Path, on: bool) -> bool:
    done = subprocess.run(
        ["chattr", "+i" if on else "-i", str(path)], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.skipif(not shutil.which("chattr"), reason="needs chattr (e2fsprogs)")
def test_data_dir_made_immutable_while_running(project: Path) -> None:
    port = free_port()
    env = env_for(project, port)
    assert invoke(env, "start").returncode == 0
    data = project / "data"
    state_file = data / "server.json"
    raw = json.loads(state_file.read_text())
    if not _immutable(data, True):
        pytest.skip("this filesystem has no immutable attribute")
    try:
        stopped = invoke(env, "stop")
        _no_traceback(stopped)
        # Stopped, and saved (data/redis itself is writable), but the state file stays.
        assert stopped.returncode == 1 and "could not be removed" in stopped.stderr, stopped
        assert wait_dead(raw["pid"]) and wait_dead(raw["supervisor_pid"])
        started = invoke(env, "start")
        _no_traceback(started)
        assert started.returncode == 1 and "cannot remove the stale state file" in started.stderr
        assert resp.ping("127.0.0.1", port) == "down"
    finally:
        _immutable(data, False)
    started = invoke(env, "start")
    assert started.returncode == 0, started
    assert invoke(env, "stop").returncode == 0


def _as_nobody() -> list[str] | None:
    setpriv = shutil.which("setpriv")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not setpriv:  # not Windows
        return None
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def _python_for_nobody(prefix: list[str]) -> tuple[str, dict[str, str]]:
    """A Python ``nobody`` can run, that can spawn itself (the supervisor) and import our
    dependencies: this one, or the system's with this one's site-packages (a venv whose
    base interpreter lives under /root is out of nobody's reach)."""
    import site

    probe = "import invoke, psutil, subprocess, sys; subprocess.run([sys.executable, '-V'])"
    paths = {"PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    for python, extra in ((sys.executable, {}), ("/usr/bin/python3", paths)):
        done = subprocess.run(
            [*prefix, python, "-c", probe],
            env={**os.environ, **extra},
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return python, extra
    pytest.skip("no Python that nobody can run")


def _readable_copy(project: Path) -> None:
    """tasks.py, invoke.yaml and the package, copied into ``project`` readable by anyone."""
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "devserver", project / "devserver", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in [
        project / "tasks.py",
        project / "invoke.yaml",
        *(project / "devserver").rglob("*"),
    ]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (project / "devserver").chmod(0o755)


@pytest.mark.skipif(_as_nobody() is None, reason="needs root and setpriv to run as nobody")
def test_data_dir_chmod_000_for_a_normal_user() -> None:
    """As root nothing is refused, so the CLI runs as ``nobody`` on a project it owns (in a
    world-readable temp folder: pytest's own is private to root). It runs a copy of tasks.py
    and the package in that folder: the checkout itself may be out of nobody's reach (a clone
    in a 0700 home, or /root)."""
    prefix = _as_nobody()
    assert prefix is not None
    python, extra = _python_for_nobody(prefix)
    project = Path(tempfile.mkdtemp(prefix="devserver-nobody-"))
    try:
        project.chmod(0o755)
        _readable_copy(project)
        extra = {
            **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project), extra.get("PYTHONPATH")])),
        }
        for sub in ("data", "logs"):
            (project / sub).mkdir()
            shutil.chown(project / sub, "nobody", "nogroup")
        shutil.chown(project, "nobody", "nogroup")
        (project / "data").chmod(0)
        port = free_port()
        env = env_for(project, port, HOME=str(project), **extra)
        for task in ("start", "status", "stop"):
            result = subprocess.run(
                [*prefix, python, "-m", "invoke", task],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            _no_traceback(result)
            assert result.returncode == 1, result
            assert "Permission denied" in result.stderr, result
        assert resp.ping("127.0.0.1", port) == "down"
    finally:
        (project / "data").chmod(0o755)
        kill_recorded(project / "data" / "server.json")
        shutil.rmtree(project, ignore_errors=True)


@pytest.mark.skipif(not shutil.which("chattr"), reason="needs chattr (e2fsprogs)")
def test_an_unwritable_log_file_is_warned_about(project: Path) -> None:
    port = free_port()
    env = env_for(project, port)
    log = project / "logs" / "redis.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    if not _immutable(log, True):
        pytest.skip("this filesystem has no immutable attribute")
    try:
        started = invoke(env, "start")
        _no_traceback(started)
        assert started.returncode == 0, started
        assert "cannot be written" in started.stderr and str(log) in started.stderr
        assert resp.ping("127.0.0.1", port) == "ready"  # the server still runs
        assert invoke(env, "stop").returncode == 0
    finally:
        _immutable(log, False)


def test_a_moved_project_folder_is_not_recreated(
    make_settings: SettingsFactory, project: Path
) -> None:
    misbehaving_server.install(project / "bin", "noisy")
    settings = make_settings()
    state = start_server(settings).state
    moved = project.with_name("moved")
    project.rename(moved)
    try:
        log = moved / "logs" / "redis.log"
        size = log.stat().st_size
        deadline = time.monotonic() + 20
        # Past the writer's one-second check for a deleted log, and lines still arriving.
        while log.stat().st_size < size + 20_000 or time.monotonic() < deadline - 17:
            assert time.monotonic() < deadline, "the log stopped growing after the move"
            time.sleep(0.05)
        assert not project.exists()  # never recreated at the old path
        assert "was moved or deleted" in log.read_text()
        moved_settings = make_settings(
            port=settings.port,
            bin_dir=str(moved / "bin"),
            data_dir=str(moved / "data"),
            log_dir=str(moved / "logs"),
        )
        result = stop_server(moved_settings)
        assert result.was_running and result.method == "shutdown"
        assert wait_dead(state.pid) and wait_dead(state.supervisor_pid)
        assert not project.exists()
    finally:
        kill_recorded(moved / "data" / "server.json")
