"""The supervisor's resident memory after a million logged lines: bounded, and not growing.

Row ``memory``: the supervisor (``launch.supervisor_command()``, spec on stdin as
``invoke start`` sends it) tees a producer that prints 100,000 lines, pauses, then 900,000
more, then pauses again; the supervisor's RSS is read at both pauses. Ours is the RSS after
the million lines, the baseline the RSS after the first 100,000; goals: ours <= 40 MiB, and
no growth (ratio <= 1.1). The log rotates on the way (invoke.yaml's 10 MiB x 5 backups).
Run alone: ``python benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_tee
from benchmarks.harness import ROOT, Goal, Options, Row
from devserver.supervisor.launch import supervisor_command, supervisor_env
from devserver.supervisor.wire import encode_spec
from devserver.tail import last_lines

NAMES = ("memory",)
PRODUCER = """
import os, sys, time
out = sys.stdout.buffer
def lines(first, count):
    for start in range(first, first + count, 10000):
        out.write(b"".join(b"request %09d handled in 0.1 ms\\n" % i
                           for i in range(start, min(start + 10000, first + count))))
    out.flush()
def pause(n):
    out.write(b"phase %d done\\n" % n); out.flush()
    while not os.path.exists(sys.argv[1] + str(n)):
        time.sleep(0.01)
lines(0, 100000); pause(1)
lines(100000, 900000); pause(2)
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(text in line for line in last_lines(log, 3)):
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the supervisor exited early ({proc.returncode})")
        time.sleep(0.05)
    raise RuntimeError(f"no {text!r} in the log after {timeout:g}s")


def one_run(base: Path) -> tuple[float, float]:
    """(RSS MiB after 100k lines, after 1M lines) of one supervisor."""
    shutil.rmtree(base, ignore_errors=True)
    (base / "logs").mkdir(parents=True)
    script = base / "producer.py"
    script.write_text(PRODUCER)
    flag = str(base / "go")
    spec = bench_tee.spec(base, script)
    spec["argv"] = spec["public_argv"] = [sys.executable, str(script), flag]
    spec["log_backups"] = 5
    proc = subprocess.Popen(
        supervisor_command(sys.executable), cwd=ROOT, env=supervisor_env(), stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(encode_spec(spec) + bench_tee.HANDOVER)
        proc.stdin.close()
        log = Path(spec["log_file"])
        wait_for(log, "phase 1 done", proc)
        first = rss_mib(proc.pid)
        Path(flag + "1").touch()
        wait_for(log, "phase 2 done", proc)
        second = rss_mib(proc.pid)
        Path(flag + "2").touch()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return first, second


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    row = Row(
        "memory",
        "supervisor RSS after 1,000,000 logged lines vs after 100,000",
        "MiB",
        Goal("ours", "<=", 40),
    )
    if not Path("/proc/self/status").exists():
        row.skipped = "needs /proc (Linux)"
        return [row]
    base = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        for _ in range(opts.scaled(3, 1)):
            first, second = one_run(base / "run")
            row.baseline.append(first)
            row.ours.append(second)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    growth = max(o / b for o, b in zip(row.ours, row.baseline, strict=True))
    row.extra.append(("no growth (ratio <= 1.1)", growth <= 1.1))
    return [row]


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
