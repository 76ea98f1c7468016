"""The functional checks: plain functions that prove the server does what the application needs.

Each check takes a redis-py client (anything with the same methods, so unit tests can pass a
fake), returns a one-line detail on success and raises CheckFailed with the reason otherwise.
A command the server answers with an error (unknown command, READONLY, NOPERM) fails only
that check; losing the connection is not caught here, because nothing after it can run.

Every key a check writes comes from a ``Keys`` namespace: one random prefix per run, each key
remembered, so cleanup deletes exactly what verify wrote and never scans or touches anyone
else's data (a check that deleted the application's real queue must never happen).
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from devserver.catalog import DRAGONFLY, GARNET, REDIS
from devserver.verify.client import command_error

T = TypeVar("T")
Clock = Callable[[], float]

PREFIX = "devserver:verify:"
# Every key also expires on its own, in case verify is killed before its cleanup runs.
SAFETY_TTL_S = 600
EMPTY_BRPOP_TIMEOUT_S = 0.2
# The blocking path must really block: not much less than asked, and not absurdly longer.
EMPTY_BRPOP_WINDOW_S = (0.15, 1.0)
# For BRPOP on a list that already holds an item: never 0, which would block forever.
READY_BRPOP_TIMEOUT_S = 1

TEXT_VALUE = "héllo wörld ✓ 日本語 🚀 ação"
BINARY_VALUE = bytes(range(256)) + b"\r\n\x00$-1\r\n*3\r\n"


class CheckFailed(Exception):
    """A check ran and the server's behaviour was wrong; the message is the table's detail."""


class Keys:
    """The unique key namespace of one verify run."""

    def __init__(self, token: str | None = None) -> None:
        self.prefix = f"{PREFIX}{token or secrets.token_hex(8)}:"
        self.used: list[str] = []

    def __call__(self, name: str) -> str:
        """The full key for ``name``, remembered for cleanup before anything writes it."""
        key = self.prefix + name
        if key not in self.used:
            self.used.append(key)
        return key


def step(command: str, action: Callable[[], T]) -> T:
    """Run one command; an error reply becomes a CheckFailed that names the command."""
    try:
        return action()
    except redis.ResponseError as exc:
        raise CheckFailed(command_error(command, exc)) from exc


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def connection(client: Any, clock: Clock = time.perf_counter) -> str:
    """Open a fresh connection (timed on its own), then PING over the client."""
    pool = client.connection_pool
    conn = pool.connection_class(**pool.connection_kwargs)
    started = clock()
    conn.connect()
    connect_s = clock() - started
    conn.disconnect()
    step("PING", client.ping)  # the client's pool connects here; time the next one alone
    started = clock()
    pong = step("PING", client.ping)
    ping_s = clock() - started
    if pong is not True and pong not in (b"PONG", "PONG"):
        raise CheckFailed(f"PING answered {pong!r} instead of PONG")
    return f"connected in {ms(connect_s)}; PING -> PONG in {ms(ping_s)}"


def set_get(client: Any, keys: Keys) -> str:
    """Values must come back byte for byte: UTF-8 text, binary with CR/LF/NUL, 64 KiB random."""
    cases: list[tuple[str, bytes]] = [
        ("text", TEXT_VALUE.encode("utf-8")),
        ("binary", BINARY_VALUE),
        ("large", os.urandom(64 * 1024)),
    ]
    for name, value in cases:
        key = keys(f"string:{name}")
        step("SET", functools.partial(client.set, key, value, ex=SAFETY_TTL_S))
        got = step("GET", functools.partial(client.get, key))
        if isinstance(got, str):
            got = got.encode("utf-8")
        if got != value:
            raise CheckFailed(
                f"GET returned a different {name} value than SET stored "
                f"({_preview(got)} instead of {_preview(value)})"
            )
    return "text (UTF-8), binary (all 256 byte values) and 64 KiB values round-trip intact"


def queue(client: Any, keys: Keys) -> str:
    """The job queue's contract: LPUSH adds at the head, BRPOP takes the oldest from the tail."""
    key = keys("queue")
    jobs = [f"job-{n}-{secrets.token_hex(3)}".encode() for n in (1, 2, 3)]
    length = step("LPUSH", lambda: client.lpush(key, *jobs))
    step("EXPIRE", lambda: client.expire(key, SAFETY_TTL_S))
    if length != len(jobs):
        raise CheckFailed(f"LPUSH of {len(jobs)} items returned length {length}")
    llen = step("LLEN", lambda: client.llen(key))
    if llen != len(jobs):
        raise CheckFailed(f"LLEN is {llen} after pushing {len(jobs)} items")
    popped = step("BRPOP", lambda: client.brpop([key], timeout=READY_BRPOP_TIMEOUT_S))
    if popped is None:
        raise CheckFailed(
            f"BRPOP returned nothing within {READY_BRPOP_TIMEOUT_S} s from a "
            f"list of {len(jobs)} items"
        )
    item = _as_bytes(list(popped)[1])
    if item != jobs[0]:
        raise CheckFailed(
            f"BRPOP returned {_preview(item)}, not the oldest item {_preview(jobs[0])}"
        )
    rest = [_as_bytes(x) for x in step("LRANGE", lambda: client.lrange(key, 0, -1))]
    expected = [jobs[2], jobs[1]]
    if rest != expected:
        raise CheckFailed(
            f"LRANGE after BRPOP is {[_preview(x) for x in rest]}, expected "
            f"{[_preview(x) for x in expected]}"
        )
    return (
        f"LPUSH {len(jobs)}, LLEN {llen}, BRPOP took the oldest, LRANGE has the other "
        f"{len(rest)} in order"
    )


