"""Dragonfly end to end, against the stand-in (tests/standins/dragonfly.py), never the network.

The stand-in is packaged as the real release is (``dragonfly-<arch>.tar.gz``: the flat
binary plus LICENSE.md, no version in the name) and served by the fake GitHub, so these tests
run what a user runs: ``invoke fetch``, ``start``, ``verify`` (RESP2 and RESP3), ``stop``,
``start`` again with the data back, ``tail``; with and without a password; ``stop --no-save``;
a crash (kill -9) and the recovery; ``auto`` choosing Dragonfly on Linux once it is installed.
"""

from __future__ import annotations

import hashlib
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

from devserver.catalog import DRAGONFLY
from devserver.errors import StartError
from devserver.fetch import choice
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
    host.os_name() != "linux", reason="Dragonfly runs natively on Linux only"
)

TAG = "v1.40.1"
FAST = FetchOptions(retries=1, backoff=0.01, timeout=10)


@pytest.fixture()
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def publish(gh: FakeGitHub, tmp_path: Path, **config: object) -> Path:
    archive = package.dragonfly_archive(tmp_path, **config)
    gh.release(DRAGONFLY.repo, TAG, {archive.name: archive.read_bytes()})
    return archive


def invoke(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(project: Path, port: int, api: str, password: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOKE_", "DFLY_"))}
    env.update(
        INVOKE_SERVER_FLAVOR="dragonfly",
        INVOKE_SERVER_PORT=str(port),
        INVOKE_SERVER_BIN_DIR=str(project / "bin"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_SERVER_STOP_TIMEOUT="10",
        INVOKE_SERVER_THREADS="2",
        INVOKE_SERVER_MAXMEMORY=str(512 * 1024 * 1024),
        INVOKE_RELEASE_GITHUB_API=api,
        INVOKE_VERIFY_ITERATIONS="20",
        NO_COLOR="1",
    )
    # Latency is not what these tests are about (a shared 2-core CI machine): generous limits.
    env.update({f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "1000" for op in OPERATIONS})
    if password:
        env["INVOKE_SERVER_PASSWORD"] = password
    return env


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


def server_pid(project: Path) -> int:
    return int(json.loads((project / "data" / "server.json").read_text())["pid"])


@pytest.mark.parametrize("password", ["", "pw-" + os.urandom(4).hex()], ids=["open", "password"])
def test_fetch_start_verify_stop_start_tail(
    project: Path, gh: FakeGitHub, tmp_path: Path, password: str
) -> None:
    publish(gh, tmp_path)
    port = free_port()
    env = cli_env(project, port, gh.url, password)
    if not password:  # auto means Dragonfly on Linux: fetched, then chosen because installed
        env["INVOKE_SERVER_FLAVOR"] = "auto"
    said = ok(invoke(env, "fetch"))
    assert f"installed dragonfly {TAG}" in said and "sha256 verified" in said

    said = ok(invoke(env, "start"))
    assert f"dragonfly {TAG}" in said and "unknown" not in said
    assert "AcceptServer - listening on 127.0.0.1:" in said  # glog lines reach the console
    pid = server_pid(project)
    server = psutil.Process(pid)
    if password:
        for proc in (server, *server.parents()[:2]):  # the server and its supervisor
            assert password not in " ".join(proc.cmdline())
            assert password not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()

    # redis-py 8 speaks RESP3 when asked (HELLO 3 answers a map; with a password HELLO 3
    # AUTH): both protocols without a password, the harder RESP3 path with one.
    for protocol in (3,) if password else (2, 3):
        url = f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/0"
        result = invoke(env, "verify", "--json", "--url", f"{url}?protocol={protocol}")
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
        assert any("dragonfly df-v1.40.1" in str(c["detail"]) for c in report["checks"]), report

    client = redis.Redis(port=port, password=password or None, protocol=3)
    client.set("kept", "across restarts")
    client.rpush("jobs", "a", "b")
    dumped = client.dump("jobs")
    client.close()

    ok(invoke(env, "stop"))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    data = project / "data" / "dragonfly"
    names = sorted(p.name for p in data.iterdir() if p.suffix == ".dfs")
    assert names == ["dump-0000.dfs", "dump-0001.dfs", "dump-summary.dfs"], names

    said = ok(invoke(env, "start"))
    assert f"Loading {data / 'dump-summary.dfs'}" in said
    client = redis.Redis(port=port, password=password or None)
    assert client.get("kept") == b"across restarts"
    assert client.lrange("jobs", 0, -1) == [b"a", b"b"] and client.dump("jobs") == dumped
    client.close()
    status = json.loads(ok(invoke(env, "status", "--json")))
    assert status["flavor"] == "dragonfly" and status["version"] == TAG

    tail = (
        ok(invoke(env, "tail", "-n", "200"))
        if not password
        else (project / "logs" / "dragonfly.log").read_text()
    )
    assert "Exiting on signal" not in tail  # stopped by SHUTDOWN, not by a signal
    assert 'Saving "' in tail and 'dump-summary.dfs" finished' in tail
    ok(invoke(env, "stop"))
    if password:
        for path in [*project.joinpath("logs").rglob("*"), *data.rglob("*")]:
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path


def test_no_save_crash_recovery_and_auto(
    make_settings: SettingsFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any DFLY_ variable that is not a flag is fatal to Dragonfly (DFLY_PASSWORD too, though
    # its source reads it): the ones in the developer's environment must never reach it.
    monkeypatch.setenv("DFLY_PASSWORD", "x")
    monkeypatch.setenv("DFLY_bogus", "1")
    archive = package.dragonfly_archive(tmp_path)
    installer = make_settings(flavor="dragonfly")
    fetch(installer, FetchOptions(archive=archive, allow_unverified=True))
    # A crash here is the person's to notice (the supervisor restarts it by default).
    settings = make_settings(flavor="auto", threads=2, maxmemory=512 * 1024 * 1024, restart="no")
    assert choice.choose_binary(settings).flavor == "dragonfly"  # installed: auto takes it

    def client() -> redis.Redis:
        return redis.Redis(port=settings.port)

    assert start_server(settings).state.flavor == "dragonfly"
    client().set("saved", "1")
    stop_server(settings)

    start_server(settings)
    assert client().get("saved") == b"1"
    client().set("not-saved", "1")
    stop_server(settings, save=False)

    state = start_server(settings).state
    assert client().get("saved") == b"1" and client().get("not-saved") is None
    client().set("after-crash", "1")
    os.kill(state.pid, signal.SIGKILL)
    psutil.Process(state.supervisor_pid).wait(10)
    assert server_status(settings)["running"] is False

    state = start_server(settings).state
    assert client().get("saved") == b"1" and client().get("after-crash") is None
    client().set("on-sigterm", "1")  # SIGTERM (a system shutdown, say) saves like SHUTDOWN
    os.kill(state.pid, signal.SIGTERM)
    psutil.Process(state.supervisor_pid).wait(20)
    start_server(settings)
    assert client().get("on-sigterm") == b"1"
    assert "Exiting on signal Terminated" in settings.log_file("dragonfly").read_text()
    stop_server(settings)


def test_a_flag_dragonfly_rejects_shows_its_own_error(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(flavor="dragonfly", extra_args="--cli", maxmemory=512 << 20)
    fetch(
        settings, FetchOptions(archive=package.dragonfly_archive(tmp_path), allow_unverified=True)
    )
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert "exited during startup with code 1" in info.value.message
    assert "ERROR: Unknown command line flag 'cli'" in info.value.hint
    assert not settings.state_file.exists()


@pytest.mark.parametrize("source", ["archive", "url"])
def test_installed_version_comes_from_the_binary_when_the_name_has_none(
    make_settings: SettingsFactory, gh: FakeGitHub, tmp_path: Path, source: str
) -> None:
    archive = package.dragonfly_archive(tmp_path)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    settings = make_settings(flavor="dragonfly")
    if source == "archive":
        options = FetchOptions(archive=archive, sha256=sha)
    else:
        url = gh.asset(archive.name, archive.read_bytes())
        options = FetchOptions(url=url, sha256=sha, retries=1, timeout=10)
    result = fetch(settings, options)
    assert result.version == TAG
    assert result.manifest["version"] == TAG
    assert choice.find_binary(settings, "dragonfly").version == TAG


def test_a_slow_save_after_the_ok_is_not_killed(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Dragonfly answers +OK to SHUTDOWN, stops listening, and only then writes its snapshot
    (server_family.cc: ShutdownCmd, then Shutdown() -> DoSave). With a large data set that save
    outlasts server.stop_timeout; killing it mid-write loses everything since the last
    snapshot. The stand-in's save takes 6 s, its files growing in --dir meanwhile: stop must
    keep waiting while they grow (server.save_timeout), not kill it after stop_timeout."""
    archive = package.dragonfly_archive(tmp_path, save_seconds=6)
    settings = make_settings(flavor="dragonfly", stop_timeout=1, threads=2, maxmemory=512 << 20)
    fetch(settings, FetchOptions(archive=archive, allow_unverified=True))
    state = start_server(settings).state
    client = redis.Redis(port=settings.port)
    client.set("precious", "data")
    client.close()
    stop_server(settings)
    assert not psutil.pid_exists(state.pid) or psutil.Process(state.pid).status() == "zombie"
    data = settings.data_dir / "dragonfly"
    assert not list(data.glob("*.tmp")), "the save was cut off: only .tmp files are left"
    start_server(settings)
    assert redis.Redis(port=settings.port).get("precious") == b"data"
    stop_server(settings, save=False)


def test_an_older_dragonfly_from_an_archive_is_refused_on_newer_data(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """With the version known (from the binary) the data-folder guard works for an archive."""
    settings = make_settings(flavor="dragonfly", maxmemory=512 << 20)
    new = package.dragonfly_archive(tmp_path / "new")
    fetch(settings, FetchOptions(archive=new, allow_unverified=True))
    start_server(settings)
    stop_server(settings)
    old = package.dragonfly_archive(tmp_path / "old", version="v1.30.0")
    assert fetch(settings, FetchOptions(archive=old, allow_unverified=True)).version == "v1.30.0"
    with pytest.raises(StartError) as info:
        start_server(settings)
    assert "written by dragonfly v1.40.1" in info.value.message
    assert "dragonfly v1.30.0, which cannot load it" in info.value.message


def test_start_waits_while_dragonfly_loads_its_snapshot(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Dragonfly accepts connections while it loads, answering -LOADING to PING and GET (even
    before AUTH); start must return only once it serves."""
    archive = package.dragonfly_archive(tmp_path, load_seconds=1.5)
    settings = make_settings(flavor="dragonfly", maxmemory=512 << 20, password="pw")
    fetch(settings, FetchOptions(archive=archive, allow_unverified=True))
    start_server(settings)
    redis.Redis(port=settings.port, password="pw").set("big", "dataset")
    stop_server(settings)
    start_server(settings)
    assert redis.Redis(port=settings.port, password="pw").get("big") == b"dataset"
    assert "Loading " in settings.log_file("dragonfly").read_text()
    stop_server(settings)
