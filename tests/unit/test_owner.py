"""owner.py: an ephemeral server's supervisor stops it once its owner process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil
import pytest

from devserver.supervisor import owner


def test_watch_calls_on_gone_once_the_owner_is_no_longer_alive() -> None:
    answers = iter([True, True, False])
    asked: list[tuple[int, float, int]] = []
    gone = threading.Event()

    def is_alive(pid: int, created: float, ticks: int) -> bool:
        asked.append((pid, created, ticks))
        return next(answers)

    thread = owner.watch(123, 1.0, gone.set, is_alive=is_alive, sleep=lambda s: None, start_ticks=7)
    assert thread is not None
    thread.join(timeout=10)
    assert gone.is_set()
    assert asked == [(123, 1.0, 7)] * 3  # the start ticks are what is compared


def test_no_owner_means_no_watch() -> None:
    assert owner.watch(0, 0.0, lambda: None) is None


def test_alive_checks_pid_and_create_time() -> None:
    pid, created, _ticks = owner.identity(os.getpid())
    assert owner.alive(pid, created)
    assert not owner.alive(pid, created - 100)  # same pid, another process (reused pid)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_id = owner.identity(child.pid)
    child.wait()
    assert not owner.alive(*child_id)


def test_stop_server_kills_a_server_that_ignores_the_stop() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        ]
    )
    asked: list[bool] = []
    try:
        owner.stop_server(lambda: asked.append(True), stubborn, grace=0.2)
        assert asked == [True]
        assert stubborn.wait(timeout=10) != 0
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()
    assert not psutil.pid_exists(stubborn.pid) or psutil.Process(stubborn.pid).status() == "zombie"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start ticks: Linux /proc")
def test_a_wall_clock_step_does_not_make_a_live_owner_look_dead() -> None:
    """psutil's create time is boot time (from the wall clock) + ticks: a clock step moves it.
    The start ticks do not move, so they decide; other ticks are another process."""
    pid, created, ticks = owner.identity(os.getpid())
    assert ticks > 0
    assert owner.alive(pid, created + 30, ticks)  # the clock was stepped by 30 s since
    assert not owner.alive(pid, created, ticks + 1)  # same pid and create time, another start
