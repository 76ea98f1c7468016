"""The RESP2/RESP3 engine both server stand-ins share: a key space, the commands, blocking pops.

Test-only. The stand-ins (dragonfly.py, garnet.py) differ in flags, logs, persistence and
stop behaviour; what a client sees on the wire is the same small command set, answered the
way Redis-protocol servers answer it. One asyncio loop serves every connection, so commands
are atomic and a blocked BRPOP/BLPOP/BLMOVE really waits (a future woken by the next push).

What is not taken from a server's source, and so is a guess, says so where it is decided.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Value = bytes | list[bytes]


class Simple(str):
    """A status reply (+OK)."""


class Error(str):
    """An error reply (-ERR ...); the text includes its code."""


class Verbatim(str):
    """A RESP3 verbatim string (INFO); a bulk string in RESP2."""


class NullArray:
    """RESP2 ``*-1`` (BRPOP timed out); ``_`` in RESP3."""


OK = Simple("OK")
NULL_ARRAY = NullArray()
WRONGTYPE = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
SYNTAX = Error("ERR syntax error")
NOT_INT = Error("ERR value is not an integer or out of range")


def encode(value: Any, proto: int) -> bytes:
    """One reply in RESP2 or RESP3."""
    if isinstance(value, Error):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, Simple):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, Verbatim):
        data = value.encode()
        if proto == 3:
            return b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data)
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if isinstance(value, bool):
        return b":%d\r\n" % int(value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if value is None:
        return b"_\r\n" if proto == 3 else b"$-1\r\n"
    if isinstance(value, NullArray):
        return b"_\r\n" if proto == 3 else b"*-1\r\n"
    if isinstance(value, dict):
        head = b"%%%d\r\n" % len(value) if proto == 3 else b"*%d\r\n" % (2 * len(value))
        return head + b"".join(encode(k, proto) + encode(v, proto) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(encode(v, proto) for v in value)
    raise TypeError(f"cannot encode {value!r}")


class ProtocolError(Exception):
    pass


async def read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """The next command (multibulk or inline), or None at end of stream."""
    line = await reader.readline()
    if not line:
        return None
    if not line.endswith(b"\r\n"):
        return None
    if line[:1] != b"*":
        return line.split()  # an inline command (telnet style)
    try:
        count = int(line[1:-2])
    except ValueError:
        raise ProtocolError("invalid multibulk length") from None
    args: list[bytes] = []
    for _ in range(count):
        head = await reader.readline()
        if head[:1] != b"$":
            raise ProtocolError(f"expected '$', got {head[:1]!r}")
        size = int(head[1:-2])
        data = await reader.readexactly(size + 2)
        args.append(data[:-2])
    return args


@dataclass
class Client:
    """One connection's protocol state."""

    proto: int = 2
    authenticated: bool = False
    name: str = ""


@dataclass
class Waiter:
    """A blocked BRPOP/BLPOP/BLMOVE: the keys it waits on and what to do when one fills."""

    keys: list[bytes]
    take: Callable[[bytes], Any]
    future: asyncio.Future[Any]


