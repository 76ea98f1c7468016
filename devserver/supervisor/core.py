"""The supervisor's core: the server's log tee, its state, its stop, the wait for its end.

Why a separate supervisor process rather than the ``invoke start`` process: the server's
stdout is a pipe, and someone must drain it for the server's whole life (a reader that
stops once the server is ready leaves it blocked on a full pipe sooner or later). The
supervisor is that someone. It also knows exactly how it started the server (including the
password, which is never written to disk), so ``invoke stop`` asks it, through a small
loopback control socket guarded by a random token (control.py), to shut the server down
gracefully, even when the caller's configuration changed since the start.

:class:`Supervisor` takes over a server already spawned: by the POSIX bootstrap
(bootstrap.py, fork.py) or through subprocess (starting.py: Windows, ``--foreground``). The
process around it, its stdin lifeline and its start-up report are entry.py's. This module is
imported after the spawn, while the server boots.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from devserver.errors import StartError
from devserver.server import resp
from devserver.supervisor import restart
from devserver.supervisor.control import serve_control
from devserver.supervisor.logs import RotatingWriter
from devserver.supervisor.statefile import finish_state, record_state
from devserver.supervisor.tee import tee
from devserver.supervisor.wire import Spec
from devserver.system import kill, lifetime, signals
from devserver.system.posix import Child

# What runs the server: Popen where subprocess spawned it, Child where the bootstrap did.
ServerProc = subprocess.Popen[bytes] | Child

DEFAULT_STOP_BUDGET = 10.0  # s, for a spec sent by a start before it carried stop_timeout

# What the bootstrap did before handing over: (listener, token, error) of its state write,
# the listener None when it wrote nothing (no /proc) and this module records the state.
First = tuple[Any, str, BaseException | None]


class Supervisor:
    """Owns one running server: records state, tees output, stops it on request, logs its end."""

    def __init__(
        self,
        spec: Spec,
        proc: ServerProc,
        console: Callable[[str], None] | None = None,
        secret_dir: str = "",
        token: str = "",
        log_fd: int = -1,
        popen: Callable[[Spec, str], ServerProc] | None = None,
    ) -> None:
        self.spec = spec
        self.popen = popen  # how the first launch was made where there is no fork (Windows)
        self.proc = proc
        self.console = console
        self.secret_dir = secret_dir
        self.stop_requested = threading.Event()
        self.abandoned = False
        self.signalled = False  # a SIGTERM asked for the stop (stop_on_signal)
        # Windows: the job object that kills the server if this process dies (held open).
        self.job = lifetime.bind_to_this_process(proc)
        self.exited = threading.Event()  # set with exit_status once the server has ended
        self.exit_status = ""
        self.replying: list[threading.Thread] = []  # control clients owed an answer
        self.finished = threading.Event()  # set once run() has logged the exit and the state
        self.token = token or os.urandom(16).hex()
        self.log_fd = log_fd  # the log as the bootstrap opened it (-1: open it here)
        self.control_port = 0
        # Set once the server answered PING (``start``'s "ok" on the lifeline, or our own
        # probe in the foreground): only a server that once worked is restarted after a crash.
        self.answered = threading.Event()
        self.policy = restart.Policy(
            int(spec.get("restart_limit", 5)), float(spec.get("restart_window", 60.0))
        )
        self.restarts = 0
        self.gave_up = ""

    def record_state(self, control_port: int) -> None:
        """Write the state file here (see statefile.py): where the bootstrap did not."""
        record_state(self.spec, self.proc.pid, control_port, self.token)

    def probe_answered(self) -> None:
        """Where no ``start`` waits for PING (``--foreground``): note it ourselves, in a
        thread, so a crash after that is restarted as after a background start."""

        def probe() -> None:
            timeout = float(self.spec.get("startup_timeout", 30.0))
            if restart.wait_answered(self.spec, self.proc, self.stop_requested.is_set, timeout):
                self.answered.set()

        threading.Thread(target=probe, daemon=True).start()

    def abandon(self) -> None:
        """``start`` gave up on this server (Ctrl+C, timeout, killed): nobody will use it, and
        nothing was handed out yet, so kill it at once (and its children) rather than wait
        for a graceful save; the state is then removed as after a requested stop."""
        import psutil  # here: 20 ms and some MiB, for a given-up start only

        self.abandoned = True
        self.stop_requested.set()
        try:
            kill.kill_tree(psutil.Process(self.proc.pid))
        except psutil.Error:
            pass

    def _startup_failed(self, exc: BaseException, writer: Any, reader: Any) -> None:
        """Something between spawning the server and recording it failed: stop the server
        (it is not tracked anywhere, so it must not outlive us) and log why."""
        self.abandon()
        self.proc.wait()
        if reader is not None:
            reader.join(timeout=2)  # its last lines first, and no write after the close
        if writer is not None:
            try:
                writer.marker(f"could not record the server, so it was killed: {exc!s}")
                writer.close()
            except Exception:
                pass

    # -- stop ------------------------------------------------------------------------------
    def shutdown(self, save: bool = True, timeout: float = 30) -> str:
        """Ask the server to exit gracefully: "ok", "refused <its error>" or "failed <why>".

        "refused" is the server's own error reply (Redis answers ``-ERR`` when it cannot save
        and so will not exit); ``invoke stop`` shows it and decides how to escalate.
        """
        self.stop_requested.set()
        spec = self.spec
        host = resp.connect_host(spec["host"])
        commands = spec["stop_save"] if save else spec["stop_nosave"]
        try:
            if commands:
                resp.call(host, spec["port"], commands, timeout=timeout, password=spec["password"])
        except resp.ConnectionClosed:
            pass  # Redis closes the connection when SHUTDOWN succeeds
        except resp.RespError as exc:
            return f"refused {exc}"
        except OSError as exc:
            if self.proc.poll() is not None:
                return "ok"  # it exited while we asked
            return f"failed {exc}"
        if spec["terminate_after_stop"]:
            self.proc.terminate()
        return "ok"

    # -- run -------------------------------------------------------------------------------
    def run(
        self, on_recorded: Callable[[], object] | None = None, first: First | None = None
    ) -> int:
        """Supervise until the server exits; return its exit code (as the supervisor's).

        ``first``: what the bootstrap did (see :data:`First`); None: nothing, record here.
        """
        spec, proc = self.spec, self.proc
        started = time.monotonic()
        writer = reader = None
        listener, _, failed = first or (None, "", None)
        try:
            # Here the tee runs before the state is written: once ``start`` sees the state and
            # a PONG, the lines the server printed until then are on their way to the log
            # file. After the bootstrap the order is reversed: the lines wait in the pipe for
            # the few milliseconds until the tee runs, and ``start`` echoes the log until it
            # is quiet (``LogEcho.settle``).
            log = Path(spec["log_file"])
            handle = open(self.log_fd, "ab", buffering=0) if self.log_fd >= 0 else None  # noqa: SIM115
            writer = RotatingWriter(log, spec["log_max_bytes"], spec["log_backups"], handle=handle)
            argv = shlex.join(spec["public_argv"])
            writer.marker(f"starting {spec['flavor']} {spec['version']} in {spec['cwd']}: {argv}")
            writer.marker(f"server pid {proc.pid}")
            reader = threading.Thread(
                target=tee, args=(proc.stdout, writer, self.console), daemon=True
            )
            reader.start()
            if listener is not None:  # the bootstrap's: a bare _socket.socket
                listener = socket.socket(fileno=listener.detach())
            else:
                listener = socket.create_server(("127.0.0.1", 0))
            self.control_port = listener.getsockname()[1]
            try:
                if failed is not None:
                    raise failed
                if first is None or first[0] is None:
                    self.record_state(listener.getsockname()[1])
            except OSError as exc:
                folder = os.path.dirname(spec["state_file"])
                raise StartError(
                    f"could not write the state file {spec['state_file']} "
                    f"({exc.strerror or exc}); the server was stopped",
                    hint=f"free space in {folder} or make it writable, then start again",
                ) from None
        except BaseException as exc:  # untracked, so it must not outlive this (Ctrl+C too)
            self._startup_failed(exc, writer, reader)
            raise
        try:
            if on_recorded is not None:
                on_recorded()
            threading.Thread(target=serve_control, args=(self, listener), daemon=True).start()
        except KeyboardInterrupt:  # foreground: Ctrl+C, SIGTERM or a hang-up right now
            self._interrupted()
        logged = False
        while True:
            code = self._wait()
            if not restart.wanted(spec, code, self.answered.is_set(), self.stop_requested.is_set()):
                break
            self._log_exit(reader, writer, code, started)
            try:
                again = restart.after_crash(self, code, writer)
            except KeyboardInterrupt:  # foreground: Ctrl+C, SIGTERM or a hang-up meanwhile
                again = self.proc if self.proc.poll() is None else None
                if again is not None:  # started already: stop it gracefully, as usual
                    self._interrupted()
                else:  # during the back-off: no restart
                    self.stop_requested.set()
                    writer.marker("not restarted: stopped during the back-off")
            if again is None:  # gave up, or a stop or start came first
                logged = True
                break
            started = time.monotonic()
            reader = threading.Thread(target=tee, args=(again.stdout, writer, self.console))
            reader.daemon = True
            reader.start()
            try:
                restart.announce(self, code, writer)
            except KeyboardInterrupt:
                self._interrupted()
        # It ended on its own, not by a crash the restart path handled (a start that took
        # over the project during a back-off has its own server, which this must not touch):
        # did it leave a server behind?
        if not self.stop_requested.is_set() and not logged:
            self._stop_detached(writer)
        self.exit_status = kill.describe_exit(code)
        self.exited.set()
        listener.close()
        if not logged:
            self._log_exit(reader, writer, code, started)
        writer.close()
        finish_state(self.spec, self.proc.pid, self.stop_requested.is_set(), code)
        deadline = time.monotonic() + 1.0  # let ``invoke stop`` hear how the server ended
        for client in list(self.replying):
            client.join(max(0.0, deadline - time.monotonic()))
        self.finished.set()
        return restart.EXIT_GAVE_UP if self.gave_up else code

    def _log_exit(self, reader: Any, writer: Any, code: int, started: float) -> None:
        """The exit marker, after the server's last lines."""
        try:
            reader.join(timeout=5)
        except KeyboardInterrupt:
            pass  # the server has exited already: finish logging and the state
        uptime = time.monotonic() - started
        writer.marker(f"server exited with {kill.describe_exit(code)} after {uptime:.1f}s")

    def _stop_detached(self, writer: RotatingWriter) -> None:
        """Stop a server the exited one left running detached (supervisor/detached.py)."""
        from devserver.supervisor.detached import stop_detached  # after an unasked exit only

        try:
            left = stop_detached(self.spec, self.proc.pid)
        except Exception as exc:  # the exit must still be logged and recorded
            writer.marker(f"could not look for a detached server: {exc}")
            return
        if left:
            writer.marker(
                f"the server exited but left {', '.join(left)} running detached from this "
                "supervisor (it daemonized itself); it was stopped, since it could be neither "
                "logged nor stopped: remove the option that makes it detach (e.g. --daemonize)"
            )

    def stop_within(self, seconds: float) -> None:
        """Stop the server and let ``run`` finish, all within ``seconds`` (Windows ends a
        process about 5 s after its console was closed; SIGTERM, ``stop_on_signal``): the
        graceful stop first, without a save when the save is refused, a tree kill if the
        server is still there with a quarter of the time left."""
        import psutil  # here: 20 ms and some MiB, for a forced stop only

        deadline = time.monotonic() + seconds
        answer = self.shutdown(timeout=seconds / 2)
        if answer != "ok" and not self.exited.is_set():
            # It cannot save (its data folder deleted, a full disk): ending it without a
            # save beats leaving it running with nobody to stop it.
            self.shutdown(save=False, timeout=seconds / 4)
        if not self.exited.wait(timeout=max(0.0, deadline - time.monotonic() - seconds / 4)):
            with suppress(psutil.Error):
                kill.kill_tree(psutil.Process(self.proc.pid))
        self.finished.wait(timeout=max(0.0, deadline - time.monotonic()))

    def stop_on_signal(self) -> None:
        """SIGTERM to the detached supervisor: the server ends within the stop budget
        whatever it does (:meth:`stop_within`), in a thread, as a signal handler must not
        block the wait for the server's exit. A second SIGTERM changes nothing."""
        if self.signalled:
            return
        self.signalled = True
        budget = float(self.spec.get("stop_timeout") or DEFAULT_STOP_BUDGET)
        threading.Thread(target=self.stop_within, args=(budget,), daemon=True).start()

    def _wait(self) -> int:
        """Wait for the server; Ctrl+C (foreground) asks for a graceful stop, twice forces it."""
        while True:
            try:
                return signals.wait_interruptible(self.proc)
            except KeyboardInterrupt:
                self._interrupted()

    def _interrupted(self) -> None:
        """Foreground Ctrl+C (or SIGTERM, a hang-up): the first asks for a graceful stop, in
        a thread so the wait goes on; another one, once a stop was asked for, forces it."""
        if self.console:
            self.console("[devserver] stopping the server (Ctrl+C again to force)\n")
        if self.stop_requested.is_set():
            import psutil  # here: 20 ms and some MiB, for a forced stop only

            try:
                kill.kill_tree(psutil.Process(self.proc.pid))
            except psutil.Error:
                pass
        else:
            threading.Thread(target=self._console_shutdown, daemon=True).start()

    def _console_shutdown(self) -> None:
        """Foreground Ctrl+C: a graceful stop whose failure the person gets to see (a server
        that cannot save refuses to exit; the next Ctrl+C forces it)."""
        answer = self.shutdown()
        if answer != "ok" and self.console:
            what, _, why = answer.partition(" ")
            self.console(
                f"[devserver] graceful shutdown {what}: {why}; press Ctrl+C again to force it\n"
            )
