"""State file round trip and the identity check that keeps us from signalling strangers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devserver.atomic import write_atomic
from devserver.errors import StateError
from devserver.state import (
    ServerState,
    project_lock,
    read_state,
    same_exe,
    server_process,
)


def make_state(pid: int, create_time: float, exe: str) -> ServerState:
    return ServerState(
        pid=pid,
        create_time=create_time,
        exe=exe,
        supervisor_pid=1,
        flavor="redis",
        version="7.0",
        host="127.0.0.1",
        port=6379,
        log_file="logs/redis.log",
        started_at=time.time(),
    )


def test_round_trip(tmp_path: Path) -> None:
    me = psutil.Process()
    state = make_state(os.getpid(), me.create_time(), me.exe())
    write_atomic(tmp_path / "server.json", state.to_json())
    loaded = read_state(tmp_path / "server.json")
    assert loaded == state
    assert json.loads((tmp_path / "server.json").read_text())["pid"] == os.getpid()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    state.save(tmp_path / "saved.json")
    assert (tmp_path / "saved.json").stat().st_mode & 0o777 == 0o600  # holds the control token


def test_missing_state_is_none(tmp_path: Path) -> None:
    assert read_state(tmp_path / "nope.json") is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"pid": -4}', '{"pid": 5}'])
def test_foreign_or_corrupt_state_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "server.json"
    path.write_text(text)
    with pytest.raises(StateError) as info:
        read_state(path)
    assert str(path) in info.value.message and "delete" in info.value.hint


def test_live_process_with_matching_identity_is_ours() -> None:
    me = psutil.Process()
    assert server_process(make_state(os.getpid(), me.create_time(), me.exe())) is not None


def test_reused_pid_is_stale() -> None:
    me = psutil.Process()
    # Same pid, different create time: the PID was reused by another program.
    assert server_process(make_state(os.getpid(), me.create_time() - 100, me.exe())) is None
    # Same pid and time, different executable.
    assert (
        server_process(make_state(os.getpid(), me.create_time(), "/usr/bin/redis-server")) is None
    )


def test_dead_and_zombie_processes_are_stale() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ctime = psutil.Process(child.pid).create_time()
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server_process(make_state(child.pid, ctime, sys.executable)) is None  # zombie
    child.wait()
    assert server_process(make_state(child.pid, ctime, sys.executable)) is None  # gone


def test_same_exe_compares_file_names() -> None:
    assert same_exe("/usr/bin/redis-server", "/opt/x/redis-server")
    assert same_exe("C:\\bin\\redis-server.exe", "redis-server.EXE")
    assert not same_exe("", "redis-server")
    assert not same_exe("/usr/bin/redis-server", "/usr/bin/python3")


def test_project_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "server.lock"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from devserver.state import project_lock; from pathlib import Path\n"
        "with project_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(Path.cwd())], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(StateError, match="in progress"), project_lock(lock, wait=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    with project_lock(lock, wait=1.0):  # released when the holder died
        pass
