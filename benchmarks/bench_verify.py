"""``invoke verify`` against its own work done at the bare redis-py rate, and its PING p50.

Rows, both against a bare redis-server the bench starts on a free port:
- ``verify``: wall time of ``invoke verify --json --url ...`` vs the floor: a no-op
  ``invoke`` task plus the same commands verify sends (the checks' PING/SET/GET/queue round
  trips, the 0.2 s empty-BRPOP wait, 200 timed iterations per operation (15 connects), the
  cleanup) sent
  by a plain redis-py client in this process; goal <= 1.5.
- ``verify.ping-p50``: the PING p50 verify reports vs the p50 of a bare redis-py PING loop of
  the same length; goal <= 1.3.
Run alone: ``python benchmarks/bench_verify.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_lifecycle import bare_argv, noop_project, time_noop, wait_ping
from benchmarks.harness import ROOT, Goal, Options, Row, free_port, interleave, redis_server

NAMES = ("verify", "verify.ping-p50")
ITERATIONS = 200  # invoke.yaml's verify.iterations
CONNECT_SAMPLES = 15  # devserver/verify/latency.py


def bare_work(port: int, iterations: int = ITERATIONS) -> float:
    """The commands verify sends, from a plain redis-py client: seconds for all of them."""
    import redis

    began = time.perf_counter()
    client = redis.Redis(host="127.0.0.1", port=port)
    pool = client.connection_pool
    value, big = b"x" * 64, os.urandom(64 * 1024)

    def connect() -> None:
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()
        conn.disconnect()

    connect()
    client.ping()
    client.ping()
    client.info("server")
    for name, data in (("text", "héllo ✓".encode()), ("binary", bytes(range(256))), ("large", big)):
        client.set(f"bench:{name}", data, ex=600)
        client.get(f"bench:{name}")
    client.lpush("bench:queue", b"a", b"b", b"c")
    client.expire("bench:queue", 600)
    client.llen("bench:queue")
    client.brpop(["bench:queue"], timeout=1)
    client.lrange("bench:queue", 0, -1)
    client.brpop(["bench:empty"], timeout=0.2)
    ops = (
        connect,
        client.ping,
        lambda: client.set("bench:s", value, ex=600),
        lambda: client.get("bench:s"),
        lambda: client.lpush("bench:q", value),
        lambda: client.brpop(["bench:q"], timeout=1),
    )
    for op in ops:  # verify times at most 15 connects; every other operation `iterations` times
        for _ in range((min(iterations, CONNECT_SAMPLES) if op is connect else iterations) + 1):
            op()
    keys = ["bench:text", "bench:binary", "bench:large", "bench:queue", "bench:s", "bench:q"]
    client.delete(*keys)
    client.exists(*keys)
    client.close()
    return time.perf_counter() - began


def bare_ping_p50_ms(port: int, iterations: int = ITERATIONS) -> float:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    client.ping()
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - began) * 1000)
    client.close()
    return statistics.median(samples)


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    total = Row(
        "verify",
        "`invoke verify` vs no-op invoke task + the same commands from bare redis-py",
        "s",
        Goal("ratio", "<=", 1.5),
    )
    ping = Row(
        "verify.ping-p50",
        "PING p50 reported by verify vs a bare redis-py PING loop",
        "ms",
        Goal("ratio", "<=", 1.3),
    )
    out = [r for r in (total, ping) if r.name in wanted]
    exe = redis_server()
    if exe is None:
        for row in out:
            row.skipped = "no redis-server (apt-get install redis-server)"
        return out
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    port = free_port()
    (work / "data").mkdir()
    server = subprocess.Popen(bare_argv(exe, port, work / "data"), stdout=subprocess.DEVNULL)
    try:
        wait_ping(port)
        noop = noop_project(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
        argv = [
            sys.executable,
            "-m",
            "invoke",
            "verify",
            "--json",
            "--url",
            f"redis://127.0.0.1:{port}",
        ]
        reported: list[float] = []

        def ours() -> float:
            began = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True)
            seconds = time.perf_counter() - began
            report: dict[str, Any] = json.loads(done.stdout or b"{}")
            # A busy machine can miss verify's p99 thresholds (exit 1): the run still did
            # all its work, so it counts; any other failed check does not.
            failed = {c["name"] for c in report.get("checks", []) if not c["ok"]}
            if not report.get("checks") or failed - {"latency"}:
                raise RuntimeError(f"verify failed against the bare server: {failed or report}")
            if failed:
                total.note = "verify's own p99 thresholds were missed on this busy machine"
            reported.append(float(report["latency_ms"]["ping"]["p50"]))
            return seconds

        pings: list[float] = []

        def bare_pings() -> float:
            pings.append(bare_ping_p50_ms(port))
            return 0.0

        got = interleave(
            {
                "noop": lambda: time_noop(noop),
                "work": lambda: bare_work(port),
                "ping": bare_pings,
                "ours": ours,
            },
            opts.scaled(9, 5),
        )
        runs = len(got["ours"])
        total.ours = got["ours"]
        total.baseline = [n + w for n, w in zip(got["noop"], got["work"], strict=True)]
        total.note += (
            ("; " if total.note else "")
            + f"no-op task {statistics.median(got['noop']) * 1000:.0f} ms + bare work "
            f"{statistics.median(got['work']) * 1000:.0f} ms"
        )
        ping.ours, ping.baseline = reported[-runs:], pings[-runs:]
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
