"""fetch: resolve -> download -> verify digest -> unpack safely -> install atomically.

The expensive and risky parts live in download.py (HTTP, imported only when the network is
really needed), unpack.py (archive safety) and install.py (all-or-nothing bin/ update); this
module decides *what* to do. An installed binary that satisfies the configured version means
no network call at all, so ``invoke up`` works offline once fetched.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from . import binaries, compat
from .catalog import Asset, Flavor, get_flavor
from .config import Settings
from .errors import (
    BinaryNotFound,
    ChecksumError,
    ConfigError,
    FetchError,
    NetworkError,
    UnsupportedPlatform,
)
from .install import Runner, dotnet_majors, install, pick_dotnet_build, probe_writable, run_quietly
from .unpack import extract

_HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")
_NAME_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)*)")


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
    retries: int = 4
    backoff: float = 0.5
    timeout: float = 30.0
    dotnet: Runner = run_quietly


@dataclass(frozen=True)
class FetchResult:
    """What fetch did: "installed", "current" (nothing to do), "local" (redis on POSIX: the
    system or bundled binary is used) or "fallback" (offline: local redis instead)."""

    action: str
    flavor: str
    version: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    reason: str = ""


@dataclass(frozen=True)
class _Plan:
    flavor: Flavor
    asset: Asset
    version: str
    name: str
    url: str = ""
    sha256: str = ""
    archive: Path | None = None
    source: str = "github"


def target_flavor(settings: Settings) -> str:
    """``auto`` fetches Dragonfly where it runs natively, else the native Redis choice."""
    if settings.flavor != "auto":
        return settings.flavor
    asset = get_flavor("dragonfly").assets.get((compat.os_name(), compat.cpu_arch()))
    return "dragonfly" if asset is not None and not asset.via_wsl else "redis"


def _same_version(a: str, b: str) -> bool:
    return a.strip().lstrip("vV") == b.strip().lstrip("vV")


def _checked_sha(value: str) -> str:
    value = value.strip().lower().removeprefix("sha256:")
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"invalid sha256 {value!r}", hint="give 64 hex digits (sha256sum)")
    return value


def fetch(settings: Settings, options: FetchOptions | None = None,
          reporter: Reporter | None = None) -> FetchResult:
    """Make sure the configured flavor's server binary is available; install it if needed."""
    options = options or FetchOptions()
    reporter = reporter or QuietReporter()
    name = target_flavor(settings)
    flavor = get_flavor(name)
    explicit = bool(options.url or options.archive)
    key = (compat.os_name(), compat.cpu_arch())
    if key not in flavor.assets and key[0] in flavor.native_on and not explicit:
        # Redis on Linux/macOS: nothing is published to download; the system or bundled
        # binary is what runs (BinaryNotFound says how to get one).
        binary = binaries.find_binary(settings, name)
        return FetchResult("local", name, binary.version, binary.path, source=binary.source)
    asset = _platform_asset(flavor, explicit)
    installed = binaries.installed_binary(settings, flavor)
    manifest = binaries.read_manifest(settings, name) or {}
    wanted = "latest" if options.upgrade else settings.version
    if options.upgrade and settings.version != "latest":
        reporter.warn(f"server.version pins {settings.version}; --upgrade fetches the latest")
    if installed and not (options.force or options.upgrade or explicit) and (
            wanted == "latest" or _same_version(str(manifest.get("version", "")), wanted)):
        return FetchResult("current", name, installed.version, installed.path, manifest, "bin")
    try:
        plan = _plan(settings, options, flavor, asset, wanted)
        if (installed and options.upgrade and not options.force
                and _same_version(str(manifest.get("version", "")), plan.version)):
            return FetchResult("current", name, installed.version, installed.path, manifest,
                               "bin", reason="already the latest release")
        note = flavor.notes.get(compat.os_name(), "")
        if note:  # Dragonfly through WSL2, the community Redis build for Windows
            reporter.warn(note)
        return _install(settings, options, reporter, plan)
    except NetworkError as exc:
        if settings.flavor != "auto" or installed is not None or explicit:
            raise
        try:
            binary = binaries.find_binary(settings, "redis")
        except BinaryNotFound:
            raise NetworkError(exc.message, hint="no local redis-server either: install one "
                               "(apt install redis-server) or fetch with --archive PATH") from None
        return FetchResult("fallback", "redis", binary.version, binary.path,
                           source=binary.source, reason=exc.message)


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


