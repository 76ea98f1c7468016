"""Binaries on Windows: the 2016 MSOpenTech redis-server.exe on PATH, and
which asset each flavor maps to on ARM64 Windows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devserver.catalog import DRAGONFLY, GARNET, REDIS
from devserver.config import Settings, load_settings
from devserver.errors import BinaryNotFound
from devserver.fetch import binaries, choice, discovery
from devserver.system import host

MSOPENTECH = "Redis server v=3.0.504 sha=00000000:0 malloc=jemalloc-3.6.0 bits=64 build=a4f7a6e8"


def fake_redis(folder: Path, says: str) -> Path:
    """A redis-server on PATH that answers --version like the real one (a .cmd on Windows,
    which PATHEXT finds as ``redis-server``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        exe = folder / "redis-server.cmd"
        exe.write_text(f"@echo {says}\r\n")
        return exe
    exe = folder / "redis-server"
    exe.write_text(f"#!/bin/sh\necho '{says}'\n")
    exe.chmod(0o755)
    return exe


def _settings(tmp_path: Path) -> Settings:
    return load_settings({"server": {"flavor": "redis"}}, tmp_path / "proj")


@pytest.fixture()
def windows_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Windows as far as binary discovery goes, with PATH holding only our folder."""
    monkeypatch.setattr(host, "os_name", lambda: "windows")
    monkeypatch.setattr(discovery, "bundled_binaries", lambda: [])  # no wheel binary there
    folder = tmp_path / "Program Files" / "Redis"
    monkeypatch.setenv("PATH", str(folder))
    if sys.platform == "win32":
        # The fake is a .cmd (a test cannot build an .exe that prints a chosen version), so
        # discovery looks for that name; what it does with the file found is unchanged.
        real = host.exe_name
        monkeypatch.setattr(host, "exe_name", lambda name: real(name).replace(".exe", ".cmd"))
    return folder


def test_msopentech_redis_on_path_is_refused_with_the_reason(
    tmp_path: Path, windows_path: Path
) -> None:
    old = fake_redis(windows_path, MSOPENTECH)
    with pytest.raises(BinaryNotFound) as err:
        choice.find_binary(_settings(tmp_path), "redis")
    assert f"skipped {old} is Redis 3.0.504" in err.value.message
    assert "--protected-mode" in err.value.message and "MSOpenTech" in err.value.message
    assert "invoke fetch --flavor redis" in err.value.hint


def test_a_current_redis_on_path_is_used(tmp_path: Path, windows_path: Path) -> None:
    fake_redis(windows_path, "Redis server v=5.0.14.1 sha=ec77f72d:0 malloc=jemalloc-5.2.1")
    found = choice.find_binary(_settings(tmp_path), "redis")
    assert (found.source, found.version) == ("path", "5.0.14.1")


def test_an_old_redis_on_path_gives_way_to_the_bundled_one(
    tmp_path: Path, windows_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_redis(windows_path, MSOPENTECH)
    bundled = fake_redis(tmp_path / "wheel", "Redis server v=6.2.14 sha=0:0")
    monkeypatch.setattr(discovery, "bundled_binaries", lambda: [bundled])
    found = choice.find_binary(_settings(tmp_path), "redis")
    assert (found.source, found.path) == ("bundled", bundled)


def test_version_floor() -> None:
    assert binaries.is_too_old(REDIS, "3.0.504")
    assert not binaries.is_too_old(REDIS, "3.2.100")
    assert not binaries.is_too_old(REDIS, "v8.2.1")
    assert not binaries.is_too_old(REDIS, "")  # unknown: tried
    assert not binaries.is_too_old(GARNET, "0.1")  # no floor


def test_arm64_windows_mapping() -> None:
    """Garnet publishes win-arm64; Dragonfly runs its aarch64 Linux build in an ARM64 WSL2;
    Redis has no ARM64 Windows build: the x64 one, which Windows 11 on ARM emulates."""
    arm = ("windows", "aarch64")
    assert GARNET.assets[arm].pattern == "win-arm64-based-readytorun.zip"
    assert DRAGONFLY.assets[arm].pattern == "dragonfly-aarch64.tar.gz"
    assert DRAGONFLY.assets[arm].via_wsl
    assert REDIS.assets[arm].pattern == REDIS.assets[("windows", "x86_64")].pattern


def test_an_emulated_x64_python_on_arm64_windows_gets_the_arm64_assets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ctypes
    import platform
    from unittest import mock

    kernel32 = mock.Mock()

    def is_wow64_process2(handle: object, process: object, native: object) -> int:
        native._obj.value = 0xAA64  # type: ignore[attr-defined]  # IMAGE_FILE_MACHINE_ARM64
        return 1

    kernel32.IsWow64Process2.side_effect = is_wow64_process2
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **kw: kernel32, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "AMD64")  # what emulated Python sees
    monkeypatch.setattr(host, "WINDOWS", True)
    assert host.cpu_arch() == "aarch64"
    kernel32.IsWow64Process2.side_effect = lambda *a: 0  # the call failed: trust Python
    assert host.cpu_arch() == "x86_64"
    monkeypatch.setattr(ctypes, "WinDLL", mock.Mock(side_effect=AttributeError), raising=False)
    assert host.cpu_arch() == "x86_64"  # Windows before 1709: no IsWow64Process2
