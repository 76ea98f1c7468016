"""Windows defects found by reading against primary sources, each run on Linux with
host.WINDOWS patched and the platform calls asserted (what Wine can show runs in
tests/winpython/test_platform_calls.py; docs/windows.md says which is which).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from devserver.catalog import FLAVORS
from devserver.errors import BinaryBlocked, FetchError
from devserver.fetch import binaries, install
from devserver.server import identity
from devserver.system import files, host, spawn, wsl


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(host, "MACOS", False)


def sharing_violation() -> PermissionError:
    """What Windows raises for a rename of a folder holding a file another process has open."""
    exc = PermissionError(13, "The process cannot access the file because it is being used")
    exc.winerror = 32  # type: ignore[attr-defined]  # ERROR_SHARING_VIOLATION
    return exc


# ---- install right after download: antivirus holds the new exe for seconds ------------------


def test_install_retries_the_folder_rename_while_a_scanner_holds_the_exe(
    windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    (bin_dir / "redis").mkdir(parents=True)
    (bin_dir / "redis" / "redis-server.exe").write_bytes(b"old")
    new = tmp_path / "work" / "x"
    new.mkdir(parents=True)
    (new / "redis-server.exe").write_bytes(b"new")
    real_replace = os.replace
    refused: list[str] = []

    def scanned_replace(src: Any, dst: Any) -> None:
        # The scanner holds the new exe (in the staged folder) for the first three tries.
        if ".redis.new-" in str(src) and len(refused) < 3:
            refused.append(str(src))
            raise sharing_violation()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", scanned_replace)
    monkeypatch.setattr(files.time, "sleep", lambda seconds: None)
    install.install(bin_dir, [(new, "redis")], "redis.json", {"version": "v2"})
    assert len(refused) == 3
    assert (bin_dir / "redis" / "redis-server.exe").read_bytes() == b"new"
    assert install.RENAME_RETRY >= 5  # "several seconds", not files.retry_sharing's default 1 s


def test_install_still_refused_names_antivirus_and_rolls_back(
    windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    new = tmp_path / "work" / "x"
    new.mkdir(parents=True)
    (new / "redis-server.exe").write_bytes(b"new")

    def refused(src: Any, dst: Any) -> None:
        raise sharing_violation()

    monkeypatch.setattr(os, "replace", refused)
    monkeypatch.setattr(install, "RENAME_RETRY", 0.0)
    with pytest.raises(FetchError) as caught:
        install.install(bin_dir, [(new, "redis")], "redis.json", {"version": "v2"})
    assert "antivirus" in caught.value.hint
    assert not bin_dir.exists()  # created by this install, removed with it
    assert (new / "redis-server.exe").read_bytes() == b"new"  # not half copied


# ---- Smart App Control: WinError 4551 at fetch's version probe and at the server's spawn ----


def app_control_refusal() -> OSError:
    exc = OSError(22, "An Application Control policy has blocked this file")
    exc.winerror = 4551  # type: ignore[attr-defined]  # ERROR_SYSTEM_INTEGRITY_POLICY_VIOLATION
    return exc


def test_the_version_probe_says_smart_app_control_blocked_the_binary(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = mock.Mock(side_effect=app_control_refusal())
    monkeypatch.setattr(binaries.subprocess, "run", run)
    with pytest.raises(BinaryBlocked) as caught:
        binaries.read_version(FLAVORS["redis"], Path("C:/proj/bin/redis/redis-server.exe"))
    assert "Smart App Control" in caught.value.message and "4551" in caught.value.message
    assert "redis-server.exe" in caught.value.message and caught.value.hint
    assert run.call_args.args[0][1:] == list(FLAVORS["redis"].version_args)


def test_other_probe_failures_still_mean_no_version(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries.subprocess, "run", mock.Mock(side_effect=OSError(8, "exec")))
    assert binaries.read_version(FLAVORS["redis"], Path("C:/x/redis-server.exe")) == ""
    monkeypatch.setattr(host, "WINDOWS", False)  # a 4551 elsewhere means nothing
    monkeypatch.setattr(binaries.subprocess, "run", mock.Mock(side_effect=app_control_refusal()))
    assert binaries.read_version(FLAVORS["redis"], Path("/x/redis-server")) == ""


def test_a_blocked_spawn_writes_what_blocked_it_into_the_log(windows: None, tmp_path: Path) -> None:
    from devserver.supervisor.starting import spawn_failed

    spec: Any = {
        "binary": "C:\\proj\\bin\\redis\\redis-server.exe",
        "log_file": str(tmp_path / "redis.log"),
        "log_max_bytes": 1 << 20,
        "log_backups": 1,
    }
    assert spawn_failed(spec, app_control_refusal()) == 127
    log = (tmp_path / "redis.log").read_text(encoding="utf-8")
    assert "Smart App Control" in log and "redis-server.exe" in log


# ---- WSL with a custom automount root: the recorded argv's path is what runs --------------


def test_a_wsl_server_under_a_custom_automount_root_is_recognised() -> None:
    """wsl.conf ``[automount] root = /win/``: wslpath gave /win/c/..., recorded in argv."""
    linux = "/win/c/proj/bin/dragonfly/dragonfly"
    argv = ["wsl.exe", "-e", linux, "--port", "6379", "--pidfile=dragonfly.pid"]
    proc = mock.Mock()
    proc.exe.return_value = "C:\\Windows\\System32\\wsl.exe"
    proc.cmdline.return_value = argv
    binary = "C:\\proj\\bin\\dragonfly\\dragonfly"
    assert identity.runs_binary(proc, binary, argv)
    assert not identity.runs_binary(proc, "C:\\proj\\bin\\other\\dragonfly", ["wsl.exe"])
    assert wsl.launched_program(argv) == linux
    assert wsl.launched_program(["C:\\redis-server.exe", "-e", "x"]) == ""


def test_server_process_passes_the_recorded_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    from devserver.server.state import ServerState

    seen: list[Any] = []
    monkeypatch.setattr(identity, "verified_process", lambda *a: seen.append(a))
    argv = ["wsl.exe", "-e", "/win/c/p/bin/dragonfly/dragonfly"]
    state = ServerState(
        pid=5,
        create_time=1.0,
        exe="wsl.exe",
        supervisor_pid=4,
        flavor="dragonfly",
        version="",
        host="127.0.0.1",
        port=6379,
        log_file="",
        started_at=0.0,
        binary="C:\\p\\bin\\dragonfly\\dragonfly",
        argv=argv,
    )
    identity.server_process(state)
    assert seen and seen[0][-1] == argv


# ---- `invoke test`: sys.executable in a cmd.exe line -----------------------------------------


def test_invoke_test_quotes_the_interpreter_for_cmd(
    windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks as dev  # this repository's own tasks.py: test is a dev task

    monkeypatch.setattr(sys, "executable", "C:\\Program Files\\Python311\\python.exe")
    context = mock.Mock()
    dev.test.body(context, args="-k stop")
    command = context.run.call_args.args[0]
    assert command == '"C:\\Program Files\\Python311\\python.exe" -m pytest -k stop'


def test_invoke_test_quotes_for_a_posix_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks as dev  # this repository's own tasks.py: test is a dev task

    monkeypatch.setattr(host, "WINDOWS", False)
    monkeypatch.setattr(sys, "executable", "/home/a b/.venv/bin/python")
    context = mock.Mock()
    dev.test.body(context, args="")
    assert context.run.call_args.args[0].startswith("'/home/a b/.venv/bin/python' -m pytest")


# ---- start --foreground from a venv: outside the redirector's kill-on-close job -----------


@pytest.fixture()
def venv_redirected(windows: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process as a Windows venv's redirector runs it: the base interpreter exists."""
    base = tmp_path / "Python311" / "python.exe"
    base.parent.mkdir()
    base.write_bytes(b"MZ")
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "Scripts" / "python.exe"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    monkeypatch.setattr(sys, "base_prefix", str(base.parent))
    monkeypatch.setattr(sys, "_base_executable", str(base), raising=False)
    monkeypatch.setattr(sys, "orig_argv", [str(base), "-m", "invoke", "start", "--foreground"])
    monkeypatch.delenv(spawn.OUTSIDE_JOB_ENV, raising=False)
    return base


