"""Issue 11's pure pieces: Procfile parsing, app.processes, start mismatch, cli replies,
shell quoting, argv after ``--``, and reset's choice of folder (no server needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from devserver.app import procs, shellenv
from devserver.cli import redis_prompt as cli
from devserver.config import load_settings
from devserver.errors import ConfigError
from devserver.server import reset, running
from devserver.server.state import ServerState
from tests.platforms import needs_posix


def _state(**changes: object) -> ServerState:
    base: dict[str, object] = {
        "pid": 10,
        "create_time": 1.0,
        "exe": "/usr/bin/redis-server",
        "supervisor_pid": 9,
        "flavor": "redis",
        "version": "7.0.15",
        "host": "127.0.0.1",
        "port": 6379,
        "log_file": "",
        "started_at": 0.0,
        "binary": "/usr/bin/redis-server",
    }
    base.update(changes)
    return ServerState(**base)  # type: ignore[arg-type]


def test_differences_name_only_what_was_asked_and_differs() -> None:
    state = _state()
    assert running.differences(state, {"port": None, "flavor": None}) == []
    assert running.differences(state, {"port": 6379, "flavor": "auto"}) == []
    assert running.differences(state, {"flavor": "REDIS"}) == []
    assert running.differences(state, {"port": 6380}) == ["port 6380 (it runs on 6379)"]
    assert running.differences(state, {"flavor": "garnet"}) == ["flavor garnet (it runs redis)"]
    assert running.differences(state, {"binary": "/opt/other/redis-server"}) == [
        "binary /opt/other/redis-server (it runs /usr/bin/redis-server)"
    ]
    hint = running.restart_hint({"port": 6380, "flavor": None, "binary": "/a b/redis"})
    assert hint == "invoke restart --port 6380 --binary '/a b/redis'"


def test_procfile_and_app_processes() -> None:
    text = "# comment\n\nweb: python -m app.web --port 8000\nworker:python w.py\n"
    assert procs.parse_procfile(text) == {
        "web": "python -m app.web --port 8000",
        "worker": "python w.py",
    }
    with pytest.raises(ConfigError, match="line 2"):
        procs.parse_procfile("web: ok\nno colon here\n")


def test_app_processes_combine_api_command_and_fall_back_to_a_procfile(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("worker: python w.py\n")
    assert procs.app_processes("python api.py", {}, procfile) == {
        "api": "python api.py",
        "worker": "python w.py",
    }
    assert procs.app_processes("", {"web": "x"}, procfile) == {"web": "x"}  # mapping wins
    assert procs.app_processes("", {}, tmp_path / "missing") == {}
    with pytest.raises(ConfigError, match="two processes are named 'api'"):
        procs.app_processes("python api.py", {"api": "other"}, None)


def test_app_processes_config_is_validated(tmp_path: Path) -> None:
    ok = load_settings({"app": {"processes": {"web": "python w.py"}}}, tmp_path)
    assert dict(ok.app.processes) == {"web": "python w.py"}
    assert dict(load_settings({}, tmp_path).app.processes) == {}
    for bad in ("python w.py", {"bad name": "x"}, {"web": ""}):
        with pytest.raises(ConfigError, match=r"app\.processes"):
            load_settings({"app": {"processes": bad}}, tmp_path)


def test_process_env_puts_the_tools_interpreter_folder_first_on_path() -> None:
    env = procs.process_env({"PATH": "/usr/bin:/bin", "KEEP": "1"}, {"REDIS_URL": "redis://x"})
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["PATH"].endswith("/usr/bin:/bin")
    assert env["KEEP"] == "1" and env["REDIS_URL"] == "redis://x"


def test_reply_formatting_like_redis_cli() -> None:
    assert cli.format_reply("PONG") == "PONG"
    assert cli.format_reply("v w") == '"v w"'
    assert cli.format_reply(3) == "(integer) 3"
    assert cli.format_reply(None) == "(nil)"
    assert cli.format_reply([]) == "(empty array)"
    assert cli.format_reply(["a", ["b", 2]]) == '1) "a"\n2) 1) "b"\n   2) (integer) 2'
    assert cli.format_reply(["a", None, 1], raw=True) == "a\n\n1"
    assert cli.split_command('SET k "v w"') == ["SET", "k", "v w"]
    with pytest.raises(cli.CliError):
        cli.split_command('SET k "open')


def test_words_after_dashdash_and_export_lines() -> None:
    argv = ["/x/invoke", "-e", "run", "--", "python", "-c", "a b", "--", "x"]
    assert shellenv.words_after_dashdash(argv, ("run",)) == ["python", "-c", "a b", "--", "x"]
    assert shellenv.words_after_dashdash(["/x/invoke", "run"], ("run",)) is None
    assert shellenv.words_after_dashdash(["/x/invoke", "--", "run"], ("run",)) is None
    text = shellenv.export_lines({"A": "it's $x", "B": "plain"})
    assert text == "export A='it'\"'\"'s $x'\nexport B=plain\n"
    with pytest.raises(ConfigError):
        shellenv.export_lines({"NOT-A-NAME": "x"})


def test_reset_picks_a_flavor_and_removes_only_its_folder(tmp_path: Path) -> None:
    settings = load_settings({"server": {"flavor": "auto"}}, tmp_path)
    with pytest.raises(ConfigError, match="no flavor has data"):
        reset.pick_flavor(settings, None, None)
    data = settings.data_dir
    (data / "redis").mkdir(parents=True)
    (data / "redis" / "appendonly.aof").write_text("x" * 10)
    assert reset.pick_flavor(settings, None, None) == "redis"
    assert reset.pick_flavor(settings, None, "garnet") == "garnet"  # the running one
    assert reset.pick_flavor(settings, "dragonfly", "garnet") == "dragonfly"  # asked
    with pytest.raises(ConfigError, match="unknown flavor"):
        reset.pick_flavor(settings, "memcached", None)


@needs_posix("symlinks for an unprivileged user (creating one needs a privilege there)")
def test_reset_removes_links_not_their_targets(tmp_path: Path) -> None:
    settings = load_settings({"server": {"flavor": "auto"}}, tmp_path)
    data = settings.data_dir
    (data / "redis").mkdir(parents=True)
    (data / "redis" / "appendonly.aof").write_text("x" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (data / "redis" / "link").symlink_to(outside)
    found = reset.footprint(settings, "redis")
    assert (found.files, found.size, found.exists) == (2, 10 + len(str(outside)), True)
    reset.remove(settings, "redis")
    assert not (data / "redis").exists() and (outside / "keep").exists()
    # data/<flavor> itself a symlink: the link goes, its target stays
    (data / "garnet").symlink_to(outside)
    reset.remove(settings, "garnet")
    assert not os.path.lexists(data / "garnet") and (outside / "keep").exists()


def test_app_processes_on_windows_get_a_group_and_ctrl_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows: cmd /c (npm.cmd and friends), its own process group so CTRL_BREAK reaches it
    alone, a tree kill through psutil (the pid is cmd.exe's, the app is its child)."""
    import subprocess
    from unittest import mock

    from devserver.system import appproc, host, kill, signals, spawn

    monkeypatch.setattr(host, "WINDOWS", True)
    with mock.patch.object(subprocess, "Popen") as popen:
        appproc.spawn_app("npm run dev", {"A": "1"}, Path("/p"))
    kwargs = popen.call_args.kwargs
    assert popen.call_args.args == ("npm run dev",) and kwargs["shell"] is True
    assert kwargs["creationflags"] == spawn.CREATE_NEW_PROCESS_GROUP
    assert kwargs["stdin"] == subprocess.DEVNULL and kwargs["stderr"] == subprocess.STDOUT
    proc = mock.Mock()
    proc.poll.return_value = None
    appproc.ask_app_to_stop(proc)
    proc.send_signal.assert_called_once_with(signals.CTRL_BREAK_EVENT)
    # No console to share (seen under Wine): CPython raises SystemError; the caller kills it.
    proc.send_signal.side_effect = SystemError("<built-in function kill> returned a result")
    assert appproc.ask_app_to_stop(proc) is False
    proc.send_signal.side_effect = None
    with mock.patch.object(kill, "kill_tree") as kill_tree, mock.patch("psutil.Process") as ps:
        appproc.kill_app(proc)
    kill_tree.assert_called_once_with(ps.return_value)
    recorded = mock.Mock()
    with mock.patch.object(kill, "kill_tree") as kill_tree:
        appproc.stop_recorded_app(recorded)
    kill_tree.assert_called_once_with(recorded)


