"""Every difference between Windows and POSIX lives here, and nowhere else asks the OS.

Why a single module: process creation flags, signals, console windows, file locks, executable
suffixes and WSL paths are where a cross-platform tool goes wrong, and having them side by
side makes the Windows branches reviewable and unit-testable on Linux (the tests patch
``WINDOWS`` and assert the calls made). Facts behind each branch are in
shared/reference/servers.md ("Windows process control").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any

from devserver.system import posix as posixproc

if TYPE_CHECKING:
    from pathlib import Path

# Imports that only some functions need are made inside them: the supervisor imports this
# module before it spawns the server, and every millisecond there delays ``invoke start``.

WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"

# Windows process-creation flags (values from the Win32 API; subprocess exposes them only on
# Windows, and the unit tests need them on Linux too).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
CREATE_NO_WINDOW = 0x08000000
CTRL_BREAK_EVENT = 1  # signal.CTRL_BREAK_EVENT, which exists only on Windows


def os_name() -> str:
    """'windows', 'macos' or 'linux': the catalog's platform keys."""
    if WINDOWS:
        return "windows"
    return "macos" if MACOS else "linux"


def cpu_arch() -> str:
    """Normalised CPU name as release assets spell it: 'x86_64' or 'aarch64'.

    On Windows the machine Windows runs on, not the one Python was built for: an x64 Python
    on ARM64 Windows runs emulated and ``platform.machine()`` says AMD64 there, but WSL2 runs
    an aarch64 Linux and Garnet has a native win-arm64 build.
    """
    import platform

    machine = platform.machine().lower()
    if WINDOWS:
        machine = windows_native_machine() or machine
    if machine in ("amd64", "x64", "x86_64"):
        return "x86_64"
    if machine in ("arm64", "aarch64", "armv8l"):
        return "aarch64"
    return machine


# IMAGE_FILE_MACHINE_* values (winnt.h) that IsWow64Process2 reports.
_NATIVE_MACHINES = {0xAA64: "arm64", 0x8664: "amd64", 0x014C: "x86"}


def windows_native_machine() -> str:
    """'arm64', 'amd64' or 'x86' from IsWow64Process2 (Windows 10 1709+); '' when unknown."""
    try:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        kernel32.IsWow64Process2.argtypes = [
            wintypes.HANDLE,
            ctypes.POINTER(wintypes.USHORT),
            ctypes.POINTER(wintypes.USHORT),
        ]
        process, native = wintypes.USHORT(), wintypes.USHORT()
        if not kernel32.IsWow64Process2(
            kernel32.GetCurrentProcess(), ctypes.byref(process), ctypes.byref(native)
        ):
            return ""
    except Exception:  # no such function (older Windows, Wine), or not Windows
        return ""
    return _NATIVE_MACHINES.get(int(native.value), "")


def exe_name(base: str) -> str:
    """Executable file name for this OS (``redis-server`` -> ``redis-server.exe``)."""
    return base + ".exe" if WINDOWS and not base.endswith(".exe") else base


