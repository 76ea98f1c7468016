"""The pytest plugin's flavor matrix and server factory: pytester runs against real redis-server
and the Dragonfly and Garnet stand-ins (tests/standins), installed the way a user installs the
real ones (``fetch --archive``, here through the library's fetch).

Every run checks what it left behind: no server process of any flavor outlives the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from devserver.config import load_settings
from devserver.fetch.options import FetchOptions
from devserver.fetch.release import fetch
from devserver.system import host
from tests.conftest import ROOT, kill_recorded
from tests.standins import package

pytestmark = pytest.mark.skipif(
    (host.os_name(), host.cpu_arch()) != ("linux", "x86_64"),
    reason="the stand-ins are packaged as Dragonfly's and Garnet's linux-x64 releases",
)

# Each test writes what it saw (flavor, port, the server's own INFO) for the outer test.
MATRIX = """
import json, os, pathlib

def test_server(devserver, redis_client, request):
    flavor = request.node.callspec.params["devserver"]
    info = redis_client.info("server")
    assert devserver.flavor == flavor
    assert int(info["tcp_port"]) == devserver.port
    assert redis_client.dbsize() == 0
    redis_client.set("k", flavor)
    seen = {"flavor": flavor, "port": devserver.port, "pid": devserver.server.pid,
            "info_flavor": next((f for f in ("dragonfly", "garnet") if f + "_version" in info),
                                "redis")}
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out = pathlib.Path(os.environ["MATRIX_OUT"]) / f"{worker}-{request.node.name}.json"
    out.write_text(json.dumps(seen))

def test_again_empty(redis_url, devserver):
    import redis
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0

def test_no_server():
    pass
"""


@pytest.fixture()
def standins(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-ins installed into the pytester project's bin/, a stand-in dotnet on PATH."""
    dotnet = tmp_path / "dotnet"
    package.install_dotnet(dotnet, majors=(8,))
    monkeypatch.setenv("PATH", f"{dotnet}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for flavor, archive in (
        ("dragonfly", package.dragonfly_archive(tmp_path / "df")),
        ("garnet", package.garnet_archive(tmp_path / "garnet")),
    ):
        settings = load_settings({"server": {"flavor": flavor}}, pytester.path)
        fetch(settings, FetchOptions(archive=archive, allow_unverified=True))
    out = pytester.path / "seen"
    out.mkdir()
    monkeypatch.setenv("MATRIX_OUT", str(out))
    return out


def servers_running(under: Path) -> list[int]:
    """Pids of live server processes whose executable or arguments point into ``under``
    (the stand-ins run from its bin/, every server's data lives in its temporary folders)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(str(under) in part for part in proc.info["cmdline"] or ()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def seen(out: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(out.iterdir())]


def test_each_test_runs_once_per_flavor_against_that_flavor(
    pytester: pytest.Pytester, standins: Path, redis_server_path: Path
) -> None:
    pytester.makepyfile(test_app=MATRIX)
    result = pytester.runpytest_subprocess(
        "-p",
        "devserver.pytest_plugin",
        "--devserver-flavor=redis,dragonfly,garnet",
        f"--devserver-binary={redis_server_path}",
        "-v",
        f"--basetemp={pytester.path / 'inner'}",
    )
    result.assert_outcomes(passed=7)
    text = result.stdout.str()
    for flavor in ("redis", "dragonfly", "garnet"):
        assert f"test_server[{flavor}] PASSED" in text
        assert f"test_again_empty[{flavor}] PASSED" in text
    assert "test_no_server PASSED" in text  # no fixture: runs once, its id unchanged
    assert "devserver flavors: redis, dragonfly, garnet" in text
    rows = seen(standins)
    assert sorted(r["flavor"] for r in rows) == ["dragonfly", "garnet", "redis"]
    assert all(r["info_flavor"] == r["flavor"] for r in rows)  # the right server each time
    assert len({r["port"] for r in rows}) == 3
    assert all(not psutil.pid_exists(int(str(r["pid"]))) for r in rows)
    assert servers_running(pytester.path) == []


def test_all_runs_what_is_installed_and_names_what_is_not(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dragonfly installed, PATH without any redis-server or dotnet: ``all`` runs Dragonfly
    (and the bundled Redis when a Python package here ships one), parametrized, and the
    header names the rest as not found."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    from devserver.fetch.discovery import bundled_binaries

    bundled = bool(bundled_binaries())
    settings = load_settings({"server": {"flavor": "dragonfly"}}, pytester.path)
    fetch(
        settings,
        FetchOptions(archive=package.dragonfly_archive(tmp_path / "df"), allow_unverified=True),
    )
    out = pytester.path / "seen"
    out.mkdir()
    monkeypatch.setenv("MATRIX_OUT", str(out))
    pytester.makepyfile(test_app=MATRIX)
    result = pytester.runpytest_subprocess(
        "-p", "devserver.pytest_plugin", "--devserver-flavor=all", "-v"
    )
    text = result.stdout.str()
    if bundled:
        result.assert_outcomes(passed=5)
        assert "devserver flavors: dragonfly, redis; not found here: garnet" in text
        assert "test_server[redis] PASSED" in text
    else:
        result.assert_outcomes(passed=3)
        assert "devserver flavors: dragonfly; not found here: redis, garnet" in text
    assert "test_server[dragonfly] PASSED" in text
    assert "test_server[garnet]" not in text
    assert servers_running(pytester.path) == []


def test_a_named_flavor_without_a_binary_fails_its_tests_with_the_hint(
    pytester: pytest.Pytester, tmp_path: Path, redis_server_path: Path
) -> None:
    pytester.makepyfile(
        test_app="""