@dataclass
class Keyspace:
    """Values (bytes for strings, lists of bytes for lists) and absolute expiry times (ms)."""

    data: dict[bytes, Value] = field(default_factory=dict)
    expires: dict[bytes, int] = field(default_factory=dict)

    def alive(self, key: bytes) -> bool:
        deadline = self.expires.get(key)
        if deadline is not None and deadline <= now_ms():
            self.data.pop(key, None)
            self.expires.pop(key, None)
        return key in self.data

    def get(self, key: bytes) -> Value | None:
        return self.data[key] if self.alive(key) else None

    def delete(self, key: bytes) -> bool:
        self.expires.pop(key, None)
        return self.data.pop(key, None) is not None

    def live_keys(self) -> list[bytes]:
        return sorted(k for k in list(self.data) if self.alive(k))

    # -- persistence helpers: one JSON-able record per key -------------------------------------
    def records(self) -> list[dict[str, Any]]:
        out = []
        for key in self.live_keys():
            value = self.data[key]
            record: dict[str, Any] = {"k": key.hex()}
            if isinstance(value, list):
                record["l"] = [item.hex() for item in value]
            else:
                record["s"] = value.hex()
            if key in self.expires:
                record["x"] = self.expires[key]
            out.append(record)
        return out

    def load(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            key = bytes.fromhex(record["k"])
            if "l" in record:
                self.data[key] = [bytes.fromhex(item) for item in record["l"]]
            else:
                self.data[key] = bytes.fromhex(record["s"])
            if "x" in record:
                self.expires[key] = int(record["x"])


def now_ms() -> int:
    return int(time.time() * 1000)


def dump_blob(value: Value) -> bytes:
    """DUMP's payload. GUESS: opaque and not Redis's RDB encoding; only equality matters here
    (the same value dumps to the same bytes), plus a checksum tail like the real one has."""
    body = json.dumps(
        {"l": [v.hex() for v in value]} if isinstance(value, list) else {"s": value.hex()},
        sort_keys=True,
    ).encode()
    return b"\x00STANDIN" + body + hashlib.sha256(body).digest()[:8]


Handler = Callable[[Client, list[bytes]], Awaitable[Any] | Any]


class Engine:
    """Commands over one key space. A stand-in adds its own (SAVE, SHUTDOWN, INFO sections)."""

    # Commands a client may send before AUTH (the rest answer NOAUTH).
    pre_auth = frozenset({b"AUTH", b"HELLO", b"QUIT"})

    def __init__(self, password: str = "", server_info: Callable[[], dict[str, str]] = dict):
        self.ks = Keyspace()
        self.password = password
        self.server_info = server_info
        self.waiters: list[Waiter] = []
        self.clients = 0
        self.extra: dict[bytes, Handler] = {}
        self.hello_fields: Callable[[], dict[str, Any]] = lambda: {"server": "redis"}
        self.noauth = "NOAUTH Authentication required."
        self.wrongpass = "WRONGPASS invalid username-password pair or user is disabled."
        self.unknown = "ERR unknown command '{}'"
        # A server-wide state that refuses commands before auth is even checked (Dragonfly
        # while it loads its snapshot): None lets the command run.
        self.state_check: Callable[[bytes], Error | None] = lambda name: None

    # -- dispatch ------------------------------------------------------------------------------
    async def execute(self, client: Client, args: list[bytes]) -> Any:
        if not args:
            return None
        name = args[0].upper()
        refused = self.state_check(name)
        if refused is not None:
            return refused
        if self.password and not client.authenticated and name not in self.pre_auth:
            return Error(self.noauth)
        handler = self.extra.get(name) or getattr(self, "cmd_" + name.decode("latin-1"), None)
        if handler is None:
            return Error(self.unknown.format(args[0].decode("utf-8", "replace")))
        try:
            result = handler(client, args[1:])
            if asyncio.iscoroutine(result):
                result = await result
            return result
        except IndexError:
            return Error(f"ERR wrong number of arguments for '{name.decode().lower()}' command")
        except ValueError:
            return NOT_INT
        except Exception as exc:  # a stand-in bug must show, not hang the client
            return Error(f"ERR stand-in failed on {name.decode(errors='replace')}: {exc!r}")

    # -- connection ----------------------------------------------------------------------------
    def cmd_PING(self, client: Client, args: list[bytes]) -> Any:
        return args[0] if args else Simple("PONG")

    def cmd_ECHO(self, client: Client, args: list[bytes]) -> Any:
        return args[0]

    def cmd_QUIT(self, client: Client, args: list[bytes]) -> Any:
        return OK

    def _check_password(self, user: bytes, password: bytes) -> bool:
        return bool(self.password) and user == b"default" and password == self.password.encode()

    def cmd_AUTH(self, client: Client, args: list[bytes]) -> Any:
        if len(args) not in (1, 2):
            raise IndexError
        if not self.password:
            return Error(
                "ERR AUTH <password> called without any password configured for the default user."
                " Are you sure your configuration is correct?"
            )
        user, password = (b"default", args[0]) if len(args) == 1 else (args[0], args[1])
        if not self._check_password(user, password):
            return Error(self.wrongpass)
        client.authenticated = True
        return OK

    def cmd_HELLO(self, client: Client, args: list[bytes]) -> Any:
        proto = client.proto
        rest = list(args)
        if rest:
            proto = int(rest.pop(0))
            if proto not in (2, 3):
                return Error("NOPROTO unsupported protocol version")
        while rest:
            option = rest.pop(0).upper()
            if option == b"AUTH" and len(rest) >= 2:
                user, password = rest.pop(0), rest.pop(0)
                if not self._check_password(user, password):
                    return Error(self.wrongpass)
                client.authenticated = True
            elif option == b"SETNAME" and rest:
                client.name = rest.pop(0).decode("utf-8", "replace")
            else:
                return SYNTAX
        if self.password and not client.authenticated:
            return Error(self.noauth)
        client.proto = proto
        fields = self.hello_fields()
        fields["proto"] = proto
        return fields

    def cmd_CLIENT(self, client: Client, args: list[bytes]) -> Any:
        sub = args[0].upper()
        if sub == b"SETNAME":
            client.name = args[1].decode("utf-8", "replace")
            return OK
        if sub == b"GETNAME":
            return client.name.encode() or None
        if sub in (b"SETINFO", b"NO-EVICT", b"NO-TOUCH"):
            return OK
        if sub == b"ID":
            return id(client) & 0xFFFFFF
        return Error(f"ERR unknown subcommand '{args[0].decode()}'")

    def cmd_SELECT(self, client: Client, args: list[bytes]) -> Any:
        # GUESS: one logical database is all the tool and its tests use.
        return OK if args[0] == b"0" else Error("ERR DB index is out of range")

    # -- strings -------------------------------------------------------------------------------
    def cmd_SET(self, client: Client, args: list[bytes]) -> Any:
        key, value, options = args[0], args[1], [a.upper() for a in args[2:]]
        expire_at: int | None = None
        nx = xx = False
        i = 0
        while i < len(options):
            option = options[i]
            if option in (b"EX", b"PX", b"EXAT", b"PXAT"):
                amount = int(args[2 + i + 1])
                if amount <= 0:
                    return Error("ERR invalid expire time in 'set' command")
                expire_at = {
                    b"EX": now_ms() + amount * 1000,
                    b"PX": now_ms() + amount,
                    b"EXAT": amount * 1000,
                    b"PXAT": amount,
                }[option]
                i += 2
            elif option in (b"NX", b"XX", b"KEEPTTL", b"GET"):
                nx, xx = nx or option == b"NX", xx or option == b"XX"
                i += 1
            else:
                return SYNTAX
        exists = self.ks.alive(key)
        if (nx and exists) or (xx and not exists):
            return None
        self.ks.data[key] = value
        self.ks.expires.pop(key, None)
        if expire_at is not None:
            self.ks.expires[key] = expire_at
        return OK

    def cmd_GET(self, client: Client, args: list[bytes]) -> Any:
        value = self.ks.get(args[0])
        if isinstance(value, list):
            return WRONGTYPE
        return value

    def cmd_DEL(self, client: Client, args: list[bytes]) -> Any:
        if not args:
            raise IndexError
        return sum(1 for key in args if self.ks.alive(key) and self.ks.delete(key))

    cmd_UNLINK = cmd_DEL

    def cmd_EXISTS(self, client: Client, args: list[bytes]) -> Any:
        if not args:
            raise IndexError
        return sum(1 for key in args if self.ks.alive(key))

    def cmd_TYPE(self, client: Client, args: list[bytes]) -> Any:
        value = self.ks.get(args[0])
        return Simple("none" if value is None else "list" if isinstance(value, list) else "string")

    def cmd_EXPIRE(self, client: Client, args: list[bytes], unit: int = 1000) -> Any:
        key, amount = args[0], int(args[1])
        if not self.ks.alive(key):
            return 0
        if amount <= 0:
            self.ks.delete(key)
            return 1
        self.ks.expires[key] = now_ms() + amount * unit
        return 1

    def cmd_PEXPIRE(self, client: Client, args: list[bytes]) -> Any:
        return self.cmd_EXPIRE(client, args, unit=1)

    def cmd_PERSIST(self, client: Client, args: list[bytes]) -> Any:
        return int(self.ks.alive(args[0]) and self.ks.expires.pop(args[0], None) is not None)

    def cmd_TTL(self, client: Client, args: list[bytes], unit: int = 1000) -> Any:
        if not self.ks.alive(args[0]):
            return -2
        deadline = self.ks.expires.get(args[0])
        return -1 if deadline is None else max(0, (deadline - now_ms() + unit - 1) // unit)

    def cmd_PTTL(self, client: Client, args: list[bytes]) -> Any:
        return self.cmd_TTL(client, args, unit=1)

    def cmd_DBSIZE(self, client: Client, args: list[bytes]) -> Any:
        return len(self.ks.live_keys())

    def cmd_KEYS(self, client: Client, args: list[bytes]) -> Any:
        pattern = args[0].decode("latin-1")
        return [k for k in self.ks.live_keys() if fnmatch.fnmatchcase(k.decode("latin-1"), pattern)]

    def cmd_SCAN(self, client: Client, args: list[bytes]) -> Any:
        """GUESS: the cursor is a position in the sorted key list (the real ones walk buckets);
        what a client relies on (a full iteration ends at cursor 0) is the same."""
        cursor, rest = int(args[0]), [a for a in args[1:]]
        pattern, count, kind = "*", 10, b""
        while rest:
            option = rest.pop(0).upper()
            if option == b"MATCH":
                pattern = rest.pop(0).decode("latin-1")
            elif option == b"COUNT":
                count = int(rest.pop(0))
            elif option == b"TYPE":
                kind = rest.pop(0).lower()
            else:
                return SYNTAX
        keys = self.ks.live_keys()
        chunk = keys[cursor : cursor + count]
        following = cursor + count if cursor + count < len(keys) else 0
        found = [
            k
            for k in chunk
            if fnmatch.fnmatchcase(k.decode("latin-1"), pattern)
            and (not kind or str(self.cmd_TYPE(client, [k])).encode() == kind)
        ]
        return [str(following).encode(), found]

    def cmd_FLUSHALL(self, client: Client, args: list[bytes]) -> Any:
        self.ks.data.clear()
        self.ks.expires.clear()
        return OK

    cmd_FLUSHDB = cmd_FLUSHALL

    def cmd_DUMP(self, client: Client, args: list[bytes]) -> Any:
        value = self.ks.get(args[0])
        return None if value is None else dump_blob(value)

    # -- lists ---------------------------------------------------------------------------------
    def _list(self, key: bytes, create: bool = False) -> list[bytes] | Error | None:
        value = self.ks.get(key)
        if value is None:
            if not create:
                return None
            fresh: list[bytes] = []
            self.ks.data[key] = fresh
            return fresh
        return value if isinstance(value, list) else WRONGTYPE

    def _push(self, args: list[bytes], head: bool) -> Any:
        if len(args) < 2:
            raise IndexError
        items = self._list(args[0], create=True)
        if isinstance(items, Error) or items is None:
            return items
        for item in args[1:]:
            if head:
                items.insert(0, item)
            else:
                items.append(item)
        length = len(items)
        self.wake(args[0])
        return length

    def cmd_LPUSH(self, client: Client, args: list[bytes]) -> Any:
        return self._push(args, head=True)

    def cmd_RPUSH(self, client: Client, args: list[bytes]) -> Any:
        return self._push(args, head=False)

    def cmd_LLEN(self, client: Client, args: list[bytes]) -> Any:
        items = self._list(args[0])
        return items if isinstance(items, Error) else len(items or [])

    def cmd_LRANGE(self, client: Client, args: list[bytes]) -> Any:
        items = self._list(args[0])
        if isinstance(items, Error):
            return items
        items = items or []
        start, stop = int(args[1]), int(args[2])
        size = len(items)
        start = max(0, start + size if start < 0 else start)
        stop = stop + size if stop < 0 else min(stop, size - 1)
        return items[start : stop + 1] if start <= stop else []

    def _pop(self, key: bytes, head: bool) -> bytes | None:
        items = self.ks.get(key)
        if not isinstance(items, list) or not items:
            return None
        item = items.pop(0 if head else -1)
        if not items:
            self.ks.delete(key)
        return item

    def cmd_LPOP(self, client: Client, args: list[bytes]) -> Any:
        items = self._list(args[0])
        return items if isinstance(items, Error) else self._pop(args[0], head=True)

    def cmd_RPOP(self, client: Client, args: list[bytes]) -> Any:
        items = self._list(args[0])
        return items if isinstance(items, Error) else self._pop(args[0], head=False)

    def _move(self, source: bytes, dest: bytes, where_from: bytes, where_to: bytes) -> Any:
        item = self._pop(source, head=where_from.upper() == b"LEFT")
        if item is None:
            return None
        target = self._list(dest, create=True)
        if isinstance(target, Error) or target is None:
            return target
        if where_to.upper() == b"LEFT":
            target.insert(0, item)
        else:
            target.append(item)
        self.wake(dest)
        return item

    def cmd_LMOVE(self, client: Client, args: list[bytes]) -> Any:
        return self._move(args[0], args[1], args[2], args[3])

    async def _block(self, keys: list[bytes], timeout: float, take: Callable[[bytes], Any]) -> Any:
        for key in keys:
            if isinstance(self._list(key), Error):
                return WRONGTYPE
            if self.ks.get(key):
                return take(key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter = Waiter(keys, take, future)
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout or None)
        except asyncio.TimeoutError:
            return None
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def wake(self, key: bytes) -> None:
        """Serve blocked clients (oldest first) while ``key`` has items."""
        for waiter in list(self.waiters):
            if key in waiter.keys and self.ks.get(key) and not waiter.future.done():
                self.waiters.remove(waiter)
                waiter.future.set_result(waiter.take(key))

    async def _bpop(self, args: list[bytes], head: bool) -> Any:
        if len(args) < 2:
            raise IndexError
        timeout = float(args[-1])
        if timeout < 0:
            return Error("ERR timeout is negative")
        got = await self._block(args[:-1], timeout, lambda k: [k, self._pop(k, head)])
        return NULL_ARRAY if got is None else got

    async def cmd_BRPOP(self, client: Client, args: list[bytes]) -> Any:
        return await self._bpop(args, head=False)

    async def cmd_BLPOP(self, client: Client, args: list[bytes]) -> Any:
        return await self._bpop(args, head=True)

    async def cmd_BLMOVE(self, client: Client, args: list[bytes]) -> Any:
        source, dest, wfrom, wto, timeout = args[0], args[1], args[2], args[3], float(args[4])
        return await self._block([source], timeout, lambda k: self._move(source, dest, wfrom, wto))

    async def cmd_BRPOPLPUSH(self, client: Client, args: list[bytes]) -> Any:
        return await self.cmd_BLMOVE(client, [args[0], args[1], b"RIGHT", b"LEFT", args[2]])

    # -- introspection -------------------------------------------------------------------------
    def info_sections(self) -> dict[str, dict[str, str]]:
        return {
            "server": self.server_info(),
            "clients": {
                "connected_clients": str(self.clients),
                "blocked_clients": str(len(self.waiters)),
            },
            "memory": {"used_memory": str(1024 * 1024 + 64 * len(self.ks.data))},
            "keyspace": {"db0": f"keys={len(self.ks.live_keys())},expires={len(self.ks.expires)}"}
            if self.ks.data
            else {},
        }

    def cmd_INFO(self, client: Client, args: list[bytes]) -> Any:
        wanted = {a.decode().lower() for a in args} - {"all", "everything", "default"}
        lines = []
        for section, fields in self.info_sections().items():
            if wanted and section not in wanted:
                continue
            lines.append(f"# {section.capitalize()}")
            lines += [f"{k}:{v}" for k, v in fields.items()]
            lines.append("")
        return Verbatim("\r\n".join(lines))

    def cmd_COMMAND(self, client: Client, args: list[bytes]) -> Any:
        return []

    # -- serving -------------------------------------------------------------------------------
    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = Client()
        self.clients += 1
        try:
            while True:
                try:
                    args = await read_command(reader)
                except (ProtocolError, ValueError, asyncio.IncompleteReadError) as exc:
                    writer.write(encode(Error(f"ERR Protocol error: {exc}"), client.proto))
                    break
                if args is None:
                    break
                reply = await self.execute(client, args)
                writer.write(encode(reply, client.proto))
                await writer.drain()
                if args and args[0].upper() == b"QUIT":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
            try:
                writer.close()
            except Exception:
                pass
