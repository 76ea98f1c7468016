"""How `invoke up`'s end and `invoke down` stop the application: warm first, then the whole tree.

Small Python programs stand in for the workers people run (no Celery or RQ needed): one forks
a grandchild and exits, one ignores SIGTERM, one finishes its jobs on SIGTERM as Celery's warm
shutdown does, one puts its job child in its own process group as RQ does. Real Invoke, a real
redis-server, a throwaway project copy; every pid a program writes down is killed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.test_daily_use import Daily, _alive, _wait_dead
from tests.integration.test_up import ROOT

TIMEOUT = 4  # server.stop_timeout for these tests: the one stop budget


class Apps(Daily):
    """The project copy, plus the folder where the test programs write their pids."""

    def __init__(self, root: Path, work: Path) -> None:
        super().__init__(root)
        self.work = work
        self.env["INVOKE_SERVER_STOP_TIMEOUT"] = str(TIMEOUT)

    def program(self, name: str, code: str) -> str:
        """Write a test program; return the Procfile command that runs it."""
        path = self.work / f"{name}.py"
        path.write_text(textwrap.dedent(code))
        return f'"{sys.executable}" {path}'

    def pid_of(self, name: str, timeout: float = 30) -> int:
        """The pid a program wrote to ``<name>.pid`` (waits for it)."""
        path = self.work / f"{name}.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = path.read_text() if path.exists() else ""
            if text.endswith("\n"):
                return int(text)
            time.sleep(0.05)
        pytest.fail(f"{name} did not write its pid")

    def kill_leftovers(self) -> None:
        for pid_file in self.work.glob("*.pid"):
            try:
                psutil.Process(int(pid_file.read_text())).kill()
            except (psutil.Error, ValueError):
                pass
        super().kill_leftovers()


@pytest.fixture()
def apps(tmp_path: Path) -> Iterator[Apps]:
    root = tmp_path / "copy"
    root.mkdir()
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(
        ROOT / "devserver", root / "devserver", ignore=shutil.ignore_patterns("__pycache__")
    )
    work = tmp_path / "work"
    work.mkdir()
    project = Apps(root, work)
    yield project
    project.kill_leftovers()


_WRITE_PID = """
import os, signal, sys, time
def write_pid(name):
    path = os.path.join({work!r}, name + ".pid")
    with open(path + ".tmp", "w") as handle:
        handle.write(f"{{os.getpid()}}\\n")
    os.replace(path + ".tmp", path)
"""


def _forker(apps: Apps, wait_for: Path | None = None) -> str:
    """Forks a grandchild (same process group) that sleeps, then exits 3 (after ``wait_for``)."""
    wait = f"while not os.path.exists({str(wait_for)!r}): time.sleep(0.05)" if wait_for else ""
    return apps.program(
        "forker",
        _WRITE_PID.format(work=str(apps.work))
        + f"""
if os.fork() == 0:
    write_pid("grandchild")
    time.sleep(120)
    os._exit(0)
write_pid("forker")
{wait}
sys.exit(3)
""",
    )


def _stubborn(apps: Apps) -> str:
    return apps.program(
        "stubborn",
        _WRITE_PID.format(work=str(apps.work))
        + """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
