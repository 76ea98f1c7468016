"""``fetch`` of a 200 MiB release asset served from 127.0.0.1, against the same job done
with the public tools one after another (``curl -o``, ``sha256sum``, ``tar -x``).

Rows: ``fetch`` (wall time of download + sha256 + verify + safe unpack + install vs the
pipeline; goal <= 1.0: hashing while streaming should make fetch no slower) and
``fetch.rss`` (the fetch process's peak RSS from os.wait4's rusage; goal <= 120 MiB, which
proves the archive is streamed, never held in memory; the pipeline's peak is the baseline
shown). A missing curl, sha256sum or tar makes both rows "skipped".
Run alone: ``python benchmarks/bench_fetch.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, Goal, Options, Row
from devserver.system import host

NAMES = ("fetch", "fetch.rss")

FETCH_CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from devserver.config import load_settings
from devserver.fetch.options import FetchOptions
from devserver.fetch.release import fetch
settings = load_settings({{"server": {{"flavor": "dragonfly", "bin_dir": {bin_dir!r}}}}},
                         Path({project!r}))
result = fetch(settings, FetchOptions(url={url!r}, sha256={sha!r}))
assert result.action == "installed", result
"""


def make_asset(work: Path, size_mb: int) -> tuple[Path, str]:
    """A tar.gz holding one incompressible "binary" of size_mb (the archive is as large)."""
    exe = work / f"dragonfly-{host.cpu_arch()}"
    with open(exe, "wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(1 << 20))
    archive = work / f"dragonfly-{host.cpu_arch()}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(exe, arcname=exe.name)
    exe.unlink()
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return archive, digest.hexdigest()


# A small launcher between us and the measured child: a child spawned straight from this
# (large) process would inherit its resident size as the floor of its own peak (vfork), so
# wait4's figure would be ours, not the child's.
LAUNCHER = """
import os, sys, time
began = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - began
code = os.waitstatus_to_exitcode(status)
sys.stderr.write("\\nbench-rusage %d %f %d\\n" % (code, wall, usage.ru_maxrss))
"""


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process, via wait4's per-child rusage."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    if not lines or not lines[-1].startswith("bench-rusage "):
        raise RuntimeError(f"{argv[:3]} failed: {' / '.join(lines[-3:])}")
    code, wall, maxrss = lines[-1].split()[1:]
    if int(code) != 0:
        raise RuntimeError(f"{argv[:3]} failed: {' / '.join(lines[-4:-1])}")
    return float(wall), int(maxrss) / 1024  # Linux reports KiB


def baseline(url: str, work: Path, n: int) -> tuple[float, float]:
    out = work / f"curl-{n}"
    out.mkdir()
    script = (
        f"curl -sSf -o {out}/a.tar.gz {url} && sha256sum {out}/a.tar.gz >/dev/null "
        f"&& tar -xzf {out}/a.tar.gz -C {out}"
    )
    return run_measured(["sh", "-c", script])


def fetch_once(url: str, sha: str, work: Path, n: int) -> tuple[float, float, Path]:
    project = work / f"proj-{n}"
    project.mkdir()
    code = FETCH_CHILD.format(
        root=str(ROOT), bin_dir=str(project / "bin"), project=str(project), url=url, sha=sha
    )
    wall, rss = run_measured([sys.executable, "-c", code])
    return wall, rss, project


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    timing = Row(
        "fetch",
        "fetch of 200 MiB from a local HTTP server vs curl + sha256sum + tar -x",
        "s",
        Goal("ratio", "<=", 1.0),
    )
    rss = Row(
        "fetch.rss",
        "peak RSS of that fetch (baseline: the pipeline's)",
        "MiB",
        Goal("ours", "<=", 120),
    )
    out = [r for r in (timing, rss) if r.name in wanted]
    missing = [tool for tool in ("curl", "sha256sum", "tar") if not shutil.which(tool)]
    if missing:
        for row in out:
            row.skipped = f"no {', '.join(missing)} on PATH"
        return out
    from tests.fakegithub import FakeGitHub

    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        archive, sha = make_asset(work, 200)
        with FakeGitHub() as gh:
            url = gh.asset(archive.name, archive)
            warmup = 0 if opts.quick else 1  # the asset was just written: already cached
            for n in range(warmup + opts.scaled(5, 2)):  # alternate: the same page cache
                curl_wall, curl_rss = baseline(url, work, n)
                wall, peak, project = fetch_once(url, sha, work, n)
                shutil.rmtree(work / f"curl-{n}", ignore_errors=True)
                shutil.rmtree(project, ignore_errors=True)
                if n < warmup:
                    continue
                timing.ours.append(wall)
                timing.baseline.append(curl_wall)
                rss.ours.append(peak)
                rss.baseline.append(curl_rss)
    return out


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
