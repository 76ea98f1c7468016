"""``invoke tail -n 50`` on a 1 GiB log vs a 1 MiB log: the cost must not grow with the size.

Target: the 1 GiB time within 1.2x of the 1 MiB time. Both logs end in the same 1 MiB of
real log lines; the 1 GiB one is made sparse in front of it (instant to create, no disk
used), which is fair because tail reads from the end and never touches the front. Measured
twice: the library call (median of many) and the whole CLI as a user runs it (median of a
few; dominated by Python and Invoke start-up). The files live under /tmp and are deleted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.tail import last_lines  # noqa: E402

TARGET = 1.2
GIB, MIB = 1 << 30, 1 << 20


def make_logs(base: Path) -> dict[str, Path]:
    line = b"[2026-11-25 20:00:00] 4044:M 25 Nov 2026 20:00:00.000 * Background saving %07d\n"
    body = b"".join(line % i for i in range(MIB // len(line % 0) + 1))[-MIB:]
    body = body[body.index(b"\n") + 1 :]  # start at a line boundary
    paths = {}
    for name, size in (("1 MiB", MIB), ("1 GiB", GIB)):
        folder = base / name.replace(" ", "")
        (folder / "logs").mkdir(parents=True)
        path = folder / "logs" / "redis.log"
        with open(path, "wb") as handle:
            handle.truncate(size - len(body))  # sparse: no newline, never read by tail
            handle.seek(0, os.SEEK_END)
            handle.write(body)
        paths[name] = path
    return paths


def library_seconds(path: Path, runs: int = 300) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        lines = last_lines(path, 50)
        times.append(time.perf_counter() - began)
        assert len(lines) == 50
    return statistics.median(times)


def cli_seconds(path: Path, runs: int = 7) -> float:
    env = dict(
        os.environ,
        NO_COLOR="1",
        INVOKE_SERVER_FLAVOR="redis",
        INVOKE_SERVER_LOG_DIR=str(path.parent),
        INVOKE_SERVER_DATA_DIR=str(path.parent.parent / "data"),
    )
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "invoke", "tail", "-n", "50"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
        ).stdout
        times.append(time.perf_counter() - began)
        assert out.count(b"\n") == 50
    return statistics.median(times)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="bench_tail_", dir="/tmp"))
    try:
        paths = make_logs(base)
        lib = {name: library_seconds(path) for name, path in paths.items()}
        cli = {name: cli_seconds(path) for name, path in paths.items()}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = True
    for label, figures in (("library last_lines(50)", lib), ("invoke tail -n 50 (CLI)", cli)):
        ratio = figures["1 GiB"] / figures["1 MiB"]
        ok &= ratio <= TARGET
        print(
            f"{label:26} 1 MiB: {figures['1 MiB'] * 1000:8.3f} ms   "
            f"1 GiB: {figures['1 GiB'] * 1000:8.3f} ms   ratio {ratio:.2f} "
            f"(target <= {TARGET}) {'ok' if ratio <= TARGET else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
