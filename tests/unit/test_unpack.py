"""unpack.extract on real archives: good ones extract exactly, hostile ones write nothing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devserver.errors import FetchError, UnsafeArchive
from devserver.fetch.unpack import check_name, extract, link_escapes, sniff
from tests.archives import KINDS, build, tree
from tests.platforms import WINDOWS, needs_posix

NO_SYMLINKS = needs_posix("symlinks for an unprivileged user (creating one needs a privilege)")

GOOD: list[tuple[Any, ...]] = [
    ("dir", "pkg"),
    ("file", "pkg/server", b"#!/bin/sh\necho hi\n", 0o755),
    ("file", "pkg/LICENSE", b"MIT\n"),
    ("file", "pkg/lib/data.bin", bytes(range(256)) * 100),
]


@pytest.mark.parametrize("kind", KINDS)
def test_good_archive_extracts_every_member_and_hashes_wanted(tmp_path: Path, kind: str) -> None:
    archive = build(tmp_path / f"a.{kind}", kind, GOOD)
    dest = tmp_path / "out"
    dest.mkdir()
    hashes = extract(archive, dest, "*/server")
    assert hashes == {"pkg/server": hashlib.sha256(GOOD[1][2]).hexdigest()}
    assert (dest / "pkg/server").read_bytes() == GOOD[1][2]
    assert (dest / "pkg/lib/data.bin").read_bytes() == GOOD[3][2]
    if not WINDOWS:  # Windows has no mode bits: the rest holds there too
        assert stat.S_IMODE((dest / "pkg/server").stat().st_mode) == 0o755
        assert stat.S_IMODE((dest / "pkg/LICENSE").stat().st_mode) == 0o644


@NO_SYMLINKS
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_internal_symlink_is_kept(tmp_path: Path, kind: str) -> None:
    members = [("file", "d/lib.so.1", b"elf"), ("symlink", "d/lib.so", "lib.so.1")]
    archive = build(tmp_path / f"a.{kind}", kind, members)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, "nothing")
    assert os.readlink(dest / "d/lib.so") == "lib.so.1"
    assert (dest / "d/lib.so").read_bytes() == b"elf"


def test_internal_hardlink_is_copied(tmp_path: Path) -> None:
    members = [("file", "a", b"data"), ("hardlink", "b", "a")]
    archive = build(tmp_path / "a.tar.gz", "tar.gz", members)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, "b")
    assert (dest / "b").read_bytes() == b"data"


@needs_posix("mode bits (setuid, world-writable)")
def test_setuid_and_world_writable_bits_are_dropped(tmp_path: Path) -> None:
    archive = build(tmp_path / "a.tar.gz", "tar.gz", [("file", "x", b"1", 0o4777)])
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, "x")
    assert stat.S_IMODE((dest / "x").stat().st_mode) == 0o755


HOSTILE_TAR: dict[str, list[tuple[Any, ...]]] = {
    "absolute": [("file", "ok", b"1"), ("file", "/tmp/evil", b"x")],
    "dotdot": [("file", "ok", b"1"), ("file", "pkg/../../evil", b"x")],
    "dotdot-backslash": [("file", "ok", b"1"), ("file", "..\\evil", b"x")],
    "drive": [("file", "ok", b"1"), ("file", "C:\\evil", b"x")],
    "symlink-absolute": [("file", "ok", b"1"), ("symlink", "link", "/etc/passwd")],
    "symlink-up": [("file", "ok", b"1"), ("symlink", "sub/link", "../../outside")],
    "hardlink-absolute": [("file", "ok", b"1"), ("hardlink", "h", "/etc/passwd")],
    "hardlink-up": [("file", "ok", b"1"), ("hardlink", "h", "../outside")],
    "hardlink-missing": [("file", "ok", b"1"), ("hardlink", "h", "nothere")],
    "through-symlink": [("symlink", "d", "."), ("file", "ok", b"1"), ("file", "d/x", b"x")],
    "chained-symlink": [("symlink", "d", "."), ("symlink", "d/l", "..")],
    "char-device": [("file", "ok", b"1"), ("chr", "dev/null2")],
    "block-device": [("file", "ok", b"1"), ("blk", "dev/sda9")],
    "fifo": [("file", "ok", b"1"), ("fifo", "pipe")],
}
HOSTILE_ZIP: dict[str, list[tuple[Any, ...]]] = {
    "absolute": [("file", "ok", b"1"), ("file", "/tmp/evil", b"x")],
    "dotdot": [("file", "ok", b"1"), ("file", "a/../../evil", b"x")],
    "dotdot-backslash": [("file", "ok", b"1"), ("file", "..\\..\\evil.exe", b"x")],
    "drive": [("file", "ok", b"1"), ("file", "C:/Windows/evil.dll", b"x")],
    "symlink-absolute": [("file", "ok", b"1"), ("symlink", "link", "/etc/passwd")],
    "symlink-up": [("file", "ok", b"1"), ("symlink", "link", "../outside")],
    "char-device": [("file", "ok", b"1"), ("chr", "dev")],
    "fifo": [("file", "ok", b"1"), ("fifo", "pipe")],
}


def _offender(members: list[tuple[Any, ...]]) -> str:
    return str(members[-1][1])


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz"])
@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_is_refused_whole_and_named(tmp_path: Path, kind: str, case: str) -> None:
    members = HOSTILE_TAR[case]
    archive = build(tmp_path / f"a.{kind}", kind, members)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchive) as info:
        extract(archive, dest, "*")
    assert repr(_offender(members)) in info.value.message
    assert list(dest.iterdir()) == []  # nothing written, not even the harmless members
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIP))
def test_hostile_zip_is_refused_whole_and_named(tmp_path: Path, case: str) -> None:
    members = HOSTILE_ZIP[case]
    archive = build(tmp_path / "a.zip", "zip", members)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchive) as info:
        extract(archive, dest, "*")
    named = _offender(members)
    if WINDOWS:  # zipfile reads a backslash in a member name as the separator there
        named = named.replace("\\", "/")
    assert repr(named) in info.value.message
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name", ["a/b", "./a", "a\\b", "a/./b", "..a", "a..b"])
def test_harmless_names_pass(name: str) -> None:
    assert check_name(name)


def test_link_escape_rules() -> None:
    assert not link_escapes(["a", "b"], "../c", hard=False)  # a/c: inside
    assert link_escapes(["a", "b"], "../../c", hard=False)
    assert link_escapes(["a"], "/abs", hard=False)
    assert not link_escapes(["x", "y"], "a/b", hard=True)  # hard links are root-relative
    assert link_escapes(["x"], "../a", hard=True)


def test_html_and_garbage_are_named_not_extracted(tmp_path: Path) -> None:
    html = tmp_path / "page"
    html.write_bytes(b"<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(FetchError, match="HTML"):
        sniff(html)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(FetchError, match=r"not a tar\.gz, tar\.xz or zip"):
        sniff(junk)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_archive_is_a_fetch_error(tmp_path: Path, kind: str) -> None:
    good = build(tmp_path / f"good.{kind}", kind, [("file", "x", os.urandom(200_000))])
    data = bytearray(good.read_bytes())
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    flipped = tmp_path / f"flip.{kind}"
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    flipped.write_bytes(bytes(data))
    for broken in (cut, flipped):
        dest = tmp_path / f"out-{broken.stem}"
        dest.mkdir()
        with pytest.raises(FetchError) as info:
            extract(broken, dest, "x")
        assert not isinstance(info.value, UnsafeArchive)
        assert "corrupt" in info.value.message or "CRC" in info.value.message


@NO_SYMLINKS
def test_tree_helper_sees_links(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    (tmp_path / "l").symlink_to("f")
    assert tree(tmp_path)["l"] == "-> f"


@pytest.fixture()
def old_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 12's own Python 3.11.2: tarfile has no data_filter/FilterError (3.11.4+)."""
    import tarfile

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    monkeypatch.delattr(tarfile, "FilterError", raising=False)


def test_extracts_on_a_python_without_tarfile_filters(tmp_path: Path, old_tarfile: None) -> None:
    archive = build(tmp_path / "a.tar.gz", "tar.gz", GOOD)
    dest = tmp_path / "out"
    dest.mkdir()
    assert set(extract(archive, dest, "*/server")) == {"pkg/server"}
    assert (dest / "pkg/server").read_bytes() == GOOD[1][2]


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_is_still_refused_without_tarfile_filters(
    tmp_path: Path, old_tarfile: None, case: str
) -> None:
    archive = build(tmp_path / "a.tar.gz", "tar.gz", HOSTILE_TAR[case])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        extract(archive, dest, "*")
    assert list(dest.iterdir()) == []
