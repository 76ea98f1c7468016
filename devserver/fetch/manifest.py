"""The install record ``bin/<flavor>.json``: what fetch put into bin/, and reading it back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devserver.catalog import Flavor
from devserver.config import Settings
from devserver.fetch.binaries import UNKNOWN_VERSION, Binary, read_version, release_version
from devserver.system import host

if TYPE_CHECKING:
    from devserver.fetch.resolve import Plan


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
    candidates.append(settings.bin_dir / host.exe_name(flavor.exe))
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


def new_record(
    plan: Plan, release: str, rel: str, exe_version: str, archive_sha: str, exe_sha: str
) -> dict[str, Any]:
    """What an install records: where the executable came from, its digests and version."""
    return {
        "flavor": plan.flavor.name,
        "version": release,
        "asset": plan.name,
        "url": plan.url,
        "archive_sha256": archive_sha,
        "exe_sha256": exe_sha,
        "exe": rel,
        "via_wsl": plan.asset.via_wsl,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verified": bool(plan.sha256),
        "exe_version": exe_version,
        "source": plan.source,
    }
