"""State file round trip and the identity check that keeps us from signalling strangers."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.errors import StateError, UntrustedState
from devserver.server.identity import same_exe, server_process, supervisor_alive, verified_process
from devserver.server.state import ServerState, project_lock, read_state
from devserver.system import lifetime
from devserver.system.atomic import write_atomic
from tests.platforms import WINDOWS, write_script


def make_state(
    pid: int, create_time: float, exe: str, binary: str = "", start_ticks: int = 0
) -> ServerState:
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
        binary=binary,
        start_ticks=start_ticks,
    )


@pytest.fixture()
def fake_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A live child running a Python script called redis-server (as the test servers do)."""
    script = tmp_path / "bin" / "redis-server"
    script.parent.mkdir()
    child = subprocess.Popen(write_script(script, "import time\ntime.sleep(60)\n"))
    try:
        yield child, script
    finally:
        child.kill()
        child.wait()


def state_of(child: subprocess.Popen[bytes], binary: Path, **changes: Any) -> ServerState:
    """The state the supervisor would record for ``child`` (with ``changes`` applied)."""
    proc = psutil.Process(child.pid)
    deadline = time.monotonic() + 10
    while str(binary) not in proc.cmdline():  # exec'd the interpreter on the script yet?
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fields: dict[str, Any] = {
        "pid": child.pid,
        "create_time": proc.create_time(),
        "exe": exe_of(proc),
        "binary": str(binary),
        "start_ticks": lifetime.start_ticks(child.pid) or 0,
    }
    fields.update(changes)
    return make_state(**fields)


def exe_of(proc: psutil.Process) -> str:
    """psutil's exe(), or this interpreter where the OS hides it (psutil under Wine)."""
    try:
        return str(proc.exe())
    except OSError:
        return sys.executable


def exe_readable(proc: psutil.Process) -> bool:
    try:
        proc.exe()
    except OSError:
        return False
    return True


def test_round_trip(tmp_path: Path) -> None:
    me = psutil.Process()
    state = make_state(os.getpid(), me.create_time(), exe_of(me))
    write_atomic(tmp_path / "server.json", state.to_json())
    loaded = read_state(tmp_path / "server.json")
    assert loaded == state
    assert json.loads((tmp_path / "server.json").read_text())["pid"] == os.getpid()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    state.save(tmp_path / "saved.json")
    if not WINDOWS:  # mode bits; Windows gets an owner-only ACL (test_compat_windows)
        assert (tmp_path / "saved.json").stat().st_mode & 0o777 == 0o600  # the control token


def test_missing_state_is_none(tmp_path: Path) -> None:
    assert read_state(tmp_path / "nope.json") is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"pid": -4}', '{"pid": 5}'])
def test_foreign_or_corrupt_state_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "server.json"
    path.write_text(text)
    with pytest.raises(StateError) as info:
        read_state(path)
    assert str(path) in info.value.message and "delete" in info.value.hint


GOOD = json.loads(make_state(1234, 1.0, "redis-server").to_json())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pid", True),
        ("pid", "12"),
        ("pid", 0),
        ("create_time", "yesterday"),
        ("create_time", None),
        ("create_time", float("nan")),
        ("exe", 5),
        ("supervisor_pid", 1.5),
        ("port", 70000),
        ("argv", "redis-server --port 1"),
        ("argv", [1, 2]),
        ("control_token", None),
        ("flavor", ""),
    ],
)
def test_every_field_is_type_checked(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps({**GOOD, field: value}))
    with pytest.raises(UntrustedState) as info:
        read_state(path)
    assert field in info.value.message


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b"[" * 100_000])
def test_undecodable_or_deep_state_is_untrusted(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "server.json"
    path.write_bytes(raw)
    with pytest.raises(UntrustedState):
        read_state(path)


def test_a_missing_required_field_is_untrusted(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "exe"}))
    with pytest.raises(UntrustedState, match="exe is missing"):
        read_state(path)


