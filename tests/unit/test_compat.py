"""Windows branches of devserver/system, exercised on Linux with the platform calls asserted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest

from devserver.system import files, host, kill, lifetime, signals, spawn, wsl
from tests.platforms import WINDOWS, needs_posix


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(host, "MACOS", False)


def test_supervisor_spawn_on_windows_has_a_hidden_console_and_breaks_away(windows: None) -> None:
    """CREATE_NO_WINDOW, never DETACHED_PROCESS: a venv redirector passes its console on to the
    real interpreter, and a detached one has none, so Windows would open a visible window."""
    with mock.patch.object(subprocess, "Popen") as popen:
        proc, broke_away = spawn.spawn_detached(["py", "-m", "x"], Path("/p"))
    flags = popen.call_args.kwargs["creationflags"]
    assert flags & spawn.CREATE_NO_WINDOW and flags & spawn.CREATE_NEW_PROCESS_GROUP
    assert flags & spawn.CREATE_BREAKAWAY_FROM_JOB
    assert not flags & spawn.DETACHED_PROCESS  # it would make CREATE_NO_WINDOW be ignored
    assert (
        "shell" not in popen.call_args.kwargs and "start_new_session" not in popen.call_args.kwargs
    )
    assert popen.call_args.kwargs["stdin"] == subprocess.DEVNULL
    assert broke_away and proc is popen.return_value


def test_job_that_forbids_breakaway_falls_back(windows: None) -> None:
    calls: list[int] = []

    def fake_popen(argv: list[str], creationflags: int, **kw: Any) -> str:
        calls.append(creationflags)
        if creationflags & spawn.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(5, "Access is denied")
        return "proc"

    with mock.patch.object(subprocess, "Popen", side_effect=fake_popen):
        proc, broke_away = spawn.spawn_detached(["py"], Path("/p"))
    assert proc == "proc" and not broke_away
    assert calls[1] == spawn.CREATE_NO_WINDOW | spawn.CREATE_NEW_PROCESS_GROUP


def test_posix_spawn_starts_a_new_session(posix: None) -> None:
    with mock.patch.object(subprocess, "Popen") as popen:
        spawn.spawn_detached(["py"], Path("/p"))
    assert popen.call_args.kwargs["start_new_session"] is True
    assert "creationflags" not in popen.call_args.kwargs


def test_server_gets_no_window_and_its_own_group_on_windows(windows: None) -> None:
    kwargs = spawn.server_popen_kwargs()
    assert kwargs == {"creationflags": spawn.CREATE_NEW_PROCESS_GROUP | spawn.CREATE_NO_WINDOW}
    assert not kwargs["creationflags"] & spawn.DETACHED_PROCESS


def test_server_gets_own_session_on_posix(posix: None) -> None:
    assert spawn.server_popen_kwargs() == {"start_new_session": True}


def test_windows_terminate_is_a_tree_kill_via_psutil(windows: None) -> None:
    proc, child = mock.Mock(pid=10), mock.Mock(pid=11)
    proc.children.return_value = [child]
    with mock.patch.object(subprocess, "run") as run:
        kill.terminate(proc)
    child.kill.assert_called_once_with()
    proc.kill.assert_called_once_with()
    proc.send_signal.assert_not_called()
    run.assert_not_called()


def test_windows_taskkill_only_when_psutil_is_refused(windows: None) -> None:
    proc = mock.Mock(pid=42)
    proc.children.return_value = []
    proc.kill.side_effect = psutil.AccessDenied(42)
    with mock.patch.object(subprocess, "run") as run:
        kill.kill_tree(proc)
    assert run.call_args.args[0] == ["taskkill", "/PID", "42", "/T", "/F"]


def test_posix_terminate_sends_sigterm_through_psutil(posix: None) -> None:
    proc = mock.Mock()
    kill.terminate(proc)
    proc.send_signal.assert_called_once_with(signal.SIGTERM)


def test_exe_names_and_exit_descriptions(windows: None) -> None:
    assert host.exe_name("redis-server") == "redis-server.exe"
    assert host.exe_name("x.exe") == "x.exe"
    assert kill.describe_exit(-9) == "code 0xFFFFFFF7 (-9)"  # no signals on Windows
    assert host.os_name() == "windows"


@needs_posix("signals (an exit by SIGKILL is a code there)")
def test_posix_exit_descriptions(posix: None) -> None:
    assert kill.describe_exit(-9) == "signal SIGKILL"
    assert kill.describe_exit(3) == "code 3"


def test_wsl_fallback_paths() -> None:
    assert (
        wsl.wsl_path("C:\\Users\\me\\proj\\bin\\dragonfly") == "/mnt/c/Users/me/proj/bin/dragonfly"
    )


def test_windows_lock_uses_msvcrt(windows: None, tmp_path: Path) -> None:
    fake = mock.Mock(LK_NBLCK=2)
    with mock.patch.dict("sys.modules", {"msvcrt": fake}), open(tmp_path / "l", "a+b") as handle:
        assert files.try_lock(handle)
        fake.locking.assert_called_once_with(handle.fileno(), 2, 1)
        fake.locking.side_effect = OSError
        assert not files.try_lock(handle)


def test_prefixed_variables_are_stripped_case_insensitively() -> None:
    env = {"DFLY_port": "1", "dfly_x": "2", "INVOKE_SERVER_PASSWORD": "pw", "PATH": "/bin"}
    assert spawn.without_prefixes(env, ["DFLY_", "INVOKE_"]) == {"PATH": "/bin"}


def test_wsl_env_lists_the_password_variable() -> None:
    env = wsl.wsl_env({"DFLY_requirepass": "pw", "WSLENV": "USERPROFILE/p"}, ["DFLY_requirepass"])
    assert env["WSLENV"] == "USERPROFILE/p:DFLY_requirepass/u"
    assert "WSLENV" not in wsl.wsl_env({}, ["DFLY_requirepass"])


def test_stop_signals_posix_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    if not WINDOWS:  # Windows has no SIGHUP: only its own half runs there
        with mock.patch.object(signal, "signal") as set_signal:
            signals.install_stop_signals(lambda: None)
        assert {c.args[0] for c in set_signal.call_args_list} == {signal.SIGTERM, signal.SIGHUP}
    monkeypatch.setattr(host, "WINDOWS", True)
    with mock.patch.object(signal, "signal") as set_signal:
        signals.install_stop_signals(lambda: None)
    set_signal.assert_not_called()  # no such signals reach a detached Windows process


def test_windows_wait_polls_so_ctrl_c_can_interrupt(windows: None) -> None:
    proc = mock.Mock()
    proc.wait.side_effect = [subprocess.TimeoutExpired("x", 0.2), 3]
    assert signals.wait_interruptible(proc) == 3
    assert proc.wait.call_args_list == [mock.call(timeout=0.2)] * 2


def test_windows_console_gets_colorama(windows: None) -> None:
    fake = mock.Mock()
    with mock.patch.dict("sys.modules", {"colorama": fake}):
        host.enable_ansi(mock.Mock())
    fake.just_fix_windows_console.assert_called_once_with()


# --- identity, lifetime and interrupts ---------------------------------------------------


def test_start_ticks_reads_field_22_even_with_odd_process_names(tmp_path: Path) -> None:
    me = lifetime.start_ticks(os.getpid())
    if me is None:
        pytest.skip("no /proc (not Linux)")
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    assert me == int(fields[19]) and me > 0
    fake = "123 (a) b (c) S " + " ".join(str(n) for n in range(4, 30))
    with mock.patch("builtins.open", mock.mock_open(read_data=fake.encode())):
        assert lifetime.start_ticks(123) == 22  # field 22, after the last ")"


def test_proc_identity_matches_psutil_for_a_real_child() -> None:
    """The supervisor records create time and exe from /proc; stop and status check them
    with psutil: both must agree, or a live server would look like a reused PID."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        facts = lifetime.proc_identity(child.pid)
        if facts is None:
            pytest.skip("no /proc (not Linux)")
        proc = psutil.Process(child.pid)
        assert abs(facts[0] - proc.create_time()) < 0.01
        assert facts[1] == proc.exe()
    finally:
        child.kill()
        child.wait()


