"""The pure parts of fetch: digests in release notes, .NET build choice, URL policy,
flavor choice, the all-or-nothing install, and the no-network fast path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devserver.errors import ConfigError, FetchError, NetworkError, UnsupportedPlatform
from devserver.fetch import dotnet, install, release, resolve
from devserver.fetch.download import check_url, is_loopback
from devserver.fetch.options import FetchOptions
from devserver.system import host
from tests.archives import tree
from tests.platforms import WINDOWS

HEX_A = "a" * 64
HEX_B = "b" * 64
ASSET = "Redis-8.2.1-Windows-x64-msys2.zip"


@pytest.mark.parametrize(
    "body",
    [
        f"SHA256 ({ASSET}) = {HEX_A}\n",
        f"| {ASSET} | `{HEX_A.upper()}` |\n| Redis-8.2.1-Windows-x64-cygwin.zip | {HEX_B} |",
        f"- {ASSET}\n  sha256: {HEX_A}\n- Redis-8.2.1-Windows-x64-cygwin.zip\n  sha256: {HEX_B}",
        f"{HEX_B}  Redis-8.2.1-Windows-x64-cygwin.zip\n{HEX_A}  {ASSET}\n",
    ],
)
def test_digest_from_release_notes_takes_the_assets_own_hash(body: str) -> None:
    assert resolve.digest_from_notes(body, ASSET) == HEX_A


def test_digest_from_release_notes_never_borrows_the_next_assets_hash() -> None:
    body = f"{ASSET}\nRedis-8.2.1-Windows-x64-cygwin.zip {HEX_B}\n"
    assert resolve.digest_from_notes(body, ASSET) == ""
    assert resolve.digest_from_notes("no hashes here", ASSET) == ""


# What redis-windows' release notes hold: PowerShell `Get-FileHash * | Format-List` output,
# Hash before Path, blank-line separated, a long Path wrapped onto an indented next line.
SERVICE = "Redis-8.2.1-Windows-x64-msys2-with-Service.zip"
HEX_C = "c" * 64
FORMAT_LIST = f"""## Redis 8.2.1 for Windows

