"""Which process is which, and how the server's life is tied to its supervisor's.

The identity (start ticks, executable) tells a live server from a later process that reused
its pid. The tie: on Linux a parent-death signal (SIGTERM, a saving stop) set in the forked
child; on Windows a kill-on-close job object the supervisor holds. macOS has neither, and a
server that outlives its supervisor is then reported as running unsupervised.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from devserver.system import host
from devserver.system import posix as posixproc


def start_ticks(pid: int) -> int | None:
    """Linux: when the process started, in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Why not psutil's ``create_time``: on Linux that is this tick count plus the boot time
    from ``/proc/stat`` ``btime``, which the kernel derives from the wall clock. An NTP step,
    a VM or WSL2 resume, or a manual date change moves it, and a live server would look like
    a reused PID. The tick count never changes for a process and differs for a later process
    with the same PID. None where there is no such file (Windows, macOS) or it cannot be read:
    there psutil's create time is the identity (see ``identity.same_start``).
    """
    if host.WINDOWS or host.MACOS:
        return None
    return posixproc.proc_start_ticks(pid)


def surely_exited(pid: int) -> bool:
    """Linux: has ``pid`` exited (read from /proc, without psutil)? Elsewhere False: not
    known this cheaply, so the caller goes on as if it ran."""
    if host.WINDOWS or host.MACOS:
        return False
    return bool(posixproc.proc_exited(pid))


def proc_identity(pid: int) -> tuple[float, str, int] | None:
    """Linux: (create time as psutil computes it, executable, start ticks) from /proc, or None.

    The supervisor records these right after spawning the server; reading them here instead
    of through psutil keeps psutil's import (~20 ms of CPU, the largest single cost between
    the spawn and the state file) off ``invoke start``'s critical path. None elsewhere or when
    /proc cannot be read: the caller then asks psutil.
    """
    if host.WINDOWS or host.MACOS:
        return None
    return posixproc.proc_identity(pid)


def preload_parent_death() -> None:
    """Look up prctl ahead of time: the detached supervisor does it while it waits for its
    spec, so the import of ctypes is not on ``invoke start``'s critical path."""
    if host.WINDOWS or host.MACOS or not sys.platform.startswith("linux"):
        return
    posixproc.load_prctl()


def parent_death_kwargs() -> dict[str, Any]:
    """Popen options that make the server get SIGTERM (a graceful, saving stop) when the
    process that spawned it dies, even by SIGKILL or the OOM killer. Linux only (prctl
    PR_SET_PDEATHSIG); {} elsewhere, and the tool then reports such a server as running
    *unsupervised* (see ``identity.supervisor_alive``).

    ``preexec_fn`` runs Python in the forked child, which is unsafe when other threads exist
    (a lock one of them held stays locked in the child). The supervisor spawns the server
    before it starts any thread, and so does ``start --foreground``; if another thread is
    running anyway, this returns {} rather than risk it. The libc function is looked up here,
    before the fork, so the child only makes the call. The signal follows the death of the
    spawning *thread*: both callers spawn from the main thread, which lives until the end.
    """
    if host.WINDOWS or host.MACOS or not sys.platform.startswith("linux"):
        return {}
    import threading  # the supervisor calls this before the spawn, and threading is not loaded yet

    if threading.active_count() > 1:
        return {}
    prctl = posixproc.load_prctl()
    if prctl is None:
        return {}
    parent = os.getpid()
    term = int(signal.SIGTERM)

    def arm() -> None:
        prctl(posixproc.PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: act on it now
            os._exit(1)

    return {"preexec_fn": arm}


# Windows job object: the analogue of the parent-death signal. Values from the Win32 API.
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9


def _job_limit_structure() -> Any:
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION as ctypes (built lazily: ctypes costs start-up)."""
    import ctypes  # costs milliseconds; the supervisor imports this module before the spawn

    class Basic(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_int64),
            ("PerJobUserTimeLimit", ctypes.c_int64),
            ("LimitFlags", ctypes.c_uint32),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", ctypes.c_uint32),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", ctypes.c_uint32),
            ("SchedulingClass", ctypes.c_uint32),
        ]

    class IoCounters(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_uint64)
            for name in (
                "ReadOperationCount",
                "WriteOperationCount",
                "OtherOperationCount",
                "ReadTransferCount",
                "WriteTransferCount",
                "OtherTransferCount",
            )
        ]

    class Extended(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", Basic),
            ("IoInfo", IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    return Extended


def _kernel32() -> Any:
    import ctypes  # costs milliseconds; the supervisor imports this module before the spawn

    return ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]


def bind_to_this_process(proc: subprocess.Popen[bytes] | posixproc.Child) -> object | None:
    """Windows: tie the server's life to this process (the supervisor, or ``start
    --foreground``) with a job object marked kill-on-close; return the job handle, which the
    caller keeps for as long as it lives. When this process dies (TerminateProcess, a crash,
    a closed console), Windows closes the handle and kills the server: it never runs on
    untracked. That kill is not graceful (Windows has no polite signal for a windowless
    process; Redis's append-only file loses at most the last second). Nested jobs need
    Windows 8 or later. The server runs a few milliseconds before it is assigned, so a child
    it started in that time would not be in the job (the servers here start none).

    Returns None off Windows (Linux uses :func:`parent_death_kwargs`) or when Windows refuses
    (then a server that outlives its supervisor is reported as running *unsupervised*).
    """
    if not host.WINDOWS:
        return None
    import ctypes  # costs milliseconds; the supervisor imports this module before the spawn

    try:
        kernel32 = _kernel32()
        job = kernel32.CreateJobObjectW(None, None)
    except (OSError, AttributeError):
        return None
    if not job:
        return None
    info = _job_limit_structure()()
    info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    handle = int(getattr(proc, "_handle", 0))
    if handle and (
        kernel32.SetInformationJobObject(
            job,
            _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
            ctypes.byref(info),
            ctypes.sizeof(info),
        )
        and kernel32.AssignProcessToJobObject(job, handle)
    ):
        held: object = job
        return held
    kernel32.CloseHandle(job)
    return None


def output_unread(pid: int) -> int | None:
    """Linux: how many bytes the server wrote to its output pipe that its supervisor's tee
    has not read yet (``FIONREAD`` on the pipe, reached through ``/proc/<pid>/fd/1``).

    ``start`` asks this after PING answered, so the lines the server printed before it
    answered are in the log before the echo ends, however late the tee thread is scheduled.
    Opening the pipe reads nothing from it. None where this cannot be known (not Linux, no
    pipe, no access): the caller then waits for the log to go quiet instead.
    """
    if host.WINDOWS or host.MACOS:
        return None
    # Linux only, and only on this path: fcntl and termios stay off every start's imports.
    import fcntl
    import stat
    import struct
    import termios

    try:
        fd = os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    except OSError:
        return None
    finally:
        os.close(fd)
