"""`invoke up / down / env / api` as a user runs them: real Invoke, a real redis-server.

Each test works in a temp copy of the project (so bin/, data/, logs/ and .env are its own)
with the redis flavor and a free port, and stops what it started in a finalizer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, kill_recorded

ROOT = Path(__file__).resolve().parents[2]


class Project:
    """A throwaway copy of the project and the environment its tasks run with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")},
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(self.port),
            "INVOKE_VERIFY_ITERATIONS": "20",
            "NO_COLOR": "1",
            **{
                f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "1000"
                for op in ("connect", "ping", "set", "get", "lpush", "brpop")
            },
        }

    def invoke(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )

    def kill_leftovers(self) -> None:
        """Stop the server; if that fails, kill by the PIDs the state file names."""
        self.invoke("down")
        kill_recorded(self.root / "data" / "server.json")


@pytest.fixture()
def proj(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "copy"
    root.mkdir()
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy2(ROOT / name, root / name)
    for folder in ("devserver",):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    project = Project(root)
    yield project
    project.kill_leftovers()


def _headers(output: str) -> list[str]:
    return [
        line.split(":")[0].split()[-1] for line in output.splitlines() if line.startswith("==> up ")
    ]


def test_up_runs_every_step_then_the_api_and_passes_on_its_code(proj: Project) -> None:
    code = (
        "import os, sys; print('API', os.environ['REDIS_URL'], os.environ['APP_MODE']); sys.exit(3)"
    )
    config = proj.root / "invoke.yaml"  # a mapping cannot come from an environment variable
    config.write_text(config.read_text().replace("  env: {}", "  env:\n    APP_MODE: dev"))
    result = proj.invoke("up", INVOKE_API_COMMAND=f'"{sys.executable}" -c "{code}"')
    out = result.stdout + result.stderr
    assert _headers(result.stderr) == ["1/4", "2/4", "3/4", "4/4"], out
    assert "fetch: skipped" in result.stderr
    assert f"API redis://127.0.0.1:{proj.port}/0" in result.stdout, out
    assert result.returncode == 3, out
    # The server keeps running after the API; `up` again is fine (already running), `down` stops.
    again = proj.invoke("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert "app: skipped" in again.stderr
    down = proj.invoke("down")
    assert down.returncode == 0 and "stopped" in down.stderr
    assert not (proj.root / "data" / "server.json").exists()


def test_up_stops_at_the_first_failing_step_and_names_it(proj: Project) -> None:
    with socket.socket() as squatter:  # something else holds the port: start must fail
        squatter.bind(("127.0.0.1", proj.port))
        squatter.listen()
        marker = proj.root / "api-ran"
        code = f"open({str(marker)!r}, 'w')"
        result = proj.invoke("up", INVOKE_API_COMMAND=f'"{sys.executable}" -c "{code}"')
    assert result.returncode == 1
    assert "up stopped: the start step failed" in result.stderr
    assert _headers(result.stderr) == ["1/4", "2/4"]
    assert not marker.exists()
    assert "Traceback" not in result.stderr


def test_api_refuses_without_a_server_and_explains_missing_config(proj: Project) -> None:
    refused = proj.invoke("api", INVOKE_API_COMMAND="true")
    assert refused.returncode == 1
    assert "the server is not running" in refused.stderr
    assert "invoke start" in refused.stderr
    unconfigured = proj.invoke("api")
    assert unconfigured.returncode == 1  # a script must see that nothing ran
    assert "api.command" in unconfigured.stderr and "INVOKE_API_COMMAND" in unconfigured.stderr


def test_env_prints_and_merges_into_the_projects_dotenv(proj: Project) -> None:
    env = {"INVOKE_SERVER_PASSWORD": "p@ss w#rd"}
    printed = proj.invoke("env", **env)
    assert printed.returncode == 0
    assert printed.stdout == f"REDIS_URL=redis://:p%40ss%20w%23rd@127.0.0.1:{proj.port}/0\n"
    dotenv = proj.root / ".env"
    dotenv.write_text("# mine\nDEBUG=1\nREDIS_URL=old\n")
    written = proj.invoke("env", "--write", **env)
    assert written.returncode == 0, written.stderr
    assert dotenv.read_text() == (
        f"# mine\nDEBUG=1\nREDIS_URL=redis://:p%40ss%20w%23rd@127.0.0.1:{proj.port}/0\n"
    )
    other = proj.root / "other.env"
    assert proj.invoke("env", f"--write={other}").returncode == 0
    assert other.read_text() == f"REDIS_URL=redis://127.0.0.1:{proj.port}/0\n"
