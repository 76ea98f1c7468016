"""Converting one config value: what YAML, the environment or an option gave (strings, numbers,
``None``) to the number, path, size or text a setting holds, or a ConfigError naming the key,
the bad value and where to fix it (never a traceback)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devserver.catalog import FLAVORS as KNOWN_FLAVORS
from devserver.errors import ConfigError

FLAVORS = ("auto", *KNOWN_FLAVORS)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def whole_number(option: str, value: Any, lo: int, hi: int, hint: str = "") -> int:
    """A command-line number checked like the config keys: one clear line, never a traceback."""
    try:
        converted: int = int_in(lo, hi)(option, value, Path())
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=hint) from None
    return converted


def int_in(lo: int, hi: int) -> Any:
    def conv(key: str, value: Any, root: Path) -> int:
        if isinstance(value, bool):
            raise bad(key, value, f"a whole number from {lo} to {hi}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise bad(key, value, f"a whole number from {lo} to {hi}") from None
        if not lo <= number <= hi:
            raise bad(key, value, f"a whole number from {lo} to {hi}")
        return number

    return conv


def positive_float(key: str, value: Any, root: Path) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise bad(key, value, "a number of seconds greater than 0") from None
    if not number > 0 or number != number or number == float("inf"):
        raise bad(key, value, "a number of seconds greater than 0")
    return number


def as_text(key: str, value: Any, root: Path) -> str:
    return "" if value is None else str(value)


def _nonempty(key: str, value: Any, root: Path) -> str:
    text = as_text(key, value, root).strip()
    if not text:
        raise bad(key, value, "a non-empty value")
    return text


def _flavor(key: str, value: Any, root: Path) -> str:
    text = as_text(key, value, root).strip().lower()
    if text not in FLAVORS:
        raise bad(key, value, "one of " + ", ".join(FLAVORS))
    return text


def _host(key: str, value: Any, root: Path) -> str:
    text = _nonempty(key, value, root)
    if any(ch.isspace() for ch in text) or "/" in text:
        raise bad(key, value, "a host name or IP address, e.g. 127.0.0.1")
    return text


def _path(key: str, value: Any, root: Path) -> Path:
    path = Path(_nonempty(key, value, root)).expanduser()
    return path if path.is_absolute() else (root / path)


def _optional_path(key: str, value: Any, root: Path) -> Path | None:
    return None if not as_text(key, value, root).strip() else _path(key, value, root)


def _size(key: str, value: Any, root: Path) -> int:
    """Accept 1073741824, "1gb", "512MiB", "256m": the forms people write in config files."""
    match = _SIZE_RE.match(str(value))
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i") if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise bad(key, value, 'a size such as 1073741824, "512mb" or "1gb"')
    number = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if number <= 0:
        raise bad(key, value, "a size greater than 0")
    return number


RESTART_POLICIES = ("on-failure", "no")


def _restart(key: str, value: Any, root: Path) -> str:
    """``on-failure`` or ``no`` (YAML reads a bare ``no`` as False, so that counts too)."""
    text = "no" if value is False else as_text(key, value, root).strip().lower()
    if text not in RESTART_POLICIES:
        raise bad(key, value, "one of " + ", ".join(RESTART_POLICIES))
    return text


def _args(key: str, value: Any, root: Path) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(as_text(key, value, root)))
    except ValueError as exc:
        raise bad(key, value, f"arguments shell-style ({exc})") from None


SERVER_FIELDS: dict[str, Any] = {
    "flavor": _flavor,
    "version": _nonempty,
    "host": _host,
    "port": int_in(1, 65535),
    "password": as_text,
    "bin_dir": _path,
    "data_dir": _path,
    "log_dir": _path,
    "startup_timeout": positive_float,
    "stop_timeout": positive_float,
    "save_timeout": positive_float,
    "log_max_bytes": int_in(1024, 2**62),
    "log_backups": int_in(0, 1000),
    "threads": int_in(1, 1024),
    "maxmemory": _size,
    "extra_args": _args,
    "binary": _optional_path,
    "restart": _restart,
    "restart_limit": int_in(0, 1000),
    "restart_window": positive_float,
}


# Settings whose command-line option is not simply --<key>.
OPTION_NAMES = {"startup_timeout": "--timeout"}

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
    "restart": "on-failure",
    "restart_limit": 5,
    "restart_window": 60,
}
# Keys where an empty value is a value (no password, no extra arguments, no fixed binary).
MAY_BE_EMPTY = ("password", "extra_args", "binary")


def bad(key: str, value: Any, expected: str) -> ConfigError:
    """The error for a bad value: key (or option), value, what was expected, where to fix it."""
    if key.startswith("-"):
        hint = f"pass a valid {key}"
    else:
        env = "INVOKE_" + key.replace(".", "_").upper()
        hint = f"fix {key} in invoke.yaml (or the {env} environment variable)"
    return ConfigError(f"invalid value for {key}: {value!r} (expected {expected})", hint=hint)


_PROCESS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def app_processes(raw: Any) -> dict[str, str]:
    """app.processes: names people can read in a prefix, commands that are not empty."""
    if raw in (None, "", {}):
        return {}
    if not isinstance(raw, Mapping):
        raise bad("app.processes", raw, "a mapping of process name to command")
    result: dict[str, str] = {}
    for name, command in raw.items():
        if not _PROCESS_NAME_RE.match(str(name)):
            raise bad("app.processes", name, "names of letters, digits, '.', '_' or '-'")
        text = as_text(f"app.processes.{name}", command, Path()).strip()
        if not text:
            raise bad(f"app.processes.{name}", command, "a command line")
        result[str(name)] = text
    return result
