"""Start and stop against their floors, and server throughput managed vs bare.

Rows:
- ``start``: ``invoke start`` to PONG vs the floor: a no-op ``invoke`` task in an empty folder
  plus the bare binary's exec-to-PONG (PING polled every 1 ms); goal <= 1.3.
- ``stop``: ``invoke stop`` vs a no-op task plus the bare server's SHUTDOWN-to-exit; <= 1.3.
- ``start.library``: ``start.start`` (Python, no Invoke) vs the bare exec-to-PONG; <= 3.0.
- ``throughput``: redis-benchmark SET/GET/LPUSH requests/s through the managed server vs
  the bare one; goal >= 0.95.
One project is started and stopped again and again, as a developer does. All series are
interleaved, one round each in turn. Run alone: ``python benchmarks/bench_lifecycle.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    ROOT,
    Goal,
    Options,
    Row,
    free_port,
    interleave,
    redis_server,
    run_quiet,
    timed,
)
from devserver.server import resp

NAMES = ("start", "stop", "start.library", "throughput")
NOOP_TASKS = "from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n"


def wait_ping(port: int, timeout: float = 10) -> None:
    """The bare baseline's readiness loop: PING every 1 ms until PONG."""
    import time

    deadline = time.perf_counter() + timeout
    while resp.ping("127.0.0.1", port, timeout=0.05) != "ready":
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the bare server on port {port} never answered PING")
        time.sleep(0.001)


def bare_argv(exe: str, port: int, data: Path) -> list[str]:
    """The same persistence settings the redis flavor runs with."""
    return [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
    ]


class BareServer:
    """The binary run directly: exec-to-PONG and SHUTDOWN-to-exit, the floors' server part."""

    def __init__(self, exe: str, data: Path) -> None:
        self.exe, self.data = exe, data
        self.up: list[float] = []
        self.down: list[float] = []

    def cycle(self) -> float:
        import time

        port = free_port()
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        began = time.perf_counter()
        proc = subprocess.Popen(bare_argv(self.exe, port, self.data), stdout=subprocess.DEVNULL)
        try:
            wait_ping(port)
            self.up.append(time.perf_counter() - began)
            began = time.perf_counter()
            try:
                resp.call("127.0.0.1", port, [["SHUTDOWN", "SAVE"]], timeout=10)
            except resp.ConnectionClosed:
                pass
            proc.wait(timeout=30)
            self.down.append(time.perf_counter() - began)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return self.up[-1]


def noop_project(work: Path) -> Path:
    folder = work / "noop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tasks.py").write_text(NOOP_TASKS)
    return folder


def time_noop(folder: Path) -> float:
    """The floor's Invoke part: start Python, import Invoke, load a one-task file, run it."""
    return timed(lambda: run_quiet([sys.executable, "-m", "invoke", "-r", str(folder), "noop"]))


