"""Build real tar.gz / tar.xz / zip files for the fetch tests, hostile ones included.

Members are tuples: ("file", name, data[, mode]), ("dir", name), ("symlink", name, target),
("hardlink", name, target), ("chr", name), ("blk", name), ("fifo", name). tarfile and
zipfile write whatever names we give them, so escapes are written exactly as an attacker
would (``../x``, ``/etc/x``, ``C:\\x``, links out of the tree).
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Literal

Member = tuple[Any, ...]
KINDS = ("tar.gz", "tar.xz", "zip")


def build(path: Path, kind: str, members: list[Member]) -> Path:
    """Write ``members`` into ``path`` as ``kind`` (one of KINDS)."""
    if kind == "zip":
        _zip(path, members)
    else:
        _tar(path, "w:gz" if kind == "tar.gz" else "w:xz", members)
    return path


def _tar(path: Path, mode: Literal["w:gz", "w:xz"], members: list[Member]) -> None:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            what, name = member[0], member[1]
            info = tarfile.TarInfo(name)
            data = b""
            if what == "file":
                data = member[2]
                info.size = len(data)
                info.mode = member[3] if len(member) > 3 else 0o644
            elif what == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif what in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if what == "symlink" else tarfile.LNKTYPE
                info.linkname = member[2]
            else:
                info.type = {
                    "chr": tarfile.CHRTYPE,
                    "blk": tarfile.BLKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[what]
            tar.addfile(info, io.BytesIO(data) if what == "file" else None)


def _zip(path: Path, members: list[Member]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in members:
            what, name = member[0], member[1]
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so external_attr carries the mode
            if what == "file":
                mode = member[3] if len(member) > 3 else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, member[2])
            elif what == "dir":
                info = zipfile.ZipInfo(name.rstrip("/") + "/")
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            elif what == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, member[2])
            elif what in ("chr", "blk", "fifo"):
                flag = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[what]
                info.external_attr = (flag | 0o644) << 16
                zf.writestr(info, b"")
            else:
                raise ValueError(f"zip cannot hold {what}")


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under root -> file bytes, or "<dir>", or "-> target" for links."""
    out: dict[str, bytes | str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {path.readlink()}"
        elif path.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = path.read_bytes() + f" mode={stat.S_IMODE(path.stat().st_mode):o}".encode()
    return out
