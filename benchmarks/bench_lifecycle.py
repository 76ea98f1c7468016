"""Lifecycle benchmark: ``invoke start``/``stop`` against their floors, and the tee's cost.

Targets (issue "Core lifecycle"):
- ``invoke start`` to PONG within 1.5x of (no-op ``invoke`` task + bare server exec-to-PONG)
- ``invoke stop`` within 1.5x of (no-op ``invoke`` task + bare SHUTDOWN-to-exit)
- redis-benchmark throughput through the managed server within 10% of the bare server
All figures are medians of interleaved runs on free ports; nothing here is a unit test.
Run: ``invoke bench --only lifecycle`` (or ``python benchmarks/bench_lifecycle.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver import resp  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "7"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        from devserver.binaries import bundled_redis

        bundled = bundled_redis()
        if bundled is None:
            sys.exit("no redis-server found")
        found = str(bundled)
    return found


def wait_ping(port: int, timeout: float = 10) -> None:
    deadline = time.perf_counter() + timeout
    while resp.ping("127.0.0.1", port, timeout=0.05) != "ready":
        if time.perf_counter() > deadline:
            raise RuntimeError("server never answered")
        time.sleep(0.001)


def bare_argv(exe: str, port: int, data: Path) -> list[str]:
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


def time_list() -> float:
    """This project's own task-loading cost: tasks.py imported, invoke.yaml parsed."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", "--list"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - began


def time_noop(workdir: Path) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "invoke", "-r", str(workdir), "noop"], check=True)
    return time.perf_counter() - began


def time_bare(exe: str, data: Path) -> tuple[float, float]:
    """(exec-to-PONG, SHUTDOWN-to-exit) of the server run directly."""
    port = free_port()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    began = time.perf_counter()
    proc = subprocess.Popen(bare_argv(exe, port, data), stdout=subprocess.DEVNULL)
    wait_ping(port)
    up = time.perf_counter() - began
    began = time.perf_counter()
    try:
        resp.call("127.0.0.1", port, [["SHUTDOWN", "SAVE"]], timeout=10)
    except resp.ConnectionClosed:
        pass
    proc.wait()
    return up, time.perf_counter() - began


def managed_env(project: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(port),
            "INVOKE_SERVER_DATA_DIR": str(project / "data"),
            "INVOKE_SERVER_LOG_DIR": str(project / "logs"),
            "INVOKE_SERVER_BIN_DIR": str(project / "bin"),
        }
    )
    return env


def run_invoke(env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def redis_benchmark(port: int) -> float:
    """Requests per second (mean over SET, GET, LPUSH) from redis-benchmark."""
    out = subprocess.run(
        [
            "redis-benchmark",
            "-p",
            str(port),
            "-t",
            "set,get,lpush",
            "-n",
            "50000",
            "-c",
            "20",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rates = [float(m) for m in re.findall(r"([\d.]+) requests per second", out)]
    return statistics.mean(rates)


def main() -> None:
    exe = redis_server()
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    (work / "noop").mkdir()
    (work / "noop" / "tasks.py").write_text(
        "from invoke import task\n\n@task\ndef noop(c):\n    pass\n"
    )
    noop, listing, bare_up, bare_down, start, stop = [], [], [], [], [], []
    try:
        for _ in range(RUNS):  # interleaved, so machine noise hits all series alike
            noop.append(time_noop(work / "noop"))
            listing.append(time_list())
            up, down = time_bare(exe, work / "bare")
            bare_up.append(up)
            bare_down.append(down)
            # One project, started and stopped again and again, as a developer does; its first
            # start also pays for asking the binary its version (cached afterwards).
            env = managed_env(work / "managed", free_port())
            start.append(run_invoke(env, "start"))
            stop.append(run_invoke(env, "stop"))
        med = statistics.median
        floor_start = med(noop) + med(bare_up)
        floor_stop = med(noop) + med(bare_down)
        print(f"no-op invoke task           {med(noop) * 1000:7.1f} ms")
        print(f"bare redis exec-to-PONG     {med(bare_up) * 1000:7.1f} ms")
        print(f"bare SHUTDOWN-to-exit       {med(bare_down) * 1000:7.1f} ms")
        print(
            f"invoke start (to PONG)      {med(start) * 1000:7.1f} ms  = "
            f"{med(start) / floor_start:.2f}x floor (target <= 1.5x)"
        )
        project_floor = med(listing) + med(bare_up)
        print(
            f"  vs this project's `invoke --list` ({med(listing) * 1000:.1f} ms) + bare: "
            f"{med(start) / project_floor:.2f}x"
        )
        print(
            f"invoke stop                 {med(stop) * 1000:7.1f} ms  = "
            f"{med(stop) / floor_stop:.2f}x floor (target <= 1.5x)"
        )

        if shutil.which("redis-benchmark"):
            bare_rates, managed_rates = [], []
            project = work / "throughput"
            port = free_port()
            env = managed_env(project, port)
            for _ in range(3):
                bport = free_port()
                (work / "bare-tp").mkdir(exist_ok=True)
                proc = subprocess.Popen(
                    bare_argv(exe, bport, work / "bare-tp"), stdout=subprocess.DEVNULL
                )
                wait_ping(bport)
                bare_rates.append(redis_benchmark(bport))
                proc.kill()
                proc.wait()
                run_invoke(env, "start")
                managed_rates.append(redis_benchmark(port))
                run_invoke(env, "stop", "--no-save")
            ratio = med(managed_rates) / med(bare_rates)
            print(f"redis-benchmark bare        {med(bare_rates):9.0f} req/s")
            print(
                f"redis-benchmark managed     {med(managed_rates):9.0f} req/s  = "
                f"{ratio:.2f}x bare (target >= 0.90x)"
            )
        else:
            print("redis-benchmark not found (apt-get install redis-tools): throughput skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
