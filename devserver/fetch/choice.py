"""Which server executable runs: ``server.binary``, else the best of what discovery found.

``auto`` takes the first flavor available for this platform; an executable on PATH older than
its flavor's ``min_version`` is skipped with the reason; among the rest, one that can read the
flavor's existing data wins. ``survey`` shows the same choice for ``invoke fetch --list``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from devserver.catalog import FLAVORS, Flavor, get_flavor
from devserver.config import Settings
from devserver.errors import BinaryNotFound, ConfigError, UnsupportedPlatform
from devserver.fetch.binaries import Binary, cached_version, flavor_of_executable, is_too_old
from devserver.fetch.discovery import candidates, versioned
from devserver.server import datadir
from devserver.system import host


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


def find_binary(settings: Settings, flavor_name: str) -> Binary:
    """The executable to run for a concrete flavor, or explain how to get one.

    ``server.binary`` wins; otherwise discovery's order (bin/, PATH, bundled last), with one
    that can read the existing data preferred over one that cannot.
    """
    if settings.binary is not None:
        return explicit_binary(settings, flavor_name)
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
    platform_key = (host.os_name(), host.cpu_arch())
    if platform_key not in flavor.assets and host.os_name() not in flavor.native_on:
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


def auto_order() -> tuple[str, ...]:
    """Flavors to try for ``auto``, best first, for this platform.

    Dragonfly is preferred where it runs natively (Linux); elsewhere the native choices.
    """
    native = [name for name, f in FLAVORS.items() if host.os_name() in f.native_on]
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


def can_read(binary: Binary, written_by: str) -> bool | None:
    """Whether this binary is at least the version that last wrote the data (None: unknown)."""
    if not written_by:
        return True
    old, new = datadir.version_key(written_by), datadir.version_key(binary.version)
    if not old or not new:
        return None
    return new >= old


def pick(settings: Settings, found: list[Binary]) -> Binary:
    """The first one that can read the flavor's existing data, else simply the first."""
    written_by = datadir.recorded_version(settings.flavor_data_dir(found[0].flavor))
    if not written_by:
        return versioned(settings, found[0])
    for binary in found:
        binary = versioned(settings, binary)
        if can_read(binary, written_by) is not False:
            return binary
    return versioned(settings, found[0])  # none can: start refuses it, naming the data dir


def survey(settings: Settings, flavors: tuple[str, ...]) -> list[dict[str, Any]]:
    """What ``invoke fetch --list`` shows: every candidate, which one runs, and why."""
    rows: list[dict[str, Any]] = []
    for name in flavors:
        flavor = get_flavor(name)
        found = candidates(settings, flavor)
        written_by = datadir.recorded_version(settings.flavor_data_dir(name))
        chosen = pick(settings, found) if found else None
        for binary in found:
            rows.append(
                {
                    "flavor": name,
                    "path": str(binary.path),
                    "source": binary.source,
                    "version": binary.version,
                    "chosen": chosen is not None and binary.path == chosen.path,
                    "can_read_data": can_read(binary, written_by),
                    "data_written_by": written_by,
                }
            )
    return rows


def installed_flavors(settings: Settings) -> tuple[list[Binary], list[str]]:
    """Every flavor with a runnable executable here (its best one) and the names of the rest.

    What ``all`` means for the pytest matrix and ``verify --flavor``: the flavors
    ``invoke fetch --list`` would show, in the catalog's order. ``server.binary`` is not
    consulted (it names one flavor's executable, not which flavors exist). Versions are not
    asked here (the start asks its own binary), except for the ``min_version`` check on PATH.
    """
    plain = replace(settings, binary=None)
    found: list[Binary] = []
    missing: list[str] = []
    for name, flavor in FLAVORS.items():
        usable, _ = _recent_enough(plain, flavor, candidates(plain, flavor, versions=False))
        if usable:
            found.append(usable[0])
        else:
            missing.append(name)
    return found, missing