def spawn_detached(
    argv: Sequence[str],
    cwd: str | Path,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[bytes], bool]:
    """Start the supervisor so it outlives this terminal; return (process, broke_away).

    POSIX: a new session, so the terminal's hang-up and Ctrl+C never reach it.
    Windows: CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP, *not* DETACHED_PROCESS. Why: a
    venv's python.exe is a redirector that starts the real interpreter with creation flags 0
    (CPython PC/venvlauncher.c ``launch()``; PC/launcher.c ``run_child()`` in 3.7-3.12), so the
    child inherits the redirector's console. A DETACHED_PROCESS redirector has none to pass
    on, and Windows then gives the real interpreter a new, *visible* console, whose close
    button ends the supervisor. With CREATE_NO_WINDOW the process gets a console without a
    window, which its children inherit: nothing appears, and no CTRL_CLOSE can reach it (the
    person's own terminal is another console). The new process group keeps Ctrl+C in that
    hidden console from reaching the server. :func:`python_for_background` also skips the
    redirector where it can. CREATE_BREAKAWAY_FROM_JOB lets it outlive a launcher's job
    object (CI agents, some IDEs); a job that forbids breakaway makes CreateProcess fail with
    access denied: retry without the flag and report ``broke_away=False`` so the caller can
    warn.
    """
    common: dict[str, Any] = {
        "cwd": str(cwd),
        "stdin": stdin,
        "stdout": stdout,
        "stderr": subprocess.DEVNULL,
        "close_fds": True,
        "env": None if env is None else dict(env),
    }
    if not WINDOWS:
        return subprocess.Popen(list(argv), start_new_session=True, **common), True
    flags = CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    try:
        proc = subprocess.Popen(
            list(argv), creationflags=flags | CREATE_BREAKAWAY_FROM_JOB, **common
        )
        return proc, True
    except PermissionError:
        return subprocess.Popen(list(argv), creationflags=flags, **common), False


def server_popen_kwargs() -> dict[str, Any]:
    """Popen options for the server the supervisor starts.

    Its own process group everywhere, so a Ctrl+C in a terminal (foreground mode) reaches the
    supervisor, which stops the server gracefully, not the server directly. On Windows
    CREATE_NO_WINDOW gives the server a console of its own without a window: in foreground
    mode the supervisor's console is the person's terminal (whose close must not kill the
    server before the supervisor stopped it), and in the background the supervisor's console
    is hidden anyway. Never DETACHED_PROCESS: it would make CREATE_NO_WINDOW be ignored, and
    a console server started without a console opens a visible window.
    """
    if WINDOWS:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def terminate(proc: Any) -> str:
    """Ask a process (a psutil.Process already identity-checked) to exit; say how: "SIGTERM"
    or "kill".

    POSIX: SIGTERM, which Redis and Dragonfly handle as a graceful shutdown. Windows has no
    such signal for a windowless process (psutil's terminate is TerminateProcess, i.e. a
    kill), so there a polite request is the RESP SHUTDOWN the caller already sent; this is
    then the same as :func:`kill_tree`, and reported as a kill.
    """
    if WINDOWS:
        kill_tree(proc)
        return "kill"
    proc.send_signal(signal.SIGTERM)
    return "SIGTERM"


