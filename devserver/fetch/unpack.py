"""Safe extraction of tar.gz, tar.xz and zip release archives into a fresh directory.

Every member is checked *before anything is written*, and one bad member refuses the whole
archive, naming it: an absolute path, a ``..`` component, a symlink or hard link pointing
outside, a path that runs through a symlink, a device file or fifo. Python's tarfile ``data``
filter and zipfile would quietly rewrite some of these names and carry on; a release archive
that tries any of this is not one to install, so they serve only as a second line (the filter
runs on every tar member and every destination path is re-checked against the real directory).

Members are written by our own loop rather than ``extractall`` so the executable's sha256 is
computed while it is written (no second read of a large binary), and links are created last,
so no file write can ever follow a link.
"""

from __future__ import annotations

import errno
import fnmatch
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import IO

from devserver.errors import FetchError, UnsafeArchive
from devserver.fetch.hashing import BackgroundSha256

_MAGIC = {
    b"\x1f\x8b": "tar.gz",
    b"\xfd7zXZ\x00": "tar.xz",
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
}
_CHUNK = 1024 * 1024
_ORDER = {"dir": 0, "file": 1, "hardlink": 2, "symlink": 3}


@dataclass(frozen=True)
class Member:
    """One archive entry, reduced to what extraction needs (same shape for tar and zip)."""

    name: str  # normalised: forward slashes, no "." parts
    kind: str  # "file", "dir", "symlink", "hardlink"
    mode: int = 0o644
    link: str = ""
    ref: object = None  # the TarInfo / ZipInfo to read the data from


def sniff(path: Path) -> str:
    """The archive type from its first bytes: names and Content-Types can lie."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise FetchError(
            "the download is an HTML/XML page, not an archive",
            hint="check the URL: a login page, proxy or error page was served",
        )
    raise FetchError(
        f"{path.name} is not a tar.gz, tar.xz or zip archive",
        hint="check the URL or file; corrupt or wrong download",
    )


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _refuse(name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"refusing the archive: member {name!r} {why}",
        hint="the archive is hostile or broken; nothing was installed",
    )


def check_name(name: str) -> list[str]:
    """Validate a member path; return its parts. Backslashes count as separators (Windows)."""
    unified = name.replace("\\", "/")
    if (
        unified.startswith("/")
        or PureWindowsPath(name).drive
        or (len(unified) > 1 and unified[1] == ":")
    ):
        raise _refuse(name, "has an absolute path")
    if "\x00" in name:
        raise _refuse(name, "has a NUL byte in its name")
    parts = _parts(name)
    if ".." in parts:
        raise _refuse(name, "has a '..' component")
    return parts


def link_escapes(parts: list[str], target: str, hard: bool) -> bool:
    """Does a link's target leave the extraction root? Hard links are relative to the root."""
    unified = target.replace("\\", "/")
    if not target or unified.startswith("/") or PureWindowsPath(target).drive:
        return True
    stack = [] if hard else list(parts[:-1])
    for part in unified.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
        else:
            stack.append(part)
    return False


def _tar_members(tar: tarfile.TarFile, dest: Path) -> list[Member]:
    out = []
    for info in tar.getmembers():
        parts = check_name(info.name)
        if info.isdev():
            raise _refuse(info.name, "is a device file or fifo")
        kind = (
            "dir"
            if info.isdir()
            else "file"
            if info.isreg()
            else "symlink"
            if info.issym()
            else "hardlink"
            if info.islnk()
            else ""
        )
        if not kind:
            raise _refuse(info.name, "is not a regular file, directory or link")
        hard = kind == "hardlink"
        if kind in ("symlink", "hardlink") and link_escapes(parts, info.linkname, hard):
            raise _refuse(info.name, f"is a link pointing outside ({info.linkname!r})")
        data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.11.4 / 3.10.12
        if data_filter is not None:  # Debian 12's own 3.11.2 lacks it: our checks above hold
            try:  # second line of defence; it would only rewrite what we already refused
                info = data_filter(info, str(dest))
            except tarfile.FilterError as exc:
                raise _refuse(info.name, f"was rejected by tarfile's data filter ({exc})") from None
        if parts:
            link = "/".join(_parts(info.linkname)) if hard else info.linkname
            out.append(Member("/".join(parts), kind, info.mode or 0o644, link, info))
    return out


