"""fetch, start, status, verify, stop: our code run by a real Windows CPython 3.11 under Wine.

The server is tests/winpython/resp_server.c compiled for Windows, installed the way a person
gets Redis on Windows: ``invoke fetch --archive`` of a redis-windows-shaped zip with its sha256.

Where Wine differs from Windows (so what these tests do not show):
- Console windows: Wine opens no window here (no display), so "no window appears on
  ``invoke start``" and "closing the console kills the supervisor" (CTRL_CLOSE_EVENT) are
  only read against CPython's and Microsoft's sources, not run. What is run: the supervisor is
  spawned with the real creation flags by the real ``subprocess`` and outlives ``invoke start``.
- psutil: ``exe()``/``name()`` of another process raise OSError (WinError 87) under Wine,
  where Windows answers (or raises AccessDenied for protected processes). So identity here
  rests on pid + create time, and the tool's "unreadable exe" path is what runs.
- Job objects: a launcher's kill-on-close job (CI agents, IDEs) and CREATE_BREAKAWAY_FROM_JOB
  are only read: closing such a job crashed Wine 8's wineserver in a manual try, so the
  breakaway and its fallback are not run here.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.winpython import wine
from tests.winpython.conftest import SERVER_VERSION, WinProject, linux_processes

pytestmark = pytest.mark.winpython


def _alive(project: WinProject, *pids: int) -> dict[int, bool]:
    seen = project.probe("procs", *map(str, pids))
    return {pid: bool(seen[str(pid)]["alive"]) for pid in pids}


def _servers(project: WinProject) -> list[tuple[int, str]]:
    """Our test servers on this project's port, as Linux sees them (one per Windows process)."""
    return [p for p in linux_processes(f"--port {project.port} ") if "redis-server.exe" in p[1]]


def test_fetch_archive_installs_the_server_with_its_sha256(
    fetched_project: tuple[Path, object], server_zip: tuple[Path, str]
) -> None:
    root, result = fetched_project
    manifest = json.loads((root / "bin" / "redis.json").read_text(encoding="utf-8"))
    assert manifest["archive_sha256"] == server_zip[1]
    assert manifest["verified"] is True
    exe = root / "bin" / manifest["exe"]
    assert exe.name == "redis-server.exe" and exe.is_file()
    assert "sha256 verified" in result.stdout + result.stderr  # type: ignore[attr-defined]