write_pid("stubborn")
time.sleep(120)
""",
    )


# --- a grandchild whose parent exited first ---------------------------------------------------


def test_up_stops_the_grandchild_of_a_process_that_exited_first(apps: Apps) -> None:
    (apps.root / "Procfile").write_text(f"forker: {_forker(apps)}\n")
    result = apps.invoke("up", "--no-verify")
    assert result.returncode == 3, result.stdout + result.stderr
    grandchild = apps.pid_of("grandchild")
    assert _wait_dead(grandchild, 5), "the forker's grandchild still runs after up ended"
    assert "forker exited (code 3), so the others were stopped" in result.stderr


def test_down_stops_the_grandchild_after_up_was_killed_and_its_parent_exited(
    apps: Apps,
) -> None:
    go = apps.work / "go"
    (apps.root / "Procfile").write_text(f"forker: {_forker(apps, go)}\n")
    up = apps.up_in_background("up", "--no-verify")
    apps.wait_recorded(up, 1)
    forker, grandchild = apps.pid_of("forker"), apps.pid_of("grandchild")
    up.send_signal(signal.SIGKILL)  # no clean-up by up
    up.wait(timeout=30)
    go.touch()  # the forker exits now, leaving its grandchild behind (re-parented)
    assert _wait_dead(forker)
    assert _alive(grandchild)
    down = apps.invoke("down")
    assert down.returncode == 0, down.stderr
    assert "stale record" not in down.stderr
    assert "stopped the application processes: forker" in down.stderr
    assert not _alive(grandchild), "down returned while the grandchild still runs"


# --- down: no "stopped" while anything the app started runs; one budget -----------------------


def test_down_kills_a_worker_that_ignores_sigterm_under_a_shell_within_one_budget(
    apps: Apps,
) -> None:
    command = f'echo "url=$REDIS_URL" && {_stubborn(apps)}'
    (apps.root / "Procfile").write_text(f"worker: {command}\n")
    up = apps.up_in_background("up", "--no-verify")
    apps.wait_recorded(up, 1)
    stubborn = apps.pid_of("stubborn")
    began = time.monotonic()
    down = apps.invoke("down")
    took = time.monotonic() - began
    assert down.returncode == 0, down.stderr
    assert not _alive(stubborn), "down said it stopped the worker, which still runs"
    assert took < 2 * TIMEOUT, f"down took {took:.1f}s for a stop budget of {TIMEOUT}s"
    _out, err = up.communicate(timeout=60)
    assert "did not stop within" in err


def test_down_kills_an_rq_style_job_child_in_its_own_process_group(apps: Apps) -> None:
    worker = apps.program(
        "rqlike",
        _WRITE_PID.format(work=str(apps.work))
        + """
child = os.fork()
if child == 0:
    os.setpgrp()  # as RQ does for the job it runs
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    write_pid("job")
    time.sleep(120)
    os._exit(0)
write_pid("rqlike")
signal.signal(signal.SIGTERM, lambda *a: None)  # warm: waits for its job to finish
while True:
    try:
        os.waitpid(child, 0)
        break
    except InterruptedError:
        pass
""",
    )
    (apps.root / "Procfile").write_text(f"worker: {worker}\n")
    up = apps.up_in_background("up", "--no-verify")
    apps.wait_recorded(up, 1)
    main, job = apps.pid_of("rqlike"), apps.pid_of("job")
    assert os.getpgid(job) == job
    down = apps.invoke("down")
    assert down.returncode == 0, down.stderr
    assert not _alive(job), "the job child (its own process group) outlived down"
    assert not _alive(main)
    up.communicate(timeout=60)


def test_down_does_the_kill_itself_when_up_does_not_answer_within_one_budget(
    apps: Apps,
) -> None:
    (apps.root / "Procfile").write_text(f"worker: {_stubborn(apps)}\n")
    up = apps.up_in_background("up", "--no-verify")
    apps.wait_recorded(up, 1)
    stubborn = apps.pid_of("stubborn")
    up.send_signal(signal.SIGSTOP)  # alive but not answering
    try:
        began = time.monotonic()
        down = apps.invoke("down")
        took = time.monotonic() - began
    finally:
        up.send_signal(signal.SIGCONT)
    assert down.returncode == 0, down.stderr
    assert not _alive(stubborn)
    assert took < 2 * TIMEOUT, f"down took {took:.1f}s for a stop budget of {TIMEOUT}s"
    up.communicate(timeout=60)


# --- warm shutdown: SIGTERM to the main process only ------------------------------------------


def test_down_lets_a_worker_finish_its_jobs_sigterm_reaches_only_its_main_process(
    apps: Apps,
) -> None:
    log = apps.work / "jobs.log"
    worker = apps.program(
        "pool",
        _WRITE_PID.format(work=str(apps.work))
        + f"""
LOG = {str(log)!r}
def note(text):
    with open(LOG, "a") as handle:
        handle.write(text + "\\n")
children = []
for number in range(2):
    child = os.fork()
    if child == 0:  # a pool child running a job: a SIGTERM would kill the job
        signal.signal(signal.SIGTERM, lambda *a: (note("job killed by SIGTERM"), os._exit(1)))
        signal.signal(signal.SIGUSR1, lambda *a: (note("job finished"), os._exit(0)))
        while True:
            time.sleep(1)
    children.append(child)
