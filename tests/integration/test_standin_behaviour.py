"""The stand-ins do what the real servers do where the tool depends on it (see their sources).

These pin the stand-ins themselves, so that a test passing against them means something:
Dragonfly's fatal flag and environment errors, its --dbfilename and --maxmemory rules, its
coloured --version, where its log lines go; Garnet's exit code 0 on a failed start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from devserver.system import host
from tests.archives import tree
from tests.conftest import free_port
from tests.standins import package

pytestmark = pytest.mark.skipif(host.os_name() != "linux", reason="Linux stand-ins")


@pytest.fixture()
def dragonfly(tmp_path: Path) -> Path:
    exe = tmp_path / "dragonfly"
    exe.write_bytes(package.launcher("dragonfly"))
    exe.chmod(0o755)
    return exe


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DFLY_")}
    return subprocess.run(
        argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=30
    )


def test_dragonfly_refuses_what_the_real_one_refuses(dragonfly: Path, tmp_path: Path) -> None:
    exe = str(dragonfly)
    bad = run([exe, "--cli", "--log-level=info"], tmp_path)
    assert bad.returncode == 1  # absl: every unknown flag reported, then exit(1)
    assert "ERROR: Unknown command line flag 'cli'" in bad.stderr
    assert "ERROR: Unknown command line flag 'log-level'" in bad.stderr

    env = run([exe, "--logtostderr"], tmp_path, DFLY_PASSWORD="x")
    assert env.returncode == -signal.SIGABRT  # LOG(FATAL)
    assert "] unknown environment variable DFLY_PASSWORD" in env.stderr

    rdb = run([exe, "--logtostderr", "--dbfilename=dump.rdb"], tmp_path)
    assert rdb.returncode == 1 and "'.rdb' extension was given" in rdb.stderr

    small = run([exe, "--logtostderr", "--proactor_threads=4", "--maxmemory=512mb"], tmp_path)
    assert small.returncode == 1
    assert "There are 4 threads, so 1.00GiB are required. Exiting..." in small.stderr

    version = run([exe, "--version"], tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("dragonfly \x1b[0;32mv1.40.1-")  # green, as the real one


def test_dragonfly_logs_to_files_unless_logtostderr(dragonfly: Path, tmp_path: Path) -> None:
    logs = tmp_path / "tmp"
    logs.mkdir()
    # A start that fails after logging (port taken by nothing: a bad dbfilename is quicker).
    quiet = run([str(dragonfly), "--dbfilename=x.json"], tmp_path, TMPDIR=str(logs))
    assert quiet.returncode == 1
    assert "Starting dragonfly" not in quiet.stderr  # INFO: files only
    assert "DF snapshot format requires no filename extension" in quiet.stderr  # ERROR: both
    files = tree(logs)
    info = [n for n in files if ".INFO." in n and n.startswith("dragonfly.")]
    assert info and "dragonfly.INFO" in files  # <prog>.<user>.INFO.<time>.<pid>.log + link
    assert b"Starting dragonfly df-v1.40.1" in (logs / info[0]).read_bytes()
    loud = run([str(dragonfly), "--logtostderr", "--dbfilename=x.json"], tmp_path)
    assert "dfly_main.cc" in loud.stderr and "] Starting dragonfly df-v1.40.1" in loud.stderr
    assert loud.stderr.splitlines()[0][0] == "I"  # glog/absl prefix: I<mmdd> <time> <tid> ...


def test_garnet_exits_0_when_it_cannot_start(tmp_path: Path) -> None:
    exe = tmp_path / "GarnetServer"
    exe.write_bytes(package.launcher("garnet", framework=8))
    exe.chmod(0o755)
    package.install_dotnet(tmp_path / "dotnet")
    path = f"{tmp_path / 'dotnet'}{os.pathsep}{os.environ['PATH']}"
    bad = run([str(exe), "--requirepass", "x"], tmp_path, PATH=path)
    assert bad.returncode == 0 and "Option 'requirepass' is unknown." in bad.stdout
    missing = run([str(exe), "--config-import-path", "nope.json"], tmp_path, PATH=path)
    assert missing.returncode == 0 and "Unable to initialize server" in missing.stdout
    no_runtime = run([str(exe)], tmp_path, PATH="/nonexistent")
    assert no_runtime.returncode == 150 and "You must install or update .NET" in no_runtime.stderr


@pytest.mark.parametrize("protocol", [2, 3])
def test_dragonfly_commands_a_job_queue_uses(
    dragonfly: Path, tmp_path: Path, protocol: int
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(dragonfly), "--logtostderr", f"--port={port}", "--bind=127.0.0.1", "--dbfilename="],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DFLY_requirepass": "pw"},
    )
    try:
        client = redis.Redis(port=port, password="pw", protocol=protocol, socket_timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, protocol=protocol).ping()
        assert client.info("server")["dragonfly_version"] == "df-v1.40.1"

        # BLPOP really blocks until another client pushes.
        pusher = threading.Timer(0.3, lambda: redis.Redis(port=port, password="pw").rpush("q", "j"))
        pusher.start()
        assert client.blpop(["q"], timeout=5) in ([b"q", b"j"], (b"q", b"j"))
        pusher.join()
        assert client.brpop(["q"], timeout=0.1) is None  # nothing left: times out, None

        client.rpush("src", "a", "b")
        assert client.blmove("src", "dst", 1, "RIGHT", "LEFT") == b"b"
        assert client.lrange("dst", 0, -1) == [b"b"] and client.llen("src") == 1
        for n in range(25):
            client.set(f"k{n}", n)
        assert client.expire("k0", 100) and 0 < client.ttl("k0") <= 100
        assert client.dbsize() == 27
        assert len(list(client.scan_iter(match="k*", count=7))) == 25
        assert client.dump("dst") == client.dump("dst") and client.dump("nope") is None
        assert client.delete("k1", "k2", "nope") == 2
    finally:
        proc.kill()
        proc.wait()