def test_proc_identity_is_none_on_windows(windows: None) -> None:
    assert lifetime.proc_identity(os.getpid()) is None


def test_start_ticks_is_none_on_windows(windows: None) -> None:
    assert lifetime.start_ticks(os.getpid()) is None


@needs_posix("prctl (PR_SET_PDEATHSIG is Linux's)")
def test_parent_death_signal_only_on_linux_and_only_without_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    monkeypatch.setattr(lifetime.sys, "platform", "linux")
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    kwargs = lifetime.parent_death_kwargs()
    assert callable(kwargs.get("preexec_fn"))
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # preexec_fn unsafe: not used
    assert lifetime.parent_death_kwargs() == {}
    monkeypatch.setattr(host, "WINDOWS", True)
    assert lifetime.parent_death_kwargs() == {}


def test_parent_death_signal_reaches_a_real_child() -> None:
    """A child spawned with these options, asked with PR_GET_PDEATHSIG (only a process can
    ask for itself), has SIGTERM armed. Spawned from a fresh interpreter, which has no other
    thread (this test process may have some)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    ask = (
        "import ctypes; v = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)"
    )
    spawner = (
        "import subprocess, sys; from devserver.system import lifetime\n"
        "kwargs = lifetime.parent_death_kwargs(); assert kwargs, 'not armed'\n"
        f"subprocess.run([sys.executable, '-c', {ask!r}], **kwargs)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", spawner], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(int(signal.SIGTERM))


@pytest.mark.usefixtures("default_int_handler")
def test_interrupt_once_raises_once_then_remembers() -> None:
    with signals.interrupt_once() as hurried:
        # raise_signal, not os.kill: on Windows os.kill(pid, SIGINT) is TerminateProcess of
        # pytest itself, while raise_signal runs the handler on both systems.
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):
                pass
        assert not hurried()
        signal.raise_signal(signal.SIGINT)  # must not raise: the cleanup cannot be aborted
        for _ in range(1000):
            pass
        assert hurried()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_foreground_stop_signals_turn_sigterm_and_sighup_into_ctrl_c() -> None:
    if host.WINDOWS:
        pytest.skip("POSIX signals")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        before = signal.getsignal(signum)
        with signals.foreground_stop_signals(), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            for _ in range(1000):
                pass
        assert signal.getsignal(signum) == before


def test_ignore_interrupts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, Any]] = []
    monkeypatch.setattr(signals.signal, "signal", lambda num, handler: calls.append((num, handler)))
    signals.ignore_interrupts()
    assert (signal.SIGINT, signal.SIG_IGN) in calls


class FakeKernel32:
    """Records the job-object calls; ``refuse`` names a call that fails."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.flags = 0

    def _call(self, name: str, *args: Any) -> int:
        self.calls.append((name, args))
        return 0 if name == self.refuse else 77

    def CreateJobObjectW(self, *args: Any) -> int:
        return self._call("CreateJobObjectW", *args)

    def SetInformationJobObject(self, job: int, klass: int, ref: Any, size: int) -> int:
        self.flags = ref._obj.BasicLimitInformation.LimitFlags
        return self._call("SetInformationJobObject", job, klass, size)

    def AssignProcessToJobObject(self, *args: Any) -> int:
        return self._call("AssignProcessToJobObject", *args)

    def CloseHandle(self, *args: Any) -> int:
        return self._call("CloseHandle", *args)


