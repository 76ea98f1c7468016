"""A supervisor forked from the caller (Linux, single-threaded callers): no new interpreter
before the server is spawned.

``server.start.start`` forks here when :func:`can_fork` allows it; the forked copy spawns the
server, writes the state file as the bootstrap does (bootstrap.py), then execs a clean
``python -S`` that takes over in :func:`resume`. Everything else (Windows, threaded callers,
``DEVSERVER_NO_FORK=1``) launches the bootstrap instead (launch.py).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import _socket
import gc
import marshal
import os
import sys
from typing import Any

from devserver.errors import DevServerError, StartError
from devserver.supervisor.bootstrap import open_log, record_first
from devserver.supervisor.entry import adopt, finish, report
from devserver.supervisor.launch import python_error
from devserver.supervisor.starting import remove_secret, spawn_failed, write_secret
from devserver.supervisor.wire import Spec
from devserver.system.posix import Child, load_prctl, open_max, spawn


def can_fork() -> bool:
    """Whether ``server.start.start`` may fork its supervisor from the calling process.

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
            _forked(spec, python, env, cwd, life_r, report_w, prctl, top)
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
    ended = [h for h in _forked_supervisors if h.poll() is not None]
    _forked_supervisors[:] = [h for h in _forked_supervisors if h not in ended]
    for handle in ended:  # its pipes too: left to the garbage collector, each is a warning
        for stream in (handle.stdout, handle.stdin):
            if stream is not None:
                stream.close()


def _forked(
    spec: Spec,
    python: str,
    env: dict[str, str],
    cwd: str,
    life_r: int,
    report_w: int,
    prctl: Any,
    top: int,
) -> None:
    """The forked copy: detach, spawn the server, record it, exec the real supervisor."""
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
            secret_dir, secret_path = write_secret(spec)
        child = spawn(spec, secret_path, prctl)
    except OSError as exc:
        finish(spawn_failed(spec, exc, secret_dir))
    except Exception as exc:
        remove_secret(secret_dir)
        finish(report(exc))
    try:
        _hand_over_by_exec(spec, python, env, cwd, child, secret_dir)
    except Exception as exc:  # the server runs, untracked by anyone: undo, and say why
        child.kill()
        child.wait()
        try:
            os.unlink(spec["state_file"])
        except OSError:
            pass
        remove_secret(secret_dir)
        why = exc
        if not isinstance(exc, DevServerError):
            why = StartError(
                f"the supervisor could not take over: {exc}",
                hint="set DEVSERVER_NO_FORK=1 to start it the other way, and report this",
            )
        finish(report(why))


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
    code = "from devserver.supervisor.fork import resume; resume()"
    try:
        os.execve(python, [python, "-S", "-c", code, str(memo)], env)
    except OSError as exc:
        raise python_error(python, exc) from None


def resume() -> None:
    """``python -S -c "from devserver.supervisor.fork import resume; resume()" <fd>``:
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
        listener = _socket.socket(fileno=got["listener"])
    error = OSError(*got["error"]) if got["error"] else None
    first = (listener, got["token"], error)
    finish(adopt(got["spec"], child, got["secret_dir"], first, got["log"]))
