"""Settings: the validated, immutable view of invoke.yaml plus command-line overrides.

Invoke hands us whatever the YAML file, the environment (``INVOKE_SERVER_PORT=...``) and the
user's own config files produced: strings where a number was meant, ``None`` for unset keys.
Invoke's own casting would raise a traceback on ``INVOKE_SERVER_PORT=abc``, so invoke.yaml
keeps numbers quoted and every conversion happens here (each value's in config_values.py),
failing with a ConfigError that names the key and the bad value. Everything else in the
library takes a ``Settings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from devserver.config_values import (
    MAY_BE_EMPTY,
    OPTION_NAMES,
    SERVER_DEFAULTS,
    SERVER_FIELDS,
    app_processes,
    as_text,
    bad,
    int_in,
    positive_float,
)
from devserver.errors import ConfigError

# Operations verify times, with their targets (milliseconds; the median must stay below,
# a p99 above is a warning). A connect is several round trips (TCP, then redis-py's CLIENT
# SETINFO pair), and on a loaded 2-core machine its median reached 26 ms while PING's stayed
# at 0.2 ms: 50 ms still catches a server that is really slow to accept.
DEFAULT_THRESHOLDS_MS: dict[str, float] = {
    "connect": 50.0,
    "ping": 5.0,
    "set": 10.0,
    "get": 10.0,
    "lpush": 8.0,
    "brpop": 15.0,
}


@dataclass(frozen=True)
class ReleaseSettings:
    """Where fetch looks for releases: the GitHub API base, or a direct asset URL."""

    github_api: str = "https://api.github.com"
    url: str = ""
    sha256: str = ""
    # The whole release lookup (retries included) gives up after this many seconds, and a
    # failed one is not retried for retry_after seconds (flavor auto falls back meanwhile).
    lookup_timeout: float = 15.0
    retry_after: float = 600.0


@dataclass(frozen=True)
class VerifySettings:
    """How hard verify works and what latency it accepts."""

    iterations: int = 200
    thresholds_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS_MS))


@dataclass(frozen=True)
class ApiSettings:
    """The application's API command, run by ``invoke api`` with REDIS_URL exported."""

    command: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppSettings:
    """The application's processes (``app.processes``: name -> command) that ``up`` runs.

    A mapping in invoke.yaml (Invoke cannot cast one from the environment, so it is not
    overridable there: a Procfile or a user-level invoke.yaml is); validated here.
    """

    processes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Everything the library needs to know, validated once. Paths are absolute."""

    root: Path
    flavor: str
    version: str
    host: str
    port: int
    password: str
    bin_dir: Path
    data_dir: Path
    log_dir: Path
    startup_timeout: float
    stop_timeout: float
    log_max_bytes: int
    log_backups: int
    threads: int
    maxmemory: int
    extra_args: tuple[str, ...]
    # How long stop keeps waiting, past stop_timeout, for a server that is visibly saving.
    save_timeout: float = 300.0
    release: ReleaseSettings = field(default_factory=ReleaseSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    # server.binary: run exactly this executable (None: the tool chooses; see fetch/choice.py).
    binary: Path | None = None
    app: AppSettings = field(default_factory=AppSettings)
    # What the supervisor does when the server crashes: "on-failure" starts it again (at most
    # restart_limit times within restart_window seconds), "no" leaves it down.
    restart: str = "on-failure"
    restart_limit: int = 5
    restart_window: float = 60.0

    @property
    def state_file(self) -> Path:
        """The one managed server of this project directory is described here."""
        return self.data_dir / "server.json"

    @property
    def cancel_file(self) -> Path:
        """Touched by a ``stop`` that waits for a start in progress: the start gives up."""
        return self.data_dir / "server.cancel"

    @property
    def lock_file(self) -> Path:
        """Held while a start or stop runs, so two starts never make two servers."""
        return self.data_dir / "server.lock"

    def flavor_data_dir(self, flavor: str) -> Path:
        """Each flavor keeps its own files, so switching never feeds one another's data."""
        return self.data_dir / flavor

    def log_file(self, flavor: str) -> Path:
        return self.log_dir / f"{flavor}.log"

    def with_overrides(self, **changes: Any) -> Settings:
        """Apply command-line options (None means "not given") with the same validation."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        checked = {
            k: SERVER_FIELDS[k](OPTION_NAMES.get(k, "--" + k.replace("_", "-")), v, self.root)
            for k, v in given.items()
        }
        return replace(self, **checked)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping", hint="check invoke.yaml")
    return section


def _given(section: Mapping[str, Any], key: str, default: Any) -> Any:
    """The configured value, or ``default`` when absent or empty: one rule for YAML and the
    environment (a 0 is a value to check, not "unset")."""
    raw = section.get(key)
    return default if raw is None or raw == "" else raw


def load_settings(config: Mapping[str, Any], root: Path) -> Settings:
    """Build Settings from Invoke's merged config (any Mapping), validating every key.

    ``root`` is the project directory (where tasks.py lives); relative paths resolve against it.
    An unknown key inside one of the tool's sections is an error (a misspelt ``server.prot``
    would otherwise start on the default port without a word).
    """
    root = root.resolve()
    check_keys(config)
    server = _section(config, "server")
    values: dict[str, Any] = {}
    for key, conv in SERVER_FIELDS.items():
        raw = server.get(key)
        if raw is None or (raw == "" and key not in MAY_BE_EMPTY):
            raw = SERVER_DEFAULTS[key]
        values[key] = conv(f"server.{key}", raw, root)

    release = _section(config, "release")
    verify = _section(config, "verify")
    api = _section(config, "api")
    api_env = api.get("env") or {}
    if not isinstance(api_env, Mapping):
        raise bad("api.env", api_env, "a mapping of variable name to value")
    return Settings(
        root=root,
        release=ReleaseSettings(
            github_api=as_text("release.github_api", release.get("github_api"), root).rstrip("/")
            or ReleaseSettings.github_api,
            url=as_text("release.url", release.get("url"), root).strip(),
            sha256=as_text("release.sha256", release.get("sha256"), root).strip().lower(),
            lookup_timeout=positive_float(
                "release.lookup_timeout",
                release.get("lookup_timeout") or ReleaseSettings.lookup_timeout,
                root,
            ),
            retry_after=positive_float(
                "release.retry_after",
                release.get("retry_after") or ReleaseSettings.retry_after,
                root,
            ),
        ),
        verify=VerifySettings(
            iterations=int_in(1, 1_000_000)(
                "verify.iterations", _given(verify, "iterations", VerifySettings.iterations), root
            ),
            thresholds_ms=_thresholds(verify.get("thresholds_ms")),
        ),
        api=ApiSettings(
            command=as_text("api.command", api.get("command"), root).strip(),
            env={str(k): as_text(f"api.env.{k}", v, root) for k, v in api_env.items()},
        ),
        app=AppSettings(processes=app_processes(_section(config, "app").get("processes"))),
        **values,
    )


def invoke_defaults() -> dict[str, Any]:
    """Every documented key with its default, in invoke.yaml's shape (scalars as strings)."""
    release = ReleaseSettings()
    return {
        "server": {k: str(v) for k, v in SERVER_DEFAULTS.items()},
        "release": {
            "github_api": release.github_api,
            "url": release.url,
            "sha256": release.sha256,
            "lookup_timeout": f"{release.lookup_timeout:g}",
            "retry_after": f"{release.retry_after:g}",
        },
        "verify": {
            "iterations": str(VerifySettings.iterations),
            "thresholds_ms": {op: f"{ms:g}" for op, ms in DEFAULT_THRESHOLDS_MS.items()},
        },
        "api": {"command": "", "env": {}},
        "app": {"processes": {}},
    }


