"""``python -m devserver.supervisor``: owns the server process, its log tee and its shutdown.

Why a separate supervisor process rather than the ``invoke start`` process: the server's
stdout is a pipe, and someone must drain it for the server's whole life (the PoC stopped
draining once the server was ready, so the server eventually blocked on a full pipe). The
supervisor is that someone. It also knows exactly how it started the server (including the
password, which is never written to disk), so ``invoke stop`` asks it, through a small
loopback control socket guarded by a random token, to shut the server down gracefully, even
when the caller's configuration changed since the start.

The launch spec (argv, environment, password) arrives as JSON on stdin, so no secret is ever
on a command line. ``--foreground`` mode runs the same :func:`supervise` in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from . import compat

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent

# Only what spawning the server needs is imported at module level: the server is started
# first, and the rest (logging, state, psutil, sockets) is imported while it boots, which
# keeps ``invoke start`` close to the bare server's own start-up time.


class Spec(TypedDict):
    """Everything the supervisor needs, sent by ``process.start`` as JSON on stdin."""

    argv: list[str]
    public_argv: list[str]
    env: dict[str, str]
    cwd: str
    flavor: str
    version: str
    binary: str
    host: str
    port: int
    state_file: str
    log_file: str
    log_max_bytes: int
    log_backups: int
    password: str
    stdin_config: str
    secret_file: list[str] | None
    stop_method: str
    shutdown_save: list[str]
    shutdown_nosave: list[str]


def spawn_server(spec: Spec, secret_path: str = "") -> subprocess.Popen[bytes]:
    """Start the server: stdout and stderr on one pipe, its own process group, no window.

    The password reaches it through its environment, its stdin (Redis reads ``-`` as a
    config file) or a private file, never its argv.
    """
    argv = [secret_path if a == "{secret_file}" else a for a in spec["argv"]]
    os.makedirs(spec["cwd"], exist_ok=True)
    proc = subprocess.Popen(
        argv,
        cwd=spec["cwd"],
        env=spec["env"],
        stdin=subprocess.PIPE if spec["stdin_config"] else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **compat.server_popen_kwargs(),
    )
    if spec["stdin_config"] and proc.stdin is not None:
        try:
            proc.stdin.write(spec["stdin_config"].encode("utf-8"))
            proc.stdin.close()
        except OSError:
            pass  # the server died at once; its exit is reported by the supervisor
    return proc


class Supervisor:
    """Owns one running server: records state, tees output, stops it on request, logs its end."""

    def __init__(
        self,
        spec: Spec,
        proc: subprocess.Popen[bytes],
        console: Callable[[str], None] | None = None,
        secret_dir: str = "",
    ) -> None:
        import threading

        from .logs import RotatingWriter

        self.spec = spec
        self.proc = proc
        self.console = console
        self.writer = RotatingWriter(
            Path(spec["log_file"]), spec["log_max_bytes"], spec["log_backups"]
        )
        self.stop_requested = threading.Event()
        self.token = os.urandom(16).hex()
        self.secret_dir = secret_dir

    def record_state(self, control_port: int) -> None:
        """Write data/server.json: pid + create time + exe, so stop can check identity."""
        import time

        import psutil

        from .state import ServerState, write_atomic

        spec = self.spec
        try:
            child = psutil.Process(self.proc.pid)
            create_time, exe = child.create_time(), child.exe()
        except psutil.Error:
            create_time, exe = 0.0, spec["binary"]
        state = ServerState(
            pid=self.proc.pid,
            create_time=create_time,
            exe=exe,
            supervisor_pid=os.getpid(),  # not Popen's pid: a venv python.exe is a launcher
            supervisor_create_time=psutil.Process(os.getpid()).create_time(),
            flavor=spec["flavor"],
            version=spec["version"],
            host=spec["host"],
            port=spec["port"],
            log_file=spec["log_file"],
            started_at=time.time(),
            binary=spec["binary"],
            argv=spec["public_argv"],
            control_port=control_port,
            control_token=self.token,
        )
        write_atomic(Path(spec["state_file"]), state.to_json())

    # -- stop ------------------------------------------------------------------------------
    def shutdown(self, save: bool = True) -> str:
        """Ask the server to exit gracefully; return "ok" or the reason it failed."""
        from . import resp

        self.stop_requested.set()
        spec = self.spec
        host = resp.connect_host(spec["host"])
        password = spec["password"]
        try:
            if spec["stop_method"] == "save_terminate":
                if save:
                    resp.call(host, spec["port"], [["SAVE"]], timeout=30, password=password)
                self.proc.terminate()
                return "ok"
            command = spec["shutdown_save"] if save else spec["shutdown_nosave"]
            resp.call(host, spec["port"], [command], timeout=30, password=password)
        except resp.ConnectionClosed:
            return "ok"  # Redis closes the connection when SHUTDOWN succeeds
        except (OSError, resp.RespError) as exc:
            return f"graceful shutdown failed: {exc}"
        return "ok"

    def serve_control(self, listener: Any) -> None:
        """Answer ``<token> stop save|nosave`` lines from ``invoke stop``."""
        import hmac

        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    request = conn.recv(256).decode("utf-8", "replace").split()
                    if len(request) == 3 and hmac.compare_digest(request[0], self.token):
                        answer = self.shutdown(save=request[2] != "nosave")
                    else:
                        answer = "denied"
                    conn.sendall(answer.encode("utf-8") + b"\n")
                except OSError:
                    continue

    # -- run -------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until the server exits; return its exit code (as the supervisor's)."""
        import shlex
        import socket
        import threading
        import time

        from .logs import tee

        spec, proc = self.spec, self.proc
        started = time.monotonic()
        self.writer.marker(
            f"starting {spec['flavor']} {spec['version']}: {shlex.join(spec['public_argv'])}"
        )
        self.writer.marker(f"server pid {proc.pid}")
        reader = threading.Thread(
            target=tee, args=(proc.stdout, self.writer, self.console), daemon=True
        )
        reader.start()
        listener = socket.create_server(("127.0.0.1", 0))
        self.record_state(listener.getsockname()[1])
        threading.Thread(target=self.serve_control, args=(listener,), daemon=True).start()
        code = self._wait()
        listener.close()
        reader.join(timeout=5)
        uptime = time.monotonic() - started
        self.writer.marker(f"server exited with {compat.describe_exit(code)} after {uptime:.1f}s")
        self.writer.close()
        self._finish_state(code)
        if self.secret_dir:
            import shutil

            shutil.rmtree(self.secret_dir, ignore_errors=True)
        return code

    def _wait(self) -> int:
        """Wait for the server; Ctrl+C (foreground) or SIGTERM asks for a graceful stop."""
        import threading

        while True:
            try:
                return self.proc.wait()
            except KeyboardInterrupt:
                if self.console:
                    self.console("[devserver] stopping the server (Ctrl+C again to force)\n")
                if self.stop_requested.is_set():
                    import psutil

                    compat.kill_tree(psutil.Process(self.proc.pid))
                else:
                    threading.Thread(target=self.shutdown, daemon=True).start()

    def _finish_state(self, code: int) -> None:
        """A requested stop leaves no state; a crash leaves it marked exited for status/start."""
        from .errors import StateError
        from .state import read_state, remove_state, write_atomic

        path = Path(self.spec["state_file"])
        try:
            state = read_state(path)
        except StateError:
            return
        if state is None or state.pid != self.proc.pid:
            return
        if self.stop_requested.is_set():
            remove_state(path)
            return
        state.status = "exited"
        state.exit_status = compat.describe_exit(code)
        write_atomic(path, state.to_json())


