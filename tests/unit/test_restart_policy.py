"""The restart rules without a server: which exits restart, the back-off, the give-up, the
config keys and the state fields ``status`` reports (supervisor/restart.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from devserver.config import load_settings
from devserver.errors import ConfigError
from devserver.server.state import ServerState
from devserver.server.status import _restart_info
from devserver.supervisor import restart
from devserver.supervisor.statefile import mark_state

SPEC: Any = {"restart": "on-failure"}


@pytest.mark.parametrize(
    ("code", "answered", "stopping", "expected"),
    [
        (-9, True, False, True),  # kill -9 after the first PONG
        (1, True, False, True),  # a non-zero exit
        (0, True, False, False),  # SHUTDOWN from a client: a deliberate exit
        (-9, True, True, False),  # any stop of the tool
        (-9, False, False, False),  # never answered PING: start's failure, not a crash
    ],
)
def test_only_a_failure_after_the_first_pong_with_no_stop_restarts(
    code: int, answered: bool, stopping: bool, expected: bool
) -> None:
    assert restart.wanted(SPEC, code, answered, stopping) is expected


def test_restart_no_and_an_older_spec_never_restart() -> None:
    assert not restart.wanted({"restart": "no"}, -9, True, False)  # type: ignore[arg-type]
    assert not restart.wanted({}, -9, True, False)  # type: ignore[arg-type]


def test_back_off_grows_from_half_a_second_and_gives_up_past_the_limit() -> None:
    policy = restart.Policy(limit=5, window=60)
    delays = [policy.crashed(now) for now in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.crashed(5.0) is None
    assert policy.gave_up_text("signal SIGKILL") == (
        "crashed 6 times in 60 s, gave up; last exit: signal SIGKILL; see `invoke tail`"
    )


def test_crashes_older_than_the_window_are_forgotten() -> None:
    policy = restart.Policy(limit=2, window=10)
    assert policy.crashed(0.0) == 0.5
    assert policy.crashed(5.0) == 1.0
    assert policy.crashed(20.0) == 0.5  # both earlier ones are out of the window
    assert policy.crashed(21.0) == 1.0
    assert policy.crashed(22.0) is None


def test_a_limit_of_zero_never_restarts() -> None:
    assert restart.Policy(limit=0, window=60).crashed(0.0) is None


def test_config_keys_and_their_defaults(tmp_path: Path) -> None:
    default = load_settings({}, tmp_path)
    assert (default.restart, default.restart_limit, default.restart_window) == (
        "on-failure",
        5,
        60.0,
    )
    given = load_settings(
        {"server": {"restart": "No", "restart_limit": "2", "restart_window": "30"}}, tmp_path
    )
    assert (given.restart, given.restart_limit, given.restart_window) == ("no", 2, 30.0)
    # YAML reads a bare `restart: no` as False
    assert load_settings({"server": {"restart": False}}, tmp_path).restart == "no"


@pytest.mark.parametrize(
    ("key", "value"),
    [("restart", "always"), ("restart_limit", "-1"), ("restart_window", "0")],
)
def test_bad_restart_values_are_one_clear_error(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"server": {key: value}}, tmp_path)
    assert f"server.{key}" in info.value.message
    assert f"INVOKE_SERVER_{key.upper()}" in info.value.hint


def test_mark_state_touches_only_the_record_of_that_server(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"pid": 10, "status": "running"}))
    spec: Any = {"state_file": str(path)}
    assert mark_state(spec, 10, {"status": "restarting", "restarts": 1})
    assert json.loads(path.read_text()) == {"pid": 10, "status": "restarting", "restarts": 1}
    assert not mark_state(spec, 11, {"status": "exited"})  # a later server's record
    assert json.loads(path.read_text())["status"] == "restarting"
    assert restart.still_ours(spec, 10) and not restart.still_ours(spec, 11)
    path.unlink()
    assert not mark_state(spec, 10, {"status": "exited"}) and not restart.still_ours(spec, 10)


def _state(**fields: Any) -> ServerState:
    base = {
        "pid": 5,
        "create_time": 1.0,
        "exe": "/bin/redis-server",
        "supervisor_pid": 4,
        "flavor": "redis",
        "version": "7.0",
        "host": "127.0.0.1",
        "port": 6379,
        "log_file": "x.log",
        "started_at": 1.0,
    }
    return ServerState.from_mapping({**base, **fields})


def test_status_reports_restarts_the_last_exit_and_a_give_up() -> None:
    assert _restart_info(None) == {"restarts": 0, "last_exit": None, "restarting": False}
    info = _restart_info(_state(restarts=2, last_exit="signal SIGKILL", last_exit_at=1e9))
    assert info["restarts"] == 2 and info["restarting"] is False
    assert info["last_exit"]["status"] == "signal SIGKILL"
    assert info["last_exit"]["signal"] == "SIGKILL" and info["last_exit"]["code"] is None
    assert info["last_exit"]["at"].startswith("2001-09-")
    info = _restart_info(_state(status="restarting", last_exit="code 1", gave_up="crashed"))
    assert info["restarting"] is True and info["gave_up"] == "crashed"
    assert info["last_exit"]["code"] == 1


def test_a_state_file_with_a_negative_restart_count_is_untrusted() -> None:
    with pytest.raises(ValueError):
        _state(restarts=-1)


def test_up_says_when_the_server_crashed_was_restarted_or_given_up_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from devserver.cli.up import ServerWatch

    path = tmp_path / "server.json"
    path.write_text(json.dumps({"pid": 1, "status": "running", "restarts": 0}))
    watch = ServerWatch(path)

    def now(state: dict[str, Any], mtime: int) -> str:
        path.write_text(json.dumps(state))
        os.utime(
            path, ns=(mtime, mtime)
        )  # a new modification time (seconds apart: NTFS keeps 100 ns)
        watch.next = 0.0  # the half-second pacing is not what this test is about
        assert watch.poll() is False  # it never asks `up` to stop
        return capsys.readouterr().err

    assert now({"pid": 1, "status": "running", "restarts": 0}, 10**18) == ""
    crashed = {"pid": 1, "status": "restarting", "restarts": 0, "exit_status": "signal SIGKILL"}
    assert "crashed (signal SIGKILL): its supervisor restarts it" in now(crashed, 10**18 + 10**9)
    assert "restarted (restart 1, pid 2)" in now(
        {"pid": 2, "status": "running", "restarts": 1}, 10**18 + 2 * 10**9
    )
    gave_up = {"pid": 2, "status": "exited", "restarts": 1, "gave_up": "crashed 6 times"}
    assert "the server crashed 6 times" in now(gave_up, 10**18 + 3 * 10**9)


def test_without_fork_the_restart_is_the_first_launch_through_popen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows: the supervisor respawns with what made the first launch (starting.spawn_server)."""
    monkeypatch.setattr(restart.host, "has_fork", lambda: False)
    calls: list[tuple[Any, str]] = []
    marker = object()

    def popen(spec: Any, secret: str) -> Any:
        calls.append((spec, secret))
        return marker

    assert restart.spawn_again(SPEC, "C:/secret", popen) is marker
    assert calls == [(SPEC, "C:/secret")]
    with pytest.raises(OSError):
        restart.spawn_again(SPEC, "", None)


def test_the_password_file_of_the_first_launch_is_reused(tmp_path: Path) -> None:
    spec: Any = {"secret_file": ["garnet.conf", "..."]}
    assert restart.secret_path(spec, str(tmp_path)) == str(tmp_path / "garnet.conf")
    assert restart.secret_path({"secret_file": None}, str(tmp_path)) == ""  # type: ignore[arg-type]
    assert restart.secret_path(spec, "") == ""


def test_a_stop_ends_the_wait_for_the_project_lock(tmp_path: Path) -> None:
    """``stop`` holds the project lock while it asks a supervisor in a restart's back-off to
    end: the supervisor's wait for that lock must give up when the stop arrives (it waited
    the whole LOCK_WAIT and was killed first, with no log line)."""
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from devserver.server.state import project_lock\n"
            "with project_lock(__import__('pathlib').Path(sys.argv[1])):\n"
            " print('held', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # the checkout: devserver importable
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        with restart.project_lock(str(lock), stop, wait=600) as held:
            assert held is False  # returned on the stop, not after 600 s
        assert stop.is_set()
    finally:
        holder.kill()
        holder.wait()
