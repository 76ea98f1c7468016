"""The whole test suite under the winpython layer's Windows CPython: ``wine.py pytest ARGS``.

Why: the suite proves the tool's guarantees, and the tool exists for Windows developers; the
GitHub workflow runs it on real Windows, but nothing here ran it before a push. This runs
``pytest ARGS`` with the cached Windows interpreter (tests/winpython/wine.py) on this very
tree, seen by Windows under ``Z:``, with:
- a venv of its own (``testvenv-<key>``): the requirements plus the test tools pinned in
  requirements-dev.txt, installed offline from win_amd64 wheels (``testwheels-<key>``), so
  the lifecycle layer's venv stays what start_dev.bat's users get;
- a Windows ``redis-server.exe`` on PATH for the integration tests: tests/winpython/
  resp_server.c built by mingw (cached by the source's hash);
- a private copy of the cached Wine prefix, killed (``wineserver -k``) at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.winpython import wine

# The test tools from requirements-dev.txt that the suite needs at run time (not ruff, mypy,
# the stubs: those check the source, which the Linux run does).
TEST_TOOLS = ("pytest", "pytest-xdist", "execnet", "setuptools")


def test_requirements() -> str:
    """The pinned lines of :data:`TEST_TOOLS` from requirements-dev.txt (one source of pins)."""
    kept = []
    for line in (wine.ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines():
        name = line.split("==", 1)[0].strip().lower()
        if "==" in line and name in TEST_TOOLS:
            kept.append(line.strip())
    return "\n".join(kept) + "\n"


def _test_wheels(cache: Path, tools: str) -> Path:
    return wine.wheelhouse(cache, tools, "testwheels", "requirements-test.txt")


def _test_venv(ready: wine.Prepared, tools: Path, key: str) -> Path:
    venv = ready.cache / f"testvenv-{key}"
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    with wine.session_prefix(ready.prefix, ready.cache / ".prefix-testvenv") as env:
        wine.run_wine([str(ready.python), "-m", "venv", wine.z_path(venv)], env, timeout=600)
        pip = [str(venv / "Scripts" / "python.exe"), "-m", "pip", "install", "-q", "--no-index"]
        links = ["--find-links", wine.z_path(ready.wheels), "--find-links", wine.z_path(tools)]
        requirements = [
            "-r",
            wine.z_path(ready.wheels / "requirements-windows.txt"),
            "-r",
            wine.z_path(tools / "requirements-test.txt"),
        ]
        wine.run_wine([*pip, *links, *requirements], env, timeout=900)
    (venv / ".complete").touch()
    return venv


def _server(cache: Path) -> Path:
    """``redis-server.exe`` (resp_server.c), rebuilt when the source changes."""
    digest = hashlib.sha256(wine.SERVER_SOURCE.read_bytes()).hexdigest()[:12]
    folder = cache / f"server-{digest}"
    exe = folder / "redis-server.exe"
    if not exe.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        wine.build_server(folder / "building" / "redis-server.exe")
        (folder / "building" / "redis-server.exe").rename(exe)
        shutil.rmtree(folder / "building", ignore_errors=True)
    return folder


def prepare_suite() -> tuple[wine.Prepared, Path, Path]:
    """The layer's cache plus the test venv and the server folder (fast when cached)."""
    ready = wine.prepare()
    tools = test_requirements()
    with wine._locked(ready.cache):
        wheels = _test_wheels(ready.cache, tools)
        key = wine._key(wine.windows_requirements() + tools)
        venv = _test_venv(ready, wheels, key)
        server = _server(ready.cache)
    return ready, venv, server


def _relay(stream: IO[bytes], sink: IO[bytes]) -> None:
    for block in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        sink.write(block)
        sink.flush()


def run_pytest(args: Sequence[str]) -> int:
    """pytest ARGS under the Windows interpreter on this tree; its exit code."""
    ready, venv, server = prepare_suite()
    with (
        tempfile.TemporaryDirectory(prefix="devserver-winsuite-") as work,
        wine.session_prefix(ready.prefix, Path(work) / "prefix") as env,
    ):
        # WINEPATH is prepended to the Windows PATH: the integration tests find the server.
        env["WINEPATH"] = wine.z_path(server)
        env["PYTHONUNBUFFERED"] = "1"
        for name in ("CI", "SOAK_MINUTES"):
            if name in os.environ:
                env[name] = os.environ[name]
        argv = [str(venv / "Scripts" / "python.exe"), "-m", "pytest", "-p", "no:cacheprovider"]
        proc = wine.popen_wine([*argv, *args], env, cwd=wine.ROOT)
        # Relay output as it comes, and end with the process, not with its pipes (a
        # detached process of a test may inherit them under Wine: wine.finish says why).
        relays = [
            threading.Thread(target=_relay, args=(src, dst), daemon=True)
            for src, dst in ((proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer))
        ]
        for relay in relays:
            relay.start()
        code = proc.wait()
        for relay in relays:
            relay.join(timeout=2.0)
    return code


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the prefix's processes are killed on the way out


def main(args: Sequence[str]) -> int:
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        code = run_pytest(args)
    except wine.Missing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Windows suite: pytest exited {code} after {time.monotonic() - began:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
