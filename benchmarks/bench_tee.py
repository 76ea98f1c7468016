"""The log tee's throughput: lines/s into the log through the real supervisor.

Rows (lines/s, ours vs the producer redirected straight to a file, the ceiling: no pipe, no
timestamps, no rotation; goal >= 0.5 of it):
  tee                  launch.supervisor_command() (the spec on stdin, as ``invoke start``)
  tee.stalled-tail     the same while ``invoke tail -f`` runs with its stdout never read
  tee.stalled-console  the tee in-process with a console sink that blocks forever (foreground
                       mode with a frozen terminal); producer -> pipe -> tee
The producer is a small Python "server" printing numbered lines as fast as it can; every
rate is wall time from spawn to exit, start-up included. Run alone:
``python benchmarks/bench_tee.py``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, Goal, Options, Row, interleave
from devserver.supervisor.launch import supervisor_command, supervisor_env
from devserver.supervisor.logs import RotatingWriter
from devserver.supervisor.tee import tee
from devserver.supervisor.wire import encode_spec

NAMES = ("tee", "tee.stalled-tail", "tee.stalled-console")
# After the spec line, ``start`` hands the server over with "ok" (the supervisor's stdin
# lifeline: stdin ending without it means the start was given up, and the server is killed).
HANDOVER = b"ok\n"
LINES = 2_000_000
PRODUCER = """
import sys
count, out = int(sys.argv[1]), sys.stdout.buffer
for start in range(0, count, 10000):
    out.write(b"".join(b"request %09d handled in 0.1 ms\\n" % i
                       for i in range(start, min(start + 10000, count))))
out.flush()
"""


def spec(base: Path, script: Path) -> dict[str, Any]:
    argv = [sys.executable, str(script), str(LINES)]
    return {
        "argv": argv,
        "public_argv": argv,
        "env": dict(os.environ),
        "cwd": str(base / "data" / "redis"),
        "flavor": "redis",
        "version": "bench",
        "binary": sys.executable,
        "host": "127.0.0.1",
        "port": 1,
        "state_file": str(base / "data" / "server.json"),
        "log_file": str(base / "logs" / "redis.log"),
        "log_max_bytes": 10 * 1024 * 1024,
        "log_backups": 20,
        "password": "",
        "stdin_config": "",
        "secret_file": None,
        "stop_save": [["SHUTDOWN", "SAVE"]],
        "stop_nosave": [["SHUTDOWN", "NOSAVE"]],
        "terminate_after_stop": False,
    }


def clean_logs(base: Path) -> None:
    shutil.rmtree(base / "logs", ignore_errors=True)
    (base / "logs").mkdir()


def direct(base: Path, script: Path) -> float:
    began = time.perf_counter()
    with open(base / "direct.out", "wb") as out:
        subprocess.run([sys.executable, str(script), str(LINES)], stdout=out, check=True)
    return time.perf_counter() - began


def supervisor(base: Path, script: Path) -> float:
    clean_logs(base)
    began = time.perf_counter()
    subprocess.run(
        supervisor_command(sys.executable),
        cwd=ROOT,
        env=supervisor_env(),
        check=True,
        input=encode_spec(spec(base, script)) + HANDOVER,
    )
    seconds = time.perf_counter() - began
    count_lines(base)
    return seconds


def count_lines(base: Path) -> None:
    """Check the run logged every line (plus our start/pid/exit markers)."""
    total = sum(p.read_bytes().count(b"\n") for p in (base / "logs").iterdir())
    assert total == LINES + 3, total


def with_stalled_follower(base: Path, script: Path) -> float:
    clean_logs(base)
    (base / "logs" / "redis.log").write_bytes(b"")
    env = dict(
        os.environ,
        NO_COLOR="1",
        INVOKE_SERVER_FLAVOR="redis",
        INVOKE_SERVER_LOG_DIR=str(base / "logs"),
        INVOKE_SERVER_DATA_DIR=str(base / "x"),
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "invoke", "tail", "-f"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # let it start following
        seconds = supervisor(base, script)
    finally:
        follower.kill()
        follower.wait()
    return seconds


def with_stalled_console(base: Path, script: Path) -> float:
    """Timed until the server has written its last line and exited: its own log rate."""
    clean_logs(base)
    frozen = threading.Event()
    writer = RotatingWriter(base / "logs" / "redis.log", 10 * 1024 * 1024, 20)
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(LINES)], stdout=subprocess.PIPE)
    counted: list[int] = []

    def frozen_console(text: str) -> None:
        frozen.wait()

    thread = threading.Thread(
        target=lambda: counted.append(tee(proc.stdout, writer, console=frozen_console))
    )
    thread.start()
    proc.wait()
    seconds = time.perf_counter() - began
    thread.join()  # includes the tee's bounded wait for the console at EOF
    writer.close()
    frozen.set()
    assert counted == [LINES]
    return seconds


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    global LINES
    LINES = opts.scaled(2_000_000, 500_000)
    what = {
        "tee": "lines/s into the log through the supervisor vs producer > file",
        "tee.stalled-tail": "the same with a stalled `invoke tail -f` vs producer > file",
        "tee.stalled-console": "in-process tee with a frozen console sink vs producer > file",
    }
    out = [Row(n, what[n], "lines/s", Goal("ratio", ">=", 0.5)) for n in NAMES if n in wanted]
    base = Path(tempfile.mkdtemp(prefix="bench_tee_"))
    script = base / "producer.py"
    script.write_text(PRODUCER)
    runners = {
        "tee": supervisor,
        "tee.stalled-tail": with_stalled_follower,
        "tee.stalled-console": with_stalled_console,
    }
    try:
        series: dict[str, Callable[[], float]] = {"direct": lambda: LINES / direct(base, script)}
        for row in out:
            run = runners[row.name]
            series[row.name] = functools.partial(lambda r: LINES / r(base, script), run)
        got = interleave(series, opts.scaled(5, 3))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for row in out:
        row.ours, row.baseline = got[row.name], got["direct"]
    return out


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