```

Algorithm : SHA256
Hash      : {HEX_B.upper()}
Path      : D:\\a\\redis-windows\\redis-windows\\Redis-8.2.1-Windows-x64-cygwin.zip

Algorithm : SHA256
Hash      : {HEX_A.upper()}
Path      : D:\\a\\redis-windows\\redis-windows\\{ASSET}

Algorithm : SHA256
Hash      : {HEX_C.upper()}
Path      : D:\\a\\redis-windows\\redis-windows\\Redis-8.2.1-Windows-x64-msys2-with-Serv
            ice.zip

```
"""


def test_digest_from_powershell_format_list_matches_the_paths_file_name() -> None:
    assert resolve.digest_from_notes(FORMAT_LIST, ASSET) == HEX_A
    assert resolve.digest_from_notes(FORMAT_LIST, SERVICE) == HEX_C  # wrapped Path joined
    assert resolve.digest_from_notes(FORMAT_LIST, "Redis-8.2.1-Windows-x64-cygwin.zip") == HEX_B


def test_format_list_with_our_asset_last_and_crlf_and_no_blank_lines() -> None:
    body = (
        f"Algorithm : SHA256\r\nHash      : {HEX_C}\r\nPath      : C:\\r\\{SERVICE}\r\n"
        f"Algorithm : SHA256\r\nHash      : {HEX_A[:40]}\r\n            {HEX_A[40:]}\r\n"
        f"Path      : C:\\r\\{ASSET}\r\n"
    )
    assert resolve.digest_from_notes(body, ASSET) == HEX_A  # the hash wrapped too
    assert resolve.filehash_records(body) == {SERVICE: HEX_C, ASSET: HEX_A}


def test_format_list_never_gives_a_near_name_or_another_algorithm() -> None:
    body = f"Algorithm : SHA256\nHash      : {HEX_C}\nPath      : C:\\r\\{SERVICE}\n\n"
    body += f"Algorithm : MD5\nHash      : {HEX_B}\nPath      : C:\\r\\{ASSET}\n"
    assert resolve.digest_from_notes(body, ASSET) == ""  # fetch then refuses, never mismatches


RUNTIMES = """Microsoft.AspNetCore.App 8.0.11 [/usr/share/dotnet/shared/Microsoft.AspNetCore.App]
Microsoft.NETCore.App 8.0.11 [/usr/share/dotnet/shared/Microsoft.NETCore.App]
"""
BUILDS = ["pkg/net8.0/GarnetServer", "pkg/net10.0/GarnetServer"]


def test_dotnet_majors_parses_list_runtimes_with_a_fake_runner() -> None:
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> str:
        calls.append(argv)
        return RUNTIMES + "Microsoft.NETCore.App 10.0.1 [/x]\n"

    assert dotnet.dotnet_majors(fake) == {8, 10}
    assert calls == [["dotnet", "--list-runtimes"]]
    assert dotnet.dotnet_majors(lambda argv: "") == set()  # dotnet missing


@pytest.mark.parametrize(
    ("runtimes", "expected"),
    [
        (RUNTIMES, "pkg/net8.0/GarnetServer"),
        (RUNTIMES + "Microsoft.NETCore.App 10.0.0 [/x]\n", "pkg/net10.0/GarnetServer"),
        ("Microsoft.NETCore.App 10.0.2 [/x]\n", "pkg/net10.0/GarnetServer"),
    ],
)
def test_garnet_build_follows_the_installed_runtime(runtimes: str, expected: str) -> None:
    majors = dotnet.dotnet_majors(lambda argv: runtimes)
    assert dotnet.pick_dotnet_build(BUILDS, majors) == expected


def test_garnet_without_a_matching_runtime_names_what_to_install() -> None:
    majors = dotnet.dotnet_majors(lambda argv: "Microsoft.NETCore.App 6.0.3 [/x]\n")
    with pytest.raises(FetchError) as info:
        dotnet.pick_dotnet_build(BUILDS, majors)
    assert ".NET 8 or .NET 10" in info.value.message and ".NET 6" in info.value.message
    assert "dotnet.microsoft.com" in info.value.hint


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1", "192.168.1.1", "127.example.com"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_url_policy() -> None:
    check_url("https://github.com/x.tar.gz")
    check_url("http://127.0.0.1:8080/x.tar.gz")
    with pytest.raises(FetchError, match="plain http"):
        check_url("http://mirror.example.com/x.tar.gz")
    for bad in ("ftp://x/y", "file:///etc/passwd", "x.tar.gz"):
        with pytest.raises(FetchError, match="unsupported URL"):
            check_url(bad)


@pytest.mark.parametrize(
    ("os_name", "arch", "flavor"),
    [
        ("linux", "x86_64", "dragonfly"),
        ("linux", "aarch64", "dragonfly"),
        ("windows", "x86_64", "redis"),
        ("macos", "aarch64", "redis"),
        ("linux", "riscv64", "redis"),
    ],
)
def test_auto_fetches_dragonfly_only_where_it_runs_natively(
    monkeypatch: pytest.MonkeyPatch, make_settings: object, os_name: str, arch: str, flavor: str
) -> None:
    monkeypatch.setattr(host, "os_name", lambda: os_name)
    monkeypatch.setattr(host, "cpu_arch", lambda: arch)
    settings = make_settings(flavor="auto")  # type: ignore[operator]
    assert release.target_flavor(settings) == flavor


def test_macos_dragonfly_is_a_clear_unsupported_platform(
    monkeypatch: pytest.MonkeyPatch, make_settings: object
) -> None:
    monkeypatch.setattr(host, "os_name", lambda: "macos")
    monkeypatch.setattr(host, "cpu_arch", lambda: "aarch64")
    with pytest.raises(UnsupportedPlatform) as info:
        release.fetch(make_settings(flavor="dragonfly"))  # type: ignore[operator]
    assert "no build for macos/aarch64" in info.value.message
    assert "redis or garnet" in info.value.hint


def test_bad_sha256_option_is_a_config_error(make_settings: object, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(ConfigError, match="invalid sha256"):
        release.fetch(
            make_settings(flavor="dragonfly"),  # type: ignore[operator]
            FetchOptions(archive=archive, sha256="xyz"),
        )


def _bin_with(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    (bin_dir / "redis").mkdir(parents=True)
    (bin_dir / "redis" / "old.exe").write_bytes(b"old")
    (bin_dir / "redis.json").write_text('{"version": "old"}')
    return bin_dir


def test_install_swaps_folder_and_manifest(tmp_path: Path) -> None:
    bin_dir = _bin_with(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    (new / "redis-server.exe").write_bytes(b"new")
    install.install(bin_dir, [(new, "redis")], "redis.json", {"version": "v2"})
    if WINDOWS:  # no mode bits there, and the manifest is text (CRLF line ends)
        assert sorted(tree(bin_dir)) == ["redis", "redis.json", "redis/redis-server.exe"]
        assert (bin_dir / "redis" / "redis-server.exe").read_bytes() == b"new"
        assert json.loads((bin_dir / "redis.json").read_text()) == {"version": "v2"}
        return
    assert tree(bin_dir) == {
        "redis": "<dir>",
        "redis/redis-server.exe": b"new mode=644",
        "redis.json": b'{\n  "version": "v2"\n}\n mode=644',
    }


def test_install_failure_at_the_last_step_rolls_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _bin_with(tmp_path)
    before = tree(bin_dir)
    new = tmp_path / "new"
    new.mkdir()
    (new / "redis-server.exe").write_bytes(b"new")
    real_replace = os.replace

    def failing_replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        if str(dst).endswith("redis.json") and ".new-" in str(src):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(FetchError, match="cannot install"):
        install.install(bin_dir, [(new, "redis")], "redis.json", {"version": "v2"})
    assert tree(bin_dir) == before


def test_installed_binary_means_no_network_and_no_requests_import(project: Path) -> None:
    """The fast path must stay offline and cheap: requests is not even imported."""
    bin_dir = project / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "dragonfly"
    exe.write_text("#!/bin/sh\necho dragonfly v1.0.0\n")
    exe.chmod(0o755)
    (bin_dir / "dragonfly.json").write_text(json.dumps({"version": "v1.0.0", "exe": "dragonfly"}))
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from devserver.fetch import release
from devserver.config import load_settings
config = {{"server": {{"flavor": "dragonfly"}}, "release": {{"github_api": "http://127.0.0.1:9"}}}}
settings = load_settings(config, Path({str(project)!r}))
result = release.fetch(settings)
print(result.action, result.version, "requests" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["current", "v1.0.0", "False"]


def test_refused_connections_are_retried_with_backoff_but_dns_failure_is_not() -> None:
    from devserver.errors import NetworkError
    from devserver.fetch import download
    from tests.conftest import free_port

    slept: list[float] = []
    policy = download.Policy(retries=3, backoff=0.1, timeout=2, sleep=slept.append)
    with pytest.raises(NetworkError, match="could not be reached"):
        download.get_json(download.new_session(), f"http://127.0.0.1:{free_port()}/x", policy)
    assert slept == [0.1, 0.2, 0.4]
    slept.clear()
    with pytest.raises(NetworkError):
        download.get_json(download.new_session(), "https://no-such-host.invalid/x", policy)
    assert slept == []  # offline: fail at once so the fallback is quick


def test_work_folders_of_killed_fetches_are_swept(tmp_path: Path) -> None:
    import os

    from devserver.fetch.install import sweep_stale_work

    dead = tmp_path / ".fetch-999999999-abc"  # no such pid
    (dead / "x").mkdir(parents=True)
    mine = tmp_path / f".fetch-{os.getpid()}-def"  # a fetch that is still running
    mine.mkdir()
    other = tmp_path / ".fetch-notapid"
    other.mkdir()
    sweep_stale_work(tmp_path)
    assert not dead.exists()
    assert mine.exists() and other.exists()


def test_a_failed_lookup_is_remembered_for_a_while(tmp_path: Path) -> None:
    from devserver.fetch import offline

    offline.remember(tmp_path / "bin", "api.github.com timed out", clock=1000.0)
    found = offline.recent(tmp_path / "bin", 600, clock=1100.0)
    assert found is not None and found.reason == "api.github.com timed out" and found.age_s == 100
    assert offline.recent(tmp_path / "bin", 600, clock=1700.0) is None  # long enough ago
    assert offline.recent(tmp_path / "bin", 600, clock=900.0) is None  # clock stepped back
    offline.forget(tmp_path / "bin")
    assert offline.recent(tmp_path / "bin", 600, clock=1100.0) is None
    (tmp_path / "bin" / offline.NOTE).write_text("{broken")
    assert offline.recent(tmp_path / "bin", 600) is None


def test_lookup_gives_up_at_its_total_budget_not_after_all_retries() -> None:
    """Each try would wait 30 s; the total budget (15 s by default) ends the lookup first."""
    import requests

    from devserver.fetch import download

    tries: list[float] = []

    class Session:
        def get(self, url: str, headers: object, timeout: float) -> object:
            tries.append(timeout)
            raise requests.ReadTimeout("no answer")

    policy = download.Policy(retries=3, backoff=0.0, timeout=30, total=0.2, sleep=lambda s: None)
    with pytest.raises(NetworkError, match="timed out"):
        download.get_json(Session(), "http://127.0.0.1:9/x", policy)  # type: ignore[arg-type]
    assert tries and all(t <= 0.2 for t in tries)
