"""The suite never sees the developer's running server, state or config.

Following the README in order (start_dev, then the tests) leaves this project's server
running with its state file in ./data, often with INVOKE_SERVER_* exported in the shell and
a ~/.invoke.yaml. The first test reproduces exactly that in a copy of the checkout (never in
this one) and runs part of the suite there; the second checks the tool itself names a port
that differs from the running server's instead of silently checking another server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from tests.conftest import ROOT, SettingsFactory, free_port, kill_recorded
from tests.integration.test_cli import env_for
from tests.integration.test_verify import StartRedis, start_redis  # noqa: F401 (fixture)

_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".ci-venv", "data", "logs", "bin", "__pycache__", ".*_cache", "*.pyc"
)


def test_part_of_the_suite_passes_while_the_developers_server_runs(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=_NOT_COPIED)
    home = tmp_path / "home"
    home.mkdir()
    # A user-level Invoke config that would break any test reading it.
    (home / ".invoke.yaml").write_text('verify:\n  iterations: "not a number"\n')
    dev_port = free_port()
    shell = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")},
        "HOME": str(home),
        "INVOKE_SERVER_FLAVOR": "redis",  # as exported in the developer's shell
        "INVOKE_SERVER_PORT": str(dev_port),
        "NO_COLOR": "1",
    }
    state_file = checkout / "data" / "server.json"
    try:
        started = subprocess.run(
            [sys.executable, "-m", "invoke", "start"],
            cwd=checkout,
            env={**shell, "HOME": str(tmp_path)},  # the dev server itself starts normally
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        assert state_file.is_file()
        before = sorted(p.name for p in (checkout / "data").iterdir())
        suite = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "tests/integration/test_verify.py::test_json_output_and_exit_codes",
                "tests/integration/test_verify_target.py",
                "tests/unit/test_checks_target.py",
            ],
            cwd=checkout,
            env=shell,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
        assert state_file.is_file()  # the developer's server was left alone...
        after = sorted(p.name for p in (checkout / "data").iterdir())
        assert after == before  # ...and its data dir too
    finally:
        kill_recorded(state_file)


def test_verify_names_a_port_that_differs_from_the_running_server(
    project: Path,
    make_settings: SettingsFactory,
    start_redis: StartRedis,  # noqa: F811
) -> None:
    settings = make_settings()
    start_server(settings)  # this project's server, on settings.port
    other = start_redis()  # some other server the person points INVOKE_SERVER_PORT at
    env = env_for(project, other, INVOKE_VERIFY_ITERATIONS="5")
    for op in ("CONNECT", "PING", "SET", "GET", "LPUSH", "BRPOP"):
        env[f"INVOKE_VERIFY_THRESHOLDS_MS_{op}"] = "10000"
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "verify"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"verify redis://127.0.0.1:{other}/0" in result.stdout  # honoured, not ignored
    assert f"the running server is on {settings.port}; you asked for {other}" in result.stderr
    stop_server(settings)
