"""The supervisor's lean start (supervisor/bootstrap.py, system/posix.py): the spec
framing, the state JSON written without json, fork/exec with a parent-death signal, and the
Popen-like handle. Real processes; POSIX (Linux for /proc and prctl)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devserver.supervisor import bootstrap, fork, wire
from devserver.system import host
from devserver.system import posix as posixproc
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fork/exec")
LINUX = sys.platform.startswith("linux")


def spec_for(tmp_path: Path, argv: list[str], stdin_config: str = "") -> dict[str, Any]:
    return {
        "argv": argv,
        "env": {"PATH": os.environ.get("PATH", ""), "DS_TEST": "yes"},
        "cwd": str(tmp_path / "cwd"),
        "stdin_config": stdin_config,
    }


# --- the spec framing ------------------------------------------------------------------------


def test_spec_round_trip_leaves_the_lifeline_unread() -> None:
    spec = {"argv": ["a", "ü"], "env": {"K": "v"}, "port": 6379, "secret_file": None}
    r, w = os.pipe()
    os.write(w, wire.encode_spec(spec) + b"ok\n")
    os.close(w)
    try:
        assert wire.read_spec(r) == spec
        assert os.read(r, 10) == b"ok\n"  # exactly the spec was taken
    finally:
        os.close(r)


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        (b"", None),  # start gave up before sending one
        (b"\n", ValueError),
        (b"garbage that is no spec\n", ValueError),
        (b"devserver-spec-1 100\n" + b"x" * 10, None),  # start died while sending it
        (b"devserver-spec-1 12", ValueError),  # ended inside the header
    ],
)
def test_read_spec_on_bad_input(data: bytes, outcome: Any) -> None:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        if outcome is ValueError:
            with pytest.raises(ValueError, match="bad supervisor spec"):
                wire.read_spec(r)
        else:
            assert wire.read_spec(r) is outcome
    finally:
        os.close(r)


# --- the state file without json -------------------------------------------------------------


def test_to_json_reads_back_as_json_dumps_would() -> None:
    value = {
        "pid": 123,
        "create_time": 1796159730.16,
        "argv": ["/usr/bin/redis-server", "--requirepass", 'a "quoted"\\ \n\t\x01 ü 𝄞'],
        "status": "running",
        "flag": True,
        "off": False,
        "none": None,
        "empty": [],
        "nested": {"b": [1, 2.5], "a": {}},
    }
    text = wire.to_json(value)
    assert json.loads(text) == value
    assert text == json.dumps(value, indent=2, sort_keys=True)  # the same text, even


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object()])
def test_to_json_refuses_what_json_cannot_hold(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        wire.to_json({"x": bad})


def test_write_private_is_owner_only_and_leaves_no_temp(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    target = folder / "server.json"
    old = os.umask(0)
    try:
        bootstrap.write_private(str(target), '{"a": 1}')
    finally:
        os.umask(old)
    assert target.read_text() == '{"a": 1}'
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["server.json"]


def test_write_private_failure_leaves_no_temp(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    target = folder / "server.json"
    target.mkdir(parents=True)  # a rename over a directory fails
    with pytest.raises(OSError):
        bootstrap.write_private(str(target), "{}")
    assert sorted(p.name for p in folder.iterdir()) == ["server.json"]


# --- fork/exec and the handle ----------------------------------------------------------------

SHOW = (
    "import os, sys; "
    "print(os.getcwd(), os.environ.get('DS_TEST'), sys.stdin.read(), flush=True); "
    "print('err', file=sys.stderr, flush=True)"
)


def test_spawn_runs_the_server_as_popen_would(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, [sys.executable, "-c", SHOW], stdin_config="conf-line")
    child = posixproc.spawn(spec)  # type: ignore[arg-type]
    assert child.stdout is not None
    out = child.stdout.read().decode()
    assert child.wait(timeout=10) == 0
    assert out.split() == [str(tmp_path / "cwd"), "yes", "conf-line", "err"]  # 2>&1 too


def test_spawned_server_is_a_session_leader_with_only_its_three_files(tmp_path: Path) -> None:
    keep = open(tmp_path / "inheritable", "w")  # noqa: SIM115
    os.set_inheritable(keep.fileno(), True)  # even an inheritable file of ours is not passed
    try:
        child = posixproc.spawn(spec_for(tmp_path, ["sleep", "30"]))  # type: ignore[arg-type]
        try:
            assert os.getsid(child.pid) == child.pid
            if LINUX:
                # `sleep`'s own dynamic loader opens its libraries for a moment after the exec:
                # look until that has passed (a file we leaked would stay open for good).
                deadline = time.monotonic() + 10
                fds = sorted(os.listdir(f"/proc/{child.pid}/fd"))
                while fds != ["0", "1", "2"] and time.monotonic() < deadline:
                    time.sleep(0.01)
                    fds = sorted(os.listdir(f"/proc/{child.pid}/fd"))
                assert fds == ["0", "1", "2"]
                status = Path(f"/proc/{child.pid}/status").read_text()
                ignored = int(
                    next(x for x in status.splitlines() if x.startswith("SigIgn")).split()[1], 16
                )
                assert not ignored & (1 << (signal.SIGPIPE - 1))  # Python's SIG_IGN undone
            assert child.poll() is None
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(timeout=0.05)
            child.terminate()
            assert child.wait(timeout=10) == -signal.SIGTERM
            assert child.poll() == -signal.SIGTERM
            child.kill()  # reaped: never signals the (maybe reused) pid
        finally:
            if child.returncode is None:
                child.kill()
                child.wait()
    finally:
        keep.close()


def test_spawn_reports_an_exec_failure_as_oserror(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-server")
    with pytest.raises(OSError) as caught:
        posixproc.spawn(spec_for(tmp_path, [missing]))  # type: ignore[arg-type]
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == missing


def test_wait_and_poll_from_two_threads_reap_once(tmp_path: Path) -> None:
    child = posixproc.spawn(spec_for(tmp_path, ["sleep", "0.3"]))  # type: ignore[arg-type]
    codes: list[int | None] = []
    waiter = threading.Thread(target=lambda: codes.append(child.wait()))
    waiter.start()
    while waiter.is_alive():
        codes.append(child.poll())  # never blocks, never steals the reaping
        time.sleep(0.01)
    assert codes[-1] == 0 or child.returncode == 0
    assert child.poll() == 0


@pytest.mark.skipif(not LINUX, reason="prctl")
def test_prctl_is_libc_prctl() -> None:
    prctl = posixproc.load_prctl()
    assert prctl is not None
    assert prctl(3, 0, 0, 0, 0) in (0, 1)  # PR_GET_DUMPABLE answers 0 or 1
    assert prctl(12345, 0, 0, 0, 0) == -1  # an unknown option fails as libc's does


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from devserver.system import host, posix as posixproc
argv = [sys.executable, "-c", {child!r}]
spec = {{"argv": argv, "env": {{}}, "cwd": {cwd!r}, "stdin_config": ""}}
child = posixproc.spawn(spec, prctl=posixproc.load_prctl())
print(child.pid, flush=True)
time.sleep(30)
"""
CHILD = (  # got-term appears whole (renamed into place): the test reads it once it exists
    "import os, signal, sys, time\n"
    "def bye(*a):\n"
    "    with open('got-term.tmp', 'w') as f:\n"
    "        f.write('term')\n"
    "    os.replace('got-term.tmp', 'got-term')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "open('ready', 'w').close()\n"
    "time.sleep(30)\n"
)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG")
def test_server_gets_sigterm_when_its_spawner_is_killed(tmp_path: Path) -> None:
    """The parent-death guarantee, through the _ctypes prctl: kill -9 the parent, the
    server gets SIGTERM (a saving stop)."""
    cwd = tmp_path / "cwd"
    code = PARENT.format(root=str(ROOT), child=CHILD, cwd=str(cwd))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 20
        while not (cwd / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the child has installed its handler
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while not (cwd / "got-term").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (cwd / "got-term").read_text() == "term"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- when start.start may fork ---------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="/proc/self/task")
def test_can_fork_only_single_threaded_and_not_when_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "from devserver.supervisor import fork; print(fork.can_fork())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DEVSERVER_NO_FORK"},
        check=True,
    )
    assert fresh.stdout.strip() == "True"
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert not fork.can_fork()  # another thread: a fork could copy a held lock
    finally:
        stop.set()
        worker.join()
    monkeypatch.setenv("DEVSERVER_NO_FORK", "1")
    assert not fork.can_fork()


def test_supervisor_command_is_the_bootstrap_on_posix_and_the_supervisor_on_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows has no fork: its supervisor spawns through subprocess (supervisor.run); both
    read the same spec framing."""
    from devserver.supervisor import launch as supervisor

    monkeypatch.setattr(host, "WINDOWS", False)
    assert supervisor.supervisor_command("py")[1:] == [
        "-S",
        "-c",
        "from devserver.supervisor.bootstrap import main; main()",
    ]
    monkeypatch.setattr(host, "WINDOWS", True)
    assert (
        supervisor.supervisor_command("py")[-1]
        == "from devserver.supervisor.entry import run; run()"
    )


def test_the_windows_supervisor_reads_the_same_spec(tmp_path: Path) -> None:
    """supervisor.main (the Windows entry) on an empty stdin exits 0 without starting
    anything, and on garbage reports one JSON error line (start shows it), exit 1."""
    for data, code, said in ((b"", 0, ""), (b"garbage\n", 1, "bad supervisor spec")):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from devserver.supervisor import entry as s; sys.exit(s.main())",
            ],
            cwd=ROOT,
            input=data,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == code, done.stderr
        if said:
            assert said in json.loads(done.stdout)["error"]
        else:
            assert done.stdout == b""
