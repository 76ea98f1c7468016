"""`invoke verify` against a real redis-server on a free port, and against broken servers.

Servers read their config from stdin (``redis-server -``) so a password never reaches a
command line. Tests that must pass use generous latency thresholds: this suite runs on shared
two-core machines, where a 5 ms p99 for PING is not guaranteed. The only timing the tests
rely on is BRPOP's blocking window, which the issue requires.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devserver.errors import VerifyError
from devserver.server import resp
from devserver.verify import runner
from devserver.verify.functional import PREFIX
from devserver.verify.latency import OPERATIONS
from devserver.verify.target import Target, from_settings, from_url
from tests.conftest import ROOT, SettingsFactory, free_port

GENEROUS = dict.fromkeys(OPERATIONS, 10_000.0)
ITERATIONS = 20
PASSWORD = "s3cret-Pw"

StartRedis = Callable[..., int]


@pytest.fixture()
def start_redis(redis_server_path: Path) -> Iterator[StartRedis]:
    """Start redis-server with extra config lines on a free port; killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*config: str, password: str = "") -> int:
        port = free_port()
        lines = [f"port {port}", "bind 127.0.0.1", 'save ""', "appendonly no", *config]
        if password:
            lines.append(f"requirepass {password}")
        proc = subprocess.Popen(
            [str(redis_server_path), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while resp.ping("127.0.0.1", port, password=password) != "ready":
            assert proc.poll() is None, "redis-server exited during startup"
            assert time.monotonic() < deadline, "redis-server did not become ready"
            time.sleep(0.02)
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _client(port: int, password: str = "") -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password or None)


def _verify_keys(port: int, password: str = "") -> list[bytes]:
    return list(_client(port, password).scan_iter(match=PREFIX + "*", count=1000))


def test_all_checks_pass(start_redis: StartRedis, make_settings: SettingsFactory) -> None:
    port = start_redis()
    report = runner.run(from_settings(make_settings(port=port)), ITERATIONS, GENEROUS)
    assert report.ok, report.failed
    assert report.server.startswith("redis ")
    assert report.url == f"redis://127.0.0.1:{port}/0"
    assert set(report.latency) == set(OPERATIONS)
    for figures in report.latency.values():
        assert figures.p50 is not None and figures.p99 is not None and figures.max is not None
        assert 0 < figures.p50 <= figures.p99 <= figures.max
    assert _verify_keys(port) == []


def test_user_data_is_left_exactly_as_it_was(start_redis: StartRedis) -> None:
    port = start_redis()
    user = _client(port)
    user.rpush("skybridge:jobs:queue", "job1", "job2", "job3")
    user.set("skybridge:test", "hello-world")
    user.set("devserver:verify:someone-else:key", "not ours")  # same family, other prefix
    user.expire("skybridge:test", 3600)
    before = {k: user.dump(k) for k in user.scan_iter()}

    report = runner.run(from_url(f"redis://127.0.0.1:{port}/0"), ITERATIONS, GENEROUS)

    assert report.ok, report.failed
    after = {k: user.dump(k) for k in user.scan_iter()}
    assert after == before
    assert user.lrange("skybridge:jobs:queue", 0, -1) == [b"job1", b"job2", b"job3"]
    assert 0 < user.ttl("skybridge:test") <= 3600
    assert user.ttl("skybridge:jobs:queue") == -1
    assert _verify_keys(port) == [b"devserver:verify:someone-else:key"]


def test_other_databases_are_not_touched(start_redis: StartRedis) -> None:
    port = start_redis()
    _client(port).set("app:key", "db0")
    report = runner.run(from_url(f"redis://127.0.0.1:{port}/5"), ITERATIONS, GENEROUS)
    assert report.ok, report.failed
    assert _client(port).dbsize() == 1
    assert redis.Redis(host="127.0.0.1", port=port, db=5).dbsize() == 0


def test_configured_password(start_redis: StartRedis, make_settings: SettingsFactory) -> None:
    port = start_redis(password=PASSWORD)
    report = runner.run(
        from_settings(make_settings(port=port, password=PASSWORD)), ITERATIONS, GENEROUS
    )
    assert report.ok, report.failed
    assert PASSWORD not in json.dumps(report.as_json())
    assert report.url == f"redis://:***@127.0.0.1:{port}/0"
    assert _verify_keys(port, PASSWORD) == []


def test_acl_user_in_url(start_redis: StartRedis) -> None:
    port = start_redis(f"user app on >{PASSWORD} ~devserver:verify:* &* +@all")
    url = f"redis://app:{PASSWORD}@127.0.0.1:{port}/0"
    report = runner.run(from_url(url), ITERATIONS, GENEROUS)
    assert report.ok, report.failed
    assert report.url == f"redis://app:***@127.0.0.1:{port}/0"


def test_dead_server_says_how_to_start(make_settings: SettingsFactory) -> None:
    with pytest.raises(VerifyError) as caught:
        runner.run(from_settings(make_settings(port=free_port())), ITERATIONS, GENEROUS)
    assert "connection refused" in caught.value.message
    assert "invoke start" in caught.value.hint


def test_missing_password_is_noauth(
    start_redis: StartRedis, make_settings: SettingsFactory
) -> None:
    port = start_redis(password=PASSWORD)
    with pytest.raises(VerifyError, match=r"^NOAUTH"):
        runner.run(from_settings(make_settings(port=port)), ITERATIONS, GENEROUS)


def test_wrong_password_is_wrongpass(
    start_redis: StartRedis, make_settings: SettingsFactory
) -> None:
    port = start_redis(password=PASSWORD)
    with pytest.raises(VerifyError) as caught:
        runner.run(
            from_settings(make_settings(port=port, password="wrong-one")), ITERATIONS, GENEROUS
        )
    assert caught.value.message.startswith("WRONGPASS")
    assert "wrong-one" not in caught.value.message
    assert "server.password" in caught.value.hint


@pytest.fixture()
def mute_port() -> Iterator[int]:
    """A socket that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in held:
        conn.close()


def test_hanging_server_times_out(mute_port: int) -> None:
    with pytest.raises(VerifyError) as caught:
        runner.run(from_url(f"redis://127.0.0.1:{mute_port}/0"), ITERATIONS, GENEROUS)
    assert "did not answer" in caught.value.message
    assert "timeout" in caught.value.message


def test_missing_command_is_named_and_keys_are_still_removed(start_redis: StartRedis) -> None:
    port = start_redis('rename-command BRPOP ""')
    report = runner.run(from_url(f"redis://127.0.0.1:{port}/0"), ITERATIONS, GENEROUS)
    assert not report.ok
    checks = {c.name: c for c in report.checks}
    assert "unknown command BRPOP" in checks["queue"].detail
    assert "unknown command BRPOP" in checks["queue timeout"].detail
    assert not checks["latency"].ok and report.latency["brpop"].p99 is None
    assert checks["set/get"].ok and checks["cleanup"].ok
    assert _verify_keys(port) == []  # the queue BRPOP could not drain was deleted


def test_impossible_threshold_fails(start_redis: StartRedis) -> None:
    port = start_redis()
    report = runner.run(
        from_url(f"redis://127.0.0.1:{port}/0"), ITERATIONS, {**GENEROUS, "ping": 0.000001}
    )
    assert not report.ok
    assert [c.name for c in report.failed] == ["latency"]
    assert not report.latency["ping"].ok and report.latency["get"].ok


def test_tls_error_is_named(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(VerifyError) as caught:
            port = server.getsockname()[1]
            runner.run(from_url(f"rediss://127.0.0.1:{port}/0"), ITERATIONS, GENEROUS)
    finally:
        server.close()
    assert caught.value.message.startswith("TLS error")
    assert "certificate" in caught.value.message


# --- the task itself, as a person (or start_dev.bat) runs it ---------------------------------


def _invoke(*args: str, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    scratch = Path(tempfile.mkdtemp(prefix="verify-cli-"))  # never this checkout's data/
    clean.update(
        {
            "INVOKE_SERVER_DATA_DIR": str(scratch / "data"),
            "INVOKE_SERVER_LOG_DIR": str(scratch / "logs"),
            "INVOKE_SERVER_BIN_DIR": str(scratch / "bin"),
            "INVOKE_SERVER_PORT": str(port),
            "NO_COLOR": "1",
            **{f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "10000" for op in OPERATIONS},
            **env,
        }
    )
    try:
        return subprocess.run(
            [sys.executable, "-m", "invoke", "verify", *args],
            cwd=ROOT,
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _one_json_object(stdout: str) -> dict[str, Any]:
    data = json.loads(stdout)  # raises if anything but one JSON document is on stdout
    assert isinstance(data, dict)
    assert set(data) == {"ok", "url", "checks", "latency_ms", "warnings"}
    assert isinstance(data["ok"], bool) and isinstance(data["url"], str)
    for check in data["checks"]:
        assert set(check) == {"name", "ok", "detail"}
        assert isinstance(check["ok"], bool) and isinstance(check["detail"], str)
    for figures in data["latency_ms"].values():
        assert set(figures) == {"p50", "p99", "max", "threshold", "samples", "warning"}
        assert all(v is None or isinstance(v, (int, float)) for v in figures.values())
    return data


def test_json_output_and_exit_codes(start_redis: StartRedis) -> None:
    port = start_redis()
    passed = _invoke("--json", "--iterations", "10", port=port)
    assert passed.returncode == 0, passed.stderr
    data = _one_json_object(passed.stdout)
    assert data["ok"] is True and all(c["ok"] for c in data["checks"])
    assert data["url"] == f"redis://127.0.0.1:{port}/0"
    assert set(data["latency_ms"]) == set(OPERATIONS)

    failed = _invoke(
        "--json", "--iterations", "10", port=port, INVOKE_VERIFY_THRESHOLDS_MS_PING="0.000001"
    )
    assert failed.returncode == 1
    data = _one_json_object(failed.stdout)
    assert data["ok"] is False
    assert data["latency_ms"]["ping"]["threshold"] == 0.000001
    assert "error: verify failed: latency: ping median" in failed.stderr
    assert "round trip from this machine" in failed.stderr  # says what it measured...
    assert "invoke tail" not in failed.stderr  # ...and sends nobody to the server's log
    assert _verify_keys(port) == []


def test_one_run_opens_few_connections(start_redis: StartRedis) -> None:
    """200 iterations used to open ~200 connections (TIME_WAIT sockets) per run."""
    port = start_redis()
    client = redis.Redis(port=port)
    before = int(client.info("stats")["total_connections_received"])
    result = _invoke("--iterations", "200", port=port)
    after = int(client.info("stats")["total_connections_received"])
    client.close()
    assert result.returncode == 0, result.stderr
    assert after - before <= 25, after - before


def test_json_when_the_server_is_down() -> None:
    result = _invoke("--json", port=free_port())
    assert result.returncode == 1
    data = _one_json_object(result.stdout)
    assert data["ok"] is False and data["latency_ms"] == {}
    assert data["checks"][0]["name"] == "connection"
    assert "connection refused" in result.stderr and "Traceback" not in result.stderr


def test_table_output_never_shows_the_password(start_redis: StartRedis) -> None:
    port = start_redis(password=PASSWORD)
    result = _invoke("--iterations", "10", port=port, INVOKE_SERVER_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "verify passed" in result.stdout and "PASS" in result.stdout
    assert "p99 ms" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url", ["http://u:hunter2@host/0", "redis://:hunter2@host:notaport", "redis://host:6379/db"]
)
def test_malformed_url_is_one_line(url: str) -> None:
    result = _invoke("--url", url, port=1)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: malformed --url")
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the reason, then the hint


def test_unknown_command_via_the_task(start_redis: StartRedis) -> None:
    port = start_redis('rename-command BRPOP ""')
    result = _invoke("--iterations", "5", port=port)
    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "unknown command BRPOP" in result.stderr and "Traceback" not in result.stderr


def test_target_never_reprs_its_password() -> None:
    assert PASSWORD not in repr(Target(host="h", port=1, password=PASSWORD))
