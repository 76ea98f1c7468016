"""``invoke cli``: a Redis prompt on the managed server, AUTH done, no redis-cli needed.

Dragonfly's tarball and the Windows zips may not ship redis-cli, and a developer should not
need to know the port or the password. One persistent connection (a blocking BRPOP waits as
long as it needs; SUBSCRIBE is not supported), RESP2 replies shown the way redis-cli shows
them (``"v"``, ``(integer) 1``, ``(nil)``, ``1) ...``; raw text with ``raw``). The REPL reads
and writes through the streams it is given, so tests feed it and the library prints nothing
of its own.
"""

from __future__ import annotations

import shlex
import socket
from collections.abc import Callable, Sequence
from typing import TextIO

from devserver.errors import DevServerError
from devserver.server import resp


class CliError(DevServerError):
    """The server cannot be reached, or a command line cannot be parsed."""


class Session:
    """One connection, authenticated once, used for every command of the session."""

    def __init__(self, host: str, port: int, password: str = "", timeout: float = 5.0) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise CliError(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                hint="is the server running? `invoke status`, `invoke start`",
            ) from None
        self.sock.settimeout(None)  # BRPOP 0 may wait for ever; Ctrl+C ends it
        self.reader = resp._Reader(self.sock)
        if password:
            try:
                self.call(["AUTH", password])
            except (resp.RespError, resp.ConnectionClosed, OSError) as exc:
                self.close()
                raise CliError(
                    f"AUTH failed: {exc}", hint="check server.password (INVOKE_SERVER_PASSWORD)"
                ) from None

    def call(self, words: Sequence[str]) -> resp.Reply:
        """Send one command; its reply (RespError for an error reply)."""
        self.sock.sendall(resp.encode(list(words)))
        return self.reader.reply()

    def close(self) -> None:
        self.sock.close()


def split_command(line: str) -> list[str]:
    """Words as redis-cli splits them: spaces separate, quotes group (``SET k "v w"``)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise CliError(
            f"cannot parse {line!r}: {exc}", hint='close the quote: SET k "v w"'
        ) from None


def stray_word(after_cli: Sequence[str], task_names: Sequence[str]) -> str | None:
    """The first word after ``invoke cli``'s command that Invoke would take for a task name.

    ``invoke cli GET k`` reads naturally, but Invoke gives ``cli`` one positional word and
    parses ``k`` as the next task ("No idea what 'k' is!"). Returns that word (None when the
    line is fine: one command word, ``--`` words, or a real task chained after it) so the
    task can say how to pass several words. Only ``cli``'s own options are skipped.
    """
    words: list[str] = []
    skip_value = False
    for word in after_cli:
        if skip_value:
            skip_value = False
        elif word == "--":
            break
        elif word in ("-c", "--command"):
            skip_value = True
            words.append("")  # the command comes as this option's value
        elif word.startswith("--command="):
            words.append("")
        elif word.startswith("-"):
            continue
        else:
            words.append(word)
    if len(words) < 2 or words[1] in task_names:
        return None
    return words[1]


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_reply(reply: resp.Reply, raw: bool = False, indent: str = "") -> str:
    """A reply as redis-cli prints it on a terminal (``raw``: as it prints to a pipe)."""
    if isinstance(reply, list):
        if not reply:
            return "" if raw else "(empty array)"
        if raw:
            return "\n".join(format_reply(item, True) for item in reply)
        width = len(str(len(reply)))
        lines = []
        for number, item in enumerate(reply, 1):
            label = f"{number:>{width}}) "
            body = format_reply(item, False, indent + " " * len(label))
            lines.append((indent if number > 1 else "") + label + body)
        return "\n".join(lines)
    if reply is None:
        return "" if raw else "(nil)"
    if isinstance(reply, int):
        return str(reply) if raw else f"(integer) {reply}"
    return reply if raw or reply in ("OK", "PONG", "QUEUED") else _quoted(reply)


def repl(
    session: Session,
    read: Callable[[], str | None],
    out: TextIO,
    err: TextIO,
    raw: bool = False,
) -> int:
    """Read commands until end of input or ``quit``; replies to ``out``, errors to ``err``.

    Returns 1 when any command failed (so a piped script can be checked), else 0.
    """
    failed = False
    while True:
        line = read()
        if line is None:
            return 1 if failed else 0
        try:
            words = split_command(line)
        except CliError as exc:
            err.write(f"(error) {exc.message}\n")
            failed = True
            continue
        if not words:
            continue
        if words[0].lower() in ("quit", "exit"):
            return 1 if failed else 0
        try:
            text = format_reply(session.call(words), raw)
        except resp.RespError as exc:
            err.write(f"(error) {exc}\n")
            failed = True
            continue
        except (OSError, resp.ConnectionClosed) as exc:
            raise CliError(f"the connection was lost: {exc}", hint="`invoke status`") from None
        out.write(text + "\n")
        out.flush()


def enable_line_editing() -> None:
    """Arrow keys and history at the interactive prompt, where the readline module exists
    (POSIX builds; Windows consoles edit lines themselves)."""
    try:
        import readline  # noqa: F401 (importing it is what makes input() use it)
    except ImportError:
        pass
