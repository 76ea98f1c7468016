"""Dragonfly under WSL2, with every wsl.exe call asserted.

A fake ``wsl.exe`` answers like the real one: a Linux process table for ``kill`` and
``/proc/<pid>/comm``, ``wslpath``, ``--list --verbose``. What only real Windows + WSL can
show (the relay, SIGHUP on a killed wsl.exe, 9P snapshot speed) is named in wsl.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import pytest

from devserver.config import Settings, load_settings
from devserver.errors import StartError, StopError, UnsupportedPlatform
from devserver.fetch.binaries import Binary
from devserver.server import prepare, undo
from devserver.server.state import ServerState
from devserver.system import host, kill, wsl


class FakeWSL:
    """wsl.exe with a Linux process table {pid: comm}; ``ignores`` lists signals a process
    survives (a Dragonfly stuck writing its snapshot ignores nothing but is slow: TERM)."""

    def __init__(self, procs: dict[int, str] | None = None, ignores: Sequence[str] = ()) -> None:
        self.procs = dict(procs or {})
        self.ignores = set(ignores)
        self.calls: list[list[str]] = []
        self.listing = (
            "  NAME      STATE     VERSION\n* Ubuntu    Running   2\n  Old   Stopped   1\n"
        )
        self.wslpath: dict[str, str] = {}

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[0] == "wsl.exe"
        if argv[1:] == ["--list", "--verbose"]:
            return 0, self.listing
        cmd = argv[2:]  # after "-e"
        if cmd[0] == "wslpath":
            known = self.wslpath.get(cmd[-1])
            return (0, known + "\n") if known else (1, "wslpath: bad path\n")
        if cmd[0] == "cat":
            pid = int(cmd[1].split("/")[2])
            return (0, self.procs[pid] + "\n") if pid in self.procs else (1, "No such file")
        if cmd[0] == "kill":
            sig, pid = cmd[1].lstrip("-"), int(cmd[2])
            if pid not in self.procs:
                return 1, f"kill: ({pid}) - No such process"
            if sig not in ("0", *self.ignores):
                del self.procs[pid]
            return 0, ""
        raise AssertionError(f"unexpected wsl.exe call {argv}")

    def kills(self) -> list[list[str]]:
        return [c[2:] for c in self.calls if c[2:3] == ["kill"]]


# ---- 7. paths by wslpath, UTF-8 output ---------------------------------------------------


def test_linux_path_asks_wslpath_and_falls_back_to_mnt() -> None:
    fake = FakeWSL()
    fake.wslpath["D:\\work\\bin\\dragonfly"] = "/data/d/work/bin/dragonfly"  # [automount] root
    assert wsl.linux_path("D:\\work\\bin\\dragonfly", fake) == "/data/d/work/bin/dragonfly"
    assert fake.calls == [["wsl.exe", "-e", "wslpath", "-a", "-u", "D:\\work\\bin\\dragonfly"]]
    assert wsl.linux_path("C:\\x\\dragonfly", fake) == "/mnt/c/x/dragonfly"  # wslpath failed
    missing = mock.Mock(side_effect=FileNotFoundError(2, "wsl.exe"))
    assert wsl.linux_path("E:\\y", missing) == "/mnt/e/y"


def test_server_argv_runs_dragonfly_through_wsl_with_a_pidfile() -> None:
    fake = FakeWSL()
    fake.wslpath["C:\\p\\bin\\dragonfly"] = "/mnt/c/p/bin/dragonfly"
    argv = wsl.server_argv(["C:\\p\\bin\\dragonfly", "--port=1", "--dir=."], fake)
    assert argv == [
        "wsl.exe",
        "-e",
        "/mnt/c/p/bin/dragonfly",
        "--port=1",
        "--dir=.",
        "--pidfile=dragonfly.pid",
    ]


def test_wsl_output_is_utf8_or_decoded_from_utf16() -> None:
    assert wsl.utf8_env({"PATH": "x"}) == {"PATH": "x", "WSL_UTF8": "1"}
    assert wsl.decode("* Ubuntu  Running  2\r\n".encode("utf-16-le")) == "* Ubuntu  Running  2\r\n"
    assert wsl.decode("ü ok".encode()) == "ü ok"


def test_run_passes_wsl_utf8_to_wsl_exe(monkeypatch: pytest.MonkeyPatch) -> None:
    done = mock.Mock(returncode=0, stdout=b"/mnt/c\n", stderr=b"")
    run = mock.Mock(return_value=done)
    monkeypatch.setattr(wsl.subprocess, "run", run)
    assert wsl.run(["wsl.exe", "-e", "true"], 5) == (0, "/mnt/c\n")
    assert run.call_args.kwargs["env"]["WSL_UTF8"] == "1"
    assert run.call_args.kwargs["stdin"] == wsl.subprocess.DEVNULL


# ---- 2. a WSL2 default distribution, checked up front ------------------------------------


def test_default_distro_must_exist_and_be_wsl2() -> None:
    fake = FakeWSL()
    assert wsl.check_default_distro(fake) == "Ubuntu"
    fake.listing = "  NAME   STATE    VERSION\n* Legacy Stopped  1\n"
    with pytest.raises(StartError, match="runs as WSL 1") as err:
        wsl.check_default_distro(fake)
    assert "wsl --set-version Legacy 2" in err.value.hint
    fake.listing = "Windows Subsystem for Linux has no installed distributions.\n"
    with pytest.raises(StartError, match="no default Linux distribution") as err:
        wsl.check_default_distro(fake)
    assert "wsl --install" in err.value.hint and "--flavor redis" in err.value.hint
    with pytest.raises(UnsupportedPlatform, match=r"wsl\.exe was not found"):
        wsl.check_default_distro(mock.Mock(side_effect=FileNotFoundError(2, "wsl.exe")))


# ---- 2. stop: TERM, then KILL, confirmed with kill -0, wsl.exe last ------------------------


def test_escalation_terms_the_linux_pid_then_kills_wsl_exe_last(tmp_path: Path) -> None:
    (tmp_path / wsl.PIDFILE).write_text("4242\n")
    fake = FakeWSL({4242: "dragonfly-x86_6"})
    order: list[str] = []
    wsl_exe = mock.Mock(pid=900)
    wsl_exe.children.return_value = []
    wsl_exe.kill.side_effect = lambda: order.append(f"wsl.exe killed after {len(fake.calls)}")
    wsl.stop_escalation(tmp_path / wsl.PIDFILE, wsl_exe, fake, sleep=lambda s: None)
    assert fake.calls[0] == ["wsl.exe", "-e", "cat", "/proc/4242/comm"]
    assert fake.kills() == [["kill", "-TERM", "4242"], ["kill", "-0", "4242"]]
    assert order == [f"wsl.exe killed after {len(fake.calls)}"]  # last, after the Linux side


def test_escalation_kills_a_dragonfly_that_ignores_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / wsl.PIDFILE).write_text("77")
    fake = FakeWSL({77: "dragonfly"}, ignores=["TERM"])
    clock = iter(range(1000))
    monkeypatch.setattr(wsl.time, "monotonic", lambda: float(next(clock)))
    wsl_exe = mock.Mock()
    wsl_exe.children.return_value = []
    wsl.stop_escalation(tmp_path / wsl.PIDFILE, wsl_exe, fake, sleep=lambda s: None)
    kills = fake.kills()
    assert kills[0] == ["kill", "-TERM", "77"]
    assert ["kill", "-KILL", "77"] in kills
    assert kills[-1] == ["kill", "-0", "77"] and 77 not in fake.procs
    wsl_exe.kill.assert_called_once_with()


def test_escalation_refuses_to_signal_a_pid_that_is_not_dragonfly(tmp_path: Path) -> None:
    (tmp_path / wsl.PIDFILE).write_text("31")
    fake = FakeWSL({31: "bash"})  # the old pidfile's number now belongs to someone else
    wsl_exe = mock.Mock()
    wsl_exe.children.return_value = []
    wsl.stop_escalation(tmp_path / wsl.PIDFILE, wsl_exe, fake, sleep=lambda s: None)
    assert fake.kills() == [] and 31 in fake.procs
    wsl_exe.kill.assert_called_once_with()


def test_escalation_fails_loudly_when_even_kill_does_not_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / wsl.PIDFILE).write_text("5")
    fake = FakeWSL({5: "dragonfly"}, ignores=["TERM", "KILL"])
    clock = iter(range(1000))
    monkeypatch.setattr(wsl.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(StopError, match="Linux pid 5"):
        wsl.stop_escalation(tmp_path / wsl.PIDFILE, mock.Mock(), fake, sleep=lambda s: None)


# ---- server: the spec, the up-front check, the longer timeout, the escalation path ---------


def _settings(tmp_path: Path, **server: object) -> Settings:
    return load_settings({"server": {"flavor": "dragonfly", **server}}, tmp_path)


def _wsl_state(tmp_path: Path) -> ServerState:
    return ServerState(
        pid=900,
        create_time=1.0,
        exe="C:\\Windows\\System32\\wsl.exe",
        supervisor_pid=800,
        flavor="dragonfly",
        version="v1.24.0",
        host="127.0.0.1",
        port=6379,
        log_file=str(tmp_path / "logs" / "dragonfly.log"),
        started_at=1.0,
        argv=["wsl.exe", "-e", "/mnt/c/p/bin/dragonfly"],
    )


def test_build_spec_for_wsl_has_the_pidfile_and_wsl_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    fake = FakeWSL()
    monkeypatch.setattr(wsl, "run", fake)
    settings = _settings(tmp_path, password="pw")
    binary = Binary("dragonfly", tmp_path / "bin" / "dragonfly", "bin", "v1.24.0", via_wsl=True)
    spec = prepare.build_spec(settings, binary)
    assert spec["argv"][:2] == ["wsl.exe", "-e"]
    assert spec["argv"][-1] == "--pidfile=dragonfly.pid"
    assert spec["env"]["WSL_UTF8"] == "1"
    assert "DFLY_requirepass/u" in spec["env"]["WSLENV"]
    assert "pw" not in json.dumps(spec["argv"])


def test_prepare_checks_the_distro_first_and_drops_an_old_pidfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    binary = Binary("dragonfly", tmp_path / "dragonfly", "bin", "v1", via_wsl=True)
    monkeypatch.setattr(prepare, "choose_binary", lambda s: binary)
    old = settings.flavor_data_dir("dragonfly") / wsl.PIDFILE
    old.parent.mkdir(parents=True)
    old.write_text("123")
    refuse = mock.Mock(side_effect=StartError("WSL has no default Linux distribution"))
    monkeypatch.setattr(wsl, "check_default_distro", refuse)
    with pytest.raises(StartError, match="no default Linux distribution"):
        prepare.prepare(settings, None)
    refuse.assert_called_once_with()
    monkeypatch.setattr(wsl, "check_default_distro", lambda: "Ubuntu")
    monkeypatch.setattr(prepare, "build_spec", lambda s, b: {"log_file": str(tmp_path / "l.log")})
    monkeypatch.setattr(prepare, "check_port_free", lambda h, p: None)
    prepare.prepare(settings, None)
    assert not old.exists()


class _NoAnswer:
    """stop's request to the supervisor, which never answers (a stuck snapshot)."""

    def __init__(self, *args: object) -> None:
        self.answer, self.exit_status, self.direct = "", "", True
        self.done = __import__("threading").Event()

    def start(self) -> None:
        pass