def _plan(settings: Settings, options: FetchOptions, flavor: Flavor, asset: Asset,
          wanted: str) -> _Plan:
    """Where the archive comes from and which sha256 it must have."""
    pinned = _checked_sha(options.sha256 or ("" if options.archive else settings.release.sha256))
    if options.archive:
        path = options.archive.expanduser().resolve()
        if not path.is_file():
            raise FetchError(f"no such archive: {path}", hint="check the --archive path")
        return _Plan(flavor, asset, _guess_version(wanted, path.name), path.name,
                     url=path.as_uri(), sha256=pinned, archive=path, source="archive")
    url = options.url or settings.release.url
    if url:
        from .download import check_url

        check_url(url)
        name = Path(urlsplit(url).path).name or "download"
        return _Plan(flavor, asset, _guess_version(wanted, name), name, url, pinned,
                     source="url")
    return _resolve_github(settings, options, flavor, asset, wanted, pinned)


def _guess_version(wanted: str, file_name: str) -> str:
    if wanted != "latest":
        return wanted
    match = _NAME_VERSION.search(file_name)
    return match.group(1) if match else "unknown"


def _resolve_github(settings: Settings, options: FetchOptions, flavor: Flavor, asset: Asset,
                    wanted: str, pinned: str) -> _Plan:
    from . import download

    base = f"{settings.release.github_api}/repos/{flavor.repo}/releases"
    url = f"{base}/latest" if wanted == "latest" else f"{base}/tags/{quote(wanted, safe='')}"
    try:
        data = download.get_json(download.new_session(), url, _policy(options))
    except download.ReleaseNotFound:
        what = "no release" if wanted == "latest" else f"no release tagged {wanted!r}"
        raise FetchError(f"{what} in {flavor.repo} ({url})",
                         hint="check --version / server.version (tags look like v1.2.3)") from None
    assets = [a for a in data.get("assets") or [] if isinstance(a, dict)]
    matches = [a for a in assets if fnmatch.fnmatchcase(str(a.get("name", "")), asset.pattern)]
    tag = str(data.get("tag_name") or wanted)
    if not matches:
        names = ", ".join(str(a.get("name")) for a in assets[:8]) or "none"
        raise FetchError(f"release {tag} of {flavor.repo} has no asset {asset.pattern} "
                         f"for {compat.os_name()}/{compat.cpu_arch()} (assets: {names})",
                         hint="pick another --version, or --flavor")
    chosen = matches[0]
    digest = str(chosen.get("digest") or "")
    published = digest.split(":", 1)[1] if digest.lower().startswith("sha256:") else ""
    published = published or digest_from_notes(str(data.get("body") or ""), chosen["name"])
    return _Plan(flavor, asset, tag, str(chosen["name"]), str(chosen["browser_download_url"]),
                 pinned or _checked_sha(published))


def digest_from_notes(body: str, asset_name: str) -> str:
    """A sha256 for ``asset_name`` in release notes text (redis-windows publishes them there).

    The hash on the asset's own line wins; else the first one after its name and before the
    next line naming another archive, so a table of several assets never gives the wrong one.
    """
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if asset_name not in line:
            continue
        found = _HEX64.search(line.replace(asset_name, ""))
        if found:
            return found.group(0).lower()
        for follow in lines[i + 1:i + 4]:
            if re.search(r"\.(zip|tar\.gz|tar\.xz|tgz)\b", follow):
                break
            found = _HEX64.search(follow)
            if found:
                return found.group(0).lower()
    return ""


