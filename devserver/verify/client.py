"""redis-py clients for verify, and the translation of redis-py failures into plain words.

verify must fail fast and say why. redis-py's defaults work against that: ten retries with
backoff (seconds of silence on a dead server) and 5 s socket timeouts (a server that accepts
and never answers looks like a hang). Here retries are off and timeouts are short, and every
exception that means "cannot talk to this server" becomes one VerifyError with a hint.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, SSLConnection
from redis.retry import Retry

from devserver.errors import VerifyError
from devserver.verify.target import Target

CONNECT_TIMEOUT_S = 1.0
# Long enough for a remote server over a slow link, short enough that a mute server fails
# verify within about two seconds. Every blocking command verify sends waits less than this.
READ_TIMEOUT_S = 1.5

_UNKNOWN_RE = re.compile(r"unknown command [`'\"]?([^`'\" ]+)", re.IGNORECASE)
_REFUSED = ("connection refused", "error 111 ", "error 10061 ", "actively refused")


def connection_kwargs(target: Target) -> dict[str, Any]:
    """Keyword arguments for a redis-py ConnectionPool talking to ``target``."""
    kwargs: dict[str, Any] = {}
    parsers = cast(dict[str, Callable[[str], Any]], URL_QUERY_ARGUMENT_PARSERS)
    for name, value in target.options:
        parser = parsers.get(name)
        try:
            kwargs[name] = parser(value) if parser else value
        except (TypeError, ValueError):
            raise VerifyError(
                f"malformed --url {target.display_url}: invalid value for {name!r}",
                hint="see redis-py's Redis.from_url for the query options it accepts",
            ) from None
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    kwargs.setdefault("socket_timeout", READ_TIMEOUT_S)
    kwargs.update(
        host=target.host,
        port=target.port,
        db=target.db,
        username=target.username or None,
        password=target.password or None,
        retry=Retry(NoBackoff(), 0),
    )
    if target.tls:
        kwargs["connection_class"] = SSLConnection
    return kwargs


def make_client(target: Target) -> redis.Redis:
    """A client whose pool creates connections lazily (the first command connects)."""
    return redis.Redis(connection_pool=redis.ConnectionPool(**connection_kwargs(target)))


def new_connection(client: redis.Redis) -> Any:
    """A fresh, unconnected connection like the ones ``client``'s pool makes.

    Used to time connects: going through the pool would reuse an open socket.
    """
    pool = client.connection_pool
    return pool.connection_class(**pool.connection_kwargs)


def is_fault(exc: BaseException) -> bool:
    """True when the server cannot be talked to at all (as opposed to one command failing).

    A command's error reply never gets here: checks turn those into a failed check first. So
    any redis-py error left (connection setup refused, protocol garbage) is a fault too.
    """
    return isinstance(exc, (redis.RedisError, OSError))


def command_error(command: str, exc: redis.ResponseError) -> str:
    """One line for a command the server answered with an error, naming the command."""
    text = str(exc).strip()
    match = _UNKNOWN_RE.search(text)
    if match or "unknown command" in text.lower():
        name = (match.group(1) if match else command).upper()
        return (
            f"unknown command {name}: the server does not implement it "
            "(or it is renamed or disabled)"
        )
    code = getattr(exc, "status_code", None)
    return f"{command}: {code + ' ' if code else ''}{text}"


def fault(exc: BaseException, target: Target, during: str = "") -> VerifyError:
    """Turn a connection-level failure into one line saying what happened, plus a hint."""
    where = target.address
    when = f" during {during}" if during else ""
    text = target.scrub(str(exc).strip())
    lowered = text.lower()
    start_hint = (
        "start it with `invoke start` (and check server.port / INVOKE_SERVER_PORT)"
        if target.configured
        else "check the host and port in --url, and that the server is running"
    )
    if isinstance(exc, redis.AuthenticationError):
        return _auth_fault(exc, target, text)
    if isinstance(exc, redis.BusyLoadingError):
        return VerifyError(
            f"{where} is still loading its data set{when}",
            hint="wait a few seconds and run verify again",
        )
    if _is_tls_error(exc):
        return VerifyError(
            f"TLS error with {where}{when}: {_ssl_reason(exc, text)}",
            hint="for a self-signed certificate add ?ssl_ca_certs=/path/ca.pem "
            "(or ?ssl_cert_reqs=none) to the URL; use redis:// if the "
            "server does not speak TLS",
        )
    if isinstance(exc, redis.TimeoutError):
        if "connecting" in lowered and target.tls:
            return VerifyError(
                f"TLS handshake with {where} timed out{when}",
                hint="the server probably does not speak TLS: try redis://",
            )
        if "connecting" in lowered and _is_loopback(target.host):
            # Windows retries a refused loopback connect for about 2 s instead of failing:
            # on this machine's own address a connect timeout means nothing is listening.
            return VerifyError(
                f"cannot connect to {where}: no answer within "
                f"{CONNECT_TIMEOUT_S:g} s (nothing is listening there){when}",
                hint=start_hint,
            )
        if "connecting" in lowered:
            return VerifyError(
                f"timed out connecting to {where}{when} (no answer within {CONNECT_TIMEOUT_S:g} s)",
                hint="check the host and port, and any firewall in between",
            )
        return VerifyError(
            f"{where} accepted the connection but did not answer within "
            f"{READ_TIMEOUT_S:g} s{when} (timeout)",
            hint="is it a Redis-protocol server on that port? A TLS-only server "
            "needs rediss://; a stuck server may need `invoke restart`",
        )
    if any(mark in lowered for mark in _REFUSED):
        return VerifyError(
            f"cannot connect to {where}: connection refused (nothing is listening there){when}",
            hint=start_hint,
        )
    if isinstance(exc, redis.InvalidResponse):
        return VerifyError(
            f"{where} does not speak the Redis protocol{when}: {text}",
            hint="check the port: another kind of server (HTTP, a proxy) "
            "answers there; a TLS-only server needs rediss://",
        )
    if isinstance(exc, redis.ResponseError):
        code = getattr(exc, "status_code", None) or ""
        return VerifyError(
            f"{where} refused the connection setup: {code} {text}".rstrip(),
            hint="check the database number in the URL (.../0) and that the "
            "server speaks RESP3 (HELLO), as redis-py expects",
        )
    if "closed" in lowered or "reset" in lowered:
        return VerifyError(
            f"{where} closed the connection{when}: {text}",
            hint="a TLS-only server needs rediss://; otherwise see the "
            "server's log (`invoke tail`)",
        )
    return VerifyError(f"cannot talk to {where}{when}: {text}", hint=start_hint)


def _auth_fault(exc: redis.AuthenticationError, target: Target, text: str) -> VerifyError:
    code = getattr(exc, "status_code", None) or ""
    if target.configured:
        hint = (
            "set server.password to the server's password (e.g. INVOKE_SERVER_PASSWORD), "
            "or stop and start the server so it uses the configured one"
        )
    else:
        hint = "put the credentials in the URL: redis://user:password@host:port/0"
    if code == "NOAUTH" or (not code and not target.password):
        return VerifyError(
            f"NOAUTH: {target.address} requires a password and none was sent ({text})", hint=hint
        )
    if code == "WRONGPASS" or target.password:
        who = f"user {target.username!r}" if target.username else "the password"
        return VerifyError(f"WRONGPASS: {target.address} rejected {who} ({text})", hint=hint)
    return VerifyError(f"authentication with {target.address} failed: {code} {text}", hint=hint)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "[ssl" in str(exc).lower()


def _ssl_reason(exc: BaseException, text: str) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            reason = getattr(seen, "verify_message", None) or getattr(seen, "reason", None)
            if reason:
                return str(reason).replace("_", " ").lower()
        seen = seen.__cause__ or seen.__context__
    return text
