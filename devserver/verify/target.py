"""Which server verify talks to: the configured one, or any ``redis://``/``rediss://`` URL.

Kept free of redis-py so it is cheap to import and easy to test: it validates the URL itself
(redis-py's own parser silently ignores a bad db path and raises bare ValueErrors), and it
produces the *display* URL, which never contains the password, because that URL ends up in
the table, in ``--json`` output and in error messages that people paste into chat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from devserver.catalog import TLS_URL_SCHEME, URL_SCHEME
from devserver.config import Settings
from devserver.errors import StateError, VerifyError
from devserver.server.resp import connect_host
from devserver.server.state import current_state

SCHEMES = (URL_SCHEME, TLS_URL_SCHEME)
MASK = "***"
URL_HINT = "use redis://[user:password@]host:port/db, or rediss://... for TLS"
_SECRET_QUERY_KEYS = ("password", "ssl_password")


@dataclass(frozen=True)
class Target:
    """Connection facts for one server; ``password`` is excluded from repr on purpose."""

    host: str
    port: int
    db: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    # Extra redis-py options from the URL's query string (e.g. ssl_cert_reqs=none), verbatim.
    options: tuple[tuple[str, str], ...] = ()
    # True for the server from invoke.yaml: its hints say `invoke start`, not "check --url".
    configured: bool = False

    @property
    def address(self) -> str:
        """host:port as people write it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def display_url(self) -> str:
        """The URL with any password replaced by ``***``: safe to print and log."""
        scheme = TLS_URL_SCHEME if self.tls else URL_SCHEME
        auth = ""
        if self.username or self.password:
            auth = quote(self.username, safe="")
            auth += f":{MASK}" if self.password else ""
            auth += "@"
        query = ""
        if self.options:
            shown = [(k, MASK if k in _SECRET_QUERY_KEYS else v) for k, v in self.options]
            query = "?" + urlencode(shown, safe="*/")
        return f"{scheme}://{auth}{self.address}/{self.db}{query}"

    def secrets(self) -> tuple[str, ...]:
        """Every secret this target carries, so messages can be scrubbed of them."""
        values = [self.password] + [v for k, v in self.options if k in _SECRET_QUERY_KEYS]
        return tuple(v for v in values if v)

    def scrub(self, text: str) -> str:
        """Replace any secret (plain or percent-encoded) in ``text`` with ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, MASK).replace(quote(secret, safe=""), MASK)
        return text


def from_settings(settings: Settings, asked_port: int | None = None) -> Target:
    """The project's own server, reached on loopback when it binds a wildcard or localhost.

    When our server runs, its recorded address wins over the configuration: after
    ``invoke start --port 6380`` the next ``invoke verify`` must check that server. A port
    the person asked for explicitly (``INVOKE_SERVER_PORT``, ``asked_port``) is honoured
    instead; ``port_note`` says so, so the difference is never silent.
    """
    host, port = settings.host, settings.port
    running = running_address(settings)
    if running is not None and asked_port is None:
        host, port = running
    return Target(
        host=connect_host(host),
        port=asked_port if asked_port is not None else port,
        password=settings.password,
        configured=True,
    )


def running_address(settings: Settings) -> tuple[str, int] | None:
    """(host, port) of this project's running server, or None (not running, stale state)."""
    try:
        state, proc = current_state(settings)
    except StateError:
        return None
    if state is None or proc is None:
        return None
    return state.host, state.port


def port_note(settings: Settings, asked_port: int | None, how: str) -> str:
    """A line naming a difference between the asked/configured port and the running one."""
    running = running_address(settings)
    if running is None:
        return ""
    wanted = asked_port if asked_port is not None else settings.port
    if running[1] == wanted:
        return ""
    if asked_port is not None:
        return (
            f"the running server is on {running[1]}; you asked for {asked_port} ({how}): "
            f"checking {asked_port}"
        )
    return (
        f"the running server is on {running[1]}; server.port says {settings.port}: "
        f"checking the running server"
    )


def from_url(url: str) -> Target:
    """Parse and validate ``--url``; any mistake is a VerifyError naming it (never the password).

    The URL's own credentials are used as given. The configured ``server.password`` is not
    added to a URL that has none: it belongs to the local server and must not be sent to
    whatever host a URL names.
    """
    text = url.strip()
    if not text:
        raise VerifyError("malformed --url: it is empty", hint=URL_HINT)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise VerifyError(f"malformed --url {_masked(text)}: {exc}", hint=URL_HINT) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise VerifyError(
            f"malformed --url {_masked(text)}: the scheme must be redis:// or rediss:// "
            f"(got {shown})",
            hint=URL_HINT,
        )
    host = parts.hostname or ""
    if not host:
        raise VerifyError(f"malformed --url {_masked(text)}: no host", hint=URL_HINT)
    if port == 0:
        raise VerifyError(f"malformed --url {_masked(text)}: port 0", hint=URL_HINT)
    options = tuple(parse_qsl(parts.query, keep_blank_values=True))
    db = _db(parts.path, dict(options).get("db"), text)
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    # redis-py also accepts credentials in the query string; carry them like URL ones.
    extra = [(k, v) for k, v in options if k not in ("db", "username", "password")]
    username = username or dict(options).get("username", "")
    password = password or dict(options).get("password", "")
    return Target(
        host=host,
        port=port or 6379,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss",
        options=tuple(extra),
    )


def _db(path: str, query_db: str | None, url: str) -> int:
    raw = query_db if query_db is not None else path.strip("/")
    if raw == "":
        return 0
    if not raw.isdigit():
        raise VerifyError(
            f"malformed --url {_masked(url)}: the database must be a number, got {raw!r}",
            hint=URL_HINT,
        )
    return int(raw)


def _masked(url: str) -> str:
    """Best-effort masking of a URL we could not fully parse (for error messages only)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else MASK
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:{MASK}@{hostpart}"
    query_cut = rest.find("?")
    if query_cut >= 0 and "password" in rest[query_cut:]:
        rest = rest[:query_cut] + "?" + MASK
    return f"{scheme}://{rest}"
