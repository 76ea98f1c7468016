"""Issue 9, part A: after a fault the server is either stopped or tracked, never forgotten.

Real processes throughout: the real tasks.py through ``python -m invoke``, the real
redis-server, and small Python stand-ins that misbehave on purpose. A test's processes are
recognised without any state file (which is what some of these faults lose): the supervisor
by a unique environment variable (``DEVSERVER_TEST_TAG``) it inherits from ``invoke``, the
server by its working directory inside the test's project. So a test can prove that nothing
of its own is left, and kills what is, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserver.server import resp
from tests.conftest import ROOT, _start_ticks, free_port, kill_recorded, popen_invoke, wait_dead
from tests.integration.test_cli import env_for, invoke, wait_foreground_ready

ROOT_ONLY = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (mount, chattr, unshare)"
)
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


# -- helpers --------------------------------------------------------------------------------


def tagged(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes of this test: its tag in their environment (supervisors),
    or a working directory inside its project (servers). The tag is the project path."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("DEVSERVER_TEST_TAG") == tag or proc.cwd().startswith(tag):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_none_tagged(tag: str, timeout: float = 10) -> list[psutil.Process]:
    """Wait (hang guard only) until no tagged process lives; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = tagged(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _can(*argv: str) -> bool:
    """Whether this machine lets us do it (root alone is not enough in some containers)."""
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def need(what: str, *argv: str) -> None:
    if not _can(*argv):
        pytest.skip(f"cannot {what} here ({' '.join(argv)} failed)")


def listening(port: int) -> bool:
    return resp.ping("127.0.0.1", port, timeout=0.5) != "down"


@pytest.fixture()
def tag(project: Path) -> Iterator[str]:
    """A unique tag for this test's processes; whatever still carries it is killed after."""
    value = str(project) + os.sep
    yield value
    kill_recorded(project / "data" / "server.json")
    for proc in tagged(value):
        try:
            proc.kill()
        except psutil.Error:
            pass


def tagged_env(project: Path, port: int, tag: str, **extra: str) -> dict[str, str]:
    return env_for(project, port, DEVSERVER_TEST_TAG=tag, **extra)


def fake_server(project: Path, body: str) -> Path:
    """A stand-in "redis-server" in bin/ (found before PATH), written in Python."""
    exe = project / "bin" / "redis-server"
    exe.parent.mkdir(parents=True, exist_ok=True)
    version = "import sys\nif '--version' in sys.argv: print('Redis server v=0.0.1'); sys.exit()"
    exe.write_text(f"#!{sys.executable}\n{version}\n{body}\n")
    exe.chmod(0o755)
    return exe


def read_state(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / "data" / "server.json").read_text())
    return data


# A server that answers PING and exits on SHUTDOWN, but ignores SIGTERM (so the parent-death
# signal cannot take it down) and never prints after start-up (its log pipe may be gone).
STUBBORN = "\n".join(
    [
        "import os, signal, socket, sys, threading",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "port = int(sys.argv[sys.argv.index('--port') + 1])",
        "srv = socket.create_server(('127.0.0.1', port))",
        "print('stubborn ready', flush=True)",
        "def serve(c):",
        "    while True:",
        "        data = c.recv(4096)",
        "        if not data: return",
        "        if b'SHUTDOWN' in data.upper(): os._exit(0)",
        "        if b'PING' in data.upper(): c.sendall(b'+PONG\\r\\n')",
        "while True:",
        "    c, _ = srv.accept()",
        "    threading.Thread(target=serve, args=(c,), daemon=True).start()",
    ]
)


# -- 1. the state file cannot be written ----------------------------------------------------