def test_x(devserver):
    assert devserver.flavor == "redis"
"""
    )
    # the list from the ini key this time (the option reads the same way)
    pytester.makeini(
        f"[pytest]\ndevserver_flavor = redis, dragonfly\ndevserver_binary = {redis_server_path}\n"
    )
    result = pytester.runpytest("-p", "devserver.pytest_plugin", "-v")
    result.assert_outcomes(passed=1, errors=1)
    text = result.stdout.str()
    assert "test_x[redis] PASSED" in text
    assert "test_x[dragonfly] ERROR" in text
    assert "error: no DragonflyDB executable found" in text and "hint: run `invoke fetch" in text
    assert "Traceback" not in text and "During handling" not in text


def test_xdist_each_worker_has_one_server_per_flavor(
    pytester: pytest.Pytester, standins: Path, redis_server_path: Path
) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is pinned in requirements-dev.txt")
    pytester.makepyfile(
        test_app=MATRIX.replace("def test_server(", "def test_server_b(")
        + MATRIX.split("def test_again_empty")[0].replace("import json, os, pathlib", "")
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "devserver.pytest_plugin",
        "--devserver-flavor=redis,dragonfly,garnet",
        f"--devserver-binary={redis_server_path}",
        "-n",
        "2",
        f"--basetemp={pytester.path / 'inner'}",
    )
    result.assert_outcomes(passed=10)
    rows = seen(standins)
    assert len(rows) == 6
    assert all(r["info_flavor"] == r["flavor"] for r in rows)
    by_worker: dict[tuple[str, str], set[object]] = {}
    for path, row in zip(sorted(standins.iterdir()), rows, strict=True):
        by_worker.setdefault((path.name.split("-")[0], str(row["flavor"])), set()).add(row["port"])
    assert all(len(ports) == 1 for ports in by_worker.values())  # one server per flavor...
    assert len({p for ports in by_worker.values() for p in ports}) == len(by_worker)  # ...each
    assert all(not psutil.pid_exists(int(str(r["pid"]))) for r in rows)
    assert servers_running(pytester.path) == []


def test_factory_starts_two_servers_at_once_and_stops_them(
    pytester: pytest.Pytester, standins: Path, redis_server_path: Path
) -> None:
    pytester.makepyfile(
        test_factory=f"""
import json, os, pathlib, redis

