"""Windows fixes in devserver/system, run on Linux with host.WINDOWS patched, calls asserted.

Real Windows behaviour behind each (CPython's venv redirector, sharing violations, NTSTATUS
codes, console control events) is named in devserver/system's docstrings; the Wine layer runs some
of it for real.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from devserver.server import state
from devserver.system import atomic, files, host, kill, signals, spawn


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(host, "MACOS", False)


# ---- 1. the supervisor is started by the base interpreter, not the venv redirector ---------


def test_windows_venv_supervisor_skips_the_redirector(
    windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base = tmp_path / "python.exe"
    base.write_bytes(b"MZ")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "Scripts" / "python.exe"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    monkeypatch.setattr(sys, "_base_executable", str(base), raising=False)
    assert spawn.python_for_background() == str(base)
    base.unlink()  # a base interpreter that is not there: the venv's own, as before
    assert spawn.python_for_background() == sys.executable


def test_no_venv_or_posix_keeps_our_interpreter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, posix: None
) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    assert spawn.python_for_background() == sys.executable  # POSIX: a symlink, nothing to skip
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)
    assert spawn.python_for_background() == sys.executable  # not a venv


# ---- 8. sharing violations: rename and delete retried while a reader holds the file ----------


def _flaky(times: int, then: Any = None) -> mock.Mock:
    return mock.Mock(side_effect=[PermissionError(13, "used by another process")] * times + [then])


def test_windows_replace_of_the_state_file_is_retried(
    windows: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "server.json"
    real_replace = os.replace
    attempts: list[str] = []

    def replace(src: str, dst: str) -> None:
        attempts.append(str(dst))
        if len(attempts) < 3:
            raise PermissionError(13, "The process cannot access the file")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr("time.sleep", lambda s: None)
    atomic.write_atomic(target, "{}", mode=atomic.PRIVATE_MODE)
    assert attempts == [str(target)] * 3
    assert target.read_text() == "{}"
    assert not list(tmp_path.glob(".*.tmp"))


def test_windows_unlink_of_the_state_file_is_retried(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mock.Mock()
    path.unlink = _flaky(2)
    monkeypatch.setattr("time.sleep", lambda s: None)
    state.remove_state(path)
    assert path.unlink.call_args_list == [mock.call(missing_ok=True)] * 3


def test_a_lasting_sharing_violation_still_fails(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(100))
    monkeypatch.setattr("time.monotonic", lambda: next(clock) * 0.3)
    monkeypatch.setattr("time.sleep", lambda s: None)
    action = mock.Mock(side_effect=PermissionError(13, "locked"))
    with pytest.raises(PermissionError):
        files.retry_sharing(action, timeout=1.0)
    assert 1 < action.call_count < 10


def test_posix_never_retries(posix: None) -> None:
    action = mock.Mock(side_effect=PermissionError(13, "denied"))
    with pytest.raises(PermissionError):
        files.retry_sharing(action)
    assert action.call_count == 1


# ---- 9. NTSTATUS exit codes ------------------------------------------------------------------


def test_windows_exit_codes_are_unsigned_hex_with_ntstatus_names(windows: None) -> None:
    assert kill.describe_exit(3221225786) == "code 0xC000013A (STATUS_CONTROL_C_EXIT)"
    assert kill.describe_exit(-1073741510) == "code 0xC000013A (STATUS_CONTROL_C_EXIT)"
    assert kill.describe_exit(0xC0000005) == "code 0xC0000005 (STATUS_ACCESS_VIOLATION)"
    assert kill.describe_exit(0xFFFFFFFF) == "code 0xFFFFFFFF (-1)"
    assert kill.describe_exit(1) == "code 1"


# ---- 6. start --foreground: closing the console stops the server ----------------------------


def test_console_close_handler_is_registered_and_runs_the_stop_on_close_only(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    kernel32 = mock.Mock()
    kernel32.SetConsoleCtrlHandler.return_value = 1
    prototypes: list[tuple[Any, ...]] = []

    def winfunctype(*types: Any) -> Any:
        prototypes.append(types)
        return lambda func: func  # the "C callback" is the Python function itself

    monkeypatch.setattr(ctypes, "WINFUNCTYPE", winfunctype, raising=False)
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **kw: kernel32, raising=False)
    monkeypatch.setattr(signals, "_console_handlers", [])
    stop = mock.Mock()
    assert signals.on_console_close(stop) is True
    (callback, add), _ = kernel32.SetConsoleCtrlHandler.call_args
    assert add is True and signals._console_handlers == [callback]  # kept alive
    assert len(prototypes[0]) == 2  # BOOL handler(DWORD event)
    assert callback(0) == 0 and callback(1) == 0  # Ctrl+C / Ctrl+Break: Python's own handler
    stop.assert_not_called()
    assert callback(signals.CTRL_CLOSE_EVENT) == 1
    stop.assert_called_once_with()


def test_console_close_handler_survives_a_failing_stop_and_a_refusal(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    kernel32 = mock.Mock()
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", lambda *t: lambda f: f, raising=False)
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **kw: kernel32, raising=False)
    monkeypatch.setattr(signals, "_console_handlers", [])
    kernel32.SetConsoleCtrlHandler.return_value = 1
    assert signals.on_console_close(mock.Mock(side_effect=RuntimeError("boom")))
    assert signals._console_handlers[0](signals.CTRL_CLOSE_EVENT) == 1  # no exception escapes
    kernel32.SetConsoleCtrlHandler.return_value = 0
    assert signals.on_console_close(mock.Mock()) is False


def test_posix_sets_no_console_handler(posix: None) -> None:
    assert signals.on_console_close(mock.Mock()) is False


# ---- 9. the state file's 0600 in Windows terms: an owner-only protected DACL ----------------


class FakeAdvapi:
    """advapi32 as far as restrict_to_owner uses it; records the calls."""

    def __init__(self, set_status: int = 0) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.set_status = set_status
        self.SetNamedSecurityInfoW = mock.Mock(side_effect=self._set)

    def ConvertStringSecurityDescriptorToSecurityDescriptorW(self, *args: Any) -> int:
        self.calls.append(("convert", args))
        return 1

    def GetSecurityDescriptorDacl(self, *args: Any) -> int:
        self.calls.append(("dacl", args))
        return 1

    def _set(self, *args: Any) -> int:
        self.calls.append(("set", args))
        return self.set_status


def test_private_files_get_an_owner_only_protected_acl_on_windows(
    windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ctypes

    advapi, kernel32 = FakeAdvapi(), mock.Mock()
    dlls = {"advapi32": advapi, "kernel32": kernel32}
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **kw: dlls[name], raising=False)
    monkeypatch.setattr(files, "current_user_sid", lambda: "S-1-5-21-1-2-3-1001")
    assert files.restrict_to_owner(tmp_path / "f") is True
    (_, convert), (_, _dacl), (_, set_args) = advapi.calls
    # Owner, SYSTEM and the user's own SID: after an elevated start the owner is the
    # Administrators group, and the same user's normal terminal must still read the file.
    sddl = "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;S-1-5-21-1-2-3-1001)"
    assert convert[0] == sddl and convert[1] == 1  # SDDL revision 1
    assert set_args[:3] == (str(tmp_path / "f"), 1, 0x80000004)  # file, DACL, protected
    kernel32.LocalFree.assert_called_once()  # the descriptor is freed
    advapi.set_status = 5  # ERROR_ACCESS_DENIED (or a drive without ACLs): best effort
    assert files.restrict_to_owner(tmp_path / "f") is False


def test_the_user_sid_is_left_out_only_when_windows_does_not_say_it() -> None:
    assert files.owner_only_sddl("") == "D:P(A;;FA;;;OW)(A;;FA;;;SY)"
    assert files.owner_only_sddl("S-1-5-21-9") == "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;S-1-5-21-9)"


def test_write_atomic_restricts_private_files_only(
    windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    restricted: list[str] = []
    monkeypatch.setattr(files, "restrict_to_owner", lambda p: restricted.append(Path(p).name))
    atomic.write_atomic(tmp_path / "server.json", "{}", mode=atomic.PRIVATE_MODE)
    atomic.write_atomic(tmp_path / ".env", "X=1")
    assert restricted == [f".server.json.{os.getpid()}.tmp"]  # before the rename, which keeps it


def test_posix_leaves_acls_to_the_mode() -> None:
    assert files.restrict_to_owner("/nonexistent") is False


def test_a_windows_without_the_api_is_best_effort(windows: None) -> None:
    assert files.restrict_to_owner("/nonexistent") is False  # here: no ctypes.WinDLL at all


def test_a_supervisor_killed_by_ctrl_c_is_reported_by_name(windows: None, tmp_path: Path) -> None:
    from devserver.config import load_settings
    from devserver.errors import StartError
    from devserver.server.readiness import LogEcho, wait_ready

    settings = load_settings({"server": {"flavor": "redis"}}, tmp_path)
    sup = mock.Mock(returncode=3221225786)
    sup.poll.return_value = 3221225786
    with pytest.raises(StartError, match=r"\(code 0xC000013A \(STATUS_CONTROL_C_EXIT\)\)"):
        wait_ready(settings, sup, LogEcho(tmp_path / "x.log", None), lambda: 0.0, 0.0)
