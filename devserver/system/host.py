"""Which OS and CPU this is: the one place WINDOWS and MACOS are defined.

Every module of this layer reads them here as ``host.WINDOWS`` at call time, so a test that
patches ``host.WINDOWS`` runs the Windows branch of all of them on Linux and asserts the calls
made. Modules outside ``devserver.system`` never read them: they ask a function here or in a
sibling module what to do.
"""

from __future__ import annotations

import sys
from typing import IO

WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"


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
    import platform  # costs milliseconds; this module is on the start path

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
        import ctypes  # costs milliseconds; this module is on the start path
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


def enable_ansi(stream: IO[str]) -> None:
    """Make ANSI colour codes work on old Windows consoles (colorama); nothing elsewhere."""
    if WINDOWS:
        import colorama  # costs milliseconds; this module is on the start path

        colorama.just_fix_windows_console()


def has_fork() -> bool:
    """Whether the OS can fork: the detached supervisor then starts in the lean POSIX
    bootstrap; Windows has no fork, so it starts in the full supervisor module."""
    return not WINDOWS


def refused_connect_is_slow() -> bool:
    """Windows: a connect to a port nobody listens on is refused only after about 2 s (SYN
    retries), so a free port is told by the listener table rather than by a probe."""
    return WINDOWS
