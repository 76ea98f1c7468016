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

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import compat, resp
from .logs import RotatingWriter, tee
from .state import ServerState, read_state, remove_state, write_atomic


@dataclass
class Spec:
    """Everything the supervisor needs, sent by ``process.start`` as JSON on stdin."""

    argv: list[str]
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
    password: str = ""
    stdin_config: str = ""
    secret_file: list[str] | None = None
    stop_method: str = "shutdown"
    shutdown_save: list[str] = field(default_factory=lambda: ["SHUTDOWN", "SAVE"])
    shutdown_nosave: list[str] = field(default_factory=lambda: ["SHUTDOWN", "NOSAVE"])
    public_argv: list[str] = field(default_factory=list)


class Supervisor:
    """Runs one server: spawn, record state, tee its output, stop it on request, log its end."""

    def __init__(self, spec: Spec, console: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.console = console
        self.writer = RotatingWriter(Path(spec.log_file), spec.log_max_bytes, spec.log_backups)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = threading.Event()
        self.token = secrets.token_hex(16)
        self._secret_dir: str | None = None

    # -- start -----------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        argv = list(self.spec.argv)
        if self.spec.secret_file:
            name, content = self.spec.secret_file
            self._secret_dir = tempfile.mkdtemp(prefix="devserver-")
            path = Path(self._secret_dir) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            argv = [str(path) if a == "{secret_file}" else a for a in argv]
        return argv

    def spawn(self) -> subprocess.Popen[bytes]:
        spec = self.spec
        Path(spec.cwd).mkdir(parents=True, exist_ok=True)
        shown = " ".join(spec.public_argv or spec.argv)
        self.writer.marker(f"starting {spec.flavor} {spec.version}: {shown}")
        proc = subprocess.Popen(
            self._argv(),
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.PIPE if spec.stdin_config else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **compat.server_popen_kwargs(),
        )
        if spec.stdin_config and proc.stdin is not None:
            try:
                proc.stdin.write(spec.stdin_config.encode("utf-8"))
                proc.stdin.close()
            except OSError:
                pass  # the server died at once; its exit is reported below
        self.proc = proc
        self.writer.marker(f"server pid {proc.pid}")
        return proc

    def record_state(self, control_port: int) -> ServerState:
        import psutil

        assert self.proc is not None
        spec = self.spec
        me = psutil.Process(os.getpid())
        try:
            child = psutil.Process(self.proc.pid)
            create_time, exe = child.create_time(), child.exe()
        except psutil.Error:
            create_time, exe = 0.0, spec.binary
        state = ServerState(
            pid=self.proc.pid,
            create_time=create_time,
            exe=exe,
            supervisor_pid=os.getpid(),
            supervisor_create_time=me.create_time(),
            flavor=spec.flavor,
            version=spec.version,
            host=spec.host,
            port=spec.port,
            log_file=spec.log_file,
            started_at=time.time(),
            binary=spec.binary,
            argv=spec.public_argv or spec.argv,
            control_port=control_port,
            control_token=self.token,
        )
        write_atomic(Path(spec.state_file), state.to_json())
        return state

    # -- stop ------------------------------------------------------------------------------
    def shutdown(self, save: bool = True) -> str:
        """Ask the server to exit gracefully; return "ok" or the reason it failed."""
        self.stop_requested.set()
        spec = self.spec
        host = resp.connect_host(spec.host)
        try:
            if spec.stop_method == "save_terminate":
                if save:
                    resp.call(host, spec.port, [["SAVE"]], timeout=30, password=spec.password)
                if self.proc is not None:
                    self.proc.terminate()
                return "ok"
            command = spec.shutdown_save if save else spec.shutdown_nosave
            resp.call(host, spec.port, [command], timeout=30, password=spec.password)
        except resp.ConnectionClosed:
            return "ok"  # Redis closes the connection when SHUTDOWN succeeds
        except (OSError, resp.RespError) as exc:
            return f"graceful shutdown failed: {exc}"
        return "ok"

    def serve_control(self, listener: socket.socket) -> None:
        """Answer ``<token> stop save|nosave`` lines from ``invoke stop``."""
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    request = conn.recv(256).decode("utf-8", "replace").split()
                    if len(request) == 3 and secrets.compare_digest(request[0], self.token):
                        answer = self.shutdown(save=request[2] != "nosave")
                    else:
                        answer = "denied"
                    conn.sendall(answer.encode("utf-8") + b"\n")
                except OSError:
                    continue

    # -- run -------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until the server exits; return its exit code (as the supervisor's)."""
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            proc = self.spawn()
        except OSError as exc:
            self.writer.marker(f"could not start {self.spec.binary}: {exc}")
            self.writer.close()
            listener.close()
            return 127
        reader = threading.Thread(
            target=tee, args=(proc.stdout, self.writer, self.console), daemon=True
        )
        reader.start()
        started = time.monotonic()
        self.record_state(listener.getsockname()[1])
        threading.Thread(target=self.serve_control, args=(listener,), daemon=True).start()
        code = self._wait(proc)
        listener.close()
        reader.join(timeout=5)
        uptime = time.monotonic() - started
        self.writer.marker(f"server exited with {compat.describe_exit(code)} after {uptime:.1f}s")
        self.writer.close()
        self._finish_state(code)
        if self._secret_dir:
            import shutil

            shutil.rmtree(self._secret_dir, ignore_errors=True)
        return code

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the server; Ctrl+C (foreground) or SIGTERM asks for a graceful stop."""
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                if self.console:
                    self.console("[devserver] stopping the server (Ctrl+C again to force)\n")
                if self.stop_requested.is_set():
                    compat.kill_tree(_psutil_process(proc.pid))
                else:
                    threading.Thread(target=self.shutdown, daemon=True).start()

    def _finish_state(self, code: int) -> None:
        """A requested stop leaves no state; a crash leaves it marked exited for status/start."""
        path = Path(self.spec.state_file)
        try:
            state = read_state(path)
        except Exception:
            return
        if state is None or state.pid != (self.proc.pid if self.proc else -1):
            return
        if self.stop_requested.is_set():
            remove_state(path)
            return
        state.status = "exited"
        state.exit_status = compat.describe_exit(code)
        write_atomic(path, state.to_json())


def _psutil_process(pid: int) -> Any:
    import psutil

    return psutil.Process(pid)


def spec_from_json(text: str) -> Spec:
    data = json.loads(text)
    return Spec(**{k: v for k, v in data.items() if k in Spec.__dataclass_fields__})


def main() -> int:
    """Entry point of the detached supervisor: the spec comes on stdin."""
    spec = spec_from_json(sys.stdin.read())
    sys.stdin.close()
    supervisor = Supervisor(spec)
    if not compat.WINDOWS:
        signal.signal(signal.SIGTERM, lambda *_: supervisor.shutdown())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