def warm(*args):
    note("warm shutdown")
    time.sleep(0.5)  # the jobs run to their end
    for child in children:
        os.kill(child, signal.SIGUSR1)
    for child in children:
        os.waitpid(child, 0)
    sys.exit(0)
signal.signal(signal.SIGTERM, warm)
write_pid("pool")
while True:
    time.sleep(1)
""",
    )
    (apps.root / "Procfile").write_text(f"worker: {worker}\n")
    up = apps.up_in_background("up", "--no-verify")
    apps.wait_recorded(up, 1)
    apps.pid_of("pool")
    down = apps.invoke("down")
    assert down.returncode == 0, down.stderr
    up.communicate(timeout=60)
    assert log.read_text().splitlines() == ["warm shutdown", "job finished", "job finished"]


# --- a wall-clock step ------------------------------------------------------------------------


def _stepped_clock_command(tmp: Path, args: list[str]) -> list[str]:
    """``args`` run where /proc/stat's btime is 30 s later (what a wall-clock step does to it):
    a private mount namespace with a copy bind-mounted over /proc/stat."""
    stat = tmp / "stat"
    lines = Path("/proc/stat").read_text().splitlines()
    stat.write_text(
        "\n".join(
            f"btime {int(line.split()[1]) + 30}" if line.startswith("btime ") else line
            for line in lines
        )
        + "\n"
    )
    script = f'mount --bind {stat} /proc/stat && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", *args]


def _can_step_the_clock(tmp: Path) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        _stepped_clock_command(tmp, ["true"]), capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_down_after_a_wall_clock_step_still_stops_a_killed_ups_processes(
    apps: Apps, tmp_path: Path
) -> None:
    if not _can_step_the_clock(tmp_path):
        pytest.skip("needs root and unshare to raise /proc/stat's btime in a namespace")
    (apps.root / "Procfile").write_text(f"worker: {_stubborn(apps)}\n")
    up = apps.up_in_background("up", "--no-verify")
    recorded = apps.wait_recorded(up, 1)
    pid = apps.pid_of("stubborn")
    up.send_signal(signal.SIGKILL)
    up.wait(timeout=30)
    down = subprocess.run(
        _stepped_clock_command(tmp_path, [sys.executable, "-m", "invoke", "down"]),
        cwd=apps.root,
        env=apps.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert down.returncode == 0, down.stderr
    assert "stale record" not in down.stderr
    assert "stopped the application processes: worker" in down.stderr
    assert _wait_dead(pid, 5)
    assert json.dumps(recorded)  # the record it acted on


def test_an_ephemeral_servers_live_owner_survives_a_wall_clock_step(
    tmp_path: Path, redis_server_path: Path
) -> None:
    """The owner records its identity with btime raised; the supervisor then sees the real one
    (the namespace's bind mount is removed under it): for it, the wall clock stepped 30 s."""
    if not _can_step_the_clock(tmp_path) or not shutil.which("nsenter"):
        pytest.skip("needs root, unshare and nsenter to step /proc/stat's btime")
    from devserver.server import resp

    ready = tmp_path / "ready"
    code = (
        "import devserver, os, sys, time\n"
        f"with devserver.ephemeral(flavor='redis', binary={str(redis_server_path)!r}) as s:\n"
        f"    open({str(ready)!r}, 'w').write(f'{{s.port}} {{s.pid}}\\n')\n"
        "    time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        _stepped_clock_command(tmp_path, [sys.executable, "-c", code]),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server_pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().endswith("\n")):
            assert owner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        port, server_pid = (int(word) for word in ready.read_text().split())
        unmounted = subprocess.run(
            ["nsenter", "-t", str(owner.pid), "-m", "umount", "/proc/stat"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert unmounted.returncode == 0, unmounted.stderr
        time.sleep(1.0)  # five of the watch's polls
        assert resp.ping("127.0.0.1", port) == "ready", "the supervisor took its owner for dead"
    finally:
        owner.kill()
        owner.wait()
        if server_pid:
            assert _wait_dead(server_pid, 20)  # the owner is gone now: its server goes too