def test_wsl_stop_waits_longer_and_escalates_inside_wsl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devserver.server import stop

    settings = _settings(tmp_path, stop_timeout=10)
    state = _wsl_state(tmp_path)
    assert wsl.stop_timeout(settings, state) == 30
    monkeypatch.setattr(stop, "Request", _NoAnswer)
    monkeypatch.setattr(stop.time, "sleep", lambda s: None)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    alive = [True]
    polls = iter(range(1000))  # a guard: an escalation that never ends fails, not hangs

    def status() -> str:
        if next(polls) >= 999:
            raise AssertionError("wsl.exe was never stopped")
        return "running" if alive[0] else "zombie"

    proc = mock.Mock()
    proc.status.side_effect = status
    proc.children.return_value = []
    escalate = mock.Mock(side_effect=lambda *a: alive.__setitem__(0, False) or "SIGTERM")
    monkeypatch.setattr(wsl, "escalate", escalate)
    monkeypatch.setattr(wsl, "left_running", lambda settings, state: False)
    terminate = mock.Mock()
    monkeypatch.setattr(kill, "terminate", terminate)
    result = stop._end(settings, state, proc, True, None, clock, 0.0)
    escalate.assert_called_once_with(settings, state, proc)
    terminate.assert_not_called()  # never just kill wsl.exe
    assert result.method == "SIGTERM" and result.forced
    assert now[0] >= 30 * stop.GRACEFUL_SHARE  # waited the WSL (tripled) graceful share