def queue_timeout(client: Any, keys: Keys, clock: Clock = time.perf_counter) -> str:
    """BRPOP on an empty list must block for its timeout, then return None."""
    key = keys("queue:empty")
    low, high = EMPTY_BRPOP_WINDOW_S
    started = clock()
    popped = step("BRPOP", lambda: client.brpop([key], timeout=EMPTY_BRPOP_TIMEOUT_S))
    waited = clock() - started
    if popped is not None:
        raise CheckFailed(f"BRPOP on an empty list returned {popped!r} instead of nothing")
    if not low <= waited <= high:
        raise CheckFailed(
            f"BRPOP with a {EMPTY_BRPOP_TIMEOUT_S} s timeout returned after "
            f"{waited:.3f} s (expected {low} to {high} s)"
        )
    return f"BRPOP on an empty list waited {waited:.3f} s (timeout {EMPTY_BRPOP_TIMEOUT_S} s)"


def server_identity(client: Any) -> str:
    """Name and version from INFO server, for the report (Dragonfly and Garnet say who they are)."""
    info = step("INFO", lambda: client.info("server"))
    text = describe_server(info)
    if not text:
        raise CheckFailed("INFO server reported no version")
    return text


def describe_server(info: dict[str, Any]) -> str:
    """'dragonfly df-v1.25.0 (redis 7.4.0 compatible)', 'redis 7.0.15', ... from INFO fields."""
    redis_version = str(info.get("redis_version", "") or "")
    for field, name in (
        (f"{DRAGONFLY.name}_version", DRAGONFLY.name),
        (f"{GARNET.name}_version", GARNET.name),
        ("valkey_version", "valkey"),
    ):
        if info.get(field):
            extra = f" (redis {redis_version} compatible)" if redis_version else ""
            return f"{name} {info[field]}{extra}"
    if not redis_version:
        return ""
    name = str(info.get("server_name") or REDIS.name)
    mode = info.get("redis_mode")
    return f"{name} {redis_version}" + (f" ({mode})" if mode else "")


def cleanup(client: Any, keys: Keys) -> str:
    """Delete exactly the keys this run wrote, and confirm none is left."""
    if not keys.used:
        return "no keys were written"
    step("DEL", lambda: client.delete(*keys.used))
    left = step("EXISTS", lambda: client.exists(*keys.used))
    if left:
        raise CheckFailed(f"{left} of verify's keys under {keys.prefix} are still there")
    return f"deleted verify's {len(keys.used)} keys under {keys.prefix} (none left)"


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
