"""``python -m devserver.supervisor.core``: owns the server process, its log tee and its shutdown.

Why a separate supervisor process rather than the ``invoke start`` process: the server's
stdout is a pipe, and someone must drain it for the server's whole life (the PoC stopped
draining once the server was ready, so the server eventually blocked on a full pipe). The
supervisor is that someone. It also knows exactly how it started the server (including the
password, which is never written to disk), so ``invoke stop`` asks it, through a small
loopback control socket guarded by a random token, to shut the server down gracefully, even
when the caller's configuration changed since the start.

The launch spec (argv, environment, password) arrives on stdin (``bootstrap.encode_spec``), so
no secret is ever on a command line. stdin then stays open as ``start``'s lifeline: ``start`` writes
``ok`` once the server answers PING; if stdin ends without it (Ctrl+C, a timeout, ``start``
killed), nobody will use the server, so the supervisor kills it and exits. Until the state
file is written, stdout is a pipe back to ``start``: a start-up failure (the state file cannot
be written, say) is reported there as one JSON line, after the server was stopped. Then stdout
goes to the null device. ``--foreground`` mode runs the same :func:`supervise` in-process.

On POSIX the detached supervisor starts in ``bootstrap``, which spawns the server and
writes the state file before this module is imported, then hands over to :func:`adopt`; on
Windows (no fork) :func:`run` reads the spec and spawns through subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypedDict

from devserver.supervisor import bootstrap
from devserver.system import host, kill, lifetime, signals, spawn
from devserver.system.posix import Child

# Only what spawning the server needs is imported at module level: the server is started
# first, and the rest (psutil, sockets, the log writer) is imported while it boots, which
# keeps ``invoke start`` close to the bare server's own start-up time.

# The control socket: at most this many clients at once, each with a short read deadline
# (the request is one line a local process sends at once).
CONTROL_CLIENTS = 32
CONTROL_READ_TIMEOUT = 1.0

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Spec(TypedDict):
    """Everything the supervisor needs, sent by ``start.start`` on stdin (plain values only:
    it travels as marshal, see ``bootstrap.encode_spec``)."""

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
    stop_save: list[list[str]]
    stop_nosave: list[list[str]]
    terminate_after_stop: bool
    # The process whose death stops the server (owner.py); 0: nobody's, it stays.
    owner_pid: int
    owner_create_time: float


def launch_supervisor() -> tuple[subprocess.Popen[bytes], bool]:
    """Spawn a detached supervisor that waits for its spec on stdin; (process, broke_away).

    ``invoke start`` calls this before it imports the rest of the library, so the new
    interpreter's start-up overlaps the start's own checks; closing stdin without a spec
    makes the supervisor exit without starting anything. ``INVOKE_*`` variables (a password
    may be among them) are not passed on: the supervisor gets everything from its spec. Its
    stdout is a pipe for its start-up report (see the module docstring).
    """
    env = supervisor_env()
    command = supervisor_command()
    python = command[0]
    try:
        return spawn.spawn_detached(
            command,
            cwd=PACKAGE_PARENT,  # so the import finds this very copy of the package
            stdin=subprocess.PIPE,
            env=env,
            stdout=subprocess.PIPE,
        )
    except OSError as exc:
        raise python_error(python, exc) from None


def python_error(python: str, exc: OSError) -> Exception:
    """The StartError for a supervisor interpreter that cannot be run (spawned or exec'd)."""
    from devserver.errors import StartError

    return StartError(
        f"cannot run the supervisor's Python {python}: {exc.strerror or exc}",
        hint="check that this user can run that interpreter (and the folders above it)",
    )


def supervisor_command(python: str = "") -> list[str]:
    """The detached supervisor's command line (run it with cwd :data:`PACKAGE_PARENT`).

    POSIX: the lean bootstrap (server and state before the big imports); Windows: this
    module (no fork there). ``-c`` rather than ``-m`` skips runpy.
    """
    entry = (
        "supervisor.core import run; run"
        if not host.has_fork()
        else "supervisor.bootstrap import main; main"
    )
    return [python or spawn.python_for_background(), "-S", "-c", f"from devserver.{entry}()"]


def supervisor_env() -> dict[str, str]:
    """The supervisor's environment: ours without ``INVOKE_*`` (a password may be among
    them; the spec carries all it needs), and our sys.path as PYTHONPATH: it runs with -S,
    which skips the site module (milliseconds on ``invoke start``'s critical path), so the
    same packages are found this way."""
    env = spawn.without_prefixes(os.environ, ["INVOKE_"])
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _save_state(path: str, state: dict[str, Any]) -> None:
    """Write the state file as ``ServerState.to_json`` does, readable by its owner only."""
    import json
    from pathlib import Path

    from devserver.system.atomic import PRIVATE_MODE, write_atomic

    write_atomic(Path(path), json.dumps(state, indent=2, sort_keys=True), mode=PRIVATE_MODE)


def write_secret(spec: Spec) -> tuple[str, str]:
    """Create the flavor's password file in a private temp dir: (dir, file path) or ("", "")."""
    if not spec["secret_file"]:
        return "", ""
    import tempfile

    name, content = spec["secret_file"]
    secret_dir = tempfile.mkdtemp(prefix="devserver-")  # 0700: only this user can enter it
    path = os.path.join(secret_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return secret_dir, path


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
        **spawn.server_popen_kwargs(),
        **lifetime.parent_death_kwargs(),  # before any thread of ours exists
    )
    if spec["stdin_config"] and proc.stdin is not None:
        try:
            proc.stdin.write(spec["stdin_config"].encode("utf-8"))
            proc.stdin.close()
        except OSError:
            pass  # the server died at once; its exit is reported by the supervisor
    return proc


# What runs the server: Popen where subprocess spawned it, Child where the bootstrap did.
ServerProc = subprocess.Popen[bytes] | Child

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
    ) -> None:
        import threading

        self.spec = spec
        self.proc = proc
        self.console = console
        self.secret_dir = secret_dir
        self.stop_requested = threading.Event()
        self.abandoned = False
        # Windows: the job object that kills the server if this process dies (held open).
        self.job = lifetime.bind_to_this_process(proc)
        self.exited = threading.Event()  # set with exit_status once the server has ended
        self.exit_status = ""
        self.replying: list[threading.Thread] = []  # control clients owed an answer
        self.finished = threading.Event()  # set once run() has logged the exit and the state
        self.token = token or os.urandom(16).hex()
        self.log_fd = log_fd  # the log as the bootstrap opened it (-1: open it here)

    def record_state(self, control_port: int) -> None:
        """Write data/server.json (pid + create time + exe, so stop can check identity).

        Built here as plain JSON (not through state.py, whose dataclass import would delay
        it): ``start`` returns as soon as this file is there and PING answers. On Linux the
        bootstrap has usually written it already, from /proc (``bootstrap.record_first``).
        """
        spec = self.spec
        server = lifetime.proc_identity(self.proc.pid)
        me = lifetime.proc_identity(os.getpid())
        if server is None or me is None:  # not Linux, or no /proc: psutil (imported only here)
            import psutil

            try:
                child = psutil.Process(self.proc.pid)
                # exe() may be unreadable (Windows: access denied; Wine: OSError WinError 87):
                # then record the binary we launched rather than die with the server orphaned.
                server = (child.create_time(), kill.process_exe(child) or spec["binary"], 0)
            except psutil.Error:
                server = (0.0, spec["binary"], 0)
            me = (psutil.Process(os.getpid()).create_time(), "", 0)
        state = bootstrap.state_record(spec, self.proc.pid, server, me, control_port, self.token)
        _save_state(spec["state_file"], state)

    def abandon(self) -> None:
        """``start`` gave up on this server (Ctrl+C, timeout, killed): nobody will use it, and
        nothing was handed out yet, so kill it at once (and its children) rather than wait
        for a graceful save; the state is then removed as after a requested stop."""
        import psutil

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
        from devserver.server import resp

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

    def serve_control(self, listener: Any) -> None:
        """Accept control connections; each gets its own short-lived thread.

        Why a thread each: an idle or slow local client must not hold up a real stop request
        behind it. Beyond ``CONTROL_CLIENTS`` open connections new ones are closed at once.
        """
        import threading

        active = threading.BoundedSemaphore(CONTROL_CLIENTS)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the server has exited
            if not active.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._control_client, args=(conn, active), daemon=True).start()

    def _control_client(self, conn: Any, active: Any) -> None:
        """``<token> stop save|nosave``: answer the shutdown's outcome, then, on the same
        connection, ``exited <status>`` once the server is gone. Anything else is denied."""
        import hmac
        import threading

        try:
            with conn:
                conn.settimeout(CONTROL_READ_TIMEOUT)
                data = b""
                while b"\n" not in data and len(data) < 256:
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    data += chunk
                words = data.split()
                if len(words) != 3 or not hmac.compare_digest(words[0], self.token.encode()):
                    conn.sendall(b"denied\n")
                    return
                self.replying.append(threading.current_thread())
                answer = self.shutdown(save=words[2] != b"nosave")
                conn.sendall(answer.encode("utf-8", "replace") + b"\n")
                conn.settimeout(None)
                self.exited.wait()
                conn.sendall(f"exited {self.exit_status}\n".encode())
        except Exception:
            pass  # a client that went away, or garbage: nothing to do
        finally:
            active.release()

    # -- run -------------------------------------------------------------------------------
    def run(
        self, on_recorded: Callable[[], object] | None = None, first: First | None = None
    ) -> int:
        """Supervise until the server exits; return its exit code (as the supervisor's).

        ``first``: what the bootstrap did (see :data:`First`); None: nothing, record here.
        """
        import shlex
        import socket
        import threading
        import time
        from pathlib import Path

        from devserver.errors import StartError
        from devserver.supervisor.logs import RotatingWriter, tee

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
            threading.Thread(target=self.serve_control, args=(listener,), daemon=True).start()
        except KeyboardInterrupt:  # foreground: Ctrl+C, SIGTERM or a hang-up right now
            self._interrupted()
        code = self._wait()
        self.exit_status = kill.describe_exit(code)
        self.exited.set()
        listener.close()
        try:
            reader.join(timeout=5)
        except KeyboardInterrupt:
            pass  # the server has exited already: finish logging and the state
        uptime = time.monotonic() - started
        writer.marker(f"server exited with {kill.describe_exit(code)} after {uptime:.1f}s")
        writer.close()
        self._finish_state(code)
        deadline = time.monotonic() + 1.0  # let ``invoke stop`` hear how the server ended
        for client in list(self.replying):
            client.join(max(0.0, deadline - time.monotonic()))
        self.finished.set()
        return code

    def stop_within(self, seconds: float) -> None:
        """Stop the server and let ``run`` finish, all within ``seconds`` (Windows ends a
        process about 5 s after its console was closed): the graceful stop first, a tree
        kill if the server is still there with a quarter of the time left."""
        import time
        from contextlib import suppress

        import psutil

        deadline = time.monotonic() + seconds
        self.shutdown(timeout=seconds / 2)
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic() - seconds / 4))
        except subprocess.TimeoutExpired:
            with suppress(psutil.Error):
                kill.kill_tree(psutil.Process(self.proc.pid))
        self.finished.wait(timeout=max(0.0, deadline - time.monotonic()))

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
        import threading

        if self.console:
            self.console("[devserver] stopping the server (Ctrl+C again to force)\n")
        if self.stop_requested.is_set():
            import psutil

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

    def _finish_state(self, code: int) -> None:
        """A requested stop removes the state (``stop`` returns as soon as it is gone); after a
        crash it stays, marked exited, for ``status`` and the next ``start`` to report.

        Plain JSON here, not state.py: this runs on ``invoke stop``'s critical path.
        """
        import json

        path = self.spec["state_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return
        if not isinstance(state, dict) or state.get("pid") != self.proc.pid:
            return  # not ours any more (a new start replaced it)
        if self.stop_requested.is_set():
            from pathlib import Path

            from devserver.system.atomic import remove_file

            try:
                remove_file(Path(path))
            except OSError:
                pass
            return
        state.update(status="exited", exit_status=kill.describe_exit(code))
        _save_state(path, state)


def supervise(
    spec: Spec,
    console: Callable[[str], None] | None = None,
    setup: Callable[[Supervisor], None] | None = None,
    on_recorded: Callable[[], object] | None = None,
) -> int:
    """Spawn the server and supervise it until it exits; return its exit code.

    Used by the detached supervisor on Windows and, with ``console``, by ``start
    --foreground``. ``on_recorded`` runs once the state file is written. The password file,
    if any, is removed however this ends.
    """
    secret_dir, secret_path = write_secret(spec)
    try:
        try:
            proc = spawn_server(spec, secret_path)
        except OSError as exc:
            return spawn_failed(spec, exc)
        supervisor = Supervisor(spec, proc, console, secret_dir)
        if setup is not None:
            setup(supervisor)
        return supervisor.run(on_recorded)
    finally:
        remove_secret(secret_dir)


def spawn_failed(spec: Spec, exc: OSError, secret_dir: str = "") -> int:
    """The server could not be executed: say so in its log (``start`` shows the log's tail)
    and exit 127, as a shell does for a command it cannot run."""
    from pathlib import Path

    from devserver.supervisor.logs import RotatingWriter

    remove_secret(secret_dir)
    log = RotatingWriter(Path(spec["log_file"]), spec["log_max_bytes"], spec["log_backups"])
    log.marker(f"could not start {spec['binary']}: {exc}")
    log.close()
    return 127


def remove_secret(secret_dir: str) -> None:
    """Remove the password file's private folder (Garnet), if there is one."""
    if secret_dir:
        import shutil

        shutil.rmtree(secret_dir, ignore_errors=True)


def main() -> int:
    """Entry point of the detached supervisor on Windows: the spec comes on stdin.

    An empty stdin means ``start`` gave up before sending one (the port was taken, say):
    exit quietly. ``start`` spawns us early so our start-up overlaps its own checks.
    """
    lifetime.preload_parent_death()  # while ``start`` still runs its checks
    try:
        spec = bootstrap.read_spec(0)
    except ValueError as exc:
        return report(exc)
    if spec is None:
        return 0
    return _reporting(lambda: supervise(spec, setup=_detached, on_recorded=_close_report))


def adopt(spec: Spec, child: Child, secret_dir: str, first: First, log_fd: int = -1) -> int:
    """Supervise a server the bootstrap spawned (POSIX), from where :func:`supervise` would
    be after its spawn; ``first`` is the bootstrap's state write (see :data:`First`),
    ``log_fd`` the log it opened."""

    def body() -> int:
        try:
            sup = Supervisor(spec, child, secret_dir=secret_dir, token=first[1], log_fd=log_fd)
            _detached(sup)
            return sup.run(_close_report, first)
        finally:
            remove_secret(secret_dir)

    return _reporting(body)


def _detached(sup: Supervisor) -> None:
    """What only the detached supervisor does: stop on SIGTERM/console close, watch the
    lifeline and the owner."""
    import threading

    signals.install_stop_signals(sup.shutdown)
    threading.Thread(target=_hold_lifeline, args=(sup,), daemon=True).start()
    _watch_owner(sup)


def _reporting(body: Callable[[], int]) -> int:
    """Run ``body``; a failure (the server is already stopped then) goes to ``start``."""
    try:
        return body()
    except Exception as exc:
        return report(exc)


def report(exc: Exception) -> int:
    """Tell ``start`` why this supervisor failed: one JSON line on its stdout; exit 1."""
    import json

    from devserver.errors import DevServerError

    if isinstance(exc, DevServerError):
        report = {"error": exc.message, "hint": exc.hint}
    else:
        report = {"error": f"the supervisor failed: {type(exc).__name__}: {exc}"}
    try:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    return 1


def _hold_lifeline(sup: Supervisor) -> None:
    """Wait for ``start``'s ``ok``; stdin ending without it means the start was given up."""
    try:
        line = sys.stdin.buffer.readline()
    except (OSError, ValueError):
        line = b""
    if line.strip() != b"ok":
        sup.abandon()


def _close_report() -> None:
    """Once the state is written, the pipe to ``start`` has served: point stdout at the null
    device, so nothing written later can block on, or fail against, a reader that left."""
    try:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except (OSError, ValueError):
        pass


def _watch_owner(sup: Supervisor) -> None:
    """An ephemeral server's owner (devserver/supervisor/owner.py) dying means a throwaway stop."""
    from devserver.supervisor import owner

    owner.watch(
        int(sup.spec.get("owner_pid") or 0),
        float(sup.spec.get("owner_create_time") or 0.0),
        lambda: owner.stop_server(lambda: sup.shutdown(save=False), sup.proc),
    )


def run() -> None:
    """Console entry on Windows
    (``python -c "from devserver.supervisor.core import run; run()"``)."""
    finish(main())


def finish(code: int) -> NoReturn:
    """End the supervisor process with ``code``.

    ``os._exit``: by then the log is closed and the state written or removed, and an
    interpreter shutdown (daemon threads, module teardown) only delays the callers that
    wait for this process to end (an abandoned start's cleanup, ``stop``) on a busy machine.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
