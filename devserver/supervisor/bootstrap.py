"""The detached supervisor's first milliseconds on POSIX: spec in, server spawned, state out.

Why a module of its own: everything between ``start`` sending the spec and the state file
appearing is on the critical path of ``invoke start`` and of ``start.start``, and in a
fresh interpreter the usual tools cost more than the server's own start-up. Measured here
(Python 3.11, ``python -X importtime``): ``import subprocess`` 11 ms (it pulls in re, enum,
locale), json 10 ms, ``import devserver.supervisor.core`` 30-40 ms in all, against 10-20 ms for
``redis-server`` from exec to PONG. So this module imports only what the interpreter has
loaded or builds in (os, sys, marshal, _socket, _signal, _json, _thread), forks and execs
the server itself, writes the state file from /proc, and only then imports the full
supervisor (threads, the log tee, the control port), while the server boots.

The server is forked and exec'd by devserver/system/posix.py (PR_SET_PDEATHSIG needs code in the
child); this process has started no thread when it forks.

The spec framing (:func:`encode_spec` / :func:`read_spec`) is shared with Windows, whose
supervisor still spawns through subprocess (no fork there; spawn.spawn_detached).
"""

from __future__ import annotations

import marshal
import os
import sys
import time

from devserver.system.posix import Child, load_prctl, open_max, proc_identity, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from devserver.supervisor.core import Spec

_SPEC_MAGIC = b"devserver-spec-1 "


# --- the spec on stdin ---------------------------------------------------------------------


def encode_spec(spec: Spec | dict[str, Any]) -> bytes:
    """The spec as the supervisor reads it: a header line with the length, then marshal.

    marshal, not JSON: the spec is only dicts, lists, strings, numbers, booleans and None,
    and the supervisor would otherwise import json (10 ms) before it can spawn anything. The
    length lets the reader take exactly the spec and leave the rest of stdin (``ok``, the
    lifeline) unread.
    """
    payload = marshal.dumps(dict(spec))
    return _SPEC_MAGIC + str(len(payload)).encode("ascii") + b"\n" + payload


def read_spec(fd: int = 0) -> Spec | None:
    """The spec from ``fd``, read unbuffered; None when it ends first (``start`` gave up).

    ValueError when what arrives is not a spec (nothing is started then)."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            if header.strip():
                _bad("the spec ended in its header")
            return None
        header += byte
        if len(header) > 64:
            _bad("no spec header")
    if not header.startswith(_SPEC_MAGIC):
        _bad("no spec header")
    size = int(header[len(_SPEC_MAGIC) :])
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            return None  # ``start`` died while sending it
        chunks.append(chunk)
        got += len(chunk)
    try:
        spec = marshal.loads(b"".join(chunks))
    except (EOFError, TypeError, ValueError):
        _bad("the spec is not readable")
    if not isinstance(spec, dict):
        _bad("the spec is not a mapping")
    return spec  # type: ignore[return-value]


def _bad(why: str) -> NoReturn:
    raise ValueError(f"bad supervisor spec: {why}")


# --- the state file, written before anything else is imported -------------------------------


def state_record(
    spec: Spec,
    pid: int,
    server: tuple[float, str, int],
    me: tuple[float, str, int],
    control_port: int,
    token: str,
) -> dict[str, Any]:
    """The state file's content (``state.ServerState``'s fields): the server's and this
    supervisor's identities (create time, exe, start ticks) and how to reach both."""
    return {
        "pid": pid,
        "create_time": server[0],
        "start_ticks": server[2],  # clock-step proof (0 where there is no /proc)
        "exe": server[1],
        "supervisor_pid": os.getpid(),  # not Popen's pid: a venv python.exe is a launcher
        "supervisor_create_time": me[0],
        "supervisor_start_ticks": me[2],
        "flavor": spec["flavor"],
        "version": spec["version"],
        "host": spec["host"],
        "port": spec["port"],
        "log_file": spec["log_file"],
        "started_at": time.time(),
        "binary": spec["binary"],
        "argv": spec["public_argv"],
        "control_port": control_port,
        "control_token": token,
        "status": "running",
        "exit_status": "",
    }


