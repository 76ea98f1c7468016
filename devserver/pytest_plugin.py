"""pytest plugin: a real Redis-compatible server for a project's own tests.

Fixtures ``devserver`` (session: one ephemeral server started through the same supervisor
as ``invoke start``, or a running one named by ``--devserver-url``), ``redis_url`` (a
database that is empty when the test starts) and ``redis_client`` (redis-py on it, closed
after). Registered through the ``pytest11`` entry point, so installing the package turns it
on; ``-p no:devserver.pytest_plugin`` turns it off.

Why these choices: an ephemeral server has a free port and its data and log folders in
pytest's temporary folder, keeps nothing (no snapshot, stopped with SHUTDOWN NOSAVE), and is
stopped at the end of the session, after Ctrl+C (pytest tears session fixtures down), and
when pytest is killed outright (the supervisor watches this process: devserver/supervisor/owner.py).
Under pytest-xdist every worker starts its own server, so no test sees another's keys; with
``--devserver-url`` worker N uses the URL's database number + N instead. A missing binary
fails only the tests that use a fixture, with the same one line and hint as ``invoke start``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from devserver.catalog import DRAGONFLY, GARNET, REDIS, TLS_URL_SCHEME, URL_SCHEME
from devserver.errors import DevServerError
from devserver.library import Server, ephemeral

_OPTIONS = {
    "devserver_flavor": "server flavor: auto (default), dragonfly, redis or garnet",
    "devserver_binary": "server executable to run (default: the tool's choice, as `invoke start`)",
    "devserver_url": "use this running server instead of starting one, e.g. "
    "redis://127.0.0.1:6379/9 (each test empties its database: worker N of pytest-xdist uses "
    "the URL's database + N)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devserver", "devserver: a real Redis-compatible server")
    for name, text in _OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), dest=name, default=None, help=text)
        parser.addini(name, text, default="")


def _option(config: pytest.Config, name: str) -> str:
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    return str(value or "").strip()


def worker_index() -> int:
    """pytest-xdist's worker number (``gw3`` -> 3); 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = worker.lstrip("gw")
    return int(digits) if digits.isdigit() else 0


class DevServer:
    """What the ``devserver`` fixture gives: where the server is and what it is."""

    def __init__(self, server: Server, db: int = 0) -> None:
        self.server = server
        self.host = server.host
        self.port = server.port
        self.flavor = server.flavor
        self.version = server.version
        self.password = server.password
        self.db = db
        self.base_url = server.url.rsplit("/", 1)[0]  # scheme, auth, host and port
        self._flusher: Any = None

    @property
    def url(self) -> str:
        """The URL of this worker's database."""
        return f"{self.base_url}/{self.db}"

    def client(self, **kwargs: Any) -> Any:
        """A new redis-py client on this worker's database (the caller closes it)."""
        import redis  # redis-py only when a client is asked for

        return redis.Redis.from_url(self.url, **kwargs)

    def flush(self) -> None:
        """Empty this worker's database (one kept connection: no connect per test)."""
        if self._flusher is None:
            self._flusher = self.client()
        self._flusher.flushdb()

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None


def _fail(exc: DevServerError) -> None:
    """The line ``invoke start`` prints, as the failure of each test that needs the server."""
    text = f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else "")
    pytest.fail(text, pytrace=False)


def external(url: str, worker: int) -> DevServer:
    """A server that already runs: flavor and version from its INFO; database + worker."""
    import redis  # redis-py only when the plugin is used (it loads in every pytest run)

    parts = urlsplit(url)
    if parts.scheme not in (URL_SCHEME, TLS_URL_SCHEME) or not parts.hostname:
        raise DevServerError(
            f"invalid --devserver-url {url!r}", hint="use redis://[:password@]host:port/db"
        )
    base_db = int(parts.path.strip("/") or 0) if parts.path.strip("/").isdigit() else 0
    db = base_db + worker
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as probe:
            info = probe.info("server")
    except redis.RedisError as exc:
        raise DevServerError(
            f"cannot reach the server at --devserver-url ({exc})",
            hint="start it (`invoke start`) or check the URL",
        ) from None
    flavor, version = REDIS.name, str(info.get("redis_version", ""))
    for name in (DRAGONFLY.name, GARNET.name):
        if f"{name}_version" in info:
            flavor, version = name, str(info[f"{name}_version"])
    server = Server(
        host=parts.hostname,
        port=parts.port or 6379,
        flavor=flavor,
        version=version,
        password=unquote(parts.password or ""),
    )
    handle = DevServer(server, db)
    handle.base_url = urlunsplit((parts.scheme, parts.netloc, "", "", ""))  # its own scheme, user
    return handle


@pytest.fixture(scope="session")
def devserver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevServer]:
    """One server for the whole session (per xdist worker), stopped at its end."""
    config = request.config
    url = _option(config, "devserver_url")
    if url:
        try:
            handle = external(url, worker_index())
        except DevServerError as exc:
            _fail(exc)
        yield handle
        handle.close()
        return
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(
            ephemeral(
                flavor=_option(config, "devserver_flavor") or "auto",
                binary=_option(config, "devserver_binary") or None,
                root=config.rootpath,
                workdir=tmp_path_factory.mktemp("devserver"),
            )
        )
    except DevServerError as exc:
        stack.close()
        _fail(exc)
    with stack:
        handle = DevServer(server)
        try:
            yield handle
        finally:
            handle.close()


@pytest.fixture()
def redis_url(devserver: DevServer) -> str:
    """The URL of a database that is empty when the test starts (FLUSHDB before it)."""
    devserver.flush()
    return devserver.url


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[Any]:
    """A redis-py client on the test's empty database, closed after the test."""
    import redis  # redis-py only when the fixture is used

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()
