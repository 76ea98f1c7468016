"""``invoke tail -f`` following the log across rotations, both sides run by Windows CPython.

The supervisor (Windows) rotates ``logs/redis.log`` by renaming it while ``tail -f``
(Windows) follows it. On Windows a file another process holds open without
FILE_SHARE_DELETE cannot be renamed; Wine enforces the same sharing rules, so a tail that
kept the log open would make rotation fail here too. The lines come from the test server's
``DEBUG LOG``, sent from this (Linux) process over loopback, which Wine shares with Linux.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.winpython.conftest import WinProject

pytestmark = pytest.mark.winpython

LINES = 400
PAD = "x" * 60  # ~100 bytes a log line: 40 KB in all, rotated every 4 KB


def kill_tagged(tag: str) -> None:
    """Kill the Linux processes (= Windows processes under Wine) started with our tag.

    Every Wine process of a tree inherits the Linux environment of the one we started,
    launcher and real interpreter alike, so the tag finds exactly our ``tail -f``.
    """
    needle = f"WINPY_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


def test_tail_follows_across_rotations(winproject: WinProject) -> None:
    winproject.overrides.update(INVOKE_SERVER_LOG_MAX_BYTES="4096", INVOKE_SERVER_LOG_BACKUPS="20")
    started = winproject.invoke("start")
    assert started.returncode == 0, started.stdout + started.stderr
    tag = secrets.token_hex(6)
    follower = winproject.popen_invoke("tail", "-f", "-n", "5", WINPY_TAG=tag)
    seen: list[str] = []
    lines_done = threading.Event()
    marker = f"wine-tail-{tag}"

    def read() -> None:
        assert follower.stdout is not None
        for raw in iter(follower.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            seen.append(line)
            if f"{marker}-{LINES - 1} " in line:
                lines_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        client = redis.Redis(port=winproject.port, socket_timeout=30)
        # tail -f is following once it printed the last lines already there.
        deadline = time.monotonic() + 120
        while not any("Ready to accept connections" in s for s in seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        for n in range(LINES):
            client.execute_command("DEBUG", "LOG", f"{marker}-{n} {PAD}")
            if n % 50 == 0:
                time.sleep(0.3)  # let the follower see each rotation as it happens
        assert lines_done.wait(timeout=180), "".join(seen[-20:])
    finally:
        kill_tagged(tag)
        follower.wait(timeout=60)
    numbers = [int(s.split(f"{marker}-")[1].split()[0]) for s in seen if f"{marker}-" in s]
    assert numbers == list(range(LINES))  # every line once, in order, across rotations
    logs = winproject.root / "logs"
    rotated = sorted(p.name for p in logs.glob("redis.log.*"))
    assert len(rotated) >= 5, rotated  # it did rotate, many times, while followed
    stopped = winproject.invoke("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