@ROOT_ONLY
@LINUX_ONLY
def test_full_disk_after_spawn_stops_the_server_and_names_the_cause(
    project: Path, tag: str
) -> None:
    """data/ on a full tmpfs: the pre-spawn probe (an empty file) passes, the state file's
    write fails after the server was spawned. The supervisor must stop the server and say why."""
    data = project / "data"
    data.mkdir()
    mounted = _can("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(data))
    if not mounted:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (data / "redis").mkdir()
        fd = os.open(data / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: the disk is full
        finally:
            os.close(fd)
        port = free_port()
        result = invoke(tagged_env(project, port, tag), "start")
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert "No space left on device" in result.stderr, result.stderr  # the real cause
        assert "state file" in result.stderr
        assert not listening(port)
        assert wait_none_tagged(tag) == []  # the server and the supervisor are gone
        assert not (data / "server.json").exists()
    finally:
        for proc in tagged(tag):
            proc.kill()
        subprocess.run(["umount", "-l", str(data)], check=False)


@ROOT_ONLY
@LINUX_ONLY
def test_immutable_data_folder_is_refused_before_spawning(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0  # data/redis and the lock file now exist
    assert invoke(env, "stop").returncode == 0
    data = project / "data"
    if not _can("chattr", "+i", str(data)):
        pytest.skip("this filesystem does not support chattr +i")
    try:
        result = invoke(env, "start")
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert str(data) in result.stderr and "not writable" in result.stderr, result.stderr
        assert not listening(port)
        assert wait_none_tagged(tag) == []
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=False)


# -- 2. a wall-clock step -------------------------------------------------------------------


def _in_stepped_clock(env: dict[str, str], *args: str, step: int = 5) -> Any:
    """Run ``invoke ARGS`` where /proc/stat's btime is ``step`` s later, as after the wall
    clock jumped forward: a private mount namespace with a copy of /proc/stat bound over it.
    The real clock is not touched."""
    fake = Path(env["INVOKE_SERVER_DATA_DIR"]).parent / "stat"
    lines = Path("/proc/stat").read_text().splitlines()
    fake.write_text(
        "\n".join(
            f"btime {int(line.split()[1]) + step}" if line.startswith("btime ") else line
            for line in lines
        )
        + "\n"
    )
    script = f'mount --bind "{fake}" /proc/stat && exec "$@"'  # only inside the new namespace
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@ROOT_ONLY
@LINUX_ONLY
def test_a_clock_step_does_not_orphan_the_server(project: Path, tag: str) -> None:
    need("make a mount namespace", "unshare", "-m", "true")
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    pid = read_state(project)["pid"]
    # The reproduction is real: psutil sees every create time moved by the step.
    probe = "import psutil, sys; print(psutil.Process(int(sys.argv[1])).create_time())"
    shifted = _in_stepped_clock(env, sys.executable, "-c", probe, str(pid))
    assert shifted.returncode == 0, shifted.stderr
    assert float(shifted.stdout) - psutil.Process(pid).create_time() == pytest.approx(5, abs=0.1)

    status = _in_stepped_clock(env, sys.executable, "-m", "invoke", "status", "--json")
    info = json.loads(status.stdout)
    assert info["running"] is True and info["pid"] == pid and not info["stale"], info
    stopped = _in_stepped_clock(env, sys.executable, "-m", "invoke", "stop")
    assert stopped.returncode == 0 and "stopped (graceful)" in stopped.stderr, stopped.stderr
    assert wait_dead(pid) and not listening(port)
    assert wait_none_tagged(tag) == []


# -- 3. Ctrl+C twice during start -----------------------------------------------------------


def _wait_for(proc: subprocess.Popen[str], anchor: str, state_file: Path) -> None:
    """Wait until start reached ``anchor``: its supervisor exists, the server exists, or the
    state file does (so the interrupts land at each phase whatever the machine's speed)."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if anchor == "state" and state_file.exists():
            return
        try:
            below = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            below = []
        if anchor == "supervisor" and below:
            return
        for child in below:
            try:
                if anchor == "server" and "--port" in child.cmdline():
                    return
            except psutil.Error:
                continue
        time.sleep(0.001)


@LINUX_ONLY
def test_a_second_ctrl_c_during_start_never_leaves_the_server(project: Path, tag: str) -> None:
    """SIGINT to start's process group at each phase of the start, twice (as a terminal sends
    Ctrl+C): afterwards no server, no supervisor, no state file (unless start had finished, in
    which case the server is tracked and answers)."""
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0  # warm up: the binary's version is cached
    assert invoke(env, "stop").returncode == 0
    state_file = project / "data" / "server.json"
    moments = [
        ("launch", 0.05),  # while Python imports invoke, or tasks.py loads
        *(("supervisor", d) for d in (0.0, 0.02, 0.05, 0.1)),
        *(("server", d) for d in (0.0, 0.003, 0.01, 0.03)),  # spawned, not yet recorded
        *(("state", d) for d in (0.0, 0.01)),
    ]
    outcomes: dict[str, int] = {}
    for anchor, offset in moments:
        for second in (0.005, 0.3):
            # its own group, which a terminal's Ctrl+C reaches
            proc = popen_invoke(env, "start", start_new_session=True)
            _wait_for(proc, anchor, state_file)
            time.sleep(offset)
            for delay in (0, second):
                time.sleep(delay)
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    break
            _out, err = proc.communicate(timeout=60)
            moment = f"SIGINT at {anchor}+{offset}s and +{second}s"
            if "ready on" in err or "is running (pid" in err:  # finished: must be tracked
                info = json.loads(invoke(env, "status", "--json").stdout)
                assert info["running"] is True, (moment, err)
                assert invoke(env, "stop").returncode == 0
            else:
                # Python's own traceback only while `import invoke` itself runs (before any
                # code of this project can catch it); never from tasks.py or devserver.
                ours = [str(ROOT / "tasks.py"), str(ROOT / "devserver")]
                assert not any(path in err for path in ours), (moment, err)
                if anchor != "launch":
                    # 130, or death by SIGINT (which a shell also reports as 130): CPython
                    # exits that way when the Ctrl+C struck inside an exec() of a string (a
                    # dataclass being defined during an import), even though we handled it.
                    assert proc.returncode in (130, -signal.SIGINT), (moment, err)
                    assert "Traceback" not in err, (moment, err)
                    assert err.strip().endswith("interrupted"), (moment, err)  # one line
            left = wait_none_tagged(tag)
            assert left == [], (moment, [p.cmdline() for p in left], err)
            assert not state_file.exists(), (moment, err)
            assert not listening(port), moment
            outcomes[str(proc.returncode)] = outcomes.get(str(proc.returncode), 0) + 1
    interrupted = outcomes.get("130", 0) + outcomes.get(str(-signal.SIGINT), 0)
    assert interrupted >= 10, outcomes  # most runs were interrupted during start


# -- 4. start --foreground ended by SIGHUP or SIGTERM -----------------------------------------


@LINUX_ONLY
# By name: Windows has no SIGHUP, and the module must still import there.
@pytest.mark.parametrize("signum", [getattr(signal, n, 0) for n in ("SIGTERM", "SIGHUP")])
def test_foreground_hangup_or_sigterm_stops_gracefully(
    project: Path, tag: str, signum: int
) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    proc = popen_invoke(env, "start", "--foreground")
    try:
        state = wait_foreground_ready(proc, project, port)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert wait_dead(int(state["pid"])) and not listening(port)
    log = (project / "logs" / "redis.log").read_text()
    assert "server exited with code 0" in log  # a graceful stop, logged by the supervisor
    assert not (project / "data" / "server.json").exists()
    assert wait_none_tagged(tag) == []


# -- 5. the supervisor is killed ------------------------------------------------------------


@LINUX_ONLY
def test_supervisor_killed_takes_the_server_down_gracefully(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    state = read_state(project)
    resp.call("127.0.0.1", port, [["SET", "kept", "yes"]])
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    assert wait_dead(state["pid"])  # SIGTERM from the parent-death signal: Redis saves
    assert not listening(port)
    info = json.loads(invoke(env, "status", "--json").stdout)
    assert info["running"] is False and info["stale"] is True
    assert invoke(env, "start").returncode == 0
    assert resp.call("127.0.0.1", port, [["GET", "kept"]]) == ["yes"]  # nothing was lost
    assert invoke(env, "stop").returncode == 0


@LINUX_ONLY
def test_killed_foreground_takes_the_server_down(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    proc = popen_invoke(env, "start", "--foreground", output=False)
    try:
        state = wait_foreground_ready(proc, project, port)
    finally:
        proc.kill()
        proc.wait()
    assert wait_dead(int(state["pid"])) and not listening(port)
    assert wait_none_tagged(tag) == []


def test_unsupervised_server_is_reported_and_stoppable(project: Path, tag: str) -> None:
    """A server that survives its supervisor (here: it ignores SIGTERM; on macOS or Windows
    without a job object any server) is never reported as plainly "running"."""
    fake_server(project, STUBBORN)
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    state = read_state(project)
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    assert wait_dead(state["supervisor_pid"])
    info = json.loads(invoke(env, "status", "--json").stdout)
    assert info["running"] is True and info["supervised"] is False, info
    human = invoke(env, "status")
    assert "running UNSUPERVISED" in human.stdout and "invoke restart" in human.stderr
    again = invoke(env, "start")
    assert again.returncode == 0
    assert "UNSUPERVISED" in again.stderr and "invoke restart" in again.stderr
    stopped = invoke(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_dead(state["pid"]) and not listening(port)
    assert not (project / "data" / "server.json").exists()


def test_supervised_server_says_so(project: Path, tag: str) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    assert invoke(env, "start").returncode == 0
    info = json.loads(invoke(env, "status", "--json").stdout)
    assert info["running"] is True and info["supervised"] is True
    assert invoke(env, "stop").returncode == 0


# -- 12. a forged or restored state file ----------------------------------------------------


def _identity(pid: int) -> dict[str, Any]:
    proc = psutil.Process(pid)
    return {
        "pid": pid,
        "create_time": proc.create_time(),
        "start_ticks": _start_ticks(pid) or 0,
        "exe": proc.exe(),
    }


def _forged(project: Path, port: int, pid: int, binary: str) -> None:
    state = {
        **_identity(pid),
        "supervisor_pid": pid,
        "flavor": "redis",
        "version": "7",
        "host": "127.0.0.1",
        "port": port,
        "log_file": str(project / "logs" / "redis.log"),
        "started_at": time.time(),
        "binary": binary,
    }
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "server.json").write_text(json.dumps(state))


def test_forged_state_naming_an_unrelated_process_is_never_acted_on(
    project: Path, tag: str
) -> None:
    port = free_port()
    env = tagged_env(project, port, tag)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 10
        while "time.sleep" not in " ".join(psutil.Process(bystander.pid).cmdline()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _forged(project, port, bystander.pid, sys.executable)  # its real identity
        info = json.loads(invoke(env, "status", "--json").stdout)
        assert info["running"] is False and info["stale"] is True
        stopped = invoke(env, "stop")
        assert stopped.returncode == 0 and "stale" in stopped.stderr, stopped.stderr
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


# The stand-in "server" is the parent of `invoke stop`, and the state file names it with its
# real identity, running a binary called redis-server: only the ancestor rule protects it.
ANCESTOR = "\n".join(
    [
        "import json, os, subprocess, sys, time",
        "sys.path.insert(0, os.environ['ROOT'])",
        "from tests.integration.test_faults_tracking import _forged",
        "from pathlib import Path",
        "project, port = Path(os.environ['PROJECT']), int(os.environ['INVOKE_SERVER_PORT'])",
        "_forged(project, port, os.getpid(), sys.argv[0])",
        "done = subprocess.run([sys.executable, '-m', 'invoke', 'stop'], cwd=os.environ['ROOT'],",
        "                      capture_output=True, text=True)",
        "(project / 'stop.txt').write_text(f'{done.returncode}\\n{done.stderr}')",
    ]
)


@pytest.mark.parametrize("as_pid_1", [False, True])
def test_forged_state_naming_an_ancestor_or_pid_1_is_never_signalled(
    project: Path, tag: str, as_pid_1: bool
) -> None:
    if as_pid_1:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            pytest.skip("a PID namespace needs root and unshare")
        need("make a PID namespace", "unshare", "--pid", "--fork", "--mount-proc", "true")
    exe = fake_server(project, ANCESTOR)
    port = free_port()
    env = tagged_env(
        project, port, tag, ROOT=str(ROOT), PROJECT=str(project), INVOKE_SERVER_STOP_TIMEOUT="1"
    )
    argv = [str(exe)]
    if as_pid_1:  # the stand-in is pid 1 of a new PID namespace, invoke stop its child
        argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)  # not killed by SIGTERM
    code, _, stop_err = (project / "stop.txt").read_text().partition("\n")
    assert code == "0" and "stale" in stop_err and "nothing was signalled" in stop_err, stop_err


def test_start_killed_outright_while_waiting_leaves_nothing(project: Path, tag: str) -> None:
    """kill -9 of `invoke start` while it waits for PING: no cleanup code of start runs, so
    the supervisor notices its lifeline (stdin) end without `ok` and stops the server."""
    fake_server(project, "import time\nprint('slow boot', flush=True)\ntime.sleep(120)")
    port = free_port()
    env = tagged_env(project, port, tag)
    proc = popen_invoke(env, "start", output=False)
    state_file = project / "data" / "server.json"
    deadline = time.monotonic() + 30
    while not state_file.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    server = read_state(project)["pid"]
    proc.kill()
    proc.wait()
    assert wait_dead(server)
    assert wait_none_tagged(tag) == []
    assert not state_file.exists()
    assert "could not record" not in (project / "logs" / "redis.log").read_text()
