"""Issue 11 (daily use): start vs a differing running server, reset, up's application processes
(recorded, stopped by `down` from another shell), run, env --shell, cli, the example app.

Real Invoke in a subprocess against a real redis-server on a free port, in a throwaway copy of
the project; whatever a test started is stopped by recorded PID in the fixture's finalizer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.server import resp
from tests.conftest import SIGINT_AT_DEFAULT, free_port
from tests.integration.test_up import ROOT, Project
from tests.platforms import needs_posix


def _kill_app_recorded(app_file: Path) -> None:
    """Kill the application processes (and their owner) an app.json names, identity-checked."""
    try:
        data = json.loads(app_file.read_text())
    except (OSError, ValueError):
        return
    for entry in [data.get("owner") or {}, *(data.get("processes") or [])]:
        pid = entry.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            continue
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - float(entry.get("create_time", 0))) < 0.05:
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
        except psutil.Error:
            pass


class Daily(Project):
    """The project copy, plus a background `invoke up` and the processes it recorded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ups: list[subprocess.Popen[str]] = []

    @property
    def app_file(self) -> Path:
        return self.root / "data" / "app.json"

    def set_yaml(self, text: str) -> None:
        """Append YAML sections (mappings cannot come from environment variables)."""
        config = self.root / "invoke.yaml"
        plain = config.read_text().replace("  env: {}\n", "").replace("  processes: {}\n", "")
        config.write_text(plain + "\n" + text)

    def up_in_background(self, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.root,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            **SIGINT_AT_DEFAULT,  # tests send it Ctrl+C, also when the suite is a background job
        )
        self.ups.append(proc)
        return proc

    @property
    def api_file(self) -> Path:
        return self.root / "data" / "api.json"

    def wait_recorded(
        self, proc: subprocess.Popen[str], count: int, record: Path | None = None
    ) -> dict[str, Any]:
        """Until `up` has recorded ``count`` application processes (or it ended: fail)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                data: dict[str, Any] = json.loads((record or self.app_file).read_text())
                if len(data["processes"]) == count and data["owner"]["pid"] == proc.pid:
                    return data
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        pytest.fail("up did not record its processes in time")

    def kill_leftovers(self) -> None:
        for proc in self.ups:
            if proc.poll() is None:
                proc.kill()
        # `invoke api`'s API shares its pipes: kill the recorded processes before reading them
        _kill_app_recorded(self.app_file)
        _kill_app_recorded(self.api_file)
        for proc in self.ups:
            proc.communicate(timeout=30)
        super().kill_leftovers()


@pytest.fixture()
def proj(tmp_path: Path) -> Iterator[Daily]:
    root = tmp_path / "copy"
    root.mkdir()
    for name in ("tasks.py", "invoke.yaml"):
        shutil.copy2(ROOT / name, root / name)
    for folder in ("devserver", "examples"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    project = Daily(root)
    yield project
    project.kill_leftovers()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_dead(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _one_error(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# --- item 7: start while a differing server runs ----------------------------------------------


def test_start_asking_for_another_port_or_flavor_names_the_running_server(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    other = free_port()
    moved = proj.invoke("start", "--port", str(other))
    assert moved.returncode == 1, moved.stderr
    assert len(_one_error(moved.stderr)) == 1
    assert f"port {other} (it runs on {proj.port})" in moved.stderr
    assert f"invoke restart --port {other}" in moved.stderr
    assert resp.ping("127.0.0.1", other) == "down"  # nothing was started there
    garnet = proj.invoke("start", "--flavor", "garnet")
    assert garnet.returncode == 1
    assert "flavor garnet (it runs redis)" in garnet.stderr
    assert "invoke restart --flavor garnet" in garnet.stderr
    # Nothing asked, or exactly what runs: "already running" stays a success.
    for args in ((), ("--port", str(proj.port)), ("--flavor", "redis"), ("--flavor", "auto")):
        same = proj.invoke("start", *args)
        assert same.returncode == 0 and "already running" in same.stderr, (args, same.stderr)
    restarted = proj.invoke("restart", "--port", str(other))
    assert restarted.returncode == 0, restarted.stderr
    assert resp.ping("127.0.0.1", other) == "ready"


def test_up_with_another_port_or_flavor_says_one_error_with_the_restart_hint(
    proj: Daily,
) -> None:
    assert proj.invoke("start").returncode == 0
    other = free_port()
    for args, differ, hint in (
        (["--port", str(other)], f"port {other} (it runs on {proj.port})", "--port"),
        (["--flavor", "garnet"], "flavor garnet (it runs redis)", "--flavor"),
    ):
        result = proj.invoke("up", *args, INVOKE_API_COMMAND="true")
        assert result.returncode == 1, result.stderr
        # One error line (and its hint), nothing else: no step ran, not even fetch.
        lines = result.stderr.splitlines()
        assert len(_one_error(result.stderr)) == 1 and len(lines) == 2, result.stderr
        assert lines[0].startswith("error: up: redis ") and differ in lines[0]
        assert lines[1].startswith("hint: run `invoke restart ") and hint in lines[1]
        assert "then `invoke up` again" in lines[1]
    assert resp.ping("127.0.0.1", other) == "down"  # nothing was started there
    same = proj.invoke("up", "--port", str(proj.port), "--no-verify", INVOKE_API_COMMAND="true")
    assert same.returncode == 0 and "already running" in same.stderr, same.stderr


# --- item 8: stop --no-save's help, invoke reset -------------------------------------------------


def test_stop_no_save_help_says_it_is_not_a_wipe(proj: Daily) -> None:
    for task in ("stop", "down"):
        helptext = proj.invoke("--help", task).stdout
        assert "Not a wipe" in helptext and "invoke reset" in helptext, helptext
    reset_help = proj.invoke("--help", "reset").stdout
    assert "--yes" in reset_help and "--flavor" in reset_help


def _cli(proj: Daily, *words: str) -> str:
    result = proj.invoke("cli", "--", *words)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reset_refuses_without_a_terminal_then_deletes_only_this_flavors_data(
    proj: Daily, tmp_path: Path
) -> None:
    assert proj.invoke("start").returncode == 0
    assert _cli(proj, "SET", "kept", "value") == "OK\n"
    data = proj.root / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not ours")
    (data / "redis" / "link-out").symlink_to(outside)  # rmtree must not follow it
    (data / "garnet").mkdir()
    (data / "garnet" / "keep.dat").write_text("another flavor's data")
    (data / "notes.txt").write_text("beside the flavors")

    refused = proj.invoke("reset")  # stdin is not a terminal, no --yes
    assert refused.returncode == 1
    assert len(_one_error(refused.stderr)) == 1 and "--yes" in refused.stderr
    assert (data / "redis").is_dir() and resp.ping("127.0.0.1", proj.port) == "ready"

    done = proj.invoke("reset", "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stderr and str(data / "redis") in done.stderr
    assert not (data / "redis").exists()
    assert resp.ping("127.0.0.1", proj.port) == "down"
    assert (outside / "precious.txt").read_text() == "not ours"
    assert (data / "garnet" / "keep.dat").exists() and (data / "notes.txt").exists()

    assert proj.invoke("start").returncode == 0  # the append-only file is gone too: empty
    assert _cli(proj, "GET", "kept") == "\n"
    assert _cli(proj, "DBSIZE") == "0\n"


NO_PTY = needs_posix("a pty (termios): these tests type at a terminal prompt")


def _openpty() -> tuple[int, int]:
    """A pseudo-terminal; imported here, so the module also loads where ``pty`` does not."""
    import pty

    return pty.openpty()


def _invoke_on_pty(proj: Daily, answer: bytes, *args: str) -> tuple[int, str]:
    """Run a task with a terminal as stdin (isatty), typing ``answer`` at its prompt."""
    master, slave = _openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=proj.root,
            env=proj.env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(master, answer)
        _out, err = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    return proc.returncode, err


@NO_PTY
def test_reset_asks_on_a_terminal_and_no_keeps_everything(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    assert _cli(proj, "SET", "k", "v") == "OK\n"
    code, err = _invoke_on_pty(proj, b"n\n", "reset")
    assert code == 0 and "[y/N]" in err and "nothing deleted" in err, err
    assert "stop the running redis server" in err
    assert _cli(proj, "GET", "k") == "v\n"
    code, err = _invoke_on_pty(proj, b"y\n", "reset", "--flavor", "redis")
    assert code == 0 and "deleted" in err, err
    assert not (proj.root / "data" / "redis").exists()


# --- item 12 and app.processes: up owns what it started ----------------------------------------


_SLEEPER = "import os, time; print('sleeping', os.getpid(), flush=True); time.sleep(120)"


def _python(code: str) -> str:
    return f'"{sys.executable}" -c "{code}"'


def test_up_runs_every_process_and_the_first_to_fail_stops_the_rest(proj: Daily) -> None:
    failer = "import os, sys, time; time.sleep(1); print('URL', os.environ['REDIS_URL'], os.environ['APP_MODE']); sys.exit(5)"  # noqa: E501
    proj.set_yaml(
        "  env:\n    APP_MODE: dev\n"
        f"app:\n  processes:\n    sleeper: {json.dumps(_python(_SLEEPER))}\n"
        f"    failer: {json.dumps(_python(failer))}\n"
    )
    result = proj.invoke("up")
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"failer  | URL redis://127.0.0.1:{proj.port}/0 dev" in result.stdout
    sleeping = [
        line for line in result.stdout.splitlines() if line.startswith("sleeper | sleeping")
    ]
    assert sleeping, result.stdout
    assert _wait_dead(int(sleeping[0].split()[-1]))
    assert "failer exited (code 5), so the others were stopped" in result.stderr
    assert "the server keeps running" in result.stderr
    assert resp.ping("127.0.0.1", proj.port) == "ready"
    assert not proj.app_file.exists()


def test_up_reads_a_procfile_when_app_processes_is_empty(proj: Daily) -> None:
    code = "import os, sys; print('from procfile', os.environ['REDIS_URL']); sys.exit(4)"
    (proj.root / "Procfile").write_text(f"# the usual format\nonce: {_python(code)}\n")
    result = proj.invoke("up", "--no-verify")
    assert result.returncode == 4, result.stderr
    assert f"once | from procfile redis://127.0.0.1:{proj.port}/0" in result.stdout


def test_a_process_that_cannot_start_fails_up_in_one_line_and_stops_the_others(
    proj: Daily, tmp_path: Path
) -> None:
    marker = tmp_path / "first.pid"
    first = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    proj.set_yaml(
        f"app:\n  processes:\n    first: {json.dumps(_python(first))}\n"
        "    second: no-such-program-here --flag\n"
    )
    result = proj.invoke("up", "--no-verify")
    assert result.returncode == 1
    assert len(_one_error(result.stderr)) == 1
    assert "cannot start the second process ('no-such-program-here --flag')" in result.stderr

    def survivors() -> list[int]:  # the first process, started before the second failed
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if any(str(marker) in word for word in cmdline) and _alive(proc.pid):
                found.append(proc.pid)
        return found

    deadline = time.monotonic() + 20
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors() == []
    assert not proj.app_file.exists()


def test_down_from_another_shell_stops_ups_processes_then_the_server(proj: Daily) -> None:
    proj.set_yaml(f"app:\n  processes:\n    one: {json.dumps(_python(_SLEEPER))}\n")
    up = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    recorded = proj.wait_recorded(up, 2)
    pids = [entry["pid"] for entry in recorded["processes"]]
    assert {entry["name"] for entry in recorded["processes"]} == {"api", "one"}
    down = proj.invoke("down")
    assert down.returncode == 0, down.stderr
    assert "`invoke up` stopped the application processes: " in down.stderr
    _out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert "`invoke down` stopped the application processes" in err
    assert "the server keeps running" not in err
    assert all(_wait_dead(pid) for pid in pids)
    assert resp.ping("127.0.0.1", proj.port) == "down"
    assert not proj.app_file.exists()


def test_down_stops_the_recorded_processes_when_up_itself_was_killed(proj: Daily) -> None:
    up = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    pid = proj.wait_recorded(up, 1)["processes"][0]["pid"]
    assert up.stdout is not None
    while "sleeping" not in up.stdout.readline():  # it has written all it will write
        assert up.poll() is None
    up.send_signal(signal.SIGKILL)  # no clean-up by up: its process keeps running
    up.communicate(timeout=30)
    assert _alive(pid)
    down = proj.invoke("down")
    assert down.returncode == 0, down.stderr
    assert "stopped the application processes: api" in down.stderr
    assert _wait_dead(pid)


def test_a_new_up_stops_what_a_killed_up_left_running(proj: Daily) -> None:
    first = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    pid = proj.wait_recorded(first, 1)["processes"][0]["pid"]
    assert first.stdout is not None
    while "sleeping" not in first.stdout.readline():
        assert first.poll() is None
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    new_pid = proj.wait_recorded(second, 1)["processes"][0]["pid"]
    assert new_pid != pid and _wait_dead(pid)
    assert proj.invoke("down").returncode == 0
    _out, err = second.communicate(timeout=60)
    assert "stopped what a killed `invoke up` left running: api" in err


def test_down_from_another_shell_stops_an_api_started_on_its_own(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    api = proj.up_in_background("api", INVOKE_API_COMMAND=_python(_SLEEPER))
    recorded = proj.wait_recorded(api, 1, proj.api_file)
    assert [entry["name"] for entry in recorded["processes"]] == ["api"]
    pid = recorded["processes"][0]["pid"]
    again = proj.invoke("api", INVOKE_API_COMMAND=_python(_SLEEPER))  # a second copy: refused
    assert again.returncode == 1 and f"another `invoke api` (pid {api.pid})" in again.stderr
    down = proj.invoke("down")
    assert down.returncode == 0, down.stderr
    assert "stopped the API that `invoke api` runs" in down.stderr
    _out, err = api.communicate(timeout=60)
    assert api.returncode == 0, err  # stopped on purpose: not the API's SIGTERM code
    assert "`invoke down` stopped the API" in err
    assert _wait_dead(pid)
    assert resp.ping("127.0.0.1", proj.port) == "down"
    assert not proj.api_file.exists()


def test_down_stops_the_api_a_killed_invoke_api_left_running(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    api = proj.up_in_background("api", INVOKE_API_COMMAND=_python(_SLEEPER))
    pid = proj.wait_recorded(api, 1, proj.api_file)["processes"][0]["pid"]
    api.send_signal(signal.SIGKILL)  # no clean-up by `invoke api`: its API keeps running
    api.wait(timeout=30)  # (its pipes stay open: the API shares them)
    assert _alive(pid)
    down = proj.invoke("down")
    assert down.returncode == 0, down.stderr
    assert "stopped the API that `invoke api` runs" in down.stderr
    assert _wait_dead(pid)
    assert not proj.api_file.exists()


def test_api_after_ctrl_c_says_whether_the_server_still_runs(proj: Daily, tmp_path: Path) -> None:
    assert proj.invoke("start").returncode == 0
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(60)"
    )
    api = proj.up_in_background("api", INVOKE_API_COMMAND=_python(code))
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert api.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert proj.invoke("stop").returncode == 0  # the server went away meanwhile
    api.send_signal(signal.SIGINT)
    _out, err = api.communicate(timeout=60)
    assert "the server is not running any more" in err, err
    assert "keeps running" not in err


def test_down_never_signals_a_recorded_pid_that_is_now_another_process(proj: Daily) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proj.app_file.parent.mkdir(parents=True, exist_ok=True)
        entry = {"name": "api", "pid": bystander.pid, "create_time": 12345.0, "exe": "python3"}
        proj.app_file.write_text(
            json.dumps({"owner": {**entry, "name": "up"}, "processes": [entry]})
        )
        down = proj.invoke("down")
        assert down.returncode == 0, down.stderr
        assert "stale record" in down.stderr
        assert bystander.poll() is None  # not signalled
        assert not proj.app_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_ctrl_c_stops_the_processes_and_up_says_the_server_keeps_running(proj: Daily) -> None:
    up = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    pid = proj.wait_recorded(up, 1)["processes"][0]["pid"]
    up.send_signal(signal.SIGINT)  # what a terminal's Ctrl+C sends to up
    _out, err = up.communicate(timeout=60)
    assert up.returncode == 130, err
    assert "Ctrl+C: stopped the application processes; the server keeps running" in err
    assert _wait_dead(pid)
    assert resp.ping("127.0.0.1", proj.port) == "ready"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize(("sig", "said"), [("SIGTERM", "SIGTERM"), ("SIGHUP", "a hang-up")])
def test_up_ended_by_a_signal_names_it_not_ctrl_c(proj: Daily, sig: str, said: str) -> None:
    up = proj.up_in_background("up", "--no-verify", INVOKE_API_COMMAND=_python(_SLEEPER))
    pid = proj.wait_recorded(up, 1)["processes"][0]["pid"]
    up.send_signal(getattr(signal, sig))
    _out, err = up.communicate(timeout=60)
    assert f"{said}: stopped the application processes" in err, err
    assert "Ctrl+C" not in err
    assert _wait_dead(pid)


def test_up_says_so_when_the_server_was_stopped_under_it(proj: Daily, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    waiter = f"import os, sys, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\nsys.exit(2)"  # noqa: E501
    script = tmp_path / "waiter.py"
    script.write_text(waiter)
    up = proj.up_in_background(
        "up", "--no-verify", INVOKE_API_COMMAND=f'"{sys.executable}" "{script}"'
    )
    proj.wait_recorded(up, 1)
    assert proj.invoke("stop").returncode == 0  # the server only, as `invoke stop` does
    flag.write_text("")
    _out, err = up.communicate(timeout=60)
    assert up.returncode == 2
    assert "the server is not running any more" in err
    assert "keeps running" not in err


def test_up_options_port_flavor_no_fetch_no_verify(proj: Daily) -> None:
    port = free_port()
    result = proj.invoke(
        "up", "--port", str(port), "--flavor", "redis", "--no-verify", "--no-fetch",
        INVOKE_SERVER_FLAVOR="auto",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "up 1/4: fetch: skipped (--no-fetch)" in result.stderr
    assert "up 3/4: verify: skipped (--no-verify)" in result.stderr
    assert f"ready on 127.0.0.1:{port}" in result.stderr
    assert "not verified: --no-verify" in result.stderr and "and verified" not in result.stderr
    assert resp.ping("127.0.0.1", port) == "ready"
    helptext = proj.invoke("--help", "up").stdout
    for option in ("--port", "--flavor", "--no-verify", "--no-fetch", "invoke start"):
        assert option in helptext


def test_up_auto_offline_warns_once_then_says_the_fallback_in_one_line(proj: Daily) -> None:
    dead = {
        "INVOKE_SERVER_FLAVOR": "auto",
        "INVOKE_RELEASE_GITHUB_API": f"http://127.0.0.1:{free_port()}",
        "INVOKE_RELEASE_LOOKUP_TIMEOUT": "2",
    }
    if "no dragonfly binary yet" not in proj.invoke("up", "--no-verify", **dead).stderr:
        pytest.skip("auto means dragonfly only on Linux x86_64/aarch64")

    def fetch_step(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        begin = next(i for i, s in enumerate(lines) if s.startswith("==> up 1/4: fetch"))
        end = next(i for i, s in enumerate(lines) if s.startswith("==> up 2/4"))
        return lines[begin + 1 : end]

    (proj.root / "bin" / ".release-lookup-failed.json").unlink()  # the first run, again
    first = fetch_step(proj.invoke("up", "--no-verify", **dead))
    assert any(s.startswith("warning: release unreachable") for s in first), first
    assert any(s.startswith("hint: set server.flavor: redis") for s in first), first
    for _ in range(2):  # every later run in the same situation: one line, no warning
        [line] = fetch_step(proj.invoke("up", "--no-verify", **dead))
        assert line.startswith("release still unreachable (last asked "), line
        assert "using the local redis" in line and " again " in line


# --- run, env --shell, cli -----------------------------------------------------------------------


def test_run_keeps_argument_boundaries_and_passes_the_exit_code_on(proj: Daily) -> None:
    proj.set_yaml("  env:\n    APP_MODE: dev\n")
    code = (
        "import json, os, sys; "
        "print(json.dumps([sys.argv[1:], os.environ['REDIS_URL'], os.environ['APP_MODE']])); "
        "sys.exit(7)"
    )
    words = ["two words", "it's", '"double" $HOME', "", "--flag"]
    result = proj.invoke("run", "--", sys.executable, "-c", code, *words)
    assert result.returncode == 7, result.stderr
    argv, url, mode = json.loads(result.stdout)
    assert argv == words
    assert url == f"redis://127.0.0.1:{proj.port}/0" and mode == "dev"
    assert "not running" in result.stderr  # said, but the command still ran
    missing = proj.invoke("run")
    assert missing.returncode == 1 and "invoke run -- " in missing.stderr


def test_env_shell_lines_survive_eval_in_sh(proj: Daily) -> None:
    values = {"SPACES": "two  words", "DOLLAR": "$HOME and ${PATH}", "QUOTES": 'it\'s "q" `x`'}
    proj.set_yaml("  env:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in values.items()))
    printed = proj.invoke("env", "--shell", INVOKE_SERVER_PASSWORD="p w$'")
    assert printed.returncode == 0, printed.stderr
    assert all(line.startswith("export ") for line in printed.stdout.splitlines())
    names = [*values, "REDIS_URL"]
    dump = f"import json, os; print(json.dumps({{k: os.environ[k] for k in {names!r}}}))"
    evaluated = subprocess.run(
        ["sh", "-c", f'eval "$1"; exec "{sys.executable}" -c "$2"', "sh", printed.stdout, dump],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    got = json.loads(evaluated.stdout)
    assert got.pop("REDIS_URL") == f"redis://:p%20w%24%27@127.0.0.1:{proj.port}/0"
    assert got == values


def test_cli_one_shot_and_from_stdin_with_auth(proj: Daily) -> None:
    env = {"INVOKE_SERVER_PASSWORD": "s3cret pw"}
    assert proj.invoke("start", **env).returncode == 0
    ping = proj.invoke("cli", "PING", **env)
    assert (ping.returncode, ping.stdout) == (0, "PONG\n"), ping.stderr
    assert proj.invoke("cli", "--", "SET", "k", "v w", **env).stdout == "OK\n"
    assert proj.invoke("cli", "--", "GET", "k", **env).stdout == "v w\n"
    assert proj.invoke("cli", 'SET k2 "x y"', **env).stdout == "OK\n"  # one word, split
    assert proj.invoke("cli", "--", "GET", "k2", **env).stdout == "x y\n"
    assert proj.invoke("cli", "--", "RPUSH", "l", "a", "b c", **env).stdout == "2\n"
    bad = proj.invoke("cli", "--", "NOSUCHCOMMAND", **env)
    assert bad.returncode == 1 and len(_one_error(bad.stderr)) == 1
    fed = subprocess.run(
        [sys.executable, "-m", "invoke", "cli"],
        cwd=proj.root,
        env={**proj.env, **env},
        input='SET greeting "hello world"\nGET greeting\nLRANGE l 0 -1\nINCR greeting\nquit\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fed.stdout == "OK\nhello world\na\nb c\n", fed.stderr
    assert "(error)" in fed.stderr and fed.returncode == 1  # INCR on text failed
    stopped = proj.invoke("stop")
    assert stopped.returncode == 0
    refused = proj.invoke("cli", "PING", **env)
    assert refused.returncode == 1 and "invoke start" in refused.stderr


@NO_PTY
def test_cli_formats_replies_like_redis_cli_on_a_terminal(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    master, slave = _openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "cli", "--", "LRANGE", "nothing", "0", "-1"],
            cwd=proj.root,
            env=proj.env,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        proc.wait(timeout=60)
        os.close(slave)
        slave = -1
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert output.replace(b"\r\n", b"\n") == b"(empty array)\n"


# --- the example application -------------------------------------------------------------------


def test_example_job_queue_runs_with_up_in_one_step(proj: Daily) -> None:
    api_port = free_port()
    up = proj.up_in_background("-f", "examples/jobqueue/invoke.yaml", "up", JOBQ_PORT=str(api_port))
    proj.wait_recorded(up, 2)
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                assert json.load(reply) == {"ok": True}
                break
        except OSError:
            assert time.monotonic() < deadline and up.poll() is None
            time.sleep(0.1)
    request = urllib.request.Request(f"{base}/jobs", data=b"hello queue", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        job_id = json.load(reply)["id"]
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{base}/jobs/{job_id}", timeout=5) as reply:
            job = json.load(reply)
        if job.get("status") == "done":
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["result"] == "eueuq olleh"
    one_off = proj.invoke(
        "-f", "examples/jobqueue/invoke.yaml", "run", "--",
        "python", "examples/jobqueue/enqueue.py", "from", "run",
    )  # fmt: skip
    assert (one_off.returncode, one_off.stdout) == (0, "nur morf\n"), one_off.stderr
    assert proj.invoke("down").returncode == 0
    out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert f"done {job_id}: 'hello queue'" in out
    assert "web    | api: stopped" in out and "worker | worker: stopped" in out


@NO_PTY
def test_cli_interactive_prompt_on_a_terminal(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    master, slave = _openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "cli"],
        cwd=proj.root,
        env=proj.env,
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    output = b""
    try:
        for line in (b"SET k 'a b'\n", b"GET k\n", b"LPUSH k x\n", b"quit\n"):
            os.write(master, line)
        deadline = time.monotonic() + 60
        while proc.poll() is None or not output.endswith(b"\n"):
            assert time.monotonic() < deadline, output
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            output += chunk
        _out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    text = output.decode().replace("\r\n", "\n")
    # the prompt (CPython's input() writes it to stderr when readline is not loaded)
    assert f"127.0.0.1:{proj.port}> " in text + err.decode()
    assert '"a b"' in text  # a bulk reply, quoted as redis-cli does on a terminal
    assert b"WRONGTYPE" in err and proc.returncode == 1
    assert b"quit to leave" in err
