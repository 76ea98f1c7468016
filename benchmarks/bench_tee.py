"""The log tee's throughput: lines/s into the log through the real supervisor.

Target: at least 500,000 lines/s, and a stalled console or follower must not lower it.
Compared with the same producer redirected straight to a file (the ceiling: no pipe, no
timestamps, no rotation). The producer is a small Python "server" printing numbered lines
as fast as it can; every rate is wall time from spawn to exit, start-up included.

Runs:
  direct      producer > file
  supervisor  python -m devserver.supervisor (JSON spec on stdin, as ``invoke start``)
  + follower  the same while ``invoke tail -f`` runs with its stdout never read (stalled)
  + console   the tee in-process with a console sink that blocks forever (foreground mode
              with a frozen terminal); producer -> pipe -> tee, as the supervisor runs it
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.logs import RotatingWriter, tee  # noqa: E402

TARGET = 500_000
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
        [sys.executable, "-m", "devserver.supervisor"],
        cwd=ROOT,
        check=True,
        input=json.dumps(spec(base, script)).encode(),
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
    thread = threading.Thread(
        target=lambda: counted.append(
            tee(proc.stdout, writer, console=lambda text: frozen.wait() and None)
        )
    )
    thread.start()
    proc.wait()
    seconds = time.perf_counter() - began
    thread.join()  # includes the tee's bounded wait for the console at EOF
    writer.close()
    frozen.set()
    assert counted == [LINES]
    return seconds


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="bench_tee_", dir="/tmp"))
    script = base / "producer.py"
    script.write_text(PRODUCER)
    try:
        runs = [
            ("producer > file (ceiling)", direct(base, script)),
            ("through the supervisor", supervisor(base, script)),
            ("  + stalled tail -f", with_stalled_follower(base, script)),
            ("  + stalled console (tee)", with_stalled_console(base, script)),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{LINES:,} lines; target >= {TARGET:,} lines/s through the tee")
    ok = True
    for label, seconds in runs:
        rate = LINES / seconds
        judged = label != runs[0][0]
        ok &= rate >= TARGET or not judged
        verdict = ("ok" if rate >= TARGET else "MISSED") if judged else ""
        print(f"{label:28} {seconds:6.2f} s {rate:12,.0f} lines/s {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
