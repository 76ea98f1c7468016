"""The application's connection settings: REDIS_URL, and merging them into a .env file.

``invoke env`` and ``invoke api`` hand the application the address of the server this tool
runs. The URL is built in one place so the two always agree, with the password URL-encoded:
a password holding ``@``, ``:`` or ``/`` would otherwise change what the URL means.

Merging into a .env file touches only the lines of the keys we own: developers keep their
own settings (and comments) in the same file, so every other line survives byte for byte
(line endings, encoding, a BOM), and the new file replaces the old one atomically so an
editor or a crash never sees half a file. Like the rest of the library this module never
prints.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from devserver.config import Settings
from devserver.errors import ConfigError, DevServerError
from devserver.server import resp
from devserver.server.state import ServerState
from devserver.system.atomic import write_atomic

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A dotenv assignment: optional ``export``, a name, ``=``; the value may be quoted.
_ASSIGN_RE = re.compile(r"^[ \t]*(export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*(.*)$", re.S)
_SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_@%+=:,./~-]*$")
_BOM = "\ufeff"


class ServerNotRunning(DevServerError):
    """``invoke api`` needs a running server: the application would fail to connect."""


class EnvFileError(DevServerError):
    """The .env file could not be read or replaced."""


# --- Connection settings ----------------------------------------------------------------


def redis_url(host: str, port: int, password: str = "", db: int = 0) -> str:
    """``redis://[:password@]host:port/db`` as redis-py and most clients parse it.

    The password is percent-encoded completely (``safe=""``), so ``@ : / # %`` in it cannot be
    mistaken for URL structure; clients decode it again. A wildcard bind is reached on
    loopback (see resp.connect_host); an IPv6 address gets its brackets.
    """
    target = resp.connect_host(host)
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{target}:{port}/{db}"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``: for headers and log-like output."""
    return re.sub(r"^(\w+://[^:@/]*:)[^@/]*@", r"\1***@", url)


def running_server(settings: Settings, needed_by: str = "the API") -> ServerState:
    """The state of our running server, or ServerNotRunning with how to start it.

    ``needed_by`` names who wanted it in the message (``invoke cli`` is not the API).
    """
    # The server layer is imported when this runs, not with the module: `invoke up` imports
    # this module before its start step, which overlaps that import with launching the
    # supervisor.
    from devserver.server.state import current_state

    state, proc = current_state(settings)
    if state is None or proc is None:
        raise ServerNotRunning(
            f"the server is not running, so {needed_by} would have nothing to connect to",
            hint="start it with `invoke start` (or run everything with `invoke up`)",
        )
    return state


def connection_env(settings: Settings, state: ServerState | None = None) -> dict[str, str]:
    """REDIS_URL (of the running server when given, else of the configuration) + api.env.

    The running server's address wins over the configuration because ``invoke start --port``
    may have moved it. api.env comes last, so a team can override REDIS_URL on purpose.
    """
    host, port = (state.host, state.port) if state is not None else (settings.host, settings.port)
    values = {"REDIS_URL": redis_url(host, port, settings.password)}
    for name, value in settings.api.env.items():
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"invalid environment variable name in api.env: {name!r}",
                hint="use letters, digits and underscores, not starting with a digit",
            )
        values[name] = value
    return values


def format_value(value: str) -> str:
    """One value in .env syntax that dotenv parsers (python-dotenv, docker, node) agree on.

    Plain when it is plainly safe (URLs are), single quotes otherwise (no escapes and no
    ``${}`` interpolation inside them), double quotes with escapes only when the value holds
    a single quote or a newline.
    """
    if _SAFE_VALUE_RE.match(value):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def format_env(values: Mapping[str, str]) -> str:
    """``NAME=value`` lines, in the mapping's order, ending with a newline."""
    return "".join(f"{name}={format_value(value)}\n" for name, value in values.items())


# --- Merging into a .env file -------------------------------------------------------------


@dataclass(frozen=True)
class MergeResult:
    """What merge_env_file did, so the task can say it in one line."""

    path: Path
    updated: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    written: bool = False