def to_json(value: Any, indent: str = "") -> str:
    """JSON for the state's plain values, as ``json.dumps(value, indent=2, sort_keys=True)``
    reads back; without importing json (``_json`` is its C speed-up, built in)."""
    if isinstance(value, str):
        return _quote(value)
    if value is True or value is False or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a JSON number: {value!r}")
        return repr(value)
    inner = indent + "  "
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in value) + "\n" + indent + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{inner}{_quote(str(k))}: {to_json(value[k], inner)}" for k in sorted(value))
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _quote(text: str) -> str:
    try:
        from _json import encode_basestring_ascii
    except ImportError:  # an interpreter without the C speed-up
        import json

        return json.dumps(text)
    return encode_basestring_ascii(text)  # type: ignore[no-any-return]


def write_private(path: str, text: str) -> None:
    """Write ``path`` atomically (temp file, rename), readable by its owner only: what
    ``atomic.write_atomic(..., mode=PRIVATE_MODE)`` does on POSIX, which it imports too much
    for this moment (pathlib, the platform modules)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # os.open's mode is masked by the umask
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def control_listener() -> Any:
    """The loopback socket ``invoke stop`` reaches the supervisor on (``_socket``: the socket
    module's import pulls in enum and selectors, 3 ms here)."""
    import _socket

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def record_first(spec: Spec, child: Child) -> tuple[Any, str, OSError | None]:
    """Write the state file now, from /proc: (listener, token, None) once written, (None, ""
    , None) where /proc tells nothing (the supervisor records it through psutil), or the
    listener and the error the write failed with (the supervisor stops the server then)."""
    server, me = proc_identity(child.pid), proc_identity(os.getpid())
    if server is None or me is None:
        return None, "", None
    listener = control_listener()
    token = os.urandom(16).hex()
    record = state_record(spec, child.pid, server, me, listener.getsockname()[1], token)
    try:
        write_private(spec["state_file"], to_json(record))
    except OSError as exc:
        return listener, token, exc
    return listener, token, None


def main() -> None:
    """``python -S -c "from devserver.supervisor.bootstrap import main; main()"`` (POSIX).

    An empty stdin means ``start`` gave up before sending a spec: exit quietly. Whatever
    happens next is handed to devserver.supervisor.core, which ends the process (``finish``).
    """
    import _signal  # type: ignore[import-not-found]

    # An ignored SIGCHLD (inherited from whoever started ``start``) would hide the server's
    # exit status from waitpid.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    prctl = load_prctl()  # while ``start`` still runs its checks
    warm_up(0)
    try:
        spec = read_spec(0)
    except ValueError as exc:
        _hand_over("report", exc)
    if spec is None:
        os._exit(0)
    secret_dir = secret_path = ""
    try:
        if spec.get("secret_file"):  # Garnet's password file: rare, so imported only then
            from devserver.supervisor.core import write_secret

            secret_dir, secret_path = write_secret(spec)
        child = spawn(spec, secret_path, prctl)
    except OSError as exc:
        _hand_over("spawn_failed", spec, exc, secret_dir)
    except Exception as exc:
        from devserver.supervisor.core import remove_secret

        remove_secret(secret_dir)
        _hand_over("report", exc)
    log_fd = open_log(spec)
    try:
        first = record_first(spec, child)
    except Exception:  # e.g. no loopback socket: the supervisor's own path tries and reports
        first = (None, "", None)
    _hand_over("adopt", spec, child, secret_dir, first, log_fd)


def open_log(spec: Spec) -> int:
    """Open the log for appending before the state is written, -1 if it cannot be: once
    ``start`` has returned, the log is ours even if the project folder is moved before the
    log writer exists (it must never recreate the folder at the old place)."""
    try:
        return os.open(spec["log_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError:
        return -1


# What the supervisor needs after the spawn, heaviest last (``import devserver.supervisor.core``
# is 25-40 ms in a fresh interpreter, mostly subprocess, typing and re).
_WARM = (
    "threading",
    "socket",
    "json",
    "devserver.supervisor.logs",
    "devserver.system.host",
    "devserver.system.kill",
    "devserver.system.lifetime",
    "devserver.system.signals",
    "devserver.system.spawn",
    "devserver.supervisor.core",
)


def warm_up(fd: int) -> None:
    """Import what comes after the spawn, one module at a time, while no spec is waiting.

    ``invoke start`` sends the spec some 100 ms after launching us (it imports the library
    and runs its checks first): then all of this is done by the time it arrives, and the tee
    runs within a millisecond of the spawn. ``start.start`` sends it at once: then nothing
    is imported before the spawn, and the rest follows while the server boots.
    """
    import select

    for name in _WARM:
        if select.select([fd], [], [], 0)[0]:
            return  # the spec (or the end of stdin) is there: spawn first
        __import__(name)


def _hand_over(name: str, *args: Any) -> NoReturn:
    """Call ``devserver.supervisor.core.<name>(*args)`` and end the process with its result."""
    from devserver.supervisor import core as supervisor

    supervisor.finish(getattr(supervisor, name)(*args))


# --- a supervisor forked from the caller (Linux, single-threaded callers) -------------------


def can_fork() -> bool:
    """Whether ``start.start`` may fork its supervisor from the calling process.

    Only on Linux, and only while this process has exactly one thread: ``/proc/self/task``
    lists every thread, C ones too, so this proves what the fork needs (no lock held by
    another thread can be copied locked). Test runners with worker threads, apps with thread
    pools and ``DEVSERVER_NO_FORK=1`` get the spawned bootstrap instead.
    """
    if not sys.platform.startswith("linux") or os.environ.get("DEVSERVER_NO_FORK"):
        return False
    if not sys.executable or not _memfd_works():
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


_memfd: list[bool] = []


def _memfd_works() -> bool:
    """Whether memfd_create works here (absent on old kernels, refused by some seccomp
    profiles); asked once."""
    if not _memfd:
        try:
            os.close(os.memfd_create("devserver-probe"))
            _memfd.append(True)
        except (AttributeError, OSError):
            _memfd.append(False)
    return _memfd[0]


def fork_supervisor(spec: Spec, python: str, env: dict[str, str], cwd: str) -> Child:
    """Fork the supervisor from this (single-threaded, see :func:`can_fork`) process.

    Why: a new interpreter costs 15 ms before it can run a line, and the server can only be
    spawned after that; a fork of this process spawns it at once. The forked copy only
    spawns the server and writes the state file, then execs a fresh ``python -S`` (same pid,
    so the server stays its child and keeps its parent-death signal) that takes over through
    :func:`resume`: nothing of the caller's memory, threads, files or handlers survives in
    the long-lived supervisor. The handle's stdin is the lifeline, its stdout the report
    pipe, as for a spawned bootstrap; the spec is not sent, the fork has it.

    Call it with SIGINT blocked (``signals.sigint_blocked``) and keep the handle before
    unblocking: a Ctrl+C between the fork and the caller holding the handle would leave a
    server nobody undoes. The child unblocks it for itself. OSError: no fork (EAGAIN,
    ENOMEM, EMFILE); nothing was started.
    """
    prctl = load_prctl()  # here, not in the child: it may import
    from devserver.supervisor import (
        core as supervisor,
    )  # the child calls into it; imported already by start.py

    reap_forked()

    life_r, life_w = os.pipe()
    report_r, report_w = os.pipe()
    top = open_max()
    try:
        pid = os.fork()
    except OSError:
        for fd in (life_r, life_w, report_r, report_w):
            os.close(fd)
        raise
    if pid == 0:
        try:
            _forked(spec, python, env, cwd, life_r, report_w, prctl, top, supervisor)
        finally:
            os._exit(70)
    os.close(life_r)
    os.close(report_w)
    handle = Child(pid, open(report_r, "rb"), [python])  # noqa: SIM115 (the handle owns it)
    handle.stdin = open(life_w, "wb")  # noqa: SIM115 (closed by ``start`` after "ok")
    _forked_supervisors.append(handle)
    return handle


_forked_supervisors: list[Child] = []  # forked here, so ours to reap once they end


def reap_forked(ending: int = 0, timeout: float = 1.0) -> None:
    """Reap the forked supervisors that have ended (as subprocess does for lost Popen
    objects): they are this process's children, and a long-lived caller (a test session
    that starts and stops many servers) would otherwise collect zombies. ``ending``: the pid
    of one that was just stopped, which is waited for up to ``timeout`` s (it exits right
    after it has told ``stop`` how the server ended)."""
    for handle in list(_forked_supervisors):
        if handle.pid == ending:
            try:
                handle.wait(timeout)
            except Exception:  # subprocess.TimeoutExpired: it is reaped another time
                pass
    _forked_supervisors[:] = [h for h in _forked_supervisors if h.poll() is None]


def _forked(
    spec: Spec,
    python: str,
    env: dict[str, str],
    cwd: str,
    life_r: int,
    report_w: int,
    prctl: Any,
    top: int,
    supervisor: Any,
) -> None:
    """The forked copy: detach, spawn the server, record it, exec the real supervisor."""
    import _signal  # type: ignore[import-not-found]
    import gc

    # The caller's objects are still alive here: a collection could run their finalizers,
    # which may close fds that this copy has reused by then.
    gc.disable()
    os.setsid()  # the terminal's Ctrl+C and hang-up never reach the supervisor
    # The caller's handlers are not ours, and an ignored SIGCHLD (which survives the exec)
    # would make the server's exit status unknowable; its wakeup fd (asyncio) is closed below.
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD"):
        _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    _signal.set_wakeup_fd(-1)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGINT})  # blocked by the caller
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(life_r, 0)
    os.dup2(report_w, 1)
    os.dup2(null, 2)
    os.closerange(3, top)  # the caller's files (its project lock among them) are not ours
    # Fresh text streams: the caller's may hold buffered output, which a flush here would
    # send into the report pipe.
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    secret_dir = secret_path = ""
    try:
        if spec.get("secret_file"):
            secret_dir, secret_path = supervisor.write_secret(spec)
        child = spawn(spec, secret_path, prctl)
    except OSError as exc:
        supervisor.finish(supervisor.spawn_failed(spec, exc, secret_dir))
    except Exception as exc:
        supervisor.remove_secret(secret_dir)
        supervisor.finish(supervisor.report(exc))
    try:
        _hand_over_by_exec(spec, python, env, cwd, child, secret_dir)
    except Exception as exc:  # the server runs, untracked by anyone: undo, and say why
        child.kill()
        child.wait()
        try:
            os.unlink(spec["state_file"])
        except OSError:
            pass
        supervisor.remove_secret(secret_dir)
        from devserver.errors import DevServerError, StartError

        why = exc
        if not isinstance(exc, DevServerError):
            why = StartError(
                f"the supervisor could not take over: {exc}",
                hint="set DEVSERVER_NO_FORK=1 to start it the other way, and report this",
            )
        supervisor.finish(supervisor.report(why))


def _hand_over_by_exec(
    spec: Spec, python: str, env: dict[str, str], cwd: str, child: Child, secret_dir: str
) -> None:
    """Record the server, put what the supervisor needs in a memfd and exec it; returns
    (raising) only when something of that failed: StartError when the exec did."""
    log_fd = open_log(spec)
    try:
        listener, token, error = record_first(spec, child)
    except Exception:
        listener, token, error = None, "", None
    assert child.stdout is not None
    out = child.stdout.fileno()
    control = listener.fileno() if listener is not None else -1
    handover: dict[str, Any] = {
        "spec": dict(spec),
        "pid": child.pid,
        "argv": child.args,
        "out": out,
        "listener": control,
        "token": token,
        "error": [error.errno or 0, error.strerror or str(error)] if error else None,
        "secret_dir": secret_dir,
        "log": log_fd,
    }
    memo = os.memfd_create("devserver-handover")  # the spec holds the password: no file
    os.write(memo, marshal.dumps(handover))
    for fd in (memo, out, control, log_fd):
        if fd >= 0:
            os.set_inheritable(fd, True)
    os.chdir(cwd)
    code = "from devserver.supervisor.bootstrap import resume; resume()"
    try:
        os.execve(python, [python, "-S", "-c", code, str(memo)], env)
    except OSError as exc:
        from devserver.supervisor.core import python_error

        raise python_error(python, exc) from None


def resume() -> None:
    """``python -S -c "from devserver.supervisor.bootstrap import resume; resume()" <fd>``:
    the forked supervisor, exec'd clean, takes over what the fork handed it
    (see fork_supervisor)."""
    memo = int(sys.argv[-1])
    os.lseek(memo, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(memo, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(memo)
    got = marshal.loads(b"".join(chunks))
    child = Child(got["pid"], open(got["out"], "rb"), got["argv"])  # noqa: SIM115 (the tee's)
    listener = None
    if got["listener"] >= 0:
        import _socket

        listener = _socket.socket(fileno=got["listener"])
    error = OSError(*got["error"]) if got["error"] else None
    first = (listener, got["token"], error)
    _hand_over("adopt", got["spec"], child, got["secret_dir"], first, got["log"])
