"""A release API that accepts connections and never answers.

Such a proxy used to cost 124 silent seconds on every `fetch`/`up` with flavor auto and no
Dragonfly installed. Now fetch says at once what it contacts, gives up within
release.lookup_timeout (shortened here), falls back to the local Redis, and remembers the
failure so the next runs do not wait again. No timing is asserted: the subprocess timeout
only guards against a hang.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_cli import env_for


class SilentServer:
    """Accepts every connection, reads nothing, answers nothing, until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture()
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _fetch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "fetch", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,  # a hang guard only: the old code took 120 s and more here
    )


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a local redis-server")
def test_silent_api_falls_back_quickly_and_is_not_asked_again(
    project: Path, silent: SilentServer
) -> None:
    env = env_for(
        project,
        6379,
        INVOKE_SERVER_FLAVOR="auto",
        INVOKE_RELEASE_GITHUB_API=f"http://127.0.0.1:{silent.port}",
        INVOKE_RELEASE_LOOKUP_TIMEOUT="1",
    )
    first = _fetch(env)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0].startswith("looking up the latest DragonflyDB release at ")  # said first
    assert f"127.0.0.1:{silent.port}" in lines[0] and "gives up after 1 s" in lines[0]
    assert "release unreachable" in first.stderr and "using the local redis" in first.stderr
    assert "server.flavor: redis" in first.stderr  # how to skip the lookup
    assert silent.accepted >= 1
    assert (project / "bin" / ".release-lookup-failed.json").is_file()

    asked = silent.accepted
    second = _fetch(env)
    assert second.returncode == 0, second.stderr
    assert silent.accepted == asked  # the remembered failure: no network this time
    # The same situation as the first run: said in one line, no warning or hint again.
    [line] = second.stderr.splitlines()
    assert line.startswith("release still unreachable (last asked ") and "next in " in line
    assert "using the local redis" in line and "again" in line and "fetch --force" in line

    forced = _fetch(env, "--force")  # asks again at once
    assert forced.returncode == 0, forced.stderr
    assert silent.accepted > asked and "looking up" in forced.stderr
    assert "warning:" not in forced.stderr  # still unreachable, still the same local server


def test_silent_api_with_an_explicit_flavor_fails_in_one_line(
    project: Path, silent: SilentServer
) -> None:
    env = env_for(
        project,
        6379,
        INVOKE_SERVER_FLAVOR="dragonfly",
        INVOKE_RELEASE_GITHUB_API=f"http://127.0.0.1:{silent.port}",
        INVOKE_RELEASE_LOOKUP_TIMEOUT="1",
    )
    result = _fetch(env)
    assert result.returncode == 1
    assert "timed out" in result.stderr and "Traceback" not in result.stderr
    assert "looking up" in result.stderr.splitlines()[0]