def check_keys(config: Mapping[str, Any]) -> None:
    """Refuse a key the tool does not know inside its own sections, naming the closest one.

    Only the tool's sections are checked: mappings whose keys are the user's own (api.env,
    app.processes) are free, and verify.thresholds_ms checks its operations itself.
    """
    for section, known in invoke_defaults().items():
        given = config.get(section)
        if not isinstance(given, Mapping):
            continue  # absent, or refused with its own message by _section
        for key in given:
            if key not in known:
                raise _unknown_key(f"{section}.{key}", str(key), section, list(known))


def _unknown_key(name: str, key: str, section: str, known: list[str]) -> ConfigError:
    import difflib  # only for a misspelt key: every command builds Settings, few fail here

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    guess = f": did you mean {section}.{close[0]}?" if close else ""
    return ConfigError(
        f"unknown key {name}{guess}",
        hint=f"fix it in invoke.yaml (the keys of {section}: {', '.join(known)})",
    )


def near_miss_sections(keys: Iterable[str], free: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(given, meant) for a top-level key a small edit away from one of the tool's sections.

    Such a key is not an error (a project's invoke.yaml may hold anything of its own next to
    ours, and ``free`` names Invoke's own sections), only worth a warning: ``sever:`` would
    otherwise be ignored without a word.
    """
    ours = list(invoke_defaults())
    skip = set(ours) | set(free)
    found = []
    for key in keys:
        if key in skip:
            continue
        for name in ours:
            if _edits(key, name) <= max(1, len(name) // 3):
                found.append((key, name))
                break
    return found


def _edits(a: str, b: str) -> int:
    """Edit distance, a swap of two neighbours counting as one edit (``prot``/``port``)."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def fill_from_environment(
    config: Mapping[str, Any], environ: Mapping[str, str], prefix: str = "INVOKE_"
) -> dict[str, Any]:
    """``config`` plus ``INVOKE_SERVER_PORT``-style variables for keys no config file has.

    Why: Invoke applies such a variable only to a key that some config file already has, so in
    a project without invoke.yaml (the ``devserver`` script in any folder, a two-line
    tasks.py) it would be silently ignored. Keys a file has were already set by Invoke (the
    variable wins there too), so only the missing ones are filled, never overwritten.
    """

    def walk(known: Mapping[str, Any], given: Any, path: tuple[str, ...]) -> Any:
        here = dict(given) if isinstance(given, Mapping) else {}
        for key, default in known.items():
            if isinstance(default, Mapping):
                if default or key in here:  # mappings (api.env) cannot come from a variable
                    sub = walk(default, here.get(key), (*path, key))
                    if sub or key in here:
                        here[key] = sub
            elif key not in here:
                name = prefix + "_".join((*path, key)).upper()
                if name in environ:
                    here[key] = environ[name]
        return here

    filled = dict(config)
    for section, known in invoke_defaults().items():
        sub = walk(known, config.get(section), (section,))
        if sub or section in config:
            filled[section] = sub
    return filled


def refuse_empty_variables(environ: Mapping[str, str], prefix: str = "INVOKE_") -> None:
    """An empty ``INVOKE_SERVER_PORT=`` is an error naming the variable, not the default.

    Invoke sets the key to "" and an empty value means "the default" in invoke.yaml, so the
    variable would silently replace the project's own port with 6379. Keys whose default is
    empty (password, extra_args, api.command...) take an empty value as a value.
    """

    def walk(known: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, default in known.items():
            if isinstance(default, Mapping):
                walk(default, (*path, key))
            elif default != "":
                name = prefix + "_".join((*path, key)).upper()
                if environ.get(name) == "":
                    raise ConfigError(
                        f"{name} is set but empty",
                        hint=f"give it a value, or unset it (unset {name}) to use invoke.yaml's",
                    )

    walk(invoke_defaults(), ())


def _thresholds(raw: Any) -> dict[str, float]:
    merged = dict(DEFAULT_THRESHOLDS_MS)
    if raw is None:
        return merged
    if not isinstance(raw, Mapping):
        raise bad("verify.thresholds_ms", raw, "a mapping of operation to milliseconds")
    for op, value in raw.items():
        if op not in DEFAULT_THRESHOLDS_MS:
            raise bad("verify.thresholds_ms", op, "one of " + ", ".join(DEFAULT_THRESHOLDS_MS))
        merged[op] = positive_float(f"verify.thresholds_ms.{op}", value, Path())
    return merged
