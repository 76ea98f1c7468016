"""Ending processes and naming how they ended: terminate, kill a tree, exit statuses.

Windows has no polite signal for a windowless process and reports crashes as NTSTATUS codes;
POSIX has SIGTERM and reports signal deaths as negative return codes. Both are turned into
one vocabulary here ("SIGTERM" or "kill"; "code 1", "signal SIGKILL", "code 0xC000013A ...").
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

from devserver.system import host


def terminate(proc: Any) -> str:
    """Ask a process (a psutil.Process already identity-checked) to exit; say how: "SIGTERM"
    or "kill".

    POSIX: SIGTERM, which Redis and Dragonfly handle as a graceful shutdown. Windows has no
    such signal for a windowless process (psutil's terminate is TerminateProcess, i.e. a
    kill), so there a polite request is the RESP SHUTDOWN the caller already sent; this is
    then the same as :func:`kill_tree`, and reported as a kill.
    """
    if host.WINDOWS:
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
    import psutil  # ~20 ms of imports: the supervisor imports this module before the spawn

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
            if not host.WINDOWS:
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
    import psutil  # ~20 ms of imports: the supervisor imports this module before the spawn

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
    if host.WINDOWS:
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


def exit_code(returncode: int) -> int:
    """A child's status as a process exit code: POSIX death by signal N becomes 128+N.

    Popen reports a signal death as -N, which is not a valid exit code; shells say 128+N
    (130 after Ctrl+C). Windows codes are passed on unchanged.
    """
    if returncode < 0 and not host.WINDOWS:
        return 128 - returncode
    return returncode
