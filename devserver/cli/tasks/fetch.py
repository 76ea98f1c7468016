"""fetch: download, verify and install the server, or list the executables found."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from devserver.cli import console
from devserver.cli.invoke_args import handled, settings_from
from devserver.cli.report import SOURCES, FetchReporter, report_fetch
from devserver.config import Settings


@task(
    help={
        "flavor": "auto (default: dragonfly on Linux, else redis), dragonfly, redis or garnet",
        "version": "release tag to install, e.g. v1.24.0 (default: server.version, latest)",
        "upgrade": "look up the latest release and install it when it differs from bin/",
        "force": "download and reinstall even when the binary is already installed",
        "url": "install the archive at this URL instead of resolving a GitHub release",
        "sha256": "expected sha256 (64 hex digits) of the archive given by --url or --archive",
        "archive": "install from this local archive file (offline)",
        "allow_unverified": "install even when no sha256 is published or pinned (recorded)",
        "binary": "use this server executable: nothing is downloaded (sets it for this run)",
        "list": "list the server executables found (bin/, PATH, bundled), which one start "
        "would run and whether it can read the existing data; downloads nothing",
        "json": "with --list: print one JSON object and nothing else on stdout",
    }
)
@handled
def fetch(
    c: Context,
    flavor: str | None = None,
    version: str | None = None,
    upgrade: bool = False,
    force: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    archive: str | None = None,
    allow_unverified: bool = False,
    binary: str | None = None,
    list: bool = False,  # the option is --list; the builtin is not needed in here
    json: bool = False,
) -> None:
    """Download, verify and install the server into bin/ (no network call once installed)."""
    # The fetch layer (tarfile, hashlib; requests when it downloads): imported when fetch runs.
    from devserver.fetch import release
    from devserver.fetch.options import FetchOptions

    settings = settings_from(c, flavor=flavor, version=version, binary=binary)
    if list or json:
        _fetch_list(settings, json)
        return
    options = FetchOptions(
        upgrade=upgrade,
        force=force,
        url=url or "",
        sha256=sha256 or "",
        archive=Path(archive) if archive else None,
        allow_unverified=allow_unverified,
    )
    report_fetch(release.fetch(settings, options, FetchReporter()))


def _fetch_list(settings: Settings, as_json: bool) -> None:
    """`fetch --list`: every candidate executable, the one start would run, and why."""
    from devserver.fetch import choice  # the fetch layer: imported when fetch runs

    flavors = choice.auto_order() if settings.flavor == "auto" else (settings.flavor,)
    rows = choice.survey(settings, flavors)
    explicit = str(settings.binary) if settings.binary else None
    if as_json:
        console.print_json({"binary_setting": explicit, "binaries": rows})
        return
    if explicit:
        console.line(f"server.binary is set: start runs {explicit} and nothing else")
    if not rows:
        console.line(f"no server executable found for {', '.join(flavors)}")
        return
    readable = {True: "yes", False: "NO", None: "unknown"}
    console.table(
        ["flavor", "version", "source", "reads data", "chosen", "path"],
        [
            [
                r["flavor"],
                r["version"] or "?",
                SOURCES.get(r["source"], r["source"]),
                readable[r["can_read_data"]]
                + (f" (written by {r['data_written_by']})" if r["data_written_by"] else ""),
                ("<- start runs this", "green") if r["chosen"] and not explicit else "",
                r["path"],
            ]
            for r in rows
        ],
    )