def kill_tree(proc: Any) -> None:
    """Force-kill a psutil.Process and its children, through psutil's PID-reuse-checked handles.

    psutil re-checks the create time before each signal, so a PID that was reused since the
    identity check is left alone. ``taskkill /T /F`` is only the last resort on Windows, when
    psutil itself was refused (e.g. access denied on a child).
    """
    import psutil

    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    for victim in [*children, proc]:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            if not WINDOWS:
                raise
            subprocess.run(
                ["taskkill", "/PID", str(victim.pid), "/T", "/F"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )


def process_exe(proc: Any) -> str | None:
    """A process's executable path, else its name, else None: unknown, never a crash.

    Windows refuses both for protected processes (AccessDenied); under Wine, psutil's
    ``exe()`` and ``name()`` of another process raise a bare OSError (WinError 87, from
    NtQuerySystemInformation). Unknown is not a mismatch: the caller then relies on what it
    could read (pid + create time), and signals nothing it could not check.
    """
    import psutil

    for read in (proc.exe, proc.name):
        try:
            value = read()
        except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if value:
            return str(value)
    return None


# NTSTATUS values a crashed or killed Windows process commonly ends with (ntstatus.h).
NTSTATUS_NAMES = {
    0xC0000005: "STATUS_ACCESS_VIOLATION",
    0xC0000017: "STATUS_NO_MEMORY",
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION",
    0xC00000FD: "STATUS_STACK_OVERFLOW",
    0xC000013A: "STATUS_CONTROL_C_EXIT",
    0xC0000135: "STATUS_DLL_NOT_FOUND",
    0xC0000139: "STATUS_ENTRYPOINT_NOT_FOUND",
    0xC0000142: "STATUS_DLL_INIT_FAILED",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN",
    0xC0000374: "STATUS_HEAP_CORRUPTION",
    0x40010004: "DBG_TERMINATE_PROCESS",
}


def describe_exit(returncode: int | None) -> str:
    """Human text for an exit status: 'code 1', 'signal SIGKILL' for a POSIX signal death,
    'code 0xC000013A (STATUS_CONTROL_C_EXIT)' for a Windows NTSTATUS.

    Windows exit codes are 32-bit unsigned (Popen gives 3221225786 for 0xC000013A; some
    tools show it as -1073741510): NTSTATUS values only mean something as hex and by name.
    """
    if returncode is None:
        return "unknown status"
    if WINDOWS:
        unsigned = returncode & 0xFFFFFFFF
        name = NTSTATUS_NAMES.get(unsigned)
        if name:
            return f"code 0x{unsigned:08X} ({name})"
        if unsigned >= 0x80000000:
            return f"code 0x{unsigned:08X} ({unsigned - (1 << 32)})"
        return f"code {unsigned}"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def retry_sharing(action: Callable[[], object], timeout: float = 1.0) -> None:
    """Run a rename/unlink, retrying briefly on Windows while another process has the file open.

    Windows refuses to replace or delete a file that a reader (``invoke status``, an antivirus
    scanner, an indexer) holds open without FILE_SHARE_DELETE, which is how Python and most
    programs open files: PermissionError (WinError 5/32). Such holds last milliseconds, so
    retry for up to ``timeout`` seconds, then let the error out. POSIX never refuses: once.
    """
    if not WINDOWS:
        action()
        return
    import time

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            action()
            return
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


# A protected DACL (no inherited entries) granting full access to the file's owner and to
# SYSTEM only: what POSIX mode 0600 means, in Windows terms.
OWNER_ONLY_SDDL = "D:P(A;;FA;;;OW)(A;;FA;;;SY)"
SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x00000004
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000


def restrict_to_owner(path: Path | str) -> bool:
    """Windows: make a file readable by its owner (and SYSTEM) only; True when done.

    POSIX modes mean nothing on Windows: a file inherits its folder's ACL, and a project
    folder outside the user profile (C:\\dev\\...) usually lets every local user read it. The
    state file holds the supervisor's control token, so it gets a protected DACL
    (SetNamedSecurityInfoW with OWNER_ONLY_SDDL, which a later rename keeps). Best effort:
    False when Windows refuses (e.g. a FAT32 or network drive without ACLs). POSIX: False
    (the caller's chmod does the job there).
    """
    if not WINDOWS:
        return False
    try:
        return _set_owner_only_dacl(str(path))
    except Exception:  # no advapi32, no such entry point, a ctypes argument error: best effort
        return False


def _set_owner_only_dacl(path: str) -> bool:
    import ctypes
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    advapi32.SetNamedSecurityInfoW.argtypes = [
        wintypes.LPCWSTR,
        ctypes.c_int,
        wintypes.DWORD,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
        OWNER_ONLY_SDDL, 1, ctypes.byref(descriptor), None
    ):
        return False
    try:
        present, defaulted, dacl = wintypes.BOOL(), wintypes.BOOL(), ctypes.c_void_p()
        if not advapi32.GetSecurityDescriptorDacl(
            descriptor, ctypes.byref(present), ctypes.byref(dacl), ctypes.byref(defaulted)
        ):
            return False
        flags = DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION
        status = advapi32.SetNamedSecurityInfoW(path, SE_FILE_OBJECT, flags, None, None, dacl, None)
        return bool(status == 0)
    finally:
        kernel32.LocalFree(descriptor)


def try_lock(handle: IO[Any]) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False when someone holds it.

    The OS drops the lock when the holder dies, so a crashed ``start`` never leaves the
    project locked (a lock *file's existence* would).
    """
    if WINDOWS:
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def wsl_path(path: Path | str) -> str:
    """``C:\\x\\y`` -> ``/mnt/c/x/y``: the default automount rule, only wsl.py's fallback when
    WSL's own ``wslpath`` cannot be asked (a custom automount root, network drives and UNC
    paths map differently)."""
    from pathlib import PurePosixPath, PureWindowsPath

    win = PureWindowsPath(path)
    drive = win.drive.rstrip(":").lower()
    if not drive:
        return PurePosixPath(*win.parts).as_posix()
    return PurePosixPath("/mnt", drive, *win.parts[1:]).as_posix()


def python_for_background() -> str:
    """The interpreter that runs the supervisor: ours, minus a venv's redirector on Windows.

    A Windows venv's python.exe only starts the base interpreter (``sys._base_executable``)
    as its child, inside a kill-on-close job (PC/venvlauncher.c): an extra process whose pid
    Popen reports, and whose death kills the supervisor. The supervisor runs with ``-S`` and
    our sys.path in PYTHONPATH, so the base interpreter finds the venv's packages directly;
    then Popen's pid is the supervisor's own. POSIX venvs use a symlink: nothing to skip.
    """
    if WINDOWS and sys.prefix != sys.base_prefix:
        base = getattr(sys, "_base_executable", "")
        if base and os.path.isfile(base):
            return str(base)
    return sys.executable


def without_prefixes(env: Mapping[str, str], prefixes: Sequence[str]) -> dict[str, str]:
    """A copy of an environment minus variables whose names start with these prefixes.

    Dragonfly treats any unknown ``DFLY_*`` variable as a fatal error, and ``INVOKE_*`` ones
    (``INVOKE_SERVER_PASSWORD``!) have no business in a server's or supervisor's environment.
    Case-insensitive, as Windows environment names are.
    """
    upper = tuple(p.upper() for p in prefixes)
    return {k: v for k, v in env.items() if not k.upper().startswith(upper)}


def wsl_env(env: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Let variables cross into WSL: Windows passes only those listed in ``WSLENV``."""
    result = dict(env)
    listed = [item for item in result.get("WSLENV", "").split(":") if item]
    listed += [f"{name}/u" for name in names if name in result]
    if listed:
        result["WSLENV"] = ":".join(listed)
    return result


def install_stop_signals(on_stop: Callable[[], object]) -> None:
    """The detached supervisor: SIGTERM means "stop the server gracefully"; ignore hang-ups.

    Windows has neither, and a detached process gets no console events: there ``invoke stop``
    reaches the supervisor through its control socket only.
    """
    if WINDOWS:
        return
    signal.signal(signal.SIGTERM, lambda *_: on_stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


# The console control event (wincon.h) sent when the console window is closed. (Logoff and
# shutdown events reach services only: interactive processes are simply ended then.)
CTRL_CLOSE_EVENT = 2
_console_handlers: list[Any] = []  # ctypes callbacks must stay alive while registered


def on_console_close(stop: Callable[[], object]) -> bool:
    """Windows ``start --foreground``: run ``stop`` when the console window is closed.

    Closing the window sends CTRL_CLOSE_EVENT to every process attached; Windows ends ours when
    the handler returns, or about 5 s after the event regardless. Without a handler the
    supervisor dies at once and the server, in its own windowless console, runs on orphaned.
    The handler runs on a thread Windows creates; ``stop`` must finish the graceful stop
    within that grace (the supervisor's ``stop_within``). Ctrl+C and Ctrl+Break are left to
    Python's own handler (we return FALSE for them). POSIX: nothing to do (hang-ups are
    handled by signals); returns False there and when the handler could not be set.
    """
    if not WINDOWS:
        return False
    import ctypes
    from ctypes import wintypes

    routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined]

    def handler(event: int) -> int:
        if event != CTRL_CLOSE_EVENT:
            return 0
        with suppress(Exception):
            stop()
        return 1

    callback = routine(handler)
    try:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        if not kernel32.SetConsoleCtrlHandler(callback, True):
            return False
    except Exception:  # a foreground start must not fail over its close hook
        return False
    _console_handlers.append(callback)
    return True


def wait_interruptible(proc: subprocess.Popen[bytes] | posixproc.Child) -> int:
    """Wait for a child in a way Ctrl+C can interrupt.

    On Windows an untimed wait cannot be broken by Ctrl+C (a CPython limitation), so poll
    with a short timeout there; POSIX signals interrupt a blocking wait, which also reacts to
    the child's exit at once.
    """
    if not WINDOWS:
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue


def enable_ansi(stream: IO[str]) -> None:
    """Make ANSI colour codes work on old Windows consoles (colorama); nothing elsewhere."""
    if WINDOWS:
        import colorama

        colorama.just_fix_windows_console()


# --- Process identity and lifetime (issue 9) -------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """Linux: when the process started, in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Why not psutil's ``create_time``: on Linux that is this tick count plus the boot time
    from ``/proc/stat`` ``btime``, which the kernel derives from the wall clock. An NTP step,
    a VM or WSL2 resume, or a manual date change moves it, and a live server would look like
    a reused PID. The tick count never changes for a process and differs for a later process
    with the same PID. None where there is no such file (Windows, macOS) or it cannot be read:
    there psutil's create time is the identity (see ``state.same_start``).
    """
    if WINDOWS or MACOS:
        return None
    return posixproc.proc_start_ticks(pid)


def proc_identity(pid: int) -> tuple[float, str, int] | None:
    """Linux: (create time as psutil computes it, executable, start ticks) from /proc, or None.

    The supervisor records these right after spawning the server; reading them here instead
    of through psutil keeps psutil's import (~20 ms of CPU, the largest single cost between
    the spawn and the state file) off ``invoke start``'s critical path. None elsewhere or when
    /proc cannot be read: the caller then asks psutil.
    """
    if WINDOWS or MACOS:
        return None
    return posixproc.proc_identity(pid)


def preload_parent_death() -> None:
    """Look up prctl ahead of time: the detached supervisor does it while it waits for its
    spec, so the import of ctypes is not on ``invoke start``'s critical path."""
    if WINDOWS or MACOS or not sys.platform.startswith("linux"):
        return
    posixproc.load_prctl()


