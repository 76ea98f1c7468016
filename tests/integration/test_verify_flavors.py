"""`invoke verify --flavor`: every flavor on a throwaway server, one table side by side.

Real redis-server from PATH, the Dragonfly and Garnet stand-ins installed with ``invoke fetch
--archive`` into the project's bin/ (as a user installs the real ones), and a misbehaving
server (tests/misbehaving_server.py: it never answers GET) to make one flavor fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from devserver.system import host
from devserver.verify.latency import OPERATIONS
from tests import misbehaving_server
from tests.conftest import ROOT, free_port, kill_recorded
from tests.standins import package

pytestmark = pytest.mark.skipif(
    (host.os_name(), host.cpu_arch()) != ("linux", "x86_64"),
    reason="the stand-ins are packaged as Dragonfly's and Garnet's linux-x64 releases",
)


def invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def env(project: Path, tmp_path: Path) -> dict[str, str]:
    """The project's folders, a stand-in dotnet first on PATH, generous latency limits
    (latency is not what these tests are about: a shared 2-core machine)."""
    dotnet = tmp_path / "dotnet"
    package.install_dotnet(dotnet)
    values = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    values.update(
        PATH=f"{dotnet}{os.pathsep}{os.environ.get('PATH', '')}",
        INVOKE_SERVER_FLAVOR="redis",
        INVOKE_SERVER_PORT=str(free_port()),
        INVOKE_SERVER_BIN_DIR=str(project / "bin"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_VERIFY_ITERATIONS="10",
        NO_COLOR="1",
    )
    values.update({f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "1000" for op in OPERATIONS})
    return values


def install_standins(env: dict[str, str], tmp_path: Path) -> None:
    for flavor, archive in (
        ("dragonfly", package.dragonfly_archive(tmp_path / "df")),
        ("garnet", package.garnet_archive(tmp_path / "garnet")),
    ):
        done = invoke(
            env, "fetch", "--flavor", flavor, f"--archive={archive}", "--allow-unverified"
        )
        assert done.returncode == 0, done.stderr


def test_all_flavors_side_by_side_and_the_running_server_untouched(
    env: dict[str, str], project: Path, tmp_path: Path, redis_server_path: Path
) -> None:
    install_standins(env, tmp_path)
    env["INVOKE_SERVER_BINARY"] = str(redis_server_path)
    started = invoke(env, "start")
    assert started.returncode == 0, started.stderr
    state = project / "data" / "server.json"
    try:
        pid = json.loads(state.read_text())["pid"]
        create_time = psutil.Process(pid).create_time()

        result = invoke(env, "verify", "--flavor", "all")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
        header = rows["flavor"].split()
        assert header[:3] == ["flavor", "version", "checks"]
        assert [f"{op}" for op in OPERATIONS] == header[3:-1:3]  # "connect p50 ms" ...
        said = subprocess.run([str(redis_server_path), "--version"], capture_output=True, text=True)
        assert f"v={rows['redis'].split()[1]} " in said.stdout  # server.binary's, e.g. 7.0.15
        assert rows["dragonfly"].split()[1] == "1.40.1"  # the stand-in's, without its sha
        assert rows["garnet"].split()[1] == "2.1.4"
        for flavor in ("redis", "dragonfly", "garnet"):
            cells = rows[flavor].split()
            assert cells[2] == "7/7" and cells[-1] == "-"
            assert all(float(c) > 0 for c in cells[3:9])  # one p50 per operation
        assert "verify passed on every flavor: dragonfly, redis, garnet" in result.stdout
        assert "Traceback" not in result.stderr

        as_json = invoke(env, "verify", "--flavor", "all", "--json")
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert data["ok"] is True and data["not_found"] == []
        flavors = {f["flavor"]: f for f in data["flavors"]}
        assert set(flavors) == {"redis", "dragonfly", "garnet"}
        assert all(f["checks_passed"] == f["checks_total"] == 7 for f in flavors.values())
        assert set(flavors["garnet"]["p50_ms"]) == set(OPERATIONS)
        assert flavors["garnet"]["verify"]["checks"][0]["name"] == "connection"

        # the project's own server: same process, still answering, state file unchanged
        proc = psutil.Process(pid)
        assert proc.is_running() and proc.create_time() == create_time
        assert json.loads(state.read_text())["pid"] == pid
        assert invoke(env, "verify").returncode == 0
    finally:
        invoke(env, "stop")
        kill_recorded(state)


def test_a_failing_flavor_exits_1_naming_it(
    env: dict[str, str], project: Path, tmp_path: Path
) -> None:
    install_standins(env, tmp_path)
    misbehaving_server.install(project / "bin", "plain")  # PING, SET, INFO; nothing else
    result = invoke(env, "verify", "--flavor", "dragonfly,redis")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert rows["dragonfly"].split()[2] == "7/7"
    assert "connection:" in rows["redis"] and "did not answer" in rows["redis"]
    assert "verify FAILED on redis" in result.stdout
    assert result.stderr.count("error: ") == 1
    assert "error: verify failed on redis: redis: connection:" in result.stderr
    assert "hint: " in result.stderr and "Traceback" not in result.stderr
    assert not list((project / "data").glob("server.json"))  # nothing of ours kept running

    as_json = invoke(env, "verify", "--flavor", "dragonfly,redis", "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    failed = {f["flavor"]: f for f in data["flavors"]}
    assert failed["dragonfly"]["ok"] is True
    assert failed["redis"]["failed"][0]["name"] == "connection"


def test_a_failing_check_is_named_with_its_reason(
    env: dict[str, str], project: Path, tmp_path: Path, redis_server_path: Path
) -> None:
    """A check (not the connection) failing on one flavor: BRPOP's median over a limit no
    server meets, forced for the run; the row names the check and why."""
    env["INVOKE_SERVER_BINARY"] = str(redis_server_path)
    env["INVOKE_VERIFY_THRESHOLDS_MS_BRPOP"] = "0.000001"
    result = invoke(env, "verify", "--flavor", "redis")
    assert result.returncode == 1, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("redis "))
    assert row.split()[2] == "6/7"  # every other check passed
    assert "latency: " in row and "brpop" in row
    assert "error: verify failed on redis: redis: latency: " in result.stderr


def test_a_named_flavor_without_a_binary_is_a_failed_row_all_skips_it(
    env: dict[str, str], project: Path, tmp_path: Path
) -> None:
    env["PATH"] = str(tmp_path / "empty")  # no redis-server, no dotnet
    archive = package.dragonfly_archive(tmp_path / "df")
    assert (
        invoke(
            env, "fetch", "--flavor", "dragonfly", f"--archive={archive}", "--allow-unverified"
        ).returncode
        == 0
    )
    result = invoke(env, "verify", "--flavor", "dragonfly,garnet")
    assert result.returncode == 1
    assert "garnet: binary: no Microsoft Garnet executable found" in result.stderr.replace(
        "\n", " "
    )

    every = invoke(env, "verify", "--flavor", "all", "--json")
    data = json.loads(every.stdout)
    assert "garnet" in data["not_found"]
    assert "garnet" not in {f["flavor"] for f in data["flavors"]}
    assert "dragonfly" in {f["flavor"] for f in data["flavors"]}
    assert every.returncode == 0, every.stderr
