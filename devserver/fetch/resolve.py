"""Where a release archive comes from and which sha256 it must have.

Three sources, in the order fetch honours them: a local ``--archive``, a direct ``--url``
(or ``release.url``), or a GitHub release looked up through ``release.github_api`` (latest or
a tag). The expected digest is the pinned ``--sha256``/``release.sha256``, else the API's
``digest`` field, else a hash printed in the release notes next to the asset's name (how
redis-windows publishes them). An empty digest means "unverified"; release.py decides.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from devserver.catalog import Asset, Flavor
from devserver.config import Settings
from devserver.errors import ConfigError, FetchError
from devserver.fetch.binaries import UNKNOWN_VERSION
from devserver.system import host

_HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")
_NAME_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)*)")
_ARCHIVE_NAME = re.compile(r"\.(zip|tar\.gz|tar\.xz|tgz)\b")


@dataclass(frozen=True)
class Plan:
    """One archive to install: where from, what it is, and the sha256 it must have."""

    flavor: Flavor
    asset: Asset
    version: str
    name: str
    url: str = ""
    sha256: str = ""
    archive: Path | None = None
    source: str = "github"  # "github", "url" or "archive"


def checked_sha(value: str) -> str:
    """Normalise a sha256 ("sha256:" prefix, upper case) or refuse it with a clear message."""
    value = value.strip().lower().removeprefix("sha256:")
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"invalid sha256 {value!r}", hint="give 64 hex digits (sha256sum)")
    return value


def plan(
    settings: Settings,
    flavor: Flavor,
    asset: Asset,
    wanted: str,
    *,
    url: str,
    sha256: str,
    archive: Path | None,
    policy: Callable[[], Any],
) -> Plan:
    """Decide the source. ``policy`` builds download.Policy only if the network is needed."""
    pinned = checked_sha(sha256 or ("" if archive else settings.release.sha256))
    if archive:
        path = archive.expanduser().resolve()
        if not path.is_file():
            raise FetchError(f"no such archive: {path}", hint="check the --archive path")
        return Plan(
            flavor,
            asset,
            guess_version(wanted, path.name),
            path.name,
            url=path.as_uri(),
            sha256=pinned,
            archive=path,
            source="archive",
        )
    url = url or settings.release.url
    if url:
        # Imported here: download.py imports requests, which only a real download needs.
        from devserver.fetch.download import check_url

        check_url(url)
        name = Path(urlsplit(url).path).name or "download"
        return Plan(flavor, asset, guess_version(wanted, name), name, url, pinned, source="url")
    return resolve_github(settings, flavor, asset, wanted, pinned, policy())


def guess_version(wanted: str, file_name: str) -> str:
    """A direct URL or file has no tag: use the pinned version, else one in the file name."""
    if wanted != "latest":
        return wanted
    match = _NAME_VERSION.search(file_name)
    return match.group(1) if match else UNKNOWN_VERSION


def resolve_github(
    settings: Settings, flavor: Flavor, asset: Asset, wanted: str, pinned: str, policy: Any
) -> Plan:
    """Look the release up (``latest`` or a tag) and pick this platform's asset."""
    # Imported here: download.py imports requests, which only a real lookup needs.
    from devserver.fetch import download

    base = f"{settings.release.github_api}/repos/{flavor.repo}/releases"
    url = f"{base}/latest" if wanted == "latest" else f"{base}/tags/{quote(wanted, safe='')}"
    try:
        data = download.get_json(download.new_session(), url, policy)
    except download.ReleaseNotFound:
        what = "no release" if wanted == "latest" else f"no release tagged {wanted!r}"
        raise FetchError(
            f"{what} in {flavor.repo} ({url})",
            hint="check --version / server.version (tags look like v1.2.3)",
        ) from None
    if not isinstance(data, dict):
        raise FetchError(f"{url} did not return a release", hint="check release.github_api")
    assets = [a for a in data.get("assets") or [] if isinstance(a, dict)]
    matches = [
        a
        for a in assets
        if fnmatch.fnmatchcase(str(a.get("name", "")), asset.pattern)
        and a.get("browser_download_url")
    ]
    tag = str(data.get("tag_name") or wanted)
    if not matches:
        names = ", ".join(str(a.get("name")) for a in assets[:8]) or "none"
        raise FetchError(
            f"release {tag} of {flavor.repo} has no asset {asset.pattern} "
            f"for {host.os_name()}/{host.cpu_arch()} (assets: {names})",
            hint="pick another --version, or --flavor",
        )
    chosen = matches[0]
    name = str(chosen["name"])
    digest = str(chosen.get("digest") or "")
    published = digest.split(":", 1)[1] if digest.lower().startswith("sha256:") else ""
    published = published or digest_from_notes(str(data.get("body") or ""), name)
    return Plan(
        flavor,
        asset,
        tag,
        name,
        str(chosen["browser_download_url"]),
        pinned or checked_sha(published),
    )


def digest_from_notes(body: str, asset_name: str) -> str:
    """A sha256 for ``asset_name`` in release notes text (redis-windows publishes them there).

    First as PowerShell ``Get-FileHash | Format-List`` records (how redis-windows writes
    them), matched by the exact file name of their Path. Otherwise by lines: the hash on the
    asset's own line wins; else the first one after its name and before the next line naming
    another archive, so a table of several assets never gives the wrong one.
    """
    records = filehash_records(body)
    if records:
        return records.get(asset_name, "")
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if asset_name not in line:
            continue
        found = _HEX64.search(line.replace(asset_name, ""))
        if found:
            return found.group(0).lower()
        for follow in lines[i + 1 : i + 4]:
            if _ARCHIVE_NAME.search(follow):
                break
            found = _HEX64.search(follow)
            if found:
                return found.group(0).lower()
    return ""


_FIELD = re.compile(r"^\s*(Algorithm|Hash|Path)\s*:\s?(.*)$")


def filehash_records(body: str) -> dict[str, str]:
    """{file name: sha256} from ``Get-FileHash | Format-List`` output in release notes.

    That output is blank-line separated records::

        Algorithm : SHA256
        Hash      : 5A1F...
        Path      : D:\\a\\redis-windows\\...\\Redis-8.2.1-Windows-x64-msys2.zip

    with the Hash line *before* the Path line, and a value longer than the console is wide
    continued on the next line(s), indented, without a separator. The Path's last component
    (Windows or POSIX separators) names the file; records of other algorithms are ignored.
    """
    records: list[dict[str, str]] = [{}]
    current = ""
    for raw in body.replace("\r\n", "\n").split("\n"):
        line = raw.strip("`").rstrip()
        match = _FIELD.match(line)
        if match:
            current = match.group(1)
            if current in records[-1]:  # no blank line between two records
                records.append({})
            records[-1][current] = match.group(2).strip()
        elif current and line[:1] in (" ", "\t") and line.strip():
            records[-1][current] += line.strip()  # a wrapped value continues without a space
        else:  # a blank line (the record separator) or other text
            current = ""
            if records[-1]:
                records.append({})
    found: dict[str, str] = {}
    for fields in records:
        digest = fields.get("Hash", "").lower()
        if fields.get("Algorithm", "SHA256").upper() != "SHA256" or not fields.get("Path"):
            continue
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            found.setdefault(re.split(r"[\\/]", fields["Path"])[-1], digest)
    return found