def test_live_process_with_matching_identity_is_ours(fake_server: Any) -> None:
    child, script = fake_server
    assert server_process(state_of(child, script)) is not None


def test_reused_pid_is_stale(fake_server: Any) -> None:
    child, script = fake_server
    state = state_of(child, script)
    # Same pid, different start: the PID was reused by another program.
    if state.start_ticks:  # Linux: the tick count decides, the wall-clock figure does not
        assert server_process(dataclasses.replace(state, start_ticks=state.start_ticks - 1)) is None
    else:
        assert server_process(dataclasses.replace(state, create_time=state.create_time - 1)) is None
    old = dataclasses.replace(state, start_ticks=0)  # a state file from before ticks
    assert server_process(old) is not None
    assert server_process(dataclasses.replace(old, create_time=state.create_time - 100)) is None
    # Same pid and time, different executable (where the OS lets psutil read it: not Wine).
    if exe_readable(psutil.Process(child.pid)):
        assert server_process(dataclasses.replace(state, exe="/usr/bin/redis-server")) is None


@pytest.mark.skipif(lifetime.start_ticks(os.getpid()) is None, reason="Linux /proc only")
def test_a_clock_step_does_not_make_a_live_server_stale(fake_server: Any) -> None:
    child, script = fake_server
    state = state_of(child, script)
    # What psutil reports after the wall clock jumped by 5 s (btime moves with it).
    stepped = dataclasses.replace(state, create_time=state.create_time - 5)
    assert server_process(stepped) is not None


def test_forged_states_are_never_ours(fake_server: Any) -> None:
    child, script = fake_server
    state = state_of(child, script)
    # The right identity, but the binary is not one the redis flavor runs.
    assert server_process(dataclasses.replace(state, binary=sys.executable)) is None
    assert server_process(dataclasses.replace(state, binary="")) is None
    assert server_process(dataclasses.replace(state, flavor="nonsense")) is None
    # A redis-server binary the process is not running.
    assert server_process(dataclasses.replace(state, binary="/usr/bin/redis-server")) is None
    # This process and its ancestors, pid 1: never, whatever the file says.
    for proc in [psutil.Process(), *psutil.Process().parents()]:
        try:
            exe = proc.exe()
        except (psutil.AccessDenied, OSError):  # pid 1 of a container; Wine hides exe()
            try:
                exe = proc.name()
            except OSError:
                continue  # Wine may hide the name too: nothing to forge from
        ticks = lifetime.start_ticks(proc.pid) or 0
        forged = make_state(proc.pid, proc.create_time(), exe, binary=exe, start_ticks=ticks)
        assert server_process(forged, also=(Path(exe).name,)) is None
    if not WINDOWS:  # pid 1 is init on POSIX only
        init = psutil.Process(1)
        assert verified_process(1, init.create_time(), init.name()) is None


def test_dead_and_zombie_processes_are_stale(tmp_path: Path) -> None:
    script = tmp_path / "redis-server"
    child = subprocess.Popen(write_script(script, ""))
    ctime = psutil.Process(child.pid).create_time()
    state = make_state(child.pid, ctime, sys.executable, binary=str(script))
    if not WINDOWS:  # Windows has no zombies: an exited child is gone (the check below)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server_process(state) is None  # zombie
    child.wait()
    assert server_process(state) is None  # gone


def test_supervisor_liveness(fake_server: Any) -> None:
    child, script = fake_server
    state = state_of(child, script)
    proc = psutil.Process(child.pid)
    alive = dataclasses.replace(
        state,
        supervisor_pid=child.pid,
        supervisor_create_time=proc.create_time(),
        supervisor_start_ticks=lifetime.start_ticks(child.pid) or 0,
    )
    assert supervisor_alive(alive)
    assert not supervisor_alive(dataclasses.replace(alive, supervisor_pid=0))
    child.kill()
    child.wait()
    assert not supervisor_alive(alive)