def _physical_lines(text: str) -> list[str]:
    """Lines with their endings kept (``\\r\\n`` stays inside), only ``\\n`` splits."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _closed(text: str, quote_char: str) -> bool:
    """Does ``text`` (after an opening quote) contain the closing quote?"""
    if quote_char == "'":
        return "'" in text
    return re.search(r'(?<!\\)(?:\\\\)*"', text) is not None


def _entries(text: str) -> list[tuple[str | None, str, str]]:
    """Split a .env text into (name or None, export prefix, raw text) logical entries.

    A quoted value may span lines; those continuation lines belong to its entry, so a line
    inside someone's multi-line value is never mistaken for an assignment of ours.
    """
    lines = _physical_lines(text)
    entries: list[tuple[str | None, str, str]] = []
    i = 0
    while i < len(lines):
        match = _ASSIGN_RE.match(lines[i])
        if not match:
            entries.append((None, "", lines[i]))
            i += 1
            continue
        raw = lines[i]
        value = match.group(3)
        quote_char = value[:1]
        if quote_char in ("'", '"'):
            body = value[1:]
            while not _closed(body, quote_char) and i + 1 < len(lines):
                i += 1
                raw += lines[i]
                body += lines[i]
        entries.append((match.group(2), match.group(1) or "", raw))
        i += 1
    return entries


def merge_env_text(text: str, values: Mapping[str, str]) -> tuple[str, MergeResult]:
    """The merged text and what changed; pure, so the rules are easy to test.

    Every assignment of one of our names is rewritten in place (all of them, so no older
    duplicate can win in a parser where the last one counts), keeping its ``export``; names
    not present are appended at the end; every other byte stays as it was.
    """
    bom = text.startswith(_BOM)
    if bom:
        text = text[len(_BOM) :]
    newline = "\r\n" if "\r\n" in text else "\n"
    changed: dict[str, bool] = {}  # name -> did any of its lines change
    out: list[str] = []
    for name, export, raw in _entries(text):
        if name is None or name not in values:
            out.append(raw)
            continue
        ending = newline if raw.endswith("\n") else ""
        new = f"{export}{name}={format_value(values[name])}{ending}"
        changed[name] = changed.get(name, False) or new.rstrip("\r\n") != raw.rstrip("\r\n")
        out.append(new)
    updated = [name for name, did in changed.items() if did]
    unchanged = [name for name, did in changed.items() if not did]
    added = [name for name in values if name not in changed]
    if added:
        if out and not out[-1].endswith("\n"):
            out.append(newline)
        out.extend(f"{name}={format_value(values[name])}{newline}" for name in added)
    merged = (_BOM if bom else "") + "".join(out)
    return merged, MergeResult(Path(), updated, added, unchanged)


def merge_env_file(path: Path, values: Mapping[str, str]) -> MergeResult:
    """Merge ``values`` into the .env file at ``path`` (created when missing), atomically.

    Symlinks are followed so a linked .env stays a link. Bytes that are not UTF-8 survive
    (surrogateescape). An existing file keeps its permissions; a new one is created 0600 on
    POSIX because it may hold the server password. Nothing is written when nothing changed.
    """
    target = Path(os.path.realpath(path))
    try:
        original = target.read_bytes()
        existed = True
    except FileNotFoundError:
        original, existed = b"", False
    except OSError as exc:
        raise EnvFileError(
            f"cannot read {target}: {exc.strerror}", hint="check the path and its permissions"
        ) from None
    text = original.decode("utf-8", "surrogateescape")
    merged, result = merge_env_text(text, values)
    data = merged.encode("utf-8", "surrogateescape")
    written = not existed or data != original
    if written:
        _replace_atomically(target, data, existed)
    return MergeResult(target, result.updated, result.added, result.unchanged, written)


def _replace_atomically(target: Path, data: bytes, existed: bool) -> None:
    """Flush to disk and rename over the target (a crash never leaves a half .env); a new
    file is private (0600), since it may hold the password; an existing one keeps its mode."""
    if not target.parent.is_dir():
        raise EnvFileError(
            f"cannot write {target}: the folder {target.parent} does not exist",
            hint="create the folder or pass another path to --write",
        )
    try:
        mode = stat.S_IMODE(target.stat().st_mode) if existed else 0o600
        write_atomic(target, data, mode=mode, durable=True)
    except OSError as exc:
        raise EnvFileError(
            f"cannot write {target}: {exc.strerror or exc}",
            hint="check the folder's permissions (on Windows: close programs holding the file)",
        ) from None
