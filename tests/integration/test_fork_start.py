"""``server.start.start`` from a single-threaded caller forks its supervisor (supervisor/fork.py
``fork_supervisor``): real redis-server, the caller a fresh Python process of its own (the
test runner's workers have threads, so in-process starts take the spawned path).

What must hold: the long-lived supervisor is a clean ``python -S`` (the fork exec'd it), so
it keeps none of the caller's memory, files or lock; the server is its child and still gets
SIGTERM when it dies; a failed start leaves no process, no zombie and no state behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.server import resp
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from tests.conftest import (
    ROOT,
    SIGINT_AT_DEFAULT,
    SettingsFactory,
    free_port,
    kill_recorded,
    wait_dead,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux fork path")

CALLER = """
import json, os, sys
sys.path.insert(0, {root!r})
big = bytearray({ballast} * 1024 * 1024)  # a large caller: the supervisor must not keep it
for i in range(0, len(big), 4096):
    big[i] = 1
held = open(os.path.join({project!r}, "held-by-caller"), "w")
os.set_inheritable(held.fileno(), True)  # even an inheritable file of the caller's stays here
from devserver.supervisor import fork
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from pathlib import Path
from devserver.config import load_settings
from devserver.errors import DevServerError
settings = load_settings({{"server": {server!r}}}, Path({project!r}))
out = {{"me": os.getpid(), "forks": fork.can_fork()}}
exec({inject!r})  # a fault, for some tests
try:
    result = start_server(settings)
    out.update(pid=result.state.pid, sup=result.state.supervisor_pid)
    if {then_stop!r}:
        out["stopped"] = stop_server(settings).method
except DevServerError as exc:
    out["error"] = exc.message
except KeyboardInterrupt:
    out["error"] = "KeyboardInterrupt"
