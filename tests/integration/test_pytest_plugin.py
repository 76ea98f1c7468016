"""The pytest plugin as a project's suite uses it: pytester runs with a real redis-server.

The plugin is not installed in the checkout's environment, so every run names it with
``-p devserver.pytest_plugin`` (the installed entry point has that very name; the packaging
test covers the installed case).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devserver import library
from tests.conftest import ROOT, SIGINT_AT_DEFAULT, kill_recorded

USES_REDIS = """
import os, json

def test_first(redis_client, devserver):
    assert redis_client.dbsize() == 0
    redis_client.set("shared", "first")
    info = redis_client.info("server")
    assert devserver.port == int(info["tcp_port"])
    assert devserver.url.startswith(f"redis://127.0.0.1:{devserver.port}/")
    assert devserver.flavor == "redis" and devserver.version
    assert devserver.password == ""

def test_second_sees_an_empty_database(redis_client):
    assert redis_client.get("shared") is None
    assert redis_client.dbsize() == 0
    redis_client.set("shared", "second")

def test_url_is_empty_too(redis_url):
    import redis
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0

def test_no_fixture_needed():
    assert True
"""


@pytest.fixture()
def plugin_args(redis_server_path: Path) -> list[str]:
    return [
        "-p",
        "devserver.pytest_plugin",
        "--devserver-flavor=redis",
        f"--devserver-binary={redis_server_path}",
    ]


def server_processes(binary: Path) -> set[int]:
    """Pids of live processes running this server binary (to see what a run left behind)."""
    found = set()
    for proc in psutil.process_iter(["exe", "status"]):
        try:
            if proc.info["exe"] == str(binary) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def gone(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) > 0.05 or (
            proc.status() == psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, create_time: float, timeout: float = 30) -> bool:
    """Generous hang guard only: the check is that it goes, not how fast."""
    deadline = time.monotonic() + timeout
    while not gone(pid, create_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_fixtures_give_each_test_an_empty_database_and_stop_the_server(
    pytester: pytest.Pytester, plugin_args: list[str], redis_server_path: Path
) -> None:
    before = server_processes(redis_server_path)
    pytester.makepyfile(test_app=USES_REDIS)
    result = pytester.runpytest(*plugin_args, "-v")
    result.assert_outcomes(passed=4)
    assert server_processes(redis_server_path) - before == set()  # stopped at session end


def test_ini_keys_choose_the_server(pytester: pytest.Pytester, redis_server_path: Path) -> None:
    pytester.makeini(
        f"[pytest]\ndevserver_flavor = redis\ndevserver_binary = {redis_server_path}\n"
    )
    pytester.makepyfile(test_app=USES_REDIS)
    result = pytester.runpytest("-p", "devserver.pytest_plugin")
    result.assert_outcomes(passed=4)


def test_no_binary_fails_only_the_tests_that_need_it_with_start_s_hint(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_app=USES_REDIS)
    missing = tmp_path / "no-such-redis-server"
    result = pytester.runpytest(
        "-p", "devserver.pytest_plugin", "--devserver-flavor=redis", f"--devserver-binary={missing}"
    )
    result.assert_outcomes(passed=1, errors=3)  # collection worked; the plain test passed
    text = result.stdout.str()
    assert "error: " in text and "hint: " in text
    assert str(missing) in text
    assert "Traceback" not in text


def test_devserver_url_reuses_a_running_server(
    pytester: pytest.Pytester,
    plugin_args: list[str],
    redis_server_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The inner session is no xdist worker, even when this test runs in one (worker N would
    # use database 5 + N).
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    with library.ephemeral(flavor="redis", binary=redis_server_path) as server:
        import redis

        with redis.Redis.from_url(server.url.replace("/0", "/3")) as other:
            other.set("left-by-someone", "x")  # db 3: another user's database stays
        pytester.makepyfile(
            test_reuse=f"""
def test_reuse(devserver, redis_client):
    assert devserver.port == {server.port}
    assert devserver.url.endswith("/5")
    assert redis_client.dbsize() == 0
    redis_client.set("k", "v")
"""
        )
        result = pytester.runpytest(
            "-p", "devserver.pytest_plugin", f"--devserver-url=redis://127.0.0.1:{server.port}/5"
        )
        result.assert_outcomes(passed=1)
        with redis.Redis.from_url(server.url.replace("/0", "/3")) as other:
            assert other.get("left-by-someone") == b"x"
        # the session did not stop a server it did not start
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


def test_xdist_workers_each_get_their_own_server(
    pytester: pytest.Pytester, plugin_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is pinned in requirements-dev.txt")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = pytester.path / "seen"
    out.mkdir()
    body = "\n".join(
        f"""
def test_{i}(redis_client, devserver):
    import os, time
    assert redis_client.dbsize() == 0
    redis_client.set("mine", "{i}")
    time.sleep(0.05)
    assert redis_client.get("mine") == b"{i}"
    assert redis_client.dbsize() == 1
    name = os.environ.get("PYTEST_XDIST_WORKER", "none")
    (__import__("pathlib").Path(r"{out}") / f"{{name}}-{i}").write_text(str(devserver.port))
"""
        for i in range(8)
    )
    pytester.makepyfile(test_many=body)
    result = pytester.runpytest_subprocess(*plugin_args, "-n", "2")
    result.assert_outcomes(passed=8)
    ports: dict[str, set[str]] = {}
    for entry in out.iterdir():
        ports.setdefault(entry.name.split("-")[0], set()).add(entry.read_text())
    assert set(ports) == {"gw0", "gw1"}  # both workers ran tests
    assert all(len(p) == 1 for p in ports.values())  # one server per worker...
    assert ports["gw0"] != ports["gw1"]  # ...and not the same one


HANGS = """
import json, os, time

def test_hangs(devserver):
    info = {"pid": devserver.server.pid, "port": devserver.port}
    tmp = os.environ["DEVSERVER_TEST_OUT"] + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(info, handle)
    os.replace(tmp, os.environ["DEVSERVER_TEST_OUT"])
    time.sleep(120)
"""


@pytest.fixture()
def hanging_run(
    pytester: pytest.Pytester, plugin_args: list[str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """A pytest subprocess whose one test holds the session server; killed/cleaned after."""
    pytester.makepyfile(test_hang=HANGS)
    out = pytester.path / "server.json"
    basetemp = pytester.path / "inner-tmp"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DEVSERVER_TEST_OUT": str(out),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *plugin_args, f"--basetemp={basetemp}", "-q", "-s"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **SIGINT_AT_DEFAULT,  # a test sends it Ctrl+C, also when the suite is a background job
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        yield proc, out, basetemp
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        for state in basetemp.glob("devserver*/data/server.json"):
            kill_recorded(state)


def test_ctrl_c_stops_the_server_before_pytest_exits(
    hanging_run: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, out, _ = hanging_run
    pid = json.loads(out.read_text())["pid"]
    create_time = psutil.Process(pid).create_time()
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 2, output  # pytest's "interrupted"
    assert gone(pid, create_time), "the server outlived pytest's own teardown"


def test_killed_pytest_leaves_no_server_running(
    hanging_run: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, out, basetemp = hanging_run
    pid = json.loads(out.read_text())["pid"]
    create_time = psutil.Process(pid).create_time()
    proc.kill()  # SIGKILL: no teardown, no atexit; only the supervisor can notice
    proc.wait()
    assert wait_gone(pid, create_time), "the server kept running after pytest was killed"
    states = list(basetemp.glob("devserver*/data/server.json"))
    deadline = time.monotonic() + 10
    while any(s.exists() for s in states) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(s.exists() for s in states)  # the supervisor cleaned up and exited
