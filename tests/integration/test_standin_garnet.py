"""Garnet end to end, against the stand-in (tests/standins/garnet.py) and a stand-in ``dotnet``.

The archive is packaged as ``linux-x64-based.tar.xz`` is (a net8.0/ and a net10.0/ build,
GarnetServer without the exec bit) and served by the fake GitHub; ``dotnet --list-runtimes``
on PATH says which build fetch installs. Garnet has no SHUTDOWN command, so a graceful stop is
SAVE then terminate; its checkpoint comes back on the next start only through --recover; it
exits 0 even when start-up fails, so the tool must judge by PING, not by the exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from devserver.catalog import GARNET
from devserver.errors import StartError
from devserver.fetch.options import FetchOptions
from devserver.fetch.release import fetch
from devserver.server.start import start as start_server
from devserver.server.status import status as server_status
from devserver.server.stop import stop as stop_server
from devserver.system import host
from devserver.verify.latency import OPERATIONS
from tests.conftest import ROOT, SettingsFactory, free_port
from tests.fakegithub import FakeGitHub
from tests.standins import package

pytestmark = pytest.mark.skipif(
    (host.os_name(), host.cpu_arch()) != ("linux", "x86_64"),
    reason="the stand-in is packaged as Garnet's linux-x64 release",
)

TAG = "v2.1.4"


@pytest.fixture()
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture()
def dotnet_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """PATH with a stand-in ``dotnet`` (the .NET 8 runtime only) first."""
    folder = tmp_path / "dotnet"
    package.install_dotnet(folder, majors=(8,))
    path = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    monkeypatch.setenv("PATH", path)
    return path


def invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("password", ["", "pw-" + os.urandom(4).hex()], ids=["open", "password"])
def test_fetch_start_verify_stop_start_tail(
    project: Path, gh: FakeGitHub, tmp_path: Path, dotnet_path: str, password: str
) -> None:
    archive = package.garnet_archive(tmp_path)
    gh.release(GARNET.repo, TAG, {archive.name: archive.read_bytes()})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(
        PATH=dotnet_path,
        INVOKE_SERVER_FLAVOR="garnet",
        INVOKE_SERVER_PORT=str(port),
        INVOKE_SERVER_BIN_DIR=str(project / "bin"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_RELEASE_GITHUB_API=gh.url,
        INVOKE_VERIFY_ITERATIONS="20",
        NO_COLOR="1",
    )
    env.update({f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "1000" for op in OPERATIONS})
    if password:
        env["INVOKE_SERVER_PASSWORD"] = password
    said = ok(invoke(env, "fetch"))
    assert f"installed garnet {TAG}" in said
    manifest = json.loads((project / "bin" / "garnet.json").read_text())
    assert manifest["exe"] == "garnet/GarnetServer"
    assert "'framework': 8" in (project / "bin" / "garnet" / "GarnetServer").read_text()

    said = ok(invoke(env, "start"))
    assert "* Ready to accept connections" in said and f"garnet {TAG}" in said
    pid = json.loads((project / "data" / "server.json").read_text())["pid"]
    if password:
        server = psutil.Process(pid)
        for proc in (server, server.parent()):
            assert password not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
    url = f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/0"
    # redis-py 8 speaks RESP3 when asked (HELLO 3 answers a map; with a password HELLO 3
    # AUTH): both protocols without a password, the harder RESP3 path with one.
    for protocol in (3,) if password else (2, 3):
        result = invoke(env, "verify", "--json", "--url", f"{url}?protocol={protocol}")
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
        assert any("garnet 2.1.4" in str(c["detail"]) for c in report["checks"]), report

    client = redis.Redis(port=port, password=password or None)
    client.lpush("jobs", "one")
    client.close()
    ok(invoke(env, "stop"))  # SAVE, then terminate: the checkpoint is under data/garnet
    assert list((project / "data" / "garnet").rglob("cpr-checkpoints/*/*"))
    ok(invoke(env, "start"))  # --recover loads it
    client = redis.Redis(port=port, password=password or None)
    assert client.lrange("jobs", 0, -1) == [b"one"]
    client.close()
    if not password:
        assert "Ready to accept connections" in ok(invoke(env, "tail", "-n", "50"))
    ok(invoke(env, "stop"))
    if password:
        for path in [*(project / "logs").rglob("*"), *(project / "data").rglob("*")]:
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path


def test_no_save_crash_and_recovery(
    make_settings: SettingsFactory, tmp_path: Path, dotnet_path: str
) -> None:
    settings = make_settings(flavor="garnet", restart="no")  # a crash stays a crash here
    archive = package.garnet_archive(tmp_path)
    installed = fetch(settings, FetchOptions(archive=archive, allow_unverified=True))
    assert installed.version == TAG  # the name has none: GarnetServer --version says it

    def client() -> redis.Redis:
        return redis.Redis(port=settings.port)

    start_server(settings)
    client().set("saved", "1")
    stop_server(settings)
    start_server(settings)
    client().set("not-saved", "1")
    stop_server(settings, save=False)  # no SAVE: only the terminate

    state = start_server(settings).state
    assert client().get("saved") == b"1" and client().get("not-saved") is None
    client().set("after-crash", "1")
    os.kill(state.pid, signal.SIGKILL)
    psutil.Process(state.supervisor_pid).wait(10)
    assert server_status(settings)["running"] is False
    start_server(settings)
    assert client().get("saved") == b"1" and client().get("after-crash") is None
    stop_server(settings)


def test_startup_failure_with_exit_code_0_is_a_failed_start(
    make_settings: SettingsFactory, tmp_path: Path, dotnet_path: str
) -> None:
    settings = make_settings(flavor="garnet", extra_args="--no-such-option 1")
    fetch(settings, FetchOptions(archive=package.garnet_archive(tmp_path), allow_unverified=True))
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert "Option 'no-such-option' is unknown" in info.value.message + info.value.hint
    assert not settings.state_file.exists()
