"""The detached supervisor's first milliseconds on POSIX: spec in, server spawned, state out.

Why a module of its own: everything between ``start`` sending the spec and the state file
appearing is on the critical path of ``invoke start`` and of ``process.start``, and in a
fresh interpreter the usual tools cost more than the server's own start-up. Measured here
(Python 3.11, ``python -X importtime``): ``import subprocess`` 11 ms (it pulls in re, enum,
locale), json 10 ms, ``import devserver.supervisor`` 30-40 ms in all, against 10-20 ms for
``redis-server`` from exec to PONG. So this module imports only what the interpreter has
loaded or builds in (os, sys, marshal, _socket, _signal, _json, _thread), forks and execs
the server itself, writes the state file from /proc, and only then imports the full
supervisor (threads, the log tee, the control port), while the server boots.

Why fork and exec by hand rather than ``os.posix_spawn``: the server must get
PR_SET_PDEATHSIG (SIGTERM, a saving stop, if the supervisor is killed), which only code in
the child can set. Python code between fork and exec is unsafe only when other threads exist
(a lock one of them held stays locked in the child); this process has started none when it
forks, so the child's few calls (setsid, prctl, dup2, chdir, exec) are safe.

The spec framing (:func:`encode_spec` / :func:`read_spec`) is shared with Windows, whose
supervisor still spawns through subprocess (no fork there; compat.spawn_detached).
"""

from __future__ import annotations

import marshal
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO, NoReturn

    from .supervisor import Spec

_SPEC_MAGIC = b"devserver-spec-1 "
PR_SET_PDEATHSIG = 1
_SIGTERM = 15
_SIGKILL = 9
_prctl: list[Any] = []  # libc's prctl once looked up


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
    spec = marshal.loads(b"".join(chunks))
    if not isinstance(spec, dict):
        _bad("the spec is not a mapping")
    return spec  # type: ignore[return-value]


def _bad(why: str) -> NoReturn:
    raise ValueError(f"bad supervisor spec: {why}")


# --- process facts from /proc ----------------------------------------------------------------


def proc_start_ticks(pid: int) -> int | None:
    """``/proc/<pid>/stat`` field 22 (start in clock ticks since boot), None without /proc.

    ``compat.start_ticks`` is the platform-aware entry and says why this is the identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # the last ")"; what follows starts at field 3, so field 22 is index 19.
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_identity(pid: int) -> tuple[float, str, int] | None:
    """(create time as psutil computes it, executable, start ticks) from /proc, or None.

    psutil's create time on Linux is ``btime`` from /proc/stat plus the start ticks over
    SC_CLK_TCK, exactly this; reading it here keeps psutil's import (~20 ms) off the path
    between the spawn and the state file."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat", "rb") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK"), exe.removesuffix(" (deleted)"), ticks