def test_flavor_exe_names_cover_archives_and_path() -> None:
    from devserver.catalog import get_flavor

    assert "dragonfly-x86_64" in get_flavor("dragonfly").exe_names()
    assert {"redis-server", "valkey-server", "redis-server.exe"} <= set(
        get_flavor("redis").exe_names()
    )


def _unreadable_exe(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil as under Wine: exe() and name() of a process raise OSError (WinError 87)."""

    def refuse(self: psutil.Process) -> str:
        raise OSError(22, "The parameter is incorrect", None, 87)

    monkeypatch.setattr(psutil.Process, "exe", refuse)
    monkeypatch.setattr(psutil.Process, "name", refuse)


def test_unreadable_exe_is_unknown_and_the_create_time_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devserver.server.identity import verified_process

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ctime = psutil.Process(child.pid).create_time()
        _unreadable_exe(monkeypatch)
        assert verified_process(child.pid, ctime, "redis-server.exe") is not None
        # What can be read still decides: a reused pid (other create time) is never ours.
        assert verified_process(child.pid, ctime - 100, "redis-server.exe") is None
    finally:
        child.kill()
        child.wait()


def test_supervisor_records_the_launched_binary_when_the_exe_is_unreadable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from devserver.supervisor.core import Supervisor

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        spec: dict[str, object] = {
            "flavor": "redis",
            "version": "7.2.99",
            "host": "127.0.0.1",
            "log_file": str(tmp_path / "redis.log"),
            "port": 1,
            "public_argv": [],
            "binary": "C:\\proj\\bin\\redis-server.exe",
            "state_file": str(tmp_path / "server.json"),
        }
        _unreadable_exe(monkeypatch)
        from devserver.system import lifetime

        monkeypatch.setattr(lifetime, "proc_identity", lambda pid: None)  # as on Windows: psutil
        Supervisor(spec, child).record_state(0)  # type: ignore[arg-type]
        state = read_state(tmp_path / "server.json")
        assert state is not None and state.exe == spec["binary"]
        assert state.create_time == psutil.Process(child.pid).create_time()
    finally:
        child.kill()
        child.wait()


def test_same_exe_compares_file_names() -> None:
    assert same_exe("/usr/bin/redis-server", "/opt/x/redis-server")
    assert same_exe("C:\\bin\\redis-server.exe", "redis-server.EXE")
    assert not same_exe("", "redis-server")
    assert not same_exe("/usr/bin/redis-server", "/usr/bin/python3")


def test_project_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "server.lock"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from devserver.server.state import project_lock; from pathlib import Path\n"
        "with project_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(Path.cwd())], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().rstrip() == b"held"
        with pytest.raises(StateError, match="in progress"), project_lock(lock, wait=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    with project_lock(lock, wait=1.0):  # released when the holder died
        pass


def test_runs_binary_when_the_os_hides_exe_and_cmdline() -> None:
    """psutil under Wine raises OSError for exe() (and sometimes name()): the process name
    decides when it is readable, and nothing is trusted when it is not."""
    from unittest import mock

    from devserver.server.identity import runs_binary

    hidden = mock.Mock()
    hidden.exe.side_effect = OSError(22, "[WinError 87]")
    hidden.name.return_value = "redis-server.exe"
    assert runs_binary(hidden, "C:\\proj\\bin\\redis\\redis-server.exe")
    assert not runs_binary(hidden, "C:\\Windows\\System32\\cmd.exe")
    hidden.name.side_effect = OSError(22, "[WinError 87]")
    # Wine hides the name too but not the command line: its program must be the binary.
    hidden.cmdline.return_value = ["C:\\proj\\bin\\redis\\redis-server.exe", "--port", "1"]
    assert runs_binary(hidden, "C:\\proj\\bin\\redis\\redis-server.exe")
    assert not runs_binary(hidden, "C:\\Windows\\System32\\cmd.exe")
    hidden.cmdline.side_effect = OSError(22, "[WinError 87]")  # nothing readable: not ours
    assert not runs_binary(hidden, "C:\\proj\\bin\\redis\\redis-server.exe")