def test_start_status_verify_stop(winproject: WinProject) -> None:
    started = winproject.invoke("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"redis {SERVER_VERSION} ready on 127.0.0.1:{winproject.port}" in started.stderr
    state = winproject.state()
    pid, sup = int(state["pid"]), int(state["supervisor_pid"])  # type: ignore[call-overload]
    # `invoke start` (its wine process) has exited: the supervisor and server live on.
    assert _alive(winproject, pid, sup) == {pid: True, sup: True}
    assert len(_servers(winproject)) == 1

    status = winproject.invoke("status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["running"] is True and info["pid"] == pid and info["flavor"] == "redis"

    verified = winproject.invoke("verify", "--json", "--iterations", "50")
    report = json.loads(verified.stdout)
    # Latency under Wine on a shared machine is not Windows' latency: the functional checks
    # must pass, the latency one is not judged here.
    failed = [c for c in report["checks"] if not c["ok"] and c["name"] != "latency"]
    assert not failed, failed
    assert {c["name"] for c in report["checks"]} > {"queue", "latency"}

    stopped = winproject.invoke("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not winproject.state_file.exists()
    assert _alive(winproject, pid, sup) == {pid: False, sup: False}
    assert _servers(winproject) == []
    log = (winproject.root / "logs" / "redis.log").read_text(encoding="utf-8")
    assert "User requested shutdown (save)" in log and "server exited with code 0" in log


def test_supervisor_pid_is_the_real_interpreter_not_the_venv_launcher(
    winproject: WinProject, winpy: wine.Prepared
) -> None:
    """The venv's python.exe is a redirector that runs cp311\\python.exe as its child: the
    state must name the process that runs the supervisor code, whichever way it was started."""
    started = winproject.invoke("start")
    assert started.returncode == 0, started.stdout + started.stderr
    state = winproject.state()
    sup = str(state["supervisor_pid"])
    seen = winproject.probe("procs", sup)[sup]
    cmdline = json.loads(str(seen["cmdline"]))
    assert Path(cmdline[0].replace("\\", "/")).name.lower() == "python.exe"
    assert "cp311" in cmdline[0].lower() and "scripts" not in cmdline[0].lower(), cmdline
    assert "devserver.supervisor.entry" in " ".join(cmdline)
    # The server is the supervisor's child, in the recorded identity.
    server = str(state["pid"])
    assert int(server) in winproject.probe("procs", sup)[sup]["children"]  # type: ignore[operator]
    assert winproject.invoke("stop").returncode == 0


def test_two_concurrent_starts_run_one_server(winproject: WinProject) -> None:
    """The msvcrt lock: the second start waits for the first, then finds its server running."""
    first = winproject.popen_invoke("start")
    second = winproject.popen_invoke("start")
    results = [wine.finish(proc, timeout=240) for proc in (first, second)]
    codes = [r.returncode for r in results]
    text = [r.stdout + r.stderr for r in results]
    assert codes == [0, 0], text
    assert sorted("already running" in t for t in text) == [False, True], text
    assert len(_servers(winproject)) == 1
    pid = int(winproject.state()["pid"])  # type: ignore[call-overload]
    assert all(f"pid {pid}" in t for t in text), text
    assert winproject.invoke("stop").returncode == 0
    assert _servers(winproject) == []


def test_start_waits_on_the_lock_held_by_another_process(winproject: WinProject) -> None:
    """msvcrt.locking, not a lock file's existence: held by a live process, start refuses."""
    holder = winproject.python_code(
        "import sys, subprocess; from pathlib import Path; "
        "from devserver.config import load_settings; "
        "from devserver.server.state import project_lock; "
        "lock = load_settings({'server': {}}, Path.cwd()).lock_file; "
        "cm = project_lock(lock); cm.__enter__(); "
        "r = subprocess.run([sys.executable, '-m', 'invoke', 'start', '--timeout', '2'], "
        "capture_output=True, text=True); "
        "print(r.returncode); print(r.stdout + r.stderr)",
        timeout=240,
    )
    assert holder.returncode == 0, holder.stdout + holder.stderr
    code, _, output = holder.stdout.partition("\n")
    assert code.strip() == "1", holder.stdout
    assert "another start or stop of this project is in progress" in output
    assert not winproject.state_file.exists()
    assert _servers(winproject) == []


def test_stop_escalates_to_a_tree_kill_that_leaves_no_process(winproject: WinProject) -> None:
    """A server that refuses SHUTDOWN and has a child: stop must force-kill the whole tree."""
    winproject.overrides.update(
        INVOKE_SERVER_EXTRA_ARGS="--ignore-shutdown yes --spawn-child yes",
        INVOKE_SERVER_STOP_TIMEOUT="2",
    )
    started = winproject.invoke("start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(winproject.state()["pid"])  # type: ignore[call-overload]
    log = winproject.root / "logs" / "redis.log"
    child = 0
    for _ in range(100):
        match = re.search(r"started child pid (\d+)", log.read_text(encoding="utf-8"))
        if match:
            child = int(match.group(1))
            break
        time.sleep(0.1)
    assert child, log.read_text(encoding="utf-8")
    assert _alive(winproject, pid, child) == {pid: True, child: True}
    ours = wine.z_path(winproject.root).lower()  # Wine shows the Windows command line
    assert len([c for _, c in linux_processes("--child-sleep") if ours in c.lower()]) == 1

    stopped = winproject.invoke("stop")
    # A server that refused to stop and had to be killed is a failed stop (exit 1, it says so).
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert "refused to stop" in stopped.stderr and "killed it" in stopped.stderr
    assert "SHUTDOWN refused" in log.read_text(encoding="utf-8")
    assert _alive(winproject, pid, child) == {pid: False, child: False}
    assert [c for _, c in linux_processes("--child-sleep") if ours in c.lower()] == []
    assert _servers(winproject) == []
    assert not winproject.state_file.exists()
