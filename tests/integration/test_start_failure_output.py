"""A start that fails shows this run's lines once, and the data note only when it applies.

Issue 11, item 10: the error was printed twice (live, then again in the hint), the "last 20
log lines" included earlier runs' lines, and the data-folder note came even for a bad flag.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devserver.errors import StartError
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from tests.conftest import ROOT, SettingsFactory, free_port
from tests.integration.test_cli import env_for


def _earlier_run(make_settings: SettingsFactory, port: int) -> None:
    """A good start and stop first, so the log holds an earlier run and data/redis has data."""
    settings = make_settings(port=port)
    start_server(settings)
    stop_server(settings)


def test_bad_flag_output_is_this_runs_lines_once_without_the_data_note(
    project: Path, make_settings: SettingsFactory
) -> None:
    port = free_port()
    _earlier_run(make_settings, port)
    env = env_for(project, port, INVOKE_SERVER_EXTRA_ARGS="--no-such-flag 1")
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "start"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    both = result.stdout + result.stderr
    assert result.returncode == 1, both
    assert both.count("Bad directive or wrong number of arguments") == 1, both
    assert both.count("exited during startup") == 1
    assert "Ready to accept connections" not in both  # the earlier run's lines stay in the log
    assert "bye bye" not in both
    assert "is kept" not in both  # a bad flag has nothing to do with the data folder
    assert "invoke tail" in result.stderr  # where the whole log is
    log = (project / "logs" / "redis.log").read_text()
    assert "Ready to accept connections" in log and "Bad directive" in log  # log keeps all


def test_hint_without_a_live_echo_holds_only_this_runs_lines(
    make_settings: SettingsFactory,
) -> None:
    port = free_port()
    _earlier_run(make_settings, port)
    with pytest.raises(StartError) as info:
        start_server(make_settings(port=port, extra_args="--no-such-flag 1"))
    hint = info.value.hint
    assert "Bad directive" in hint and "this start's last log lines" in hint
    assert "Ready to accept connections" not in hint and "bye bye" not in hint
    assert "is kept" not in hint


def test_data_note_when_the_server_cannot_load_its_data(
    project: Path, make_settings: SettingsFactory
) -> None:
    data = project / "data" / "redis"
    data.mkdir(parents=True)
    (data / "dump.rdb").write_bytes(b"this is not an RDB file at all\n" * 4)
    lines: list[str] = []
    with pytest.raises(StartError) as info:
        start_server(make_settings(extra_args="--appendonly no"), lines.append)
    assert any("signature" in line.lower() or "rdb" in line.lower() for line in lines), lines
    assert "is kept" in info.value.hint
    assert (data / "dump.rdb").exists()  # never touched
