"""Windows branches of compat, exercised on Linux with the platform calls asserted."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest

from devserver import compat


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "WINDOWS", True)
    monkeypatch.setattr(compat, "MACOS", False)


def test_supervisor_spawn_on_windows_is_detached_and_breaks_away(windows: None) -> None:
    with mock.patch.object(subprocess, "Popen") as popen:
        proc, broke_away = compat.spawn_detached(["py", "-m", "x"], Path("/p"))
    flags = popen.call_args.kwargs["creationflags"]
    assert flags & compat.DETACHED_PROCESS and flags & compat.CREATE_NEW_PROCESS_GROUP
    assert flags & compat.CREATE_BREAKAWAY_FROM_JOB
    assert not flags & compat.CREATE_NO_WINDOW  # ignored together with DETACHED_PROCESS
    assert (
        "shell" not in popen.call_args.kwargs and "start_new_session" not in popen.call_args.kwargs
    )
    assert popen.call_args.kwargs["stdin"] == subprocess.DEVNULL
    assert broke_away and proc is popen.return_value


def test_job_that_forbids_breakaway_falls_back(windows: None) -> None:
    calls: list[int] = []

    def fake_popen(argv: list[str], creationflags: int, **kw: Any) -> str:
        calls.append(creationflags)
        if creationflags & compat.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(5, "Access is denied")
        return "proc"

    with mock.patch.object(subprocess, "Popen", side_effect=fake_popen):
        proc, broke_away = compat.spawn_detached(["py"], Path("/p"))
    assert proc == "proc" and not broke_away
    assert calls[1] == compat.DETACHED_PROCESS | compat.CREATE_NEW_PROCESS_GROUP


def test_posix_spawn_starts_a_new_session() -> None:
    with mock.patch.object(subprocess, "Popen") as popen:
        compat.spawn_detached(["py"], Path("/p"))
    assert popen.call_args.kwargs["start_new_session"] is True
    assert "creationflags" not in popen.call_args.kwargs


def test_server_gets_no_window_and_its_own_group_on_windows(windows: None) -> None:
    kwargs = compat.server_popen_kwargs()
    assert kwargs == {"creationflags": compat.CREATE_NEW_PROCESS_GROUP | compat.CREATE_NO_WINDOW}


def test_server_gets_own_session_on_posix() -> None:
    assert compat.server_popen_kwargs() == {"start_new_session": True}


def test_windows_terminate_is_a_tree_kill_via_psutil(windows: None) -> None:
    proc, child = mock.Mock(pid=10), mock.Mock(pid=11)
    proc.children.return_value = [child]
    with mock.patch.object(subprocess, "run") as run:
        compat.terminate(proc)
    child.kill.assert_called_once_with()
    proc.kill.assert_called_once_with()
    proc.send_signal.assert_not_called()
    run.assert_not_called()


def test_windows_taskkill_only_when_psutil_is_refused(windows: None) -> None:
    proc = mock.Mock(pid=42)
    proc.children.return_value = []
    proc.kill.side_effect = psutil.AccessDenied(42)
    with mock.patch.object(subprocess, "run") as run:
        compat.kill_tree(proc)
    assert run.call_args.args[0] == ["taskkill", "/PID", "42", "/T", "/F"]


def test_posix_terminate_sends_sigterm_through_psutil() -> None:
    proc = mock.Mock()
    compat.terminate(proc)
    proc.send_signal.assert_called_once_with(signal.SIGTERM)


def test_exe_names_and_exit_descriptions(windows: None) -> None:
    assert compat.exe_name("redis-server") == "redis-server.exe"
    assert compat.exe_name("x.exe") == "x.exe"
    assert compat.describe_exit(-9) == "code -9"  # no signals on Windows
    assert compat.os_name() == "windows"


def test_posix_exit_descriptions() -> None:
    assert compat.describe_exit(-9) == "signal SIGKILL"
    assert compat.describe_exit(3) == "code 3"


def test_wsl_paths() -> None:
    assert (
        compat.wsl_path("C:\\Users\\me\\proj\\bin\\dragonfly")
        == "/mnt/c/Users/me/proj/bin/dragonfly"
    )
    assert compat.wsl_argv(["D:\\b\\dragonfly", "--port=1"]) == [
        "wsl.exe",
        "-e",
        "/mnt/d/b/dragonfly",
        "--port=1",
    ]


def test_windows_lock_uses_msvcrt(windows: None, tmp_path: Path) -> None:
    fake = mock.Mock(LK_NBLCK=2)
    with mock.patch.dict("sys.modules", {"msvcrt": fake}), open(tmp_path / "l", "a+b") as handle:
        assert compat.try_lock(handle)
        fake.locking.assert_called_once_with(handle.fileno(), 2, 1)
        fake.locking.side_effect = OSError
        assert not compat.try_lock(handle)


def test_prefixed_variables_are_stripped_case_insensitively() -> None:
    env = {"DFLY_port": "1", "dfly_x": "2", "INVOKE_SERVER_PASSWORD": "pw", "PATH": "/bin"}
    assert compat.without_prefixes(env, ["DFLY_", "INVOKE_"]) == {"PATH": "/bin"}


def test_wsl_env_lists_the_password_variable() -> None:
    env = compat.wsl_env(
        {"DFLY_requirepass": "pw", "WSLENV": "USERPROFILE/p"}, ["DFLY_requirepass"]
    )
    assert env["WSLENV"] == "USERPROFILE/p:DFLY_requirepass/u"
    assert "WSLENV" not in compat.wsl_env({}, ["DFLY_requirepass"])


def test_stop_signals_posix_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    with mock.patch.object(signal, "signal") as set_signal:
        compat.install_stop_signals(lambda: None)
    assert {c.args[0] for c in set_signal.call_args_list} == {signal.SIGTERM, signal.SIGHUP}
    monkeypatch.setattr(compat, "WINDOWS", True)
    with mock.patch.object(signal, "signal") as set_signal:
        compat.install_stop_signals(lambda: None)
    set_signal.assert_not_called()  # no such signals reach a detached Windows process


def test_windows_wait_polls_so_ctrl_c_can_interrupt(windows: None) -> None:
    proc = mock.Mock()
    proc.wait.side_effect = [subprocess.TimeoutExpired("x", 0.2), 3]
    assert compat.wait_interruptible(proc) == 3
    assert proc.wait.call_args_list == [mock.call(timeout=0.2)] * 2


def test_windows_console_gets_colorama(windows: None) -> None:
    fake = mock.Mock()
    with mock.patch.dict("sys.modules", {"colorama": fake}):
        compat.enable_ansi(mock.Mock())
    fake.just_fix_windows_console.assert_called_once_with()
