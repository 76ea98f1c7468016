"""A real supervisor rotating a real burst, and ``invoke tail`` as a user runs it.

The "server" is a small Python script that prints numbered lines as fast as it can and
exits; the supervisor is spawned exactly as ``server.start.start`` does it (``python -m
devserver.supervisor.entry`` with the JSON spec on stdin).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devserver.supervisor.launch import supervisor_command, supervisor_env
from devserver.supervisor.wire import encode_spec
from tests.conftest import SIGINT_AT_DEFAULT, popen_invoke

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (\d{7}|\[devserver\] .*)")

PRODUCER = """
import sys
count, out = int(sys.argv[1]), sys.stdout.buffer
for start in range(0, count, 10000):
    out.write(b"".join(b"%07d\\n" % i for i in range(start, min(start + 10000, count))))
out.flush()
"""


def spec_for(project: Path, count: int, max_bytes: int, backups: int) -> dict[str, Any]:
    """The same keys as prepare.build_spec, with the producer as the server."""
    script = project / "producer.py"
    script.write_text(PRODUCER)
    argv = [sys.executable, str(script), str(count)]
    return {
        "argv": argv,
        "public_argv": argv,
        "env": dict(os.environ),
        "cwd": str(project / "data" / "redis"),
        "flavor": "redis",
        "version": "test",
        "binary": sys.executable,
        "host": "127.0.0.1",
        "port": 1,
        "state_file": str(project / "data" / "server.json"),
        "log_file": str(project / "logs" / "redis.log"),
        "log_max_bytes": max_bytes,
        "log_backups": backups,
        "password": "",
        "stdin_config": "",
        "secret_file": None,
        "stop_save": [["SHUTDOWN", "SAVE"]],
        "stop_nosave": [["SHUTDOWN", "NOSAVE"]],
        "terminate_after_stop": False,
    }


def run_supervisor(spec: dict[str, Any]) -> float:
    began = time.monotonic()
    sup = subprocess.run(
        supervisor_command(sys.executable),
        cwd=ROOT,
        env=supervisor_env(),
        input=encode_spec(spec) + b"ok\n",  # the spec, then start's "ok"
        timeout=60,
    )
    assert sup.returncode == 0
    return time.monotonic() - began


def log_files(log: Path) -> list[Path]:
    """Oldest first: .N ... .1, then the current file."""
    backups = sorted(log.parent.glob(log.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, log]


def numbers_in(files: list[Path]) -> list[int]:
    numbers = []
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")  # no line torn between files
        for line in data.splitlines():
            match = LINE.fullmatch(line)
            assert match, line
            if not match.group(1).startswith(b"["):
                numbers.append(int(match.group(1)))
    return numbers


def test_a_million_line_burst_rotates_without_losing_or_reordering_a_line(project: Path) -> None:
    spec = spec_for(project, 1_000_000, max_bytes=1 << 20, backups=100)
    run_supervisor(spec)
    files = log_files(Path(spec["log_file"]))
    assert len(files) > 25  # ~30 MB through a 1 MiB limit: rotated many times
    assert all(p.stat().st_size <= 1 << 20 for p in files)
    assert numbers_in(files) == list(range(1_000_000))
    text = files[-1].read_text()
    assert "[devserver] server exited with code 0" in text.splitlines()[-1]
    assert "[devserver] starting redis test in " in files[0].read_text().splitlines()[0]


def test_total_size_stays_bounded_and_keeps_the_newest_lines(project: Path) -> None:
    spec = spec_for(project, 300_000, max_bytes=256 * 1024, backups=2)
    run_supervisor(spec)
    files = log_files(Path(spec["log_file"]))
    assert [p.name for p in files] == ["redis.log.2", "redis.log.1", "redis.log"]
    assert sum(p.stat().st_size for p in files) <= 3 * 256 * 1024
    numbers = numbers_in(files)
    assert numbers == list(range(numbers[0], 300_000))


def invoke_tail(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        NO_COLOR="1",
        INVOKE_SERVER_FLAVOR="auto",
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
    )
    return subprocess.run(
        [sys.executable, "-m", "invoke", "tail", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_invoke_tail_cli(project: Path) -> None:
    missing = invoke_tail(project, "-n", "5")
    assert missing.returncode == 0 and missing.stdout == ""
    assert "no log yet" in missing.stderr and "invoke start" in missing.stderr

    spec = spec_for(project, 20_000, max_bytes=64 * 1024, backups=5)
    run_supervisor(spec)
    result = invoke_tail(project, "-n", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("] ", 1)[1] for line in lines[:4]] == [
        "0019996",
        "0019997",
        "0019998",
        "0019999",
    ]
    assert "[devserver] server exited with code 0" in lines[4]
    assert "\x1b" not in result.stdout  # not a terminal: no colour

    found = invoke_tail(project, "--grep", "1999[89]$", "--flavor", "redis")
    assert [line[-7:] for line in found.stdout.splitlines()] == ["0019998", "0019999"]

    for bad in (["-n", "-3"], ["-n", "many"], ["--grep", "(unclosed"]):
        result = invoke_tail(project, *bad)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child there")
def test_invoke_tail_follow_ends_cleanly_on_ctrl_c(project: Path) -> None:
    import signal

    log = project / "logs" / "redis.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"[x] old\n")
    env = dict(
        os.environ,
        NO_COLOR="1",
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_FLAVOR="redis",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "tail", "-f", "-n", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **SIGINT_AT_DEFAULT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"[x] old\n"
        with open(log, "ab") as handle:
            handle.write(b"[x] new \xff\n")
        assert proc.stdout.readline() == "[x] new \ufffd\n".encode()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:  # `tail -f` never ends by itself: a failed or timed-out test must end it
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Ctrl+C ends -f as it ends every other task: the short line and exit 130, no traceback.
    assert proc.returncode == 130, err
    assert err.decode().splitlines() == ["interrupted"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child there")
def test_invoke_tail_follow_ctrl_c_while_waiting_for_a_log_exits_130(project: Path) -> None:
    import signal

    env = dict(
        os.environ,
        NO_COLOR="1",
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_FLAVOR="auto",  # no log of any flavor yet: it waits for the first
    )
    proc = popen_invoke(env, "tail", "-f")
    try:
        assert proc.stderr is not None
        while "waiting for it to appear" not in (line := proc.stderr.readline()):
            assert line, proc.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:  # `tail -f` never ends by itself: a failed or timed-out test must end it
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted"] and out == ""