def launch_supervisor() -> tuple[subprocess.Popen[bytes], bool]:
    """Spawn a detached supervisor that waits for its spec on stdin; (process, broke_away).

    ``invoke start`` calls this before it imports the rest of the library, so the new
    interpreter's start-up overlaps the start's own checks; closing stdin without a spec
    makes the supervisor exit without starting anything.
    """
    return compat.spawn_detached(
        [compat.python_for_background(), "-m", "devserver.supervisor"],
        cwd=_PACKAGE_PARENT,  # so ``-m devserver`` imports this very copy of the package
        stdin=subprocess.PIPE,
    )


def write_secret(spec: Spec) -> tuple[str, str]:
    """Create the flavor's password file in a private temp dir: (dir, file path) or ("", "")."""
    if not spec["secret_file"]:
        return "", ""
    import tempfile

    name, content = spec["secret_file"]
    secret_dir = tempfile.mkdtemp(prefix="devserver-")  # 0700: only this user can read it
    path = os.path.join(secret_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return secret_dir, path


def supervise(
    spec: Spec,
    console: Callable[[str], None] | None = None,
    setup: Callable[[Supervisor], None] | None = None,
) -> int:
    """Spawn the server and supervise it until it exits; return its exit code.

    Used by the detached supervisor and, with ``console``, by ``start --foreground``.
    """
    secret_dir, secret_path = write_secret(spec)
    try:
        proc = spawn_server(spec, secret_path)
    except OSError as exc:
        from .logs import RotatingWriter

        writer = RotatingWriter(Path(spec["log_file"]), spec["log_max_bytes"], spec["log_backups"])
        writer.marker(f"could not start {spec['binary']}: {exc}")
        writer.close()
        if secret_dir:
            import shutil

            shutil.rmtree(secret_dir, ignore_errors=True)
        return 127
    supervisor = Supervisor(spec, proc, console, secret_dir)
    if setup is not None:
        setup(supervisor)
    return supervisor.run()


def main() -> int:
    """Entry point of the detached supervisor: the spec comes as JSON on stdin.

    An empty stdin means ``start`` gave up before sending one (the port was taken, say):
    exit quietly. ``start`` spawns us early so our start-up overlaps its own checks.
    """
    import json

    text = sys.stdin.read()
    sys.stdin.close()
    if not text.strip():
        return 0
    spec: Spec = json.loads(text)
    return supervise(spec, setup=_install_signals)


def _install_signals(supervisor: Supervisor) -> None:
    """SIGTERM to the supervisor means "stop the server gracefully"; ignore terminal hang-ups."""
    if compat.WINDOWS:
        return  # a detached process gets no console events; stop uses the control socket
    import signal

    signal.signal(signal.SIGTERM, lambda *_: supervisor.shutdown())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