def test_two(devserver_factory):
    plain = devserver_factory("redis", binary={str(redis_server_path)!r})
    locked = devserver_factory("dragonfly", password="pw-123")
    assert plain.port != locked.port
    assert (plain.flavor, locked.flavor) == ("redis", "dragonfly")
    with plain.client() as a, locked.client() as b:
        a.set("k", "plain")
        b.set("k", "locked")
        assert (a.get("k"), b.get("k")) == (b"plain", b"locked")
    with redis.Redis(port=locked.port) as anonymous:
        try:
            anonymous.get("k")
        except redis.AuthenticationError:
            pass
        else:
            raise AssertionError("no password needed")
    pathlib.Path(os.environ["MATRIX_OUT"], "pids").write_text(
        json.dumps([plain.server.pid, locked.server.pid]))

def test_after(devserver_factory):
    pids = json.loads(pathlib.Path(os.environ["MATRIX_OUT"], "pids").read_text())
    import psutil
    assert not any(psutil.pid_exists(p) for p in pids)  # stopped when test_two ended
"""
    )
    result = pytester.runpytest_subprocess("-p", "devserver.pytest_plugin", "-v")
    result.assert_outcomes(passed=2)
    assert servers_running(pytester.path) == []


def test_factory_passes_extra_server_arguments(
    pytester: pytest.Pytester, redis_server_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``devserver_factory(extra_args=...)`` reaches the server's command line: DEBUG,
    refused by Redis 7 unless enabled, answers."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_factory_args=f"""
import redis

def test_debug(devserver_factory):
    plain = devserver_factory("redis", binary={str(redis_server_path)!r})
    debug = devserver_factory(
        "redis", binary={str(redis_server_path)!r}, extra_args="--enable-debug-command yes"
    )
    with plain.client() as a, debug.client() as b:
        assert b.execute_command("DEBUG", "SLEEP", "0") in (b"OK", "OK", True)
        try:
            a.execute_command("DEBUG", "SLEEP", "0")
        except redis.ResponseError as exc:
            assert "DEBUG command not allowed" in str(exc)
        else:
            raise AssertionError("DEBUG answered without --enable-debug-command")
"""
    )
    result = pytester.runpytest_subprocess("-p", "devserver.pytest_plugin", "-v")
    result.assert_outcomes(passed=1)
    assert servers_running(pytester.path) == []


HANGS = """
import json, os, pathlib, time

def test_record(devserver):
    out = pathlib.Path(os.environ["MATRIX_OUT"])
    (out / f"{devserver.flavor}.json").write_text(json.dumps({"pid": devserver.server.pid}))

def test_zz_hang(devserver):
    if devserver.flavor != "dragonfly":
        return
    (pathlib.Path(os.environ["MATRIX_OUT"]) / "hanging").write_text("")
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_ctrl_c_or_kill_stops_every_flavor_s_server(
    pytester: pytest.Pytester, standins: Path, redis_server_path: Path, how: str
) -> None:
    """Both servers run while the second flavor's test hangs (the first stays in the pool);
    Ctrl+C and SIGKILL of pytest each leave neither running."""
    import signal
    import subprocess
    import sys
    import time

    pytester.makepyfile(test_hang=HANGS)
    basetemp = pytester.path / "inner"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "devserver.pytest_plugin",
            "--devserver-flavor=redis,dragonfly",
            f"--devserver-binary={redis_server_path}",
            f"--basetemp={basetemp}",
            "-q",
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (standins / "hanging").exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the hanging test never started"
            time.sleep(0.05)
        pids = [
            json.loads((standins / f"{f}.json").read_text())["pid"] for f in ("redis", "dragonfly")
        ]
        assert all(psutil.pid_exists(p) for p in pids)  # redis's server is kept for the session
        # pytest adds a "<name>current" link beside each temporary folder: count real files
        states = {s.resolve() for s in basetemp.glob("devserver*/data/server.json")}
        assert len(states) == 2, states
        if how == "kill":
            proc.kill()
        else:
            proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 30  # hang guard only: after a kill the supervisors act
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
        assert servers_running(pytester.path) == []
        while any(s.exists() for s in states) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(s.exists() for s in states)  # the supervisors cleaned up and exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for state in basetemp.glob("devserver*/data/server.json"):
            kill_recorded(state)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
