"""``invoke tail -n 50`` on a 1 GiB log vs a 1 MiB log: the cost must not grow with the size.

Rows: ``tail`` (the whole CLI as a user runs it, dominated by Python and Invoke start-up) and
``tail.library`` (the ``last_lines`` call alone); goal: the 1 GiB time within 1.2x of the
1 MiB time. Both logs end in the same 1 MiB of
real log lines; the 1 GiB one is made sparse in front of it (instant to create, no disk
used), which is fair because tail reads from the end and never touches the front. Measured
interleaved, 1 MiB and 1 GiB in turn. The files live in a temp folder and are deleted.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, Goal, Options, Row, interleave, run_quiet, timed
from devserver.tail import last_lines

NAMES = ("tail", "tail.library")
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


def library_seconds(path: Path, calls: int = 50) -> float:
    """One sample: the mean of ``calls`` back-to-back calls (one call is ~0.1 ms)."""
    began = time.perf_counter()
    for _ in range(calls):
        lines = last_lines(path, 50)
    assert len(lines) == 50
    return (time.perf_counter() - began) / calls


def cli_seconds(path: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(
        NO_COLOR="1",
        INVOKE_SERVER_FLAVOR="redis",
        INVOKE_SERVER_LOG_DIR=str(path.parent),
        INVOKE_SERVER_DATA_DIR=str(path.parent.parent / "data"),
    )
    out: list[bytes] = []
    argv = [sys.executable, "-m", "invoke", "tail", "-n", "50"]
    seconds = timed(lambda: out.append(run_quiet(argv, cwd=ROOT, env=env).stdout))
    printed = out[0].count(b"\n")
    if printed != 50:
        raise RuntimeError(f"invoke tail -n 50 printed {printed} lines")
    return seconds


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    out = []
    base = Path(tempfile.mkdtemp(prefix="bench_tail_"))
    try:
        paths = make_logs(base)
        for name, measure, runs in (
            ("tail", cli_seconds, opts.scaled(9, 3)),
            ("tail.library", library_seconds, opts.scaled(31, 11)),
        ):
            if name not in wanted:
                continue
            what = "`invoke tail -n 50` on a 1 GiB log vs a 1 MiB log"
            if name == "tail.library":
                what = "last_lines(50) on a 1 GiB log vs a 1 MiB log"
            row = Row(name, what, "s", Goal("ratio", "<=", 1.2))
            series = {size: functools.partial(measure, path) for size, path in paths.items()}
            got = interleave(series, runs)
            row.ours, row.baseline = got["1 GiB"], got["1 MiB"]
            out.append(row)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
