"""A tiny RESP client for PING, AUTH, INFO, SAVE and SHUTDOWN over one short-lived socket.

Why not redis-py here: ``start`` polls readiness every few milliseconds and ``stop`` must stay
fast; importing redis-py costs tens of milliseconds and offers nothing these five commands
need. verify, which tests the application's real client, uses redis-py.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence


class RespError(Exception):
    """The server answered with an error reply (``-ERR ...``, ``-NOAUTH ...``)."""


class ConnectionClosed(Exception):
    """The server closed the connection without a reply (a successful Redis SHUTDOWN does)."""


Reply = str | int | None | list["Reply"]


def encode(args: Sequence[str | bytes]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8") if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("connection closed by server")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, size: int) -> bytes:
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2 :]
        return data

    def reply(self) -> Reply:
        line = self.line()
        kind, rest = line[:1], line[1:].decode("utf-8", "replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.exact(size).decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise RespError(f"unexpected reply {line[:40]!r}")


def call(
    host: str,
    port: int,
    commands: Sequence[Sequence[str]],
    timeout: float = 1.0,
    password: str = "",
) -> list[Reply]:
    """Send commands (after AUTH when a password is given) and return their replies in order.

    Raises OSError when the connection fails, RespError on an error reply, ConnectionClosed
    when the server hangs up before answering.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        todo = ([["AUTH", password]] if password else []) + [list(c) for c in commands]
        sock.sendall(b"".join(encode(c) for c in todo))
        reader = _Reader(sock)
        replies = [reader.reply() for _ in todo]
    return replies[1:] if password else replies


def ping(host: str, port: int, timeout: float = 0.25, password: str = "") -> str:
    """Readiness probe: 'ready', 'loading', 'auth' (needs a password we lack) or 'down'.

    A NOAUTH reply proves the server is up and serving; LOADING means it is still reading
    its snapshot and is not ready yet.
    """
    try:
        reply = call(host, port, [["PING"]], timeout=timeout, password=password)
    except RespError as exc:
        text = str(exc).upper()
        if text.startswith("LOADING"):
            return "loading"
        if text.startswith(("NOAUTH", "WRONGPASS", "ERR AUTH", "ERR INVALID PASSWORD")):
            return "auth"
        return "down"
    except (OSError, ConnectionClosed, ValueError):
        return "down"
    return "ready" if reply and reply[0] == "PONG" else "down"


def connect_host(host: str) -> str:
    """The address to connect to for a server bound to ``host``.

    A wildcard bind is reached on loopback; ``localhost`` becomes 127.0.0.1 because on Windows
    it tries ::1 first and a refused connect there costs about two seconds.
    """
    if host in ("0.0.0.0", "localhost", "", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host