def parent_death_kwargs() -> dict[str, Any]:
    """Popen options that make the server get SIGTERM (a graceful, saving stop) when the
    process that spawned it dies, even by SIGKILL or the OOM killer. Linux only (prctl
    PR_SET_PDEATHSIG); {} elsewhere, and the tool then reports such a server as running
    *unsupervised* (see ``state.supervisor_alive``).

    ``preexec_fn`` runs Python in the forked child, which is unsafe when other threads exist
    (a lock one of them held stays locked in the child). The supervisor spawns the server
    before it starts any thread, and so does ``start --foreground``; if another thread is
    running anyway, this returns {} rather than risk it. The libc function is looked up here,
    before the fork, so the child only makes the call. The signal follows the death of the
    spawning *thread*: both callers spawn from the main thread, which lives until the end.
    """
    if WINDOWS or MACOS or not sys.platform.startswith("linux"):
        return {}
    import threading

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


@contextmanager
def interrupt_once() -> Iterator[Callable[[], bool]]:
    """The first Ctrl+C raises KeyboardInterrupt as usual; later ones cannot abort the cleanup.

    Around ``invoke start``: the first Ctrl+C starts the cleanup of what was spawned. A
    second one must never cut that cleanup short (it used to, leaving server, supervisor and
    state behind); it is only remembered, and ``hurried()`` (yielded) turns True so the
    cleanup can skip its polite wait and kill at once. Windows: Ctrl+Break the same. Only the
    main thread can set signal handlers; elsewhere nothing changes.
    """
    import threading

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        if len(seen) == 1:
            raise KeyboardInterrupt

    names = ("SIGINT", "SIGBREAK") if WINDOWS else ("SIGINT",)
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {num: signal.signal(num, handler) for num in numbers}
    try:
        yield lambda: len(seen) > 1
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the block; one that arrives is delivered at its end.

    Around forking the supervisor: between ``fork()`` returning and the caller holding the
    handle, a KeyboardInterrupt would leave a server that nobody undoes. Unlike
    :func:`interrupts_deferred` the signal is not consumed: the handler in force (say
    :func:`interrupt_once`'s) sees it as usual. Windows has no signal masks: nothing.
    """
    if WINDOWS or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl+C that arrives inside the block until its end, then raise it.

    Around imports: a KeyboardInterrupt raised while CPython runs an import's internal
    callbacks (the weakref callback of a module lock) is printed as "Exception ignored in
    ..." with a traceback, and then lost. Off the main thread this does nothing.
    """
    got: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            raise KeyboardInterrupt


def ignore_interrupts() -> None:
    """Ignore Ctrl+C (and Ctrl+Break) from now on: for a program that is only exiting after
    it handled one. Main thread only; elsewhere nothing changes."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


@contextmanager
def foreground_stop_signals() -> Iterator[None]:
    """``start --foreground``: a closed terminal (SIGHUP) or SIGTERM means the same graceful
    stop as Ctrl+C, so each is turned into KeyboardInterrupt, which the supervisor's wait and
    every cleanup path already handle. Windows: the console-close event is the hook point of
    the Windows console handler (not installed here). Main thread only.
    """
    import threading

    if WINDOWS or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    numbers = [signal.SIGTERM, signal.SIGHUP]
    previous = {num: signal.signal(num, handler) for num in numbers}
    try:
        yield
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


# Windows job object: the analogue of the parent-death signal. Values from the Win32 API.
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9


def _job_limit_structure() -> Any:
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION as ctypes (built lazily: ctypes costs start-up)."""
    import ctypes

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
    import ctypes

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
    if not WINDOWS:
        return None
    import ctypes

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


# --- Foreground child (``invoke api``): how Ctrl+C reaches it, on each OS -------------------


# Characters and first words that need a real shell; anything else is split like sh would
# (shlex) and executed directly, as Ruby's ``system(string)`` does.
_SHELL_CHARS = frozenset("|&;<>()$`\\*?[]{}~!#\n")
_SHELL_BUILTINS = (
    "cd . source exec export set unset eval if for while until case alias ulimit umask trap "
    "wait command type test [ true false exit return shift read"
)
_SHELL_WORDS = frozenset(_SHELL_BUILTINS.split())


def _needs_shell(command: str) -> bool:
    import shlex

    if any(ch in _SHELL_CHARS for ch in command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: let the shell report it in its own words
        return True
    return not words or "=" in words[0] or words[0] in _SHELL_WORDS


def spawn_foreground(command: str, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Run a command line in the foreground, sharing our terminal/console.

    ``api.command`` is a line people write as they would type it. POSIX: a simple command
    (``uvicorn app:app --port 8000``) is split and executed directly, so the API itself is our
    child: its exit code is returned exactly and a Ctrl+C reaches it alone (dash does not exec
    the last command of ``sh -c``, and after a Ctrl+C it would report 130 instead of the API's
    own code). Anything with shell syntax (``cd api && ...``, ``FOO=1 cmd``, pipes) runs through
    ``/bin/sh -c``. Windows: always ``cmd.exe /c``, because ``npm`` and friends are .cmd files
    only cmd finds, and cmd passes on its child's exit code. Either way the child stays in our
    process group / console, so the terminal's Ctrl+C reaches it directly and it can read the
    terminal (a debugger prompt), exactly as when the user runs it by hand.
    """
    import shlex

    if WINDOWS or _needs_shell(command):
        return subprocess.Popen(command, shell=True, env=dict(env), cwd=str(cwd))
    return subprocess.Popen(shlex.split(command), env=dict(env), cwd=str(cwd))


def _signal_tree(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send a signal to the child and everything it started, as a terminal would to its group.

    Through psutil handles (PID-reuse checked) of processes that are our own descendants.
    """
    import psutil

    try:
        root = psutil.Process(proc.pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for victim in victims:
        with suppress(psutil.Error):
            victim.send_signal(signum)


def _terminal_delivers_to_our_group() -> bool:
    """POSIX: is our process group the terminal's foreground group (so the child got it too)?"""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: whoever signalled us did not signal the child
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def interrupt_signals() -> list[int]:
    """The signals that mean "stop" for a foreground tool: Ctrl+C everywhere, Ctrl+Break on
    Windows, SIGTERM and a terminal hang-up on POSIX."""
    names = ("SIGINT", "SIGBREAK") if WINDOWS else ("SIGINT", "SIGTERM", "SIGHUP")
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


@contextmanager
def relay_interrupts(
    proc: subprocess.Popen[bytes], on_signal: Callable[[int], None]
) -> Iterator[None]:
    """While a foreground child runs, Ctrl+C does not kill us: it is the child's to handle.

    We wait for the child and report ``on_signal(signum)``; the child decides how to stop and
    its exit code is what we return. Passing the signal on differs per OS:
    - POSIX: a terminal Ctrl+C (or hang-up) already went to the whole foreground process group,
      child included, so it is forwarded only when we are not that group (e.g. ``kill -INT``
      aimed at us alone, no terminal): a second SIGINT makes many servers force-quit. SIGTERM
      is aimed at us specifically, so it is always forwarded.
    - Windows: a console Ctrl+C / Ctrl+Break goes to every process attached to the console,
      and the child shares ours; there is nothing to forward (CTRL_C_EVENT cannot target one
      process that is not a group leader).
    Signal handlers can only be set from the main thread; elsewhere this only reports.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        on_signal(signum)
        if WINDOWS or proc.poll() is not None:
            return
        if signum == signal.SIGTERM or not _terminal_delivers_to_our_group():
            _signal_tree(proc, signum)

    previous = {num: signal.signal(num, handler) for num in interrupt_signals()}
    try:
        yield
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


def wait_relaying(proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
    """Wait for a foreground child under :func:`relay_interrupts`: (exit code, interrupted).

    The one wait that ``invoke api`` and ``invoke run`` share: the child handles Ctrl+C
    itself, we keep waiting for it and pass its code on (128+N after a signal death).
    """
    signals: list[int] = []
    with relay_interrupts(proc, signals.append):
        returncode = proc.wait()
    return exit_code(returncode), bool(signals)


def exit_code(returncode: int) -> int:
    """A child's status as a process exit code: POSIX death by signal N becomes 128+N.

    Popen reports a signal death as -N, which is not a valid exit code; shells say 128+N
    (130 after Ctrl+C). Windows codes are passed on unchanged.
    """
    if returncode < 0 and not WINDOWS:
        return 128 - returncode
    return returncode


# --- The tool's own Python for the application's commands (issue 11) -----------------------

_PYTHON_WORD = re.compile(r"^(\s*)(python(?:3(?:\.\d+)?)?(?:\.exe)?)(?=\s|$)", re.IGNORECASE)


def own_python(command: str, executable: str | None = None) -> str:
    """``python -m myapp.api`` -> the interpreter running this tool (the venv's).

    Why: the README's example command says ``python``, and on a machine where the venv is not
    activated (start_dev.sh, ``.venv/bin/invoke``) PATH's ``python`` is the system one, which
    lacks the venv's packages. Only a leading ``python``/``python3``/``python3.N`` word is
    replaced; quoting follows the shell that will read the line (cmd.exe on Windows).
    """
    import shlex

    match = _PYTHON_WORD.match(command)
    if not match:
        return command
    exe = executable or sys.executable
    if not exe:
        return command
    quoted = f'"{exe}"' if WINDOWS else shlex.quote(exe)
    return command[: match.start(2)] + quoted + command[match.end(2) :]


def scripts_first(env: Mapping[str, str], scripts: str | None = None) -> dict[str, str]:
    """A copy of ``env`` whose PATH starts with the venv's scripts folder.

    So ``invoke``, ``uvicorn`` or ``python`` inside a shell command resolve to the venv's,
    activated or not. Windows: the folder is ``Scripts``, the separator ``;`` and the
    variable's name is case-insensitive (``Path`` is common), so the existing key is reused.
    """
    import sysconfig

    folder = scripts or sysconfig.get_path("scripts")
    out = dict(env)
    if not folder:
        return out
    key = "PATH"
    if WINDOWS:
        key = next((k for k in out if k.upper() == "PATH"), "Path")
    sep = ";" if WINDOWS else ":"
    parts = [p for p in out.get(key, "").split(sep) if p]

    def norm(entry: str) -> str:
        return entry.rstrip("\\/").lower() if WINDOWS else entry.rstrip("/")

    parts = [folder] + [p for p in parts if norm(p) != norm(folder)]
    out[key] = sep.join(parts)
    return out


# --- Application processes under ``invoke up`` (several at once, output prefixed) -----------


def spawn_app(command: str, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start one of ``up``'s application processes with its output on a pipe we prefix.

    Unlike :func:`spawn_foreground` each gets its own process group (POSIX: a new session;
    Windows: CREATE_NEW_PROCESS_GROUP), so we decide how and when it is stopped: a terminal
    Ctrl+C reaches ``up`` alone, which then stops every process the same way, and one
    process's crash cannot take the terminal's group down with it. stdin is closed: several
    processes cannot share one terminal's input. The command line is run as in
    :func:`spawn_foreground` (direct exec when simple, else ``/bin/sh -c``; ``cmd /c`` on
    Windows).
    """
    import shlex

    common: dict[str, Any] = {
        "env": dict(env),
        "cwd": str(cwd),
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT,
    }
    if WINDOWS:
        return subprocess.Popen(
            command, shell=True, creationflags=CREATE_NEW_PROCESS_GROUP, **common
        )
    if _needs_shell(command):
        return subprocess.Popen(command, shell=True, start_new_session=True, **common)
    return subprocess.Popen(shlex.split(command), start_new_session=True, **common)


def ask_app_to_stop(proc: subprocess.Popen[bytes]) -> bool:
    """Politely stop a process started by :func:`spawn_app`; False when that was impossible.

    POSIX: SIGTERM to its process group (as honcho and docker compose do). Safe against PID
    reuse because the child is ours and not yet reaped (``poll()`` is None). Windows: a
    CTRL_BREAK_EVENT to its process group, which works only while we have a console to share
    with it: without one (Wine without a terminal, some IDEs) GenerateConsoleCtrlEvent fails,
    and CPython reports that as SystemError rather than OSError. The caller then kills it.
    """
    if proc.poll() is not None:
        return True
    try:
        if WINDOWS:
            proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", CTRL_BREAK_EVENT))
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except (OSError, SystemError):
        return proc.poll() is not None
    return True


def kill_app(proc: subprocess.Popen[bytes]) -> None:
    """Force-stop a :func:`spawn_app` process and its children (after the grace period)."""
    if proc.poll() is not None:
        return
    if not WINDOWS:
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    import psutil

    with suppress(psutil.Error):
        kill_tree(psutil.Process(proc.pid))


def stop_recorded_app(proc: Any) -> None:
    """Stop an identity-checked psutil.Process that another ``up`` started (``invoke down``).

    POSIX: SIGTERM to its group (it leads one: spawn_app made a new session) and its own
    descendants; Windows: we do not share its console, so there is no polite signal to send
    and the tree is killed.
    """
    import psutil

    if WINDOWS:
        kill_tree(proc)
        return
    try:
        victims = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        victims = [proc]
    for victim in victims:
        with suppress(psutil.Error):
            victim.send_signal(signal.SIGTERM)
