"""invoke fetch against a local fake of the GitHub API: real archives, real faults, real server.

No test touches the internet: ``release.github_api`` and every asset URL point at
tests/fakegithub.py on 127.0.0.1. After every failure bin/ must be byte-for-byte what it was,
and no work directory may be left next to it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.catalog import GARNET, REDIS, Asset
from devserver.config import Settings
from devserver.errors import BinaryNotFound, ChecksumError, FetchError, NetworkError, UnsafeArchive
from devserver.fetch import download
from devserver.fetch.options import FetchOptions
from devserver.fetch.release import fetch
from devserver.server import resp
from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from devserver.system import host
from tests.archives import build, tree
from tests.conftest import ROOT, free_port
from tests.fakegithub import FakeGitHub, Route

FAST = FetchOptions(retries=2, backoff=0.01, timeout=5)
REPO = REDIS.repo
KEY = (host.os_name(), host.cpu_arch())


def opts(**changes: Any) -> FetchOptions:
    return FetchOptions(**{**FAST.__dict__, **changes})


class Recorder:
    """A Reporter that keeps what fetch said, and can interrupt a download like Ctrl+C."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.lines: list[str] = []
        self.interrupt_at = interrupt_at
        self.updates = 0

    def info(self, text: str) -> None:
        self.lines.append("info: " + text)

    def warn(self, text: str) -> None:
        self.lines.append("warn: " + text)

    def progress(self, label: str, total: int | None) -> Recorder:
        self.lines.append(f"progress: {label} {total}")
        return self

    def update(self, done: int) -> None:
        self.updates += 1
        if self.interrupt_at is not None and done >= self.interrupt_at:
            raise KeyboardInterrupt

    def close(self) -> None:
        self.lines.append("progress: closed")


@pytest.fixture()
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        yield server


@pytest.fixture()
def redis_asset(monkeypatch: pytest.MonkeyPatch) -> Asset:
    """A test catalog entry: Redis as a tar.gz release for this platform."""
    asset = Asset("redis-*-test.tar.gz", "tar.gz", "*/redis-server")
    monkeypatch.setitem(REDIS.assets, KEY, asset)  # type: ignore[index]
    return asset


def redis_members(binary: Path, extra: bytes = b"") -> list[tuple[Any, ...]]:
    return [
        ("dir", "redis-7"),
        ("file", "redis-7/redis-server", binary.read_bytes(), 0o755),
        ("file", "redis-7/README", b"test build" + extra),
    ]


@pytest.fixture()
def settings(make_settings: Callable[..., Settings], gh: FakeGitHub) -> Settings:
    return make_settings(flavor="redis", release={"github_api": gh.url})


def publish(
    gh: FakeGitHub,
    tmp_path: Path,
    tag: str,
    members: list[tuple[Any, ...]],
    kind: str = "tar.gz",
    **kw: Any,
) -> str:
    name = f"redis-{tag}-test.{kind}"
    archive = build(tmp_path / name, kind, members)
    gh.release(REPO, tag, {name: archive.read_bytes()}, **kw)
    return name


def snapshot(settings: Settings) -> dict[str, Any]:
    """bin/ contents plus any stray work directory next to it."""
    strays = sorted(p.name for p in settings.bin_dir.parent.iterdir() if p.name.startswith("."))
    return {"bin": tree(settings.bin_dir), "strays": strays}