def load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux (looked up once), else None."""
    if not sys.platform.startswith("linux"):
        return None
    if not _prctl:
        try:
            _prctl.append(_libc_function("prctl"))
        except (OSError, AttributeError, ImportError):
            _prctl.append(None)
    return _prctl[0]  # type: ignore[no-any-return]


def _libc_function(name: str) -> Callable[..., int]:
    """A libc function returning int, through ``_ctypes`` (the C half of ctypes).

    Why not ``ctypes.CDLL(None).prctl``: ``import ctypes`` builds its whole type zoo, 6.5 ms
    here against 1.2 ms for this, and on ``process.start`` that lies between the spec's
    arrival and the server's exec. ``_ctypes``'s dlopen/dlsym/CFuncPtr are what ctypes
    itself is made of (unchanged since Python 2.5); where they differ, ctypes is used.
    """
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "i"

        class _Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Int

        handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # None: the program itself
        return _Function(_ctypes.dlsym(handle, name))  # type: ignore[no-any-return]
    except (ImportError, AttributeError, TypeError):
        import ctypes

        return getattr(ctypes.CDLL(None, use_errno=True), name)  # type: ignore[no-any-return]


# --- the server process ----------------------------------------------------------------------


class Child:
    """A server started by :func:`spawn`: the part of ``subprocess.Popen`` the supervisor uses.

    Reaping follows Popen's rules: an untimed ``wait`` holds the lock through a blocking
    waitpid; ``poll`` never blocks (None while another thread waits); a timed ``wait`` polls.
    """

    def __init__(self, pid: int, stdout: BinaryIO | None, args: list[str]) -> None:
        import _thread

        self.pid = pid
        self.stdout = stdout
        self.stdin = None
        self.args = args
        self.returncode: int | None = None
        self._lock = _thread.allocate_lock()

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): the status is lost
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(False):
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            with self._lock:
                while self.returncode is None:
                    self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never signal a pid that was reaped (and may be reused)
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(_SIGTERM)

    def kill(self) -> None:
        self.send_signal(_SIGKILL)


def spawn(spec: Spec, secret_path: str = "", prctl: Callable[..., int] | None = None) -> Child:
    """Fork and exec the server as ``supervisor.spawn_server`` does through Popen: stdout and
    stderr on one pipe, stdin the null device (or a pipe carrying ``stdin_config``), a session
    of its own, and on Linux SIGTERM when this process dies. OSError when the exec fails.

    Call only while this process has a single thread (see the module docstring)."""
    argv = [secret_path if a == "{secret_file}" else a for a in spec["argv"]]
    env, cwd = dict(spec["env"]), spec["cwd"]
    os.makedirs(cwd, exist_ok=True)
    out_r, out_w = os.pipe()  # non-inheritable (PEP 446): the server gets them via dup2 only
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if spec["stdin_config"] else (-1, -1)
    top = min(os.sysconf("SC_OPEN_MAX"), 1 << 16) if hasattr(os, "sysconf") else 1024
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        try:
            _exec_child(argv, env, cwd, out_w, err_w, in_r, prctl, parent, max(top, err_w + 1))
        finally:
            os._exit(255)
    for fd in (out_w, err_w, in_r):
        if fd >= 0:
            os.close(fd)
    failure = b""
    while True:
        data = os.read(err_r, 512)
        if not data:
            break
        failure += data
    os.close(err_r)
    if failure:
        os.close(out_r)
        if in_w >= 0:
            os.close(in_w)
        os.waitpid(pid, 0)
        kind, _, rest = failure.decode("utf-8", "replace").partition(":")
        number, _, message = rest.partition(":")
        raise OSError(int(number or 0) or None, message or kind, argv[0])
    if in_w >= 0:
        try:
            os.write(in_w, spec["stdin_config"].encode("utf-8"))
        except OSError:
            pass  # the server died at once; its exit is reported by the supervisor
        os.close(in_w)
    return Child(pid, open(out_r, "rb"), argv)


def _exec_child(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    out_w: int,
    err_w: int,
    in_r: int,
    prctl: Callable[..., int] | None,
    parent: int,
    top: int,
) -> None:
    """In the forked child: set up and exec, or report why not on ``err_w`` (CLOEXEC, so
    it closes unread when the exec succeeds)."""
    try:
        os.setsid()  # a Ctrl+C in a terminal reaches the supervisor, never the server
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, _SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the supervisor died before the call: act on it now
                os._exit(1)
        null = -1
        if in_r < 0:
            null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(in_r if in_r >= 0 else null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.closerange(3, err_w)  # nothing but 0-2 (and the error pipe until exec) is passed
        os.closerange(err_w + 1, top)
        os.chdir(cwd)
        import _signal  # type: ignore[import-not-found]  # signal.py would import enum

        # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
        for name in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(_signal, name):
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        number = getattr(exc, "errno", 0) or 0
        why = getattr(exc, "strerror", "") or str(exc)
        os.write(err_w, f"{type(exc).__name__}:{number}:{why}".encode("utf-8", "replace"))


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
    for this moment (pathlib, compat)."""
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


def record_first(spec: Spec, child: Child) -> tuple[Any, str, BaseException | None]:
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
    """``python -S -c "from devserver.bootstrap import main; main()"`` (POSIX).

    An empty stdin means ``start`` gave up before sending a spec: exit quietly. Whatever
    happens next is handed to devserver.supervisor, which ends the process (``finish``).
    """
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
            from .supervisor import write_secret

            secret_dir, secret_path = write_secret(spec)
        child = spawn(spec, secret_path, prctl)
    except OSError as exc:
        _hand_over("spawn_failed", spec, exc, secret_dir)
    except Exception as exc:
        _hand_over("report", exc)
    try:
        first = record_first(spec, child)
    except Exception:  # e.g. no loopback socket: the supervisor's own path tries and reports
        first = (None, "", None)
    _hand_over("adopt", spec, child, secret_dir, first)


# What the supervisor needs after the spawn, heaviest last (``import devserver.supervisor``
# is 25-40 ms in a fresh interpreter, mostly subprocess, typing and re).
_WARM = ("threading", "socket", "json", ".logs", ".compat", ".supervisor")


def warm_up(fd: int) -> None:
    """Import what comes after the spawn, one module at a time, while no spec is waiting.

    ``invoke start`` sends the spec some 100 ms after launching us (it imports the library
    and runs its checks first): then all of this is done by the time it arrives, and the tee
    runs within a millisecond of the spawn. ``process.start`` sends it at once: then nothing
    is imported before the spawn, and the rest follows while the server boots.
    """
    import select

    for name in _WARM:
        if select.select([fd], [], [], 0)[0]:
            return  # the spec (or the end of stdin) is there: spawn first
        if name.startswith("."):
            __import__(__package__ + name)
        else:
            __import__(name)


def _hand_over(name: str, *args: Any) -> NoReturn:
    """Call ``devserver.supervisor.<name>(*args)`` and end the process with its result."""
    from . import supervisor

    supervisor.finish(getattr(supervisor, name)(*args))
