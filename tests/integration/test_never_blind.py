"""The tool finds its own server from the processes themselves, not only from the state file.

Each fault here separates ``data/server.json`` from what runs: the file deleted or corrupted,
a copy of the project beside the original, a server that detaches itself. Real processes
throughout: the real tasks.py through ``python -m invoke``, the real redis-server. A test's
processes are recognised without the state file (``tagged``, see test_faults_tracking.py)
and killed after the test, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port, kill_recorded, wait_dead
from tests.integration.test_cli import invoke
from tests.integration.test_faults_tracking import (
    LINUX_ONLY,
    ROOT_ONLY,
    _can,
    listening,
    read_state,
    tagged,
    tagged_env,
    wait_none_tagged,
)


@pytest.fixture()
def tag(project: Path) -> Iterator[str]:
    """This test's tag (its projects' parent folder): whatever carries it is killed after."""
    value = str(project.parent) + os.sep
    yield value
    for root in project.parent.iterdir():
        kill_recorded(root / "data" / "server.json")
    for proc in tagged(value):
        try:
            proc.kill()
        except psutil.Error:
            pass


def _status_json(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    result = invoke(env, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- the state file deleted or corrupt while the server runs ---------------------------------


@pytest.mark.parametrize("fault", ["deleted", "corrupt"])
def test_lost_state_file_the_server_is_found_and_stopped(
    project: Path, tag: str, fault: str
) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    code, info = _status_json(env)
    assert code == 0 and info["found_by"] == "state", info  # the normal way
    pid = read_state(project)["pid"]
    state_file = project / "data" / "server.json"
    if fault == "deleted":
        state_file.unlink()
    else:
        state_file.write_text('{"pid": "garbage"')

    code, info = _status_json(env)
    assert code == 0, info
    assert info["running"] is True and info["pid"] == pid, info
    assert info["found_by"] == "process scan" and info["port"] == port, info
    text = invoke(env, "status")
    assert text.returncode == 0, text
    assert f"runs untracked (redis, pid {pid}); `invoke stop` stops it" in text.stderr, text

    again = invoke(env, "start")  # never a second server beside it
    assert again.returncode == 1, again
    assert "Traceback" not in again.stderr
    assert f"runs untracked (redis, pid {pid})" in again.stderr, again.stderr

    stopped = invoke(env, "stop")
    assert stopped.returncode == 0, stopped
    assert f"process scan found this project's server (pid {pid})" in stopped.stderr, stopped
    assert "stopped (graceful)" in stopped.stdout + stopped.stderr, stopped
    assert not _alive(pid)
    assert not listening(port)
    assert wait_none_tagged(tag) == []  # the supervisor too
    assert invoke(env, "status").returncode == 3


# -- a copied project does not control the original's server --------------------------------


def test_copied_project_does_not_see_or_stop_the_originals_server(project: Path, tag: str) -> None:
    port_a, port_b = free_port(), free_port()
    env_a = tagged_env(project, port_a, tag)
    assert invoke(env_a, "start").returncode == 0
    pid_a = read_state(project)["pid"]
    copy = project.parent / "copy"
    shutil.copytree(project, copy, symlinks=True)
    env_b = tagged_env(copy, port_b, tag)

    code, info = _status_json(env_b)
    assert code == 3 and info["running"] is False, info  # A's server is not B's
    stopped = invoke(env_b, "stop")
    assert stopped.returncode == 0, stopped
    assert _alive(pid_a) and listening(port_a)  # untouched
    started = invoke(env_b, "start")
    assert started.returncode == 0, started  # B gets its own server, on its own port
    pid_b = read_state(copy)["pid"]
    assert pid_b != pid_a and listening(port_b)
    assert invoke(env_b, "stop").returncode == 0
    assert _alive(pid_a) and not _alive(pid_b)
    code, info = _status_json(env_a)
    assert code == 0 and info["pid"] == pid_a and info["found_by"] == "state", info
    assert invoke(env_a, "stop").returncode == 0
    assert wait_none_tagged(tag) == []


# -- the project folder deleted while the server runs ----------------------------------------


@LINUX_ONLY
def test_deleted_project_server_is_stopped_within_the_budget(project: Path, tag: str) -> None:
    """rm -rf of the project, then a fresh one at the same path: the new checkout's ``stop``
    finds the server (the same path is the same project) and ends it, although it cannot
    save (its data folder is gone: SHUTDOWN SAVE is refused)."""
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    state = read_state(project)
    pid, sup = state["pid"], state["supervisor_pid"]
    shutil.rmtree(project)
    project.mkdir()  # the fresh clone

    code, info = _status_json(env)
    assert code == 0 and info["pid"] == pid and info["found_by"] == "process scan", info
    stopped = invoke(env, "stop", timeout=30)
    assert not _alive(pid), stopped
    assert not _alive(sup)
    assert not listening(port)
    assert "Traceback" not in stopped.stderr
    assert wait_none_tagged(tag) == []


@LINUX_ONLY
def test_deleted_project_supervisor_sigterm_still_ends_the_server(project: Path, tag: str) -> None:
    """SIGTERM to a supervisor whose project folder is gone: SHUTDOWN SAVE is refused (no
    data folder), so it escalates (SHUTDOWN NOSAVE, SIGTERM, a kill) within the stop budget."""
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    state = read_state(project)
    pid, sup = state["pid"], state["supervisor_pid"]
    shutil.rmtree(project)
    os.kill(sup, signal.SIGTERM)
    assert wait_dead(pid, 5 + 3), "the server outlived its supervisor's stop budget"
    assert wait_dead(sup, 3)
    assert not listening(port)


# -- a server that detaches itself -----------------------------------------------------------


def test_daemonize_in_extra_args_is_refused_before_spawning(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag, INVOKE_SERVER_EXTRA_ARGS="--daemonize yes")
    result = invoke(env, "start")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "--daemonize" in result.stderr and "server.extra_args" in result.stderr, result
    assert not listening(port)
    assert wait_none_tagged(tag) == []
    assert not (project / "data" / "server.json").exists()


@LINUX_ONLY
def test_server_that_forks_and_exits_is_named_and_stopped(project: Path, tag: str) -> None:
    """A binary that forks a real server and exits 0 (what --daemonize does, under another
    name): start must not claim a pid that has exited; it names the detached server and
    stops it, so nothing runs untracked."""
    redis = shutil.which("redis-server")
    if redis is None:
        pytest.skip("no redis-server on PATH")
    exe = project / "bin" / "redis-server"
    exe.parent.mkdir(parents=True)
    exe.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then exec {redis} --version; fi\n'
        f'{redis} "$@" &\n'
        "exit 0\n"
    )
    exe.chmod(0o755)
    port = free_port()
    env = tagged_env(project, port, tag)
    result = invoke(env, "start")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    out = result.stdout + result.stderr
    assert "detached" in out and "was stopped" in out, out
    assert not listening(port)
    assert wait_none_tagged(tag) == []
    status = invoke(env, "status")
    assert status.returncode == 3, status


# -- the data folder is the user's alone -----------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_data_folder_is_private(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag, INVOKE_SERVER_PASSWORD="s3cret")
    data = project / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # whatever the umask: an existing, readable folder
    assert invoke(env, "start").returncode == 0
    try:
        for folder in (data, data / "redis"):
            assert folder.stat().st_mode & 0o077 == 0, (folder, oct(folder.stat().st_mode))
    finally:
        assert invoke(env, "stop").returncode == 0


# -- a read-only data folder -----------------------------------------------------------------


@ROOT_ONLY
@LINUX_ONLY
def test_stop_works_with_a_read_only_data_folder(project: Path, tag: str) -> None:
    """data/ remounted read-only while the server runs: the lock file cannot be opened for
    writing, but stopping must not need a writable folder."""
    port = free_port()
    env = tagged_env(project, port, tag, INVOKE_SERVER_STOP_TIMEOUT="3")
    assert invoke(env, "start").returncode == 0
    pid = read_state(project)["pid"]
    data = project / "data"
    if not _can("mount", "--bind", str(data), str(data)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _can("mount", "-o", "remount,bind,ro", str(data)):
            pytest.skip("cannot remount read-only here")
        result = invoke(env, "stop", timeout=30)
        assert "Traceback" not in result.stderr
        assert "cannot use the data directory" not in result.stderr, result.stderr
        assert wait_dead(pid, 5), result
        assert not listening(port)
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


# -- an ephemeral server's caller killed -----------------------------------------------------


def test_killed_ephemeral_caller_leaves_no_temporary_folder(redis_server_path: Path) -> None:
    """kill -9 of a process inside ``with devserver.ephemeral()``: its supervisor stops the
    server and removes the temporary folder the caller can no longer remove."""
    code = (
        "import json, sys, devserver\n"
        f"with devserver.ephemeral(flavor='redis', binary={str(redis_server_path)!r}) as s:\n"
        "    print(json.dumps({'pid': s.pid, 'data': s.data_dir}), flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = 0
    try:
        assert caller.stdout is not None
        got = json.loads(caller.stdout.readline())
        server_pid = got["pid"]
        base = Path(got["data"]).parent
        assert base.is_dir()
        caller.kill()
        caller.wait()
        assert wait_dead(server_pid, 10)
        deadline = time.monotonic() + 10
        while base.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not base.exists(), sorted(p.name for p in base.rglob("*"))
    finally:
        caller.kill()
        if server_pid:
            try:
                psutil.Process(server_pid).kill()
            except psutil.Error:
                pass


# -- messages that said the wrong thing ------------------------------------------------------


def test_tail_with_the_log_folder_replaced_by_a_file_says_so(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    try:
        logs = project / "logs"
        shutil.rmtree(logs)
        logs.write_text("not a folder")
        result = invoke(env, "tail")
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert "start it with" not in result.stdout + result.stderr  # it runs
        assert f"the log folder {logs} is not a folder" in result.stderr, result.stderr
    finally:
        assert invoke(env, "stop").returncode == 0


@LINUX_ONLY
@pytest.mark.parametrize("parts", [20, 21], ids=["near-path-max", "past-path-max"])
def test_a_too_long_data_path_is_named_as_such(project: Path, tag: str, parts: int) -> None:
    """About 4,000 characters, and past Linux's PATH_MAX (4,096) wherever the project is:
    there even a look at the folder fails (pathlib's exists() raises ENAMETOOLONG)."""
    port = free_port()
    deep = project / "/".join(["d" * 200] * parts)
    env = tagged_env(project, port, tag, INVOKE_SERVER_DATA_DIR=str(deep))
    result = invoke(env, "start")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "File name too long" in result.stderr, result.stderr
    hint = result.stderr.split("hint:")[-1]
    assert "permissions" not in hint and "too long" in hint, result.stderr
    assert not listening(port)


@pytest.mark.parametrize("how", ["raise", "generator"])
def test_ephemeral_left_open_at_exit_neither_hangs_nor_leaves_anything(
    redis_server_path: Path, how: str
) -> None:
    """A ``with devserver.ephemeral()`` never closed before the interpreter exits (an
    exception escaping ``__enter__``'s caller, a generator holding it open): the exit must
    not hang, print nothing about it, and leave neither the server nor its folder."""
    enter = f"devserver.ephemeral(flavor='redis', binary={str(redis_server_path)!r})"
    body = {
        "raise": f"cm = {enter}\ns = cm.__enter__()\nreport(s)\nraise KeyboardInterrupt\n",
        "generator": (
            f"def gen():\n    with {enter} as s:\n        yield s\ng = gen()\nreport(next(g))\n"
        ),
    }[how]
    code = (
        "import json, devserver\n"
        "def report(s):\n"
        "    print(json.dumps({'pid': s.pid, 'data': s.data_dir}), flush=True)\n" + body
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server_pid = 0
    try:
        assert caller.stdout is not None
        got = json.loads(caller.stdout.readline())
        server_pid = got["pid"]
        _, err = caller.communicate(timeout=30)  # on the code before: hangs for ever
        assert "Exception ignored" not in err, err
        assert wait_dead(server_pid, 10)
        base = Path(got["data"]).parent
        deadline = time.monotonic() + 10
        while base.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not base.exists()
    finally:
        caller.kill()
        if server_pid:
            try:
                psutil.Process(server_pid).kill()
            except psutil.Error:
                pass
