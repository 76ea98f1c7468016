"""app/records.py, app/teardown.py, system/apptree.py: which processes `down` stops, and what it
says when one survives. Real child processes (the identity and environment reads are what a
fake would get wrong); no timed assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from devserver.app import records, teardown
from devserver.config import Settings, load_settings
from devserver.system import apptree, lifetime
from tests.platforms import WINDOWS, needs_posix

# The interpreter itself: on Windows a venv's python.exe is a launcher whose child (the real
# interpreter, with the same environment and so the same tag) would be a second process.
_PYTHON = getattr(sys, "_base_executable", sys.executable) if WINDOWS else sys.executable
_SLEEP = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return load_settings({"server": {"flavor": "redis", "stop_timeout": 0.2}}, tmp_path)


@pytest.fixture()
def stubborn() -> Iterator[subprocess.Popen[bytes]]:
    """A process that ignores SIGTERM (killed at the end whatever happens)."""
    child = subprocess.Popen([_PYTHON, "-c", _SLEEP], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().rstrip() == b"ready"  # it ignores SIGTERM from now on
    yield child
    child.kill()
    child.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start ticks: Linux /proc")
def test_app_records_compare_start_ticks_so_a_clock_step_keeps_a_live_process_live(
    settings: Settings, stubborn: subprocess.Popen[bytes]
) -> None:
    records.record(settings, {"worker": stubborn.pid}, run="r1", shells=["worker"])
    data = json.loads(records.app_state_file(settings).read_text())
    entry = data["processes"][0]
    assert entry["start_ticks"] == lifetime.start_ticks(stubborn.pid)
    assert entry["shell"] is True and data["run"] == "r1"
    # psutil's create time moved by 30 s (a wall-clock step): still the same process
    assert records._live({**entry, "create_time": entry["create_time"] + 30}) is not None
    # same create time, another start: another process with that pid
    assert records._live({**entry, "start_ticks": entry["start_ticks"] + 1}) is None


def test_the_tag_finds_a_runs_processes_and_no_other_runs(
    tmp_path: Path,
) -> None:
    ours, theirs = (
        subprocess.Popen(
            [_PYTHON, "-c", _SLEEP],
            env={**os.environ, **apptree.tag_env(run, "worker")},
            stdout=subprocess.PIPE,
        )
        for run in ("run1", "run2")
    )
    try:
        for child in (ours, theirs):  # running its program (before exec: our environment)
            assert child.stdout is not None and child.stdout.readline().rstrip() == b"ready"
        trees = teardown.Trees("run1", {"worker": None})  # its main process is gone
        trees.refresh(scan=True)
        assert [(name, proc.pid) for name, proc in trees.remaining()] == [("worker", ours.pid)]
        assert [proc.pid for proc in trees.orphans(["worker"])] == [ours.pid]
        trees.kill_all()
        killed = ours.wait(timeout=30)
        if not WINDOWS:  # there it is TerminateProcess's exit code
            assert killed == -signal.SIGKILL
        assert theirs.poll() is None  # another run's: never touched
    finally:
        for child in (ours, theirs):
            child.kill()
            child.wait()


@needs_posix("a process that survives termination (terminating is TerminateProcess there)")
def test_down_names_a_process_that_survived_the_kill_and_exits_1(
    settings: Settings,
    stubborn: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from devserver.cli.tasks import app as app_tasks

    records.record(settings, {"worker": stubborn.pid}, run="r1")
    data = json.loads(records.app_state_file(settings).read_text())
    data["owner"]["pid"] = 0  # its `up` is gone: down stops the processes itself
    records.app_state_file(settings).write_text(json.dumps(data))
    monkeypatch.setattr(teardown.Trees, "kill_all", lambda self: None)  # a kill that fails
    monkeypatch.setattr(teardown, "KILL_WAIT_S", 0.0)
    monkeypatch.setattr(app_tasks, "settings_from", lambda c: settings)
    with pytest.raises(Exit) as exited:
        app_tasks._stop_app_processes(None)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "worker: python" in err and f"(pid {stubborn.pid})" in err, err
    assert "stopped the application processes" not in err
    assert stubborn.poll() is None
