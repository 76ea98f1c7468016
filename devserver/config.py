"""Settings: the validated, immutable view of invoke.yaml plus command-line overrides.

Invoke hands us whatever the YAML file, the environment (``INVOKE_SERVER_PORT=...``) and the
user's own config files produced: strings where a number was meant, ``None`` for unset keys.
Invoke's own casting would raise a traceback on ``INVOKE_SERVER_PORT=abc``, so invoke.yaml
keeps numbers quoted and *this* module does every conversion, failing with a ConfigError that
names the key and the bad value. Everything else in the library takes a ``Settings``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from devserver.errors import ConfigError

FLAVORS = ("auto", "dragonfly", "redis", "garnet")

# Operations verify times, with the PoC's targets (milliseconds; the median must stay below,
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

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


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
    # server.binary: run exactly this executable (None: the tool chooses; see discovery.py).
    binary: Path | None = None
    app: AppSettings = field(default_factory=AppSettings)

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
            k: _SERVER_FIELDS[k](_OPTION_NAMES.get(k, "--" + k.replace("_", "-")), v, self.root)
            for k, v in given.items()
        }
        return replace(self, **checked)


def whole_number(option: str, value: Any, lo: int, hi: int, hint: str = "") -> int:
    """A command-line number checked like the config keys: one clear line, never a traceback."""
    try:
        converted: int = _int_in(lo, hi)(option, value, Path())
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=hint) from None
    return converted


def _int_in(lo: int, hi: int) -> Any:
    def conv(key: str, value: Any, root: Path) -> int:
        if isinstance(value, bool):
            raise _bad(key, value, f"a whole number from {lo} to {hi}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise _bad(key, value, f"a whole number from {lo} to {hi}") from None
        if not lo <= number <= hi:
            raise _bad(key, value, f"a whole number from {lo} to {hi}")
        return number

    return conv


def _positive_float(key: str, value: Any, root: Path) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise _bad(key, value, "a number of seconds greater than 0") from None
    if not number > 0 or number != number or number == float("inf"):
        raise _bad(key, value, "a number of seconds greater than 0")
    return number


def _text(key: str, value: Any, root: Path) -> str:
    return "" if value is None else str(value)


def _nonempty(key: str, value: Any, root: Path) -> str:
    text = _text(key, value, root).strip()
    if not text:
        raise _bad(key, value, "a non-empty value")
    return text


def _flavor(key: str, value: Any, root: Path) -> str:
    text = _text(key, value, root).strip().lower()
    if text not in FLAVORS:
        raise _bad(key, value, "one of " + ", ".join(FLAVORS))
    return text


def _host(key: str, value: Any, root: Path) -> str:
    text = _nonempty(key, value, root)
    if any(ch.isspace() for ch in text) or "/" in text:
        raise _bad(key, value, "a host name or IP address, e.g. 127.0.0.1")
    return text


def _path(key: str, value: Any, root: Path) -> Path:
    path = Path(_nonempty(key, value, root)).expanduser()
    return path if path.is_absolute() else (root / path)


def _optional_path(key: str, value: Any, root: Path) -> Path | None:
    return None if not _text(key, value, root).strip() else _path(key, value, root)


def _size(key: str, value: Any, root: Path) -> int:
    """Accept 1073741824, "1gb", "512MiB", "256m": the forms people write in config files."""
    match = _SIZE_RE.match(str(value))
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i") if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise _bad(key, value, 'a size such as 1073741824, "512mb" or "1gb"')
    number = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if number <= 0:
        raise _bad(key, value, "a size greater than 0")
    return number


def _args(key: str, value: Any, root: Path) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(_text(key, value, root)))
    except ValueError as exc:
        raise _bad(key, value, f"arguments shell-style ({exc})") from None


_SERVER_FIELDS: dict[str, Any] = {
    "flavor": _flavor,
    "version": _nonempty,
    "host": _host,
    "port": _int_in(1, 65535),
    "password": _text,
    "bin_dir": _path,
    "data_dir": _path,
    "log_dir": _path,
    "startup_timeout": _positive_float,
    "stop_timeout": _positive_float,
    "save_timeout": _positive_float,
    "log_max_bytes": _int_in(1024, 2**62),
    "log_backups": _int_in(0, 1000),
    "threads": _int_in(1, 1024),
    "maxmemory": _size,
    "extra_args": _args,
    "binary": _optional_path,
}


# What an absent key means; invoke.yaml repeats these with a comment on each.
SERVER_DEFAULTS: dict[str, Any] = {
    "flavor": "auto",
    "version": "latest",
    "host": "127.0.0.1",
    "port": 6379,
    "password": "",
    "bin_dir": "bin",
    "data_dir": "data",
    "log_dir": "logs",
    "startup_timeout": 30,
    "stop_timeout": 10,
    "save_timeout": 300,
    "log_max_bytes": 10 * 1024 * 1024,
    "log_backups": 5,
    "threads": 2,
    "maxmemory": "1gb",
    "extra_args": "",
    "binary": "",
}
# Settings whose command-line option is not simply --<key>.
_OPTION_NAMES = {"startup_timeout": "--timeout"}
_MAY_BE_EMPTY = ("password", "extra_args", "binary")


def _bad(key: str, value: Any, expected: str) -> ConfigError:
    if key.startswith("-"):
        hint = f"pass a valid {key}"
    else:
        env = "INVOKE_" + key.replace(".", "_").upper()
        hint = f"fix {key} in invoke.yaml (or the {env} environment variable)"
    return ConfigError(f"invalid value for {key}: {value!r} (expected {expected})", hint=hint)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping", hint="check invoke.yaml")
    return section


def _thresholds(raw: Any) -> dict[str, float]:
    merged = dict(DEFAULT_THRESHOLDS_MS)
    if raw is None:
        return merged
    if not isinstance(raw, Mapping):
        raise _bad("verify.thresholds_ms", raw, "a mapping of operation to milliseconds")
    for op, value in raw.items():
        if op not in DEFAULT_THRESHOLDS_MS:
            raise _bad("verify.thresholds_ms", op, "one of " + ", ".join(DEFAULT_THRESHOLDS_MS))
        merged[op] = _positive_float(f"verify.thresholds_ms.{op}", value, Path())
    return merged


def _given(section: Mapping[str, Any], key: str, default: Any) -> Any:
    """The configured value, or ``default`` when absent or empty: one rule for YAML and the
    environment (a 0 is a value to check, not "unset")."""
    raw = section.get(key)
    return default if raw is None or raw == "" else raw


def load_settings(config: Mapping[str, Any], root: Path) -> Settings:
    """Build Settings from Invoke's merged config (any Mapping), validating every key.

    ``root`` is the project directory (where tasks.py lives); relative paths resolve against it.
    Unknown keys are ignored so a newer invoke.yaml does not break an older checkout.
    """
    root = root.resolve()
    server = _section(config, "server")
    values: dict[str, Any] = {}
    for key, conv in _SERVER_FIELDS.items():
        raw = server.get(key)
        if raw is None or (raw == "" and key not in _MAY_BE_EMPTY):
            raw = SERVER_DEFAULTS[key]
        values[key] = conv(f"server.{key}", raw, root)

    release = _section(config, "release")
    verify = _section(config, "verify")
    api = _section(config, "api")
    api_env = api.get("env") or {}
    if not isinstance(api_env, Mapping):
        raise _bad("api.env", api_env, "a mapping of variable name to value")
    return Settings(
        root=root,
        release=ReleaseSettings(
            github_api=_text("release.github_api", release.get("github_api"), root).rstrip("/")
            or ReleaseSettings.github_api,
            url=_text("release.url", release.get("url"), root).strip(),
            sha256=_text("release.sha256", release.get("sha256"), root).strip().lower(),
            lookup_timeout=_positive_float(
                "release.lookup_timeout",
                release.get("lookup_timeout") or ReleaseSettings.lookup_timeout,
                root,
            ),
            retry_after=_positive_float(
                "release.retry_after",
                release.get("retry_after") or ReleaseSettings.retry_after,
                root,
            ),
        ),
        verify=VerifySettings(
            iterations=_int_in(1, 1_000_000)(
                "verify.iterations", _given(verify, "iterations", VerifySettings.iterations), root
            ),
            thresholds_ms=_thresholds(verify.get("thresholds_ms")),
        ),
        api=ApiSettings(
            command=_text("api.command", api.get("command"), root).strip(),
            env={str(k): _text(f"api.env.{k}", v, root) for k, v in api_env.items()},
        ),
        app=AppSettings(processes=_processes(_section(config, "app").get("processes"))),
        **values,
    )


_PROCESS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _processes(raw: Any) -> dict[str, str]:
    """app.processes: names people can read in a prefix, commands that are not empty."""
    if raw in (None, "", {}):
        return {}
    if not isinstance(raw, Mapping):
        raise _bad("app.processes", raw, "a mapping of process name to command")
    result: dict[str, str] = {}
    for name, command in raw.items():
        if not _PROCESS_NAME_RE.match(str(name)):
            raise _bad("app.processes", name, "names of letters, digits, '.', '_' or '-'")
        text = _text(f"app.processes.{name}", command, Path()).strip()
        if not text:
            raise _bad(f"app.processes.{name}", command, "a command line")
        result[str(name)] = text
    return result


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
