"""Files the way each OS allows: owner-only access, an exclusive lock, and renames or
deletes that Windows refuses while another process has the file open.

See atomic.py, which builds its atomic writes on these.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from devserver.system import host

if TYPE_CHECKING:
    from pathlib import Path


def retry_sharing(action: Callable[[], object], timeout: float = 1.0) -> None:
    """Run a rename/unlink, retrying briefly on Windows while another process has the file open.

    Windows refuses to replace or delete a file that a reader (``invoke status``, an antivirus
    scanner, an indexer) holds open without FILE_SHARE_DELETE, which is how Python and most
    programs open files: PermissionError (WinError 5/32). Such holds last milliseconds, so
    retry for up to ``timeout`` seconds, then let the error out. POSIX never refuses: once.
    """
    if not host.WINDOWS:
        action()
        return
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
# SYSTEM only: what POSIX mode 0600 means, in Windows terms. The user's own SID is added to
# it (owner_only_sddl): a member of Administrators running elevated creates files owned by
# the Administrators *group*, and their normal (filtered) terminal would then be denied.
OWNER_ONLY_SDDL = "D:P(A;;FA;;;OW)(A;;FA;;;SY)"
TOKEN_QUERY = 0x0008
TOKEN_USER_CLASS = 1  # TOKEN_INFORMATION_CLASS.TokenUser
SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x00000004
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000


def owner_only_sddl(user_sid: str) -> str:
    """OWNER_ONLY_SDDL plus full access for ``user_sid`` (this process's user), when known."""
    return OWNER_ONLY_SDDL + (f"(A;;FA;;;{user_sid})" if user_sid else "")


def restrict_to_owner(path: Path | str) -> bool:
    """Windows: make a file readable by its owner, its user (and SYSTEM) only; True when done.

    POSIX modes mean nothing on Windows: a file inherits its folder's ACL, and a project
    folder outside the user profile (C:\\dev\\...) usually lets every local user read it. The
    state file holds the supervisor's control token, so it gets a protected DACL
    (SetNamedSecurityInfoW with :func:`owner_only_sddl`, which a later rename keeps), naming
    the user's SID as well as OWNER RIGHTS, so a file written by an elevated start stays
    readable by the same user's normal terminal. Best effort:
    False when Windows refuses (e.g. a FAT32 or network drive without ACLs). POSIX: False
    (the caller's chmod does the job there).
    """
    if not host.WINDOWS:
        return False
    try:
        return _set_owner_only_dacl(str(path))
    except Exception:  # no advapi32, no such entry point, a ctypes argument error: best effort
        return False


PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path | str) -> None:
    """The server's data folder is the user's alone: the append-only file and snapshots
    hold the data (and a password-protected server's data) that no other local user should
    read. POSIX: mode 0700 (a chmod only when it is not that already, so a start costs one
    stat); Windows: a protected owner-only DACL that its files inherit. Best effort: a
    folder this user does not own, or a file system without modes or ACLs, is left as is."""
    if host.WINDOWS:
        try:
            _set_owner_only_dacl(str(path), tree=True)
        except Exception:
            pass
        return
    try:
        if os.stat(path).st_mode & 0o777 != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    except OSError:
        pass


def _set_owner_only_dacl(path: str, tree: bool = False) -> bool:
    """``tree``: a folder's DACL, inherited by what is created in it (OICI)."""
    import ctypes  # costs milliseconds; atomic writes (the state file) are on the start path
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
    sddl = owner_only_sddl(current_user_sid())
    if tree:
        sddl = sddl.replace("(A;;", "(A;OICI;")
    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
        sddl, 1, ctypes.byref(descriptor), None
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


@functools.cache
def current_user_sid() -> str:
    """This process's user as an SID string (``S-1-5-21-...``); "" when Windows won't say.

    The token's user, which an elevated token shares with the person's normal one (only its
    groups and owner default differ). Cached: asked at every state-file write.
    """
    try:
        return _token_user_sid()
    except Exception:  # not Windows, no such entry point, a ctypes argument error
        return ""


def _token_user_sid() -> str:
    import ctypes  # see _set_owner_only_dacl
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    advapi32.OpenProcessToken.argtypes = [
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.HANDLE),
    ]
    token = wintypes.HANDLE()
    if not advapi32.OpenProcessToken(
        kernel32.GetCurrentProcess(), TOKEN_QUERY, ctypes.byref(token)
    ):
        return ""
    try:
        buffer = ctypes.create_string_buffer(256)  # TOKEN_USER: a SID pointer, then the SID
        size = wintypes.DWORD()
        if not advapi32.GetTokenInformation(
            token, TOKEN_USER_CLASS, buffer, ctypes.sizeof(buffer), ctypes.byref(size)
        ):
            return ""
        sid = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_void_p))[0]
        text = ctypes.c_wchar_p()
        if not advapi32.ConvertSidToStringSidW(ctypes.c_void_p(sid), ctypes.byref(text)):
            return ""
        try:
            return str(text.value or "")
        finally:
            kernel32.LocalFree(text)
    finally:
        kernel32.CloseHandle(token)


def try_lock(handle: IO[Any]) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False when someone holds it.

    The OS drops the lock when the holder dies, so a crashed ``start`` never leaves the
    project locked (a lock *file's existence* would).
    """
    if host.WINDOWS:
        import msvcrt  # exists on Windows only

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl  # exists on POSIX only

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