def _policy(options: FetchOptions) -> Any:
    from .download import Policy

    return Policy(retries=options.retries, backoff=options.backoff, timeout=options.timeout)


def _install(settings: Settings, options: FetchOptions, reporter: Reporter,
             plan: _Plan) -> FetchResult:
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
        raise FetchError("Garnet needs a .NET runtime (8 or newer), and `dotnet` found none",
                         hint="install the .NET 8 runtime: https://dotnet.microsoft.com/download")
    probe_writable(settings.bin_dir)
    settings.bin_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=settings.bin_dir.parent))
    try:
        archive, digest = _obtain(plan, options, reporter, work)
        if plan.sha256 and digest != plan.sha256:
            raise ChecksumError(f"sha256 mismatch for {plan.name}: expected {plan.sha256}, "
                                f"got {digest}", hint="the download is corrupt or was tampered "
                                "with; nothing was installed. Try again, or check --sha256")
        if not plan.sha256:
            reporter.warn(f"UNVERIFIED: {plan.name} has no published sha256; installing it "
                          f"anyway (--allow-unverified), sha256 {digest}")
        tree = work / "x"
        tree.mkdir()
        hashes = extract(archive, tree, asset.member)
        base = compat.exe_name(flavor.exe)
        found = [n for n in hashes if asset.pattern != "*" or n.rsplit("/", 1)[-1] == base]
        if not found:
            raise FetchError(f"{plan.name} holds no {flavor.title} executable "
                             f"(looked for {asset.member})",
                             hint="is this the right archive for this flavor and platform?")
        member = pick_dotnet_build(found, majors) if majors else min(found, key=len)
        return _place(settings, reporter, plan, tree, member, hashes[member], digest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _obtain(plan: _Plan, options: FetchOptions, reporter: Reporter,
            work: Path) -> tuple[Path, str]:
    """The archive on disk and its sha256 (hashed while downloading, or read once if local)."""
    if plan.archive is not None:
        hasher = hashlib.sha256()
        with open(plan.archive, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                hasher.update(chunk)
        return plan.archive, hasher.hexdigest()
    from . import download

    target = work / "archive"
    bars: list[Bar] = []

    def on_progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(reporter.progress(f"downloading {plan.name}", total))
        bars[0].update(done)

    reporter.info(f"downloading {plan.url}")
    try:
        digest, _ = download.download(download.new_session(), plan.url, target,
                                      _policy(options), on_progress)
    finally:
        for bar in bars:
            bar.close()
    return target, digest


def _place(settings: Settings, reporter: Reporter, plan: _Plan, tree: Path, member: str,
           exe_sha: str, archive_sha: str) -> FetchResult:
    flavor, asset = plan.flavor, plan.asset
    exe = tree.joinpath(*member.split("/"))
    exe.chmod(0o755)  # Garnet's archives may lack the exec bit
    version = "" if asset.via_wsl else binaries.read_version(flavor, exe)
    if asset.folder:
        folder = exe.parent
        items, rel = [(folder, flavor.name)], f"{flavor.name}/{exe.name}"
    else:
        rel = flavor.exe if asset.via_wsl else compat.exe_name(flavor.exe)
        items = [(exe, rel)]
    manifest: dict[str, Any] = {
        "flavor": flavor.name, "version": plan.version, "asset": plan.name, "url": plan.url,
        "archive_sha256": archive_sha, "exe_sha256": exe_sha, "exe": rel,
        "via_wsl": asset.via_wsl, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
        "verified": bool(plan.sha256), "exe_version": version, "source": plan.source,
    }
    install(settings.bin_dir, items, f"{flavor.name}.json", manifest)
    return FetchResult("installed", flavor.name, plan.version, settings.bin_dir / rel,
                       manifest, "bin")