from tests.proclist import children_of_self
out["children"] = children_of_self()
print(json.dumps(out), flush=True)
sys.stdin.readline()  # until the test has looked
"""


def run_caller(
    project: Path,
    server: dict[str, Any],
    ballast: int = 0,
    then_stop: bool = False,
    inject: str = "",
) -> subprocess.Popen[str]:
    code = CALLER.format(
        root=str(ROOT),
        project=str(project),
        server=server,
        ballast=ballast,
        then_stop=then_stop,
        inject=inject,
    )
    env = {k: v for k, v in os.environ.items() if k != "DEVSERVER_NO_FORK"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        **SIGINT_AT_DEFAULT,  # one fault is a Ctrl+C, also when the suite is a background job
    )


def release(caller: subprocess.Popen[str], project: Path) -> None:
    """Let the caller exit, and kill whatever the project's state file still names."""
    try:
        caller.communicate("\n", timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        caller.kill()
        caller.wait()
    kill_recorded(project / "data" / "server.json")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_forked_supervisor_is_clean_and_keeps_the_guarantees(
    project: Path, make_settings: SettingsFactory, redis_server_path: Path
) -> None:
    port = free_port()
    server = {"flavor": "redis", "port": port, "binary": str(redis_server_path)}
    caller = run_caller(project, server, ballast=200)
    assert caller.stdout is not None and caller.stdin is not None
    try:
        seen = json.loads(caller.stdout.readline())
        assert seen["forks"] is True, seen
        assert "error" not in seen, seen
        sup, pid = seen["sup"], seen["pid"]
        # forked from the caller, then exec'd into a fresh interpreter (start may return a
        # moment before that exec: it waits for the state file and PING only)
        assert psutil.Process(sup).ppid() == seen["me"]
        deadline = time.monotonic() + 15
        while "devserver.supervisor.fork import resume" not in " ".join(
            psutil.Process(sup).cmdline()
        ):
            assert time.monotonic() < deadline, psutil.Process(sup).cmdline()
            time.sleep(0.01)
        assert psutil.Process(pid).ppid() == sup
        assert rss_mib(seen["me"]) > 200
        assert rss_mib(sup) < 40, "the supervisor kept the caller's memory"
        links = [os.readlink(f"/proc/{sup}/fd/{fd}") for fd in os.listdir(f"/proc/{sup}/fd")]
        assert not any("held-by-caller" in link or link.endswith(".lock") for link in links)
        assert len(links) <= 8, links  # stdio, the server's pipe, the control port, a few more
        assert resp.ping("127.0.0.1", port) == "ready"
        # the supervisor killed -9, the server gets SIGTERM and saves
        assert resp.call("127.0.0.1", port, [["SET", "kept", "yes"]])[0] == "OK"
        os.kill(sup, signal.SIGKILL)
        assert wait_dead(pid), "the server outlived its supervisor"
        settings = make_settings(port=port, binary=str(redis_server_path))
        start_server(settings)
        assert resp.call("127.0.0.1", port, [["GET", "kept"]])[0] == "yes"
        stop_server(settings)
    finally:
        release(caller, project)


FAILING = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Redis server v=7.0.15 sha=0:0 malloc=libc bits=64"; exit 0; fi
echo "boom: cannot start" ; exit 3
"""


def test_a_failed_forked_start_leaves_nothing(project: Path) -> None:
    binary = project / "bin" / "redis-server"
    binary.parent.mkdir()
    binary.write_text(textwrap.dedent(FAILING))
    binary.chmod(0o755)
    server = {"flavor": "redis", "port": free_port(), "binary": str(binary)}
    caller = run_caller(project, server)
    assert caller.stdout is not None and caller.stdin is not None
    try:
        seen = json.loads(caller.stdout.readline())
        assert seen["forks"] is True, seen
        assert "exited during startup" in seen.get("error", ""), seen
        assert seen["children"] == [], "a supervisor or server is left (or not reaped)"
        assert not (project / "data" / "server.json").exists()
    finally:
        release(caller, project)


def test_the_caller_reaps_its_forked_supervisor_after_stop(
    project: Path, redis_server_path: Path
) -> None:
    """A long-lived caller (a test session starting and stopping servers) collects no
    zombies: the forked supervisor is its child, and ``stop`` reaps it."""
    server = {"flavor": "redis", "port": free_port(), "binary": str(redis_server_path)}
    caller = run_caller(project, server, then_stop=True)
    assert caller.stdout is not None
    try:
        seen = json.loads(caller.stdout.readline())
        assert seen["forks"] is True and seen.get("stopped") == "shutdown", seen
        assert seen["children"] == [], "the stopped supervisor is left as a zombie"
        assert wait_dead(seen["pid"]) and wait_dead(seen["sup"])
    finally:
        release(caller, project)


CTRL_C_AFTER_FORK = """
import signal
real_fork = os.fork
def fork():
    pid = real_fork()
    if pid:  # the parent: a Ctrl+C lands the moment fork() returns
        os.kill(os.getpid(), signal.SIGINT)
    return pid
os.fork = fork
"""
FORK_FAILS = """
def fork():
    raise BlockingIOError(11, "Resource temporarily unavailable")
os.fork = fork
"""
NO_PYTHON_TO_EXEC = """
from devserver.system import spawn
spawn.python_for_background = lambda: "/nonexistent/python3"
"""
NO_MEMFD_IN_THE_COPY = """
def memfd_create(*args, **kwargs):
    raise OSError(38, "Function not implemented")
os.memfd_create = memfd_create  # after can_fork() probed it: only the forked copy meets it
"""


@pytest.mark.parametrize(
    ("inject", "outcome"),
    [
        (CTRL_C_AFTER_FORK, "KeyboardInterrupt"),
        (NO_MEMFD_IN_THE_COPY, "the supervisor could not take over"),
        (NO_PYTHON_TO_EXEC, "cannot run the supervisor's Python /nonexistent/python3"),
    ],
    ids=["ctrl-c-right-after-fork", "handover-fails-in-the-copy", "no-python-to-exec"],
)
def test_a_fault_around_the_fork_undoes_the_start(
    project: Path, redis_server_path: Path, inject: str, outcome: str
) -> None:
    """A Ctrl+C the moment fork() returns (the caller did not hold the handle yet), or a
    failure in the forked copy after it spawned the server: the start is undone, nothing is
    left (no server, no supervisor, no zombie, no state file)."""
    port = free_port()
    server = {"flavor": "redis", "port": port, "binary": str(redis_server_path)}
    caller = run_caller(project, server, inject=inject)
    assert caller.stdout is not None
    try:
        seen = json.loads(caller.stdout.readline())
        assert seen["forks"] is True, seen
        assert outcome in seen.get("error", ""), seen
        assert seen["children"] == [], "a supervisor or server is left (or not reaped)"
        assert not (project / "data" / "server.json").exists()
        assert resp.ping("127.0.0.1", port) != "ready"
    finally:
        release(caller, project)


def test_no_fork_possible_means_a_spawned_supervisor(
    project: Path, redis_server_path: Path
) -> None:
    """fork() failing (EAGAIN, ENOMEM) is not a failed start: a supervisor is spawned."""
    port = free_port()
    server = {"flavor": "redis", "port": port, "binary": str(redis_server_path)}
    caller = run_caller(project, server, inject=FORK_FAILS, then_stop=True)
    assert caller.stdout is not None
    try:
        seen = json.loads(caller.stdout.readline())
        assert "error" not in seen and seen.get("stopped") == "shutdown", seen
    finally:
        release(caller, project)
