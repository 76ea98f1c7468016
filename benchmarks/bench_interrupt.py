"""How long the cleanup after Ctrl+C during ``invoke start`` takes (goal: well under 1 s).

A real redis-server stand-in that never answers PING keeps ``start`` waiting; once the state
file exists, SIGINT goes to start's process group (as a terminal's Ctrl+C does), once or
twice. Measured: SIGINT -> ``invoke start`` exited (its cleanup done: server, supervisor and
state file gone, which is checked). Medians of BENCH_RUNS runs. Not a unit test.
Run: ``invoke bench --only interrupt`` (rows ``interrupt.once`` and ``interrupt.twice``, an
absolute goal of 1 s: there is no public tool to compare with) or
``python benchmarks/bench_interrupt.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "7"))

SLOW_SERVER = """import sys, time
if '--version' in sys.argv: print('Redis server v=0.0.1'); sys.exit()
print('booting forever', flush=True)
time.sleep(600)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_run(project: Path, presses: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(
        INVOKE_SERVER_FLAVOR="redis",
        INVOKE_SERVER_PORT=str(free_port()),
        INVOKE_SERVER_BIN_DIR=str(project / "bin"),
        INVOKE_SERVER_DATA_DIR=str(project / "data"),
        INVOKE_SERVER_LOG_DIR=str(project / "logs"),
        INVOKE_SERVER_STARTUP_TIMEOUT="60",
        NO_COLOR="1",
    )
    state_file = project / "data" / "server.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not state_file.exists():
        if proc.poll() is not None:
            raise RuntimeError("start ended early")
        time.sleep(0.005)
    time.sleep(0.05)  # the state is complete; start is polling PING
    state = json.loads(state_file.read_text())
    began = time.perf_counter()
    for _ in range(presses):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.002)
    proc.wait()
    took = time.perf_counter() - began
    for pid in (state["pid"], state["supervisor_pid"]):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                raise RuntimeError(f"pid {pid} survived the cleanup")
        except psutil.NoSuchProcess:
            pass
    if state_file.exists():
        raise RuntimeError("the state file survived the cleanup")
    return took


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        exe = project / "bin" / "redis-server"
        exe.parent.mkdir()
        exe.write_text(f"#!{sys.executable}\n{SLOW_SERVER}")
        exe.chmod(0o755)
        for presses in (1, 2):
            times = [one_run(project, presses) for _ in range(RUNS)]
            print(
                f"Ctrl+C x{presses} while start waits for PING -> start exited, nothing left: "
                f"median {statistics.median(times) * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms ({RUNS} runs)"
            )


NAMES = ("interrupt.once", "interrupt.twice")


def rows(opts: Any, wanted: set[str]) -> list[Any]:
    """The harness's rows (benchmarks/run.py): Ctrl+C once / twice -> start exited, clean."""
    from benchmarks.harness import Goal, Row

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        exe = project / "bin" / "redis-server"
        exe.parent.mkdir()
        exe.write_text(f"#!{sys.executable}\n{SLOW_SERVER}")
        exe.chmod(0o755)
        for presses, name in ((1, "interrupt.once"), (2, "interrupt.twice")):
            if name not in wanted:
                continue
            row = Row(
                name,
                f"Ctrl+C x{presses} while start waits for PING -> start exited, nothing left",
                "s",
                Goal("ours", "<=", 1.0),
            )
            row.ours = [one_run(project, presses) for _ in range(opts.scaled(RUNS, 3))]
            out.append(row)
    return out


if __name__ == "__main__":
    main()