def _zip_members(zf: zipfile.ZipFile) -> list[Member]:
    out = []
    for info in zf.infolist():
        parts = check_name(info.filename)
        mode = info.external_attr >> 16
        if mode and (
            stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        ):
            raise _refuse(info.filename, "is a device file or fifo")
        if info.is_dir():
            kind, link = "dir", ""
        elif mode and stat.S_ISLNK(mode):
            kind, link = "symlink", zf.read(info).decode("utf-8", "replace")
            if link_escapes(parts, link, hard=False):
                raise _refuse(info.filename, f"is a link pointing outside ({link!r})")
        else:
            kind, link = "file", ""
        if parts:
            out.append(Member("/".join(parts), kind, stat.S_IMODE(mode) or 0o644, link, info))
    return out


def _check_links(members: list[Member]) -> None:
    """No member may live under a symlink: lexical checks cannot see where a link leads."""
    links = {m.name for m in members if m.kind == "symlink"}
    files = {m.name for m in members if m.kind == "file"}
    for m in members:
        parts = m.name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise _refuse(m.name, "lies under a symlink")
        if m.kind == "hardlink" and m.link not in files:
            raise _refuse(m.name, f"is a hard link to {m.link!r}, not a file in the archive")


@contextmanager
def _open_archive(path: Path, kind: str, dest: Path) -> Iterator[tuple[list[Member], object]]:
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                yield _zip_members(zf), zf
        else:
            with tarfile.open(path, "r:gz" if kind == "tar.gz" else "r:xz") as tar:
                members = _tar_members(tar, dest)
                # Read the stream to its end so gzip's CRC / xz's check is verified: tarfile
                # stops at the end-of-archive marker and would accept a corrupted body.
                assert tar.fileobj is not None
                while tar.fileobj.read(_CHUNK):
                    pass
                yield members, tar
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise FetchError(
            f"corrupt {kind} archive {path.name} ({exc})",
            hint="download it again; if it persists the release file is broken",
        ) from None
    except OSError as exc:  # zlib/lzma errors and truncated streams surface as OSError/EOF
        if exc.errno is None:
            raise FetchError(
                f"corrupt {kind} archive {path.name} ({exc})", hint="download it again"
            ) from None
        raise


def _inside(root: Path, target: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(target)]) == real_root


def _copy(src: IO[bytes], target: Path, mode: int, hasher: BackgroundSha256 | None) -> None:
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_TRUNC
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_BINARY", 0)
    )
    fd = os.open(target, flags, 0o600)
    try:
        while chunk := src.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            if hasher:
                hasher.update(chunk)
    finally:
        os.close(fd)
    os.chmod(target, stat.S_IMODE(mode) & 0o755 | 0o600)


def extract(archive: Path, dest: Path, want: str) -> dict[str, str]:
    """Scan, then extract ``archive`` into the empty directory ``dest``.

    Returns {member name: sha256} for the regular files whose name matches the fnmatch
    pattern ``want`` (the executable candidates), hashed as they were written.
    """
    kind = sniff(archive)
    hashes: dict[str, str] = {}
    with _open_archive(archive, kind, dest) as (members, handle):
        _check_links(members)
        try:
            # Directories first, links last: no file write can follow a link we created.
            for m in sorted(members, key=lambda m: _ORDER[m.kind]):
                target = dest.joinpath(*m.name.split("/"))
                if not _inside(dest, target.parent if m.kind == "symlink" else target):
                    raise _refuse(m.name, "resolves outside the extraction directory")
                if m.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if m.kind == "symlink":
                    os.symlink(m.link, target)
                elif m.kind == "hardlink":
                    shutil.copy2(dest.joinpath(*m.link.split("/")), target)
                else:
                    hasher = BackgroundSha256() if fnmatch.fnmatch(m.name, want) else None
                    try:
                        with _read(handle, m) as src:
                            _copy(src, target, m.mode, hasher)
                        if hasher:
                            hashes[m.name] = hasher.hexdigest()
                    finally:
                        if hasher:
                            hasher.close()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise FetchError("disk full while unpacking", hint="free some space") from None
            if exc.errno is None:
                raise
            raise FetchError(
                f"cannot unpack {archive.name}: {exc.strerror}",
                hint="check free space and permissions next to bin/",
            ) from None
    return hashes


@contextmanager
def _read(handle: object, m: Member) -> Iterator[IO[bytes]]:
    if isinstance(handle, zipfile.ZipFile):
        assert isinstance(m.ref, zipfile.ZipInfo)
        with handle.open(m.ref) as src:
            yield src
    else:
        assert isinstance(handle, tarfile.TarFile) and isinstance(m.ref, tarfile.TarInfo)
        data = handle.extractfile(m.ref)
        if data is None:
            raise _refuse(m.name, "has no data")
        with data:
            yield data
