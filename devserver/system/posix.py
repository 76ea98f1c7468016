"""POSIX processes without subprocess: fork/exec with PR_SET_PDEATHSIG, a Popen-like handle,
and process facts read from /proc. Imported by the supervisor's bootstrap, so it imports
only what the interpreter has built in (see supervisor/bootstrap.py for why
and the figures).

Why fork and exec by hand rather than ``os.posix_spawn``: the server must get
PR_SET_PDEATHSIG (SIGTERM, a saving stop, if the supervisor is killed), which only code in
the child can set. Python code between fork and exec is unsafe only when other threads exist
(a lock one of them held stays locked in the child); the callers fork only while their
process has a single thread, so the child's few calls (setsid, prctl, dup2, chdir, exec) are
safe.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal.py would import enum
import _thread
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from devserver.supervisor.wire import Spec

PR_SET_PDEATHSIG = 1
_SIGTERM = 15
_SIGKILL = 9
_prctl: list[Any] = []  # libc's prctl once looked up


# --- process facts from /proc ----------------------------------------------------------------


def proc_start_ticks(pid: int) -> int | None:
    """``/proc/<pid>/stat`` field 22 (start in clock ticks since boot), None without /proc.

    ``lifetime.start_ticks`` is the platform-aware entry and says why this is the identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # the last ")"; what follows starts at field 3, so field 22 is index 19.
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_exited(pid: int) -> bool | None:
    """Has ``pid`` exited (gone, or a zombie not yet reaped)? None without /proc."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"
    except (OSError, ValueError):
        return True


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
    here against 1.2 ms for this, and on ``start.start`` that lies between the spec's
    arrival and the server's exec. ``_ctypes``'s dlopen/dlsym/CFuncPtr are what ctypes
    itself is made of (unchanged since Python 2.5); where they differ, ctypes is used.
    """
    try:
        import _ctypes  # not built in: loaded only when prctl is wanted

        class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "i"

        class _Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Int

        handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # None: the program itself
        return _Function(_ctypes.dlsym(handle, name))  # type: ignore[no-any-return]
    except (ImportError, AttributeError, TypeError):
        import ctypes  # the slow way (see above), only where _ctypes differs

        return getattr(ctypes.CDLL(None, use_errno=True), name)  # type: ignore[no-any-return]


# --- the server process ----------------------------------------------------------------------


class Child:
    """A server started by :func:`spawn`: the part of ``subprocess.Popen`` the supervisor uses.

    Reaping follows Popen's rules: an untimed ``wait`` holds the lock through a blocking
    waitpid; ``poll`` never blocks (None while another thread waits); a timed ``wait`` polls.
    """

    def __init__(self, pid: int, stdout: BinaryIO | None, args: list[str]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stdin: BinaryIO | None = None  # the lifeline, for a forked supervisor
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
                import subprocess  # not built in: the bootstrap imports only built-ins

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


def open_max() -> int:
    """The end of the file-descriptor range to close in a child: every fd this process can
    have (``os.closerange`` is one close_range call on Linux, so a large limit is cheap)."""
    try:
        top = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        top = -1
    return top if top > 0 else 1 << 16


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
    top = open_max()
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
        # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
        for name in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(_signal, name):
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        number = getattr(exc, "errno", 0) or 0
        why = getattr(exc, "strerror", "") or str(exc)
        os.write(err_w, f"{type(exc).__name__}:{number}:{why}".encode("utf-8", "replace"))