def managed_env(project: Path, port: int) -> dict[str, str]:
    """Environment for ``invoke`` run in this repository against a throwaway project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(
        {
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(port),
            "INVOKE_SERVER_DATA_DIR": str(project / "data"),
            "INVOKE_SERVER_LOG_DIR": str(project / "logs"),
            "INVOKE_SERVER_BIN_DIR": str(project / "bin"),
            "NO_COLOR": "1",
        }
    )
    return env


def run_invoke(env: dict[str, str], *args: str) -> float:
    return timed(lambda: run_quiet([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env))


def library_settings(project: Path, port: int, binary: str = "") -> Any:
    from devserver.config import load_settings

    server = {
        "binary": binary,
        "flavor": "redis",
        "port": port,
        "data_dir": str(project / "data"),
        "log_dir": str(project / "logs"),
        "bin_dir": str(project / "bin"),
        "startup_timeout": 30,
        "stop_timeout": 10,
    }
    return load_settings({"server": server}, project)


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    exe = redis_server()
    start = Row(
        "start",
        "`invoke start` to PONG vs no-op invoke task + bare exec-to-PONG",
        "s",
        Goal("ratio", "<=", 1.3),
    )
    stop = Row(
        "stop",
        "`invoke stop` vs no-op invoke task + bare SHUTDOWN-to-exit",
        "s",
        Goal("ratio", "<=", 1.3),
    )
    lib = Row(
        "start.library",
        "process.start() to PONG vs bare exec-to-PONG",
        "s",
        Goal("ratio", "<=", 3.0),
    )
    tput = Row(
        "throughput",
        "redis-benchmark SET/GET/LPUSH req/s, managed vs bare",
        "req/s",
        Goal("ratio", ">=", 0.95),
    )
    out = [r for r in (start, stop, lib, tput) if r.name in wanted]
    if exe is None:
        for row in out:
            row.skipped = "no redis-server (apt-get install redis-server)"
        return out
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    try:
        if {"start", "stop"} & wanted:
            _cli_rows(opts, exe, work, start, stop)
        if "start.library" in wanted:
            _library_row(opts, exe, work, lib)
        if "throughput" in wanted:
            _throughput_row(opts, exe, work, tput)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _cli_rows(opts: Options, exe: str, work: Path, start: Row, stop: Row) -> None:
    noop = noop_project(work)
    bare = BareServer(exe, work / "bare")
    env = managed_env(work / "managed", free_port())
    stops: list[float] = []

    def cycle() -> float:
        seconds = run_invoke(env, "start")
        stops.append(run_invoke(env, "stop"))
        return seconds

    runs = opts.scaled(11, 5)
    got = interleave({"noop": lambda: time_noop(noop), "bare": bare.cycle, "ours": cycle}, runs)
    ups, downs = bare.up[-runs:], bare.down[-runs:]
    start.ours = got["ours"]
    start.baseline = [n + u for n, u in zip(got["noop"], ups, strict=True)]
    stop.ours = stops[-runs:]
    stop.baseline = [n + d for n, d in zip(got["noop"], downs, strict=True)]
    med = statistics.median
    for row, part in ((start, ups), (stop, downs)):
        row.note = f"no-op task {med(got['noop']) * 1000:.0f} ms + bare {med(part) * 1000:.1f} ms"


def _library_row(opts: Options, exe: str, work: Path, row: Row) -> None:
    from devserver.server.start import start as start_server
    from devserver.server.stop import stop as stop_server

    bare = BareServer(exe, work / "bare-lib")
    settings = library_settings(work / "library", free_port())

    def ours() -> float:
        seconds = timed(lambda: start_server(settings))
        stop_server(settings)
        return seconds

    got = interleave({"bare": bare.cycle, "ours": ours}, opts.scaled(15, 7))
    row.ours, row.baseline = got["ours"], got["bare"]


def redis_benchmark(port: int, requests: int) -> float:
    """Requests per second (mean over SET, GET, LPUSH) from redis-benchmark."""
    out = run_quiet(
        [
            "redis-benchmark",
            "-p",
            str(port),
            "-t",
            "set,get,lpush",
            "-n",
            str(requests),
            "-c",
            "20",
            "-q",
        ]
    ).stdout.decode()
    rates = [float(m) for m in re.findall(r"([\d.]+) requests per second", out)]
    if len(rates) != 3:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[-200:]!r}")
    return statistics.mean(rates)


def _throughput_row(opts: Options, exe: str, work: Path, row: Row) -> None:
    if not shutil.which("redis-benchmark"):
        row.skipped = "no redis-benchmark (apt-get install redis-tools)"
        return
    requests = opts.scaled(100_000, 30_000)
    env = managed_env(work / "throughput", free_port())
    port = int(env["INVOKE_SERVER_PORT"])

    def bare() -> float:
        bport = free_port()
        data = work / "bare-tp"
        data.mkdir(exist_ok=True)
        proc = subprocess.Popen(bare_argv(exe, bport, data), stdout=subprocess.DEVNULL)
        try:
            wait_ping(bport)
            return redis_benchmark(bport, requests)
        finally:
            proc.kill()
            proc.wait()

    def managed() -> float:
        run_invoke(env, "start")
        try:
            return redis_benchmark(port, requests)
        finally:
            run_invoke(env, "stop", "--no-save")

    got = interleave({"bare": bare, "ours": managed}, opts.scaled(5, 2), warmup=0)
    row.ours, row.baseline = got["ours"], got["bare"]


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