@needs_posix("process groups to signal (os.killpg) nor SIGKILL")
def test_app_processes_on_posix_get_a_session_sigterm_to_the_main_and_a_kill_to_the_group() -> None:
    """SIGTERM to the main process alone (KillMode=mixed: a worker's pool children are left
    to it, so it finishes its jobs); the kill at the end reaches the group."""
    import signal
    import subprocess
    from unittest import mock

    from devserver.system import appproc

    with mock.patch.object(subprocess, "Popen") as popen:
        appproc.spawn_app("uvicorn app:app --port 8000", {}, Path("/p"))
    assert popen.call_args.args == (["uvicorn", "app:app", "--port", "8000"],)
    assert popen.call_args.kwargs["start_new_session"] is True
    with mock.patch.object(subprocess, "Popen") as popen:
        appproc.spawn_app("cd api && make run", {}, Path("/p"))
    assert popen.call_args.kwargs["shell"] is True
    proc = mock.Mock(pid=4242)
    proc.poll.return_value = None
    with mock.patch("os.killpg") as killpg:
        appproc.ask_app_to_stop(proc)
        appproc.kill_app(proc)
    proc.send_signal.assert_called_once_with(signal.SIGTERM)
    assert killpg.call_args_list == [mock.call(4242, signal.SIGKILL)]
    proc.poll.return_value = 0  # reaped: its pid may be anyone's now, never signalled
    proc.send_signal.reset_mock()
    with mock.patch("os.killpg") as killpg:
        appproc.ask_app_to_stop(proc)
        appproc.kill_app(proc)
    killpg.assert_not_called()
    proc.send_signal.assert_not_called()