def test_foreground_from_a_venv_runs_under_the_base_interpreter(
    venv_redirected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redirector's job (KILL_ON_JOB_CLOSE, SILENT_BREAKAWAY_OK) would kill this process
    when the console closes: the foreground supervisor runs in a child, outside the job, and
    this process waits for it with Ctrl+C ignored (the child handles it)."""
    import signal

    seen: dict[str, Any] = {}

    class Child:
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            seen["argv"], seen["env"] = argv, env

        def wait(self) -> int:
            seen["sigint"] = signal.getsignal(signal.SIGINT)
            return 3

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(spawn.subprocess, "Popen", Child)
    assert spawn.foreground_outside_launcher_job() == 3
    assert seen["argv"] == [str(venv_redirected), "-m", "invoke", "start", "--foreground"]
    assert seen["env"][spawn.OUTSIDE_JOB_ENV] == "1"  # the child does not re-run itself
    assert seen["env"]["PYTHONPATH"].split(os.pathsep) == [p for p in sys.path if p]
    assert seen["sigint"] == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == before  # restored


def test_foreground_runs_here_outside_a_venv_in_the_child_and_on_posix(
    venv_redirected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    popen = mock.Mock(side_effect=AssertionError("no child"))
    monkeypatch.setattr(spawn.subprocess, "Popen", popen)
    monkeypatch.setenv(spawn.OUTSIDE_JOB_ENV, "1")  # this is the child
    assert spawn.foreground_outside_launcher_job() is None
    monkeypatch.delenv(spawn.OUTSIDE_JOB_ENV)
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # no venv
    assert spawn.foreground_outside_launcher_job() is None
    monkeypatch.setattr(host, "WINDOWS", False)
    assert spawn.foreground_outside_launcher_job() is None


def test_start_foreground_uses_the_child_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    from devserver.cli.tasks import server
    from devserver.supervisor import foreground

    monkeypatch.setattr(spawn, "foreground_outside_launcher_job", lambda: 1)
    monkeypatch.setattr(foreground, "run_foreground", mock.Mock(side_effect=AssertionError))
    with pytest.raises(Exit) as caught:
        server.start.body(Context(), foreground=True)
    assert caught.value.code == 1
