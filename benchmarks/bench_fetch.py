"""Benchmark `invoke fetch` on a 200 MB release asset served from 127.0.0.1.

Three figures, each against the target in issue 3:
1. wall time of a fetch (download + sha256 + verify + safe unpack + install) versus
   `curl -o`, `sha256sum`, `tar -x` run one after another: hashing while streaming should
   make fetch no slower;
2. the fetch process's peak RSS (from os.wait4's rusage of that one child): under 120 MB,
   proving the archive is streamed, never held in memory;
3. `invoke fetch` with the binary installed versus the `invoke --list` floor (start Python,
   import invoke, load tasks.py): at most 100 ms more, proving the fast path stays offline
   and imports nothing heavy.

Run: python benchmarks/bench_fetch.py [--size-mb 200] [--rounds 3]. Exit 1 if a target fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver import compat  # noqa: E402
from tests.fakegithub import FakeGitHub  # noqa: E402

FETCH_CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from devserver.config import load_settings
from devserver.release import FetchOptions, fetch
settings = load_settings({{"server": {{"flavor": "dragonfly", "bin_dir": {bin_dir!r}}}}},
                         Path({project!r}))
result = fetch(settings, FetchOptions(url={url!r}, sha256={sha!r}))
assert result.action == "installed", result
"""


def make_asset(work: Path, size_mb: int) -> tuple[Path, str]:
    """A tar.gz holding one incompressible "binary" of size_mb (the archive is as large)."""
    exe = work / f"dragonfly-{compat.cpu_arch()}"
    with open(exe, "wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(1 << 20))
    archive = work / f"dragonfly-{compat.cpu_arch()}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(exe, arcname=exe.name)
    exe.unlink()
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return archive, digest.hexdigest()


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process, via wait4's per-child rusage."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{argv[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def baseline(url: str, work: Path, n: int) -> float:
    out = work / f"curl-{n}"
    out.mkdir()
    script = (
        f"curl -sSf -o {out}/a.tar.gz {url} && sha256sum {out}/a.tar.gz >/dev/null "
        f"&& tar -xzf {out}/a.tar.gz -C {out}"
    )
    wall, _ = run_measured(["sh", "-c", script])
    return wall


def fetch_once(url: str, sha: str, work: Path, n: int) -> tuple[float, float, Path]:
    project = work / f"proj-{n}"
    project.mkdir()
    code = FETCH_CHILD.format(
        root=str(ROOT), bin_dir=str(project / "bin"), project=str(project), url=url, sha=sha
    )
    wall, rss = run_measured([sys.executable, "-c", code])
    return wall, rss, project


def median_wall(argv: list[str], env: dict[str, str], rounds: int) -> float:
    return statistics.median(run_measured(argv, env)[0] for _ in range(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        archive, sha = make_asset(work, args.size_mb)
        size = archive.stat().st_size
        print(
            f"asset: {archive.name}, {size / 2**20:.0f} MiB "
            f"(built in {time.perf_counter() - began:.1f}s)"
        )
        with FakeGitHub() as gh:
            url = gh.asset(archive.name, archive)
            curl_times, fetch_times, rss = [], [], []
            project = work
            for n in range(args.rounds):  # alternate, so both see the same page cache
                curl_times.append(baseline(url, work, n))
                wall, peak, project = fetch_once(url, sha, work, n)
                fetch_times.append(wall)
                rss.append(peak)
                for sub in (work / f"curl-{n}",):
                    subprocess.run(["rm", "-rf", str(sub)], check=True)
        curl_s, fetch_s, peak_mb = (
            statistics.median(curl_times),
            statistics.median(fetch_times),
            max(rss),
        )
        print(f"curl + sha256sum + tar -x : median {curl_s:.2f}s  {fmt(curl_times)}")
        print(
            f"fetch (python, all steps) : median {fetch_s:.2f}s  {fmt(fetch_times)}  "
            f"{size / 2**20 / fetch_s:.0f} MiB/s"
        )
        print(f"fetch peak RSS            : {peak_mb:.1f} MiB (target < 120)")

        env = {
            **os.environ,
            "INVOKE_SERVER_BIN_DIR": str(project / "bin"),
            "INVOKE_SERVER_FLAVOR": "dragonfly",
            "INVOKE_RELEASE_GITHUB_API": "http://127.0.0.1:9",
        }
        invoke = [sys.executable, "-m", "invoke", "-r", str(ROOT)]
        rounds = max(5, args.rounds)
        median_wall([*invoke, "--list"], env, 1)  # warm the bytecode caches
        floor = median_wall([*invoke, "--list"], env, rounds)
        installed = median_wall([*invoke, "fetch"], env, rounds)
        print(f"invoke --list (floor)     : median {floor * 1000:.0f} ms")
        print(
            f"invoke fetch (installed)  : median {installed * 1000:.0f} ms "
            f"(+{(installed - floor) * 1000:.0f} ms, target <= +100 ms)"
        )

    checks = {
        "fetch no slower than curl+sha256sum+tar": fetch_s <= curl_s,
        "peak RSS under 120 MiB": peak_mb < 120,
        "installed fetch within floor + 100 ms": installed <= floor + 0.100,
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