@pytest.fixture()
def installed(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> dict[str, Any]:
    """v1 installed from the fake release, then a snapshot of bin/ to compare against."""
    publish(gh, tmp_path, "v1.0.0", redis_members(redis_server_path))
    result = fetch(settings, FAST)
    assert result.action == "installed"
    return snapshot(settings)


def test_fetch_installs_then_start_answers_ping(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    name = publish(gh, tmp_path, "v7.0.0", redis_members(redis_server_path))
    said = Recorder()
    result = fetch(settings, FAST, said)
    exe = settings.bin_dir / "redis-server"
    assert (result.action, result.flavor, result.version, result.path) == (
        "installed",
        "redis",
        "v7.0.0",
        exe,
    )
    assert exe.read_bytes() == redis_server_path.read_bytes()
    assert os.access(exe, os.X_OK)
    manifest = json.loads((settings.bin_dir / "redis.json").read_text())
    archive_sha = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert manifest["archive_sha256"] == archive_sha
    assert manifest["exe_sha256"] == hashlib.sha256(exe.read_bytes()).hexdigest()
    assert (manifest["flavor"], manifest["version"], manifest["asset"], manifest["exe"]) == (
        "redis",
        "v7.0.0",
        name,
        "redis-server",
    )
    assert manifest["url"] == f"{gh.url}/download/{name}" and manifest["verified"] is True
    assert manifest["via_wsl"] is False and manifest["installed_at"].endswith("Z")
    assert manifest["exe_version"][:1].isdigit()  # `redis-server --version` was run
    assert any(line.startswith("progress: downloading") for line in said.lines)
    assert snapshot(settings)["strays"] == []

    started = start_server(settings)
    try:
        assert started.state.binary == str(exe)
        assert resp.ping("127.0.0.1", settings.port, timeout=2) == "ready"
    finally:
        stop_server(settings, save=False)


def test_installed_means_no_network_call(
    settings: Settings, gh: FakeGitHub, installed: dict[str, Any]
) -> None:
    before = gh.paths()
    result = fetch(settings, FAST)
    assert result.action == "current" and result.version == "v1.0.0"
    assert gh.paths() == before
    assert snapshot(settings) == installed


def test_upgrade_installs_a_newer_latest_and_keeps_a_current_one(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    assert fetch(settings, opts(upgrade=True)).action == "current"
    publish(gh, tmp_path, "v1.1.0", redis_members(redis_server_path, b" 1.1"))
    assert fetch(settings, FAST).action == "current"  # not asked to upgrade: offline-safe
    result = fetch(settings, opts(upgrade=True))
    assert (result.action, result.version) == ("installed", "v1.1.0")


def test_pinned_version_installs_that_tag_and_force_reinstalls(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    publish(gh, tmp_path, "v0.9.0", redis_members(redis_server_path), latest=False)
    pinned = settings.with_overrides(version="v0.9.0")
    assert fetch(pinned, FAST).version == "v0.9.0"
    assert "/repos/redis-windows/redis-windows/releases/tags/v0.9.0" in gh.paths()
    assert fetch(pinned, FAST).action == "current"
    assert fetch(pinned, opts(force=True)).action == "installed"


@pytest.mark.parametrize("kind", ["tar.xz", "zip"])
def test_direct_url_with_pinned_sha256(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_server_path: Path, kind: str
) -> None:
    archive = build(tmp_path / f"redis-7.2.4.{kind}", kind, redis_members(redis_server_path))
    url = gh.asset(archive.name, archive.read_bytes())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    result = fetch(settings, opts(url=url, sha256=digest.upper()))
    assert (result.action, result.version) == ("installed", "7.2.4")
    assert result.path.read_bytes() == redis_server_path.read_bytes()
    assert [p for p in gh.paths() if "/repos/" in p] == []  # no API lookup


def test_local_archive_installs_offline(
    settings: Settings, tmp_path: Path, redis_server_path: Path
) -> None:
    archive = build(tmp_path / "redis.tar.gz", "tar.gz", redis_members(redis_server_path))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    result = fetch(settings.with_overrides(version="v7"), opts(archive=archive, sha256=digest))
    assert (result.action, result.version, result.manifest["source"]) == (
        "installed",
        "v7",
        "archive",
    )
    assert result.manifest["url"] == archive.resolve().as_uri()


def test_digest_from_release_notes_when_the_api_has_none(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    name = "redis-v7.0.0-test.tar.gz"
    data = build(tmp_path / name, "tar.gz", redis_members(redis_server_path)).read_bytes()
    body = f"## Hashes\n| file | sha256 |\n| {name} | {hashlib.sha256(data).hexdigest()} |\n"
    gh.release(REPO, "v7.0.0", {name: data}, digests=False, body=body)
    assert fetch(settings, FAST).manifest["verified"] is True


def test_no_digest_anywhere_needs_allow_unverified(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    publish(gh, tmp_path, "v7.0.0", redis_members(redis_server_path), digests=False)
    with pytest.raises(ChecksumError, match="no sha256 is published"):
        fetch(settings, FAST)
    assert not any("/download/" in p for p in gh.paths())  # refused before downloading
    assert tree(settings.bin_dir) == {}
    said = Recorder()
    result = fetch(settings, opts(allow_unverified=True), said)
    assert result.manifest["verified"] is False
    assert any(
        "UNVERIFIED" in line and result.manifest["archive_sha256"] in line for line in said.lines
    )


# ---- faults: one clear error, bin/ exactly as before ---------------------------------------


def _fails(
    settings: Settings,
    options: FetchOptions,
    before: dict[str, Any],
    error: type[BaseException] = FetchError,
    match: str | None = None,
    reporter: Any = None,
) -> pytest.ExceptionInfo[Any]:
    with pytest.raises(error, match=match) as info:
        fetch(settings, options, reporter)
    assert snapshot(settings) == before
    return info


def test_unknown_tag(settings: Settings, installed: dict[str, Any]) -> None:
    info = _fails(
        settings.with_overrides(version="v9.9.9"),
        FAST,
        installed,
        match="no release tagged 'v9.9.9'",
    )
    assert "--version" in info.value.hint


def test_no_asset_for_this_platform(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, installed: dict[str, Any]
) -> None:
    gh.release(REPO, "v2.0.0", {"redis-v2.0.0-other.zip": b"PK"})
    _fails(settings, opts(upgrade=True), installed, match="has no asset redis-\\*-test.tar.gz")


def test_wrong_digest(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    name = publish(gh, tmp_path, "v2.0.0", redis_members(redis_server_path))
    gh.routes[f"/download/{name}"].data += b"tampered"
    info = _fails(settings, opts(upgrade=True), installed, ChecksumError, "sha256 mismatch")
    assert "nothing was installed" in info.value.hint


def test_connection_dropped_half_way_resumes_with_range(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    # Big enough that whole 1 MiB chunks arrive before the drop (a partial chunk is re-read).
    members = [*redis_members(redis_server_path), ("file", "redis-7/pad", os.urandom(3 << 20))]
    name = publish(gh, tmp_path, "v7.0.0", members, drop_after=2_500_000, drops=1)
    result = fetch(settings, FAST)
    assert result.manifest["verified"] is True
    ranges = [r.headers.get("Range") for r in gh.requests if r.path.endswith(name)]
    assert ranges[0] is None and len(ranges) == 2
    resumed = ranges[1] or ""
    assert resumed.startswith("bytes=") and 0 < int(resumed[6:-1]) <= 2_500_000


def test_server_ignoring_range_makes_fetch_restart(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    name = publish(
        gh,
        tmp_path,
        "v7.0.0",
        redis_members(redis_server_path),
        drop_after=300_000,
        drops=1,
        ranges=False,
    )
    result = fetch(settings, FAST)
    assert result.manifest["verified"] is True  # the hash restarted with the body
    assert len([r for r in gh.requests if r.path.endswith(name)]) == 2


def test_download_always_cut_short(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    publish(gh, tmp_path, "v2.0.0", redis_members(redis_server_path), drop_after=100_000, drops=-1)
    _fails(settings, opts(upgrade=True), installed, FetchError, "cut short|could not be reached")


def test_github_token_goes_to_the_api_only(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    redis_asset: Asset,
    redis_server_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test123")
    publish(gh, tmp_path, "v7.0.0", redis_members(redis_server_path))
    fetch(settings, FAST)
    auth = {r.path.split("/")[1]: r.headers.get("Authorization") for r in gh.requests}
    assert auth == {"repos": "Bearer ghp_test123", "download": None}


def test_5xx_is_retried(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, redis_asset: Asset, redis_server_path: Path
) -> None:
    publish(gh, tmp_path, "v7.0.0", redis_members(redis_server_path), fail_first=2)
    assert fetch(settings, FAST).action == "installed"


def test_html_instead_of_the_archive(
    settings: Settings, gh: FakeGitHub, installed: dict[str, Any]
) -> None:
    page = b"<!DOCTYPE html><html><title>Sign in</title></html>"
    gh.release(REPO, "v2.0.0", {"redis-v2.0.0-test.tar.gz": page}, content_type="text/html")
    _fails(settings, opts(upgrade=True), installed, match="HTML page")
    # the same page served as octet-stream: caught by sniffing the bytes
    gh.release(REPO, "v2.0.1", {"redis-v2.0.1-test.tar.gz": page})
    _fails(settings, opts(upgrade=True), installed, match="HTML")


def test_corrupt_archive(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    good = build(tmp_path / "g.tar.gz", "tar.gz", redis_members(redis_server_path)).read_bytes()
    gh.release(REPO, "v2.0.0", {"redis-v2.0.0-test.tar.gz": good[: len(good) // 2]})
    _fails(settings, opts(upgrade=True), installed, match="corrupt tar.gz")


def test_archive_without_the_executable(
    settings: Settings, gh: FakeGitHub, tmp_path: Path, installed: dict[str, Any]
) -> None:
    publish(gh, tmp_path, "v2.0.0", [("file", "redis-7/README", b"no binary")])
    _fails(settings, opts(upgrade=True), installed, match="holds no Redis executable")


@pytest.mark.parametrize(
    ("kind", "member"),
    [
        ("tar.gz", ("file", "../../evil", b"x")),
        ("tar.gz", ("symlink", "redis-7/link", "/etc")),
        ("tar.xz", ("hardlink", "redis-7/h", "../../etc/passwd")),
        ("tar.gz", ("chr", "redis-7/tty")),
        ("zip", ("file", "/tmp/evil", b"x")),
        ("zip", ("symlink", "redis-7/up", "../../..")),
    ],
)
def test_hostile_archive(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
    kind: str,
    member: tuple[Any, ...],
) -> None:
    members = [*redis_members(redis_server_path), member]
    archive = build(tmp_path / f"hostile.{kind}", kind, members)
    url = gh.asset(archive.name, archive.read_bytes())
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    info = _fails(settings, opts(url=url, sha256=sha), installed, UnsafeArchive, "refusing")
    assert repr(member[1]) in info.value.message
    assert not (tmp_path / "evil").exists()


def test_unwritable_bin(settings: Settings, gh: FakeGitHub, installed: dict[str, Any]) -> None:
    as_root = os.geteuid() == 0
    if as_root:  # root writes through permission bits: make the directory immutable instead
        if (
            shutil.which("chattr") is None
            or subprocess.run(
                ["chattr", "+i", str(settings.bin_dir)], capture_output=True
            ).returncode
        ):
            pytest.skip("cannot make a directory unwritable for root here")
    else:
        settings.bin_dir.chmod(0o555)
    downloads = len([p for p in gh.paths() if "/download/" in p])
    try:
        _fails(settings, opts(force=True), installed, match="cannot write to")
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(settings.bin_dir)], check=True)
        else:
            settings.bin_dir.chmod(0o755)
    assert len([p for p in gh.paths() if "/download/" in p]) == downloads  # failed early


def test_disk_full_while_downloading(
    settings: Settings, installed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = download.write_all
    calls = {"n": 0}

    def full(fd: int, data: bytes) -> None:
        calls["n"] += 1
        real(fd, data[: len(data) // 2])  # half a chunk fits, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(download, "write_all", full)
    _fails(settings, opts(force=True), installed, match="disk full")
    assert calls["n"] == 1  # not retried: a full disk stays full


def test_ctrl_c_during_download_leaves_nothing(
    settings: Settings,
    gh: FakeGitHub,
    tmp_path: Path,
    installed: dict[str, Any],
    redis_server_path: Path,
) -> None:
    members = [*redis_members(redis_server_path), ("file", "redis-7/pad", os.urandom(3 << 20))]
    publish(gh, tmp_path, "v2.0.0", members)
    said = Recorder(interrupt_at=1)
    _fails(settings, opts(upgrade=True), installed, KeyboardInterrupt, reporter=said)
    assert said.updates == 1 and "progress: closed" in said.lines  # stopped after one chunk


def test_plain_http_to_a_remote_host_is_refused(
    settings: Settings, gh: FakeGitHub, installed: dict[str, Any]
) -> None:
    _fails(
        settings,
        opts(url="http://downloads.example.com/redis.tar.gz", sha256="0" * 64),
        installed,
        match="refusing plain http download from downloads.example.com",
    )
    # ... also when a loopback mirror redirects there
    gh.routes["/download/hop.tar.gz"] = Route(redirect="http://198.51.100.7/redis.tar.gz")
    _fails(
        settings,
        opts(url=f"{gh.url}/download/hop.tar.gz", sha256="0" * 64),
        installed,
        match="refusing plain http download from 198.51.100.7",
    )


# ---- offline fallback, other flavors ---------------------------------------------------------


def test_auto_offline_falls_back_to_local_redis(
    make_settings: Callable[..., Settings], redis_server_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    auto = make_settings(flavor="auto", release={"github_api": dead})
    if KEY not in {("linux", "x86_64"), ("linux", "aarch64")}:
        pytest.skip("auto means dragonfly only on Linux")
    result = fetch(auto, opts(retries=1))
    assert (result.action, result.flavor) == ("fallback", "redis")
    assert result.path.resolve() == redis_server_path.resolve()
    assert "could not be reached" in result.reason
    with pytest.raises(NetworkError):
        fetch(make_settings(flavor="dragonfly", release={"github_api": dead}), opts(retries=1))


def test_auto_offline_warns_in_full_once_per_situation(
    make_settings: Callable[..., Settings], redis_server_path: Path
) -> None:
    """`repeated` (one line in tasks.py) only for the same local server as the last fallback:
    a different choice, or the network back in between, is a new situation (full warning)."""
    from devserver.fetch import offline

    if KEY not in {("linux", "x86_64"), ("linux", "aarch64")}:
        pytest.skip("auto means dragonfly only on Linux")
    auto = make_settings(flavor="auto", release={"github_api": f"http://127.0.0.1:{free_port()}"})
    first = fetch(auto, opts(retries=1))
    assert first.action == "fallback" and not first.repeated
    again = fetch(auto, opts(retries=1))  # the remembered failure, the same local server
    assert again.repeated and again.short.startswith("last asked ")
    forced = fetch(auto, opts(retries=1, force=True))  # asked again, failed again: same choice
    assert forced.repeated and "could not be reached" in forced.short
    note = auto.bin_dir / offline.NOTE
    data = json.loads(note.read_text())
    assert data["fallback"] == f"redis {first.version} {first.path}"
    note.write_text(json.dumps({**data, "fallback": "redis 6.0.0 /old/redis-server"}))
    assert not fetch(auto, opts(retries=1)).repeated  # chosen differently than last time
    assert fetch(auto, opts(retries=1)).repeated
    offline.forget(auto.bin_dir)  # a lookup worked in between: a new situation
    assert not fetch(auto, opts(retries=1)).repeated


def test_redis_on_posix_downloads_nothing(
    settings: Settings, gh: FakeGitHub, redis_server_path: Path
) -> None:
    result = fetch(settings, FAST)
    assert (result.action, result.flavor) == ("local", "redis")
    assert result.path.resolve() == redis_server_path.resolve()
    assert gh.paths() == []


def test_redis_on_posix_without_any_local_binary_says_how_to_get_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devserver.fetch import discovery

    monkeypatch.setattr(discovery, "on_path", lambda name: [])
    monkeypatch.setattr(discovery, "bundled_binaries", lambda: [])
    with pytest.raises(BinaryNotFound) as info:
        fetch(settings, FAST)
    assert "no redis-server/valkey-server was found" in info.value.message
    assert "apt install redis-server" in info.value.hint and "invoke fetch" not in info.value.hint


def test_garnet_picks_the_build_for_the_installed_runtime(
    make_settings: Callable[..., Settings],
    gh: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asset = Asset("garnet-test.tar.xz", "tar.xz", "*/GarnetServer", folder=True)
    monkeypatch.setitem(GARNET.assets, KEY, asset)  # type: ignore[index]
    script = b"#!/bin/sh\necho garnet\n"
    archive = build(
        tmp_path / "garnet-test.tar.xz",
        "tar.xz",
        [
            ("file", "net8.0/GarnetServer", script, 0o644),  # shipped without the exec bit
            ("file", "net8.0/Garnet.dll", b"net8"),
            ("file", "net10.0/GarnetServer", script, 0o644),
            ("file", "net10.0/Garnet.dll", b"net10"),
        ],
    )
    gh.release(GARNET.repo, "v1.0.80", {"garnet-test.tar.xz": archive.read_bytes()})
    settings = make_settings(flavor="garnet", release={"github_api": gh.url})
    runtimes = "Microsoft.NETCore.App 8.0.11 [/usr/share/dotnet/shared/Microsoft.NETCore.App]\n"
    result = fetch(settings, opts(dotnet=lambda argv: runtimes))
    assert result.path == settings.bin_dir / "garnet" / "GarnetServer"
    assert (settings.bin_dir / "garnet" / "Garnet.dll").read_bytes() == b"net8"
    assert stat.S_IMODE(result.path.stat().st_mode) & 0o111 == 0o111
    assert result.manifest["exe"] == "garnet/GarnetServer"
    with pytest.raises(FetchError, match=r"needs a \.NET runtime"):
        fetch(settings, opts(force=True, dotnet=lambda argv: ""))


def test_windows_redis_zip_folder_with_notes_digest(
    make_settings: Callable[..., Settings],
    gh: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Windows branch, run on Linux by patching host: folder install, digest in notes."""
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(host, "os_name", lambda: "windows")
    monkeypatch.setattr(host, "cpu_arch", lambda: "x86_64")
    name = "Redis-8.2.1-Windows-x64-msys2.zip"
    top = name[:-4]
    archive = build(
        tmp_path / name,
        "zip",
        [
            ("file", f"{top}/redis-server.exe", b"MZ fake exe"),
            ("file", f"{top}/msys-2.0.dll", b"dll"),
        ],
    )
    data = archive.read_bytes()
    service = name.replace(".zip", "-with-Service.zip")
    # The literal shape of redis-windows' notes: PowerShell `Get-FileHash | Format-List`
    # records, Hash before Path, the -with-Service asset's record right after ours.
    body = (
        "```\n\nAlgorithm : SHA256\n"
        f"Hash      : {hashlib.sha256(data).hexdigest().upper()}\n"
        f"Path      : D:\\a\\redis-windows\\redis-windows\\{name}\n\n"
        f"Algorithm : SHA256\nHash      : {hashlib.sha256(b'PK service').hexdigest().upper()}\n"
        f"Path      : D:\\a\\redis-windows\\redis-windows\\{service[:30]}\n"
        f"            {service[30:]}\n\n```\n"
    )
    gh.release(
        REPO,
        "8.2.1",
        {name: data, service: b"PK service", name.replace("msys2", "cygwin"): b"PK"},
        digests=False,
        body=body,
    )
    said = Recorder()
    result = fetch(make_settings(flavor="redis", release={"github_api": gh.url}), FAST, said)
    assert result.manifest["exe"] == "redis/redis-server.exe"
    assert (result.path.parent / "msys-2.0.dll").read_bytes() == b"dll"
    assert any("community build" in line for line in said.lines)
    assert result.manifest["verified"] is True


# ---- the CLI, once, as a user runs it ------------------------------------------------------


def _invoke(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), "fetch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_cli_fetch_success_then_offline_then_expected_failures(
    project: Path, gh: FakeGitHub, tmp_path: Path
) -> None:
    exe_name = f"dragonfly-{host.cpu_arch()}"
    archive = build(
        tmp_path / f"{exe_name}.tar.gz",
        "tar.gz",
        [("file", exe_name, b"#!/bin/sh\necho dragonfly v1.2.3\n", 0o755)],
    )
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    env = {
        "INVOKE_SERVER_BIN_DIR": str(project / "bin"),
        "INVOKE_SERVER_FLAVOR": "dragonfly",
        "INVOKE_RELEASE_GITHUB_API": gh.url,
        "NO_COLOR": "1",
    }
    if KEY[0] != "linux":
        pytest.skip("dragonfly installs only on Linux")
    ok = _invoke(["--archive", str(archive), "--sha256", sha, "--version", "v1.2.3"], env)
    assert ok.returncode == 0, ok.stderr
    assert "installed dragonfly v1.2.3" in ok.stderr and "sha256 verified" in ok.stderr
    again = _invoke([], env)
    assert again.returncode == 0 and "nothing downloaded" in again.stderr
    assert gh.paths() == []
    before = tree(project / "bin")
    for args, message in [
        (["--url", "http://example.com/x.tar.gz", "--sha256", sha], "error: refusing plain http"),
        (["--version", "v0.0.1"], "error: no release tagged 'v0.0.1'"),
        (["--archive", str(archive), "--sha256", "0" * 64], "error: sha256 mismatch"),
    ]:
        bad = _invoke(args, env)
        assert bad.returncode == 1, bad.stderr
        errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(message), bad.stderr
        assert "Traceback" not in bad.stderr and "hint:" in bad.stderr
        assert tree(project / "bin") == before


def test_unreadable_local_archive_is_one_clear_error(
    settings: Settings, tmp_path: Path, installed: dict[str, Any]
) -> None:
    folder = tmp_path / "not-a-file.tar.gz"
    folder.mkdir()
    _fails(settings, opts(archive=folder, sha256="0" * 64), installed, match="no such archive")
    broken = tmp_path / "dangling.tar.gz"
    broken.symlink_to(tmp_path / "gone")
    _fails(settings, opts(archive=broken, sha256="0" * 64), installed, match="no such archive")


def test_windows_dragonfly_installs_the_linux_build_for_wsl(
    make_settings: Callable[..., Settings],
    gh: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(host, "os_name", lambda: "windows")
    monkeypatch.setattr(host, "cpu_arch", lambda: "x86_64")
    archive = build(tmp_path / "d.tar.gz", "tar.gz", [("file", "dragonfly-x86_64", b"\x7fELF")])
    gh.release(
        "dragonflydb/dragonfly", "v1.25.0", {"dragonfly-x86_64.tar.gz": archive.read_bytes()}
    )
    said = Recorder()
    result = fetch(make_settings(flavor="dragonfly", release={"github_api": gh.url}), FAST, said)
    assert result.manifest["via_wsl"] is True and result.manifest["exe"] == "dragonfly"
    assert result.manifest["exe_version"] == ""  # a Linux binary is not run on Windows
    assert any("WSL2" in line for line in said.lines)