def test_windows_job_object_kills_the_server_with_its_holder(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel32()
    monkeypatch.setattr(lifetime, "_kernel32", lambda: kernel)
    proc = mock.Mock(_handle=1234)
    assert lifetime.bind_to_this_process(proc) == 77
    assert [name for name, _ in kernel.calls] == [
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
    ]
    assert kernel.calls[0][1] == (None, None)
    assert kernel.calls[1][1] == (77, 9, 144)  # JobObjectExtendedLimitInformation, x64 size
    assert kernel.flags == 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert kernel.calls[2][1] == (77, 1234)


@pytest.mark.parametrize("refuse", ["SetInformationJobObject", "AssignProcessToJobObject"])
def test_windows_job_object_refused_is_closed_and_none(
    windows: None, monkeypatch: pytest.MonkeyPatch, refuse: str
) -> None:
    kernel = FakeKernel32(refuse)
    monkeypatch.setattr(lifetime, "_kernel32", lambda: kernel)
    assert lifetime.bind_to_this_process(mock.Mock(_handle=1234)) is None
    assert kernel.calls[-1] == ("CloseHandle", (77,))


def test_no_job_object_off_windows() -> None:
    if host.WINDOWS:
        pytest.skip("POSIX")
    assert lifetime.bind_to_this_process(mock.Mock(_handle=1)) is None


@pytest.mark.usefixtures("default_int_handler")
def test_interrupts_deferred_holds_a_ctrl_c_until_the_block_ends() -> None:
    """A Ctrl+C inside the block (an import, say) is raised only at its end, once."""
    import signal as _signal

    reached = []
    with pytest.raises(KeyboardInterrupt), signals.interrupts_deferred():
        _signal.raise_signal(_signal.SIGINT)
        reached.append("after the signal")  # not cut short
    assert reached == ["after the signal"]
    assert _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
    with signals.interrupts_deferred():
        pass  # no Ctrl+C: nothing raised


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")
def test_output_unread_counts_what_the_reader_has_not_taken_yet() -> None:
    """What start's echo waits on: the bytes in the server's output pipe that nobody has
    read yet, counted without taking them."""
    code = "import sys; sys.stdout.write('x' * 1000); sys.stdout.flush(); sys.stdin.read()"
    writer = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        fd = writer.stdout.fileno()
        seen: list[int | None] = []
        deadline = time.monotonic() + 30
        while 1000 not in seen and time.monotonic() < deadline:  # until it has written
            seen.append(lifetime.output_unread(writer.pid))
            time.sleep(0.001)
        assert seen[-1] == 1000 and all(n in (0, 1000) for n in seen)
        assert len(os.read(fd, 4096)) == 1000  # counting took nothing away
        assert lifetime.output_unread(writer.pid) == 0
    finally:
        writer.kill()
        writer.wait()
    assert lifetime.output_unread(writer.pid) is None  # gone: nothing to know