def test_wsl_exe_gone_but_dragonfly_alive_counts_as_not_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    pidfile = settings.flavor_data_dir("dragonfly") / wsl.PIDFILE
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text("4242")
    fake = FakeWSL({4242: "dragonfly-x86_6"})
    monkeypatch.setattr(wsl, "run", fake)
    state = _wsl_state(tmp_path)
    assert wsl.left_running(settings, state) is True
    del fake.procs[4242]
    assert wsl.left_running(settings, state) is False
    native = ServerState(**{**state.__dict__, "exe": "/usr/bin/redis-server", "argv": ["r"]})
    assert wsl.stop_timeout(settings, native) == 10


def test_a_failed_start_kills_the_linux_dragonfly_before_wsl_exe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    pidfile = wsl.pidfile(settings, "dragonfly")
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text("4242")
    fake = FakeWSL({4242: "dragonfly-x86_6", 17: "bash"})
    monkeypatch.setattr(wsl, "run", fake)
    order: list[str] = []
    monkeypatch.setattr(
        kill, "kill_tree", lambda proc: order.append(f"wsl.exe after {fake.kills()}")
    )
    undo.kill_server(settings, _wsl_state(tmp_path), mock.Mock())
    assert order == ["wsl.exe after [['kill', '-KILL', '4242']]"]
    assert 4242 not in fake.procs and 17 in fake.procs
