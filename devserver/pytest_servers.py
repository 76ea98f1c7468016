"""The servers behind the pytest plugin's fixtures: the handle tests get, and which flavors run.

Kept apart from devserver/pytest_plugin.py (options, hooks, fixtures) so each reads in one
sitting: ``DevServer`` is what a fixture hands a test; ``external`` wraps a server named by
``--devserver-url``; ``FlavorPlan`` is ``--devserver-flavor`` read once per session (one
flavor, a list, or ``all``); ``ServerPool`` holds the session's servers, one per flavor,
each started on first use and all stopped by ``close``. Nothing here prints: a server that
cannot be had fails the test that asked, with ``invoke start``'s one line and hint.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from devserver.catalog import DRAGONFLY, GARNET, REDIS, TLS_URL_SCHEME, URL_SCHEME
from devserver.errors import DevServerError
from devserver.library import Server, ephemeral, settings


def option(config: pytest.Config, name: str) -> str:
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


def fail(exc: DevServerError) -> None:
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


ALL = "all"  # --devserver-flavor all: every flavor with a runnable executable here


@dataclass(frozen=True)
class FlavorPlan:
    """Which flavors the session's tests run against, from ``--devserver-flavor``.

    ``matrix`` is True when tests are parametrized (several flavors, or ``all``); a single
    flavor is today's one server and today's test ids. ``missing``: under ``all``, the
    flavors with no executable here (named in the session header, not run).
    """

    flavors: tuple[str, ...]
    matrix: bool
    everything: bool = False
    missing: tuple[str, ...] = ()
    binary: str = ""

    def binary_for(self, flavor: str) -> str | None:
        """``--devserver-binary`` for this flavor: always with one flavor, else the flavor
        its file name says (``redis-server`` is redis)."""
        if not self.binary:
            return None
        if not self.matrix:
            return self.binary
        # The fetch layer only for a matrix with --devserver-binary: the plugin loads in
        # every pytest run, so its own imports stay small.
        from devserver.fetch.binaries import flavor_of_executable

        return self.binary if flavor_of_executable(Path(self.binary)) == flavor else None


_PLAN = pytest.StashKey[FlavorPlan]()


def flavor_plan(config: pytest.Config) -> FlavorPlan:
    """The session's FlavorPlan, worked out once (xdist workers each work out the same)."""
    if _PLAN in config.stash:
        return config.stash[_PLAN]
    raw = option(config, "devserver_flavor") or "auto"
    binary = option(config, "devserver_binary")
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip())) or ("auto",)
    if names == (ALL,):
        found, missing = _installed(config.rootpath)
        plan = FlavorPlan(found, True, True, missing, binary)
    else:
        plan = FlavorPlan(names, len(names) > 1, binary=binary)
    if plan.matrix and binary and not any(plan.binary_for(f) for f in plan.flavors):
        raise pytest.UsageError(
            f"--devserver-binary {binary}: with several flavors its file name must say its "
            "flavor (redis-server, valkey-server, dragonfly..., GarnetServer)"
        )
    config.stash[_PLAN] = plan
    return plan


def _installed(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Flavors with an executable (bin/, PATH, bundled) and those without; the version
    cache goes to a temporary folder, never into the project's data/."""
    from devserver.fetch.choice import installed_flavors  # discovery only for `all` (as above)

    with tempfile.TemporaryDirectory(prefix="devserver-flavors-") as scratch:
        try:
            found, missing = installed_flavors(settings(root, data_dir=scratch))
        except DevServerError as exc:
            raise pytest.UsageError(f"--devserver-flavor all: {exc.message}") from None
    return tuple(b.flavor for b in found), tuple(missing)


class ServerPool:
    """The session's servers, one per flavor, each started on first use; ``close`` stops all.

    A flavor that failed to start fails every test that asks for it with the same line,
    without trying again per test.
    """

    def __init__(self, plan: FlavorPlan, root: Path, workdir: Callable[[str], Path]) -> None:
        self._plan = plan
        self._root = root
        self._workdir = workdir
        self._stack = contextlib.ExitStack()
        self._servers: dict[str, DevServer] = {}
        self._errors: dict[str, DevServerError] = {}

    def get(self, flavor: str, **options: Any) -> DevServer:
        """The running server of ``flavor``; ``options`` go to ``ephemeral()`` on first use."""
        if flavor in self._errors:
            fail(self._errors[flavor])
        if flavor not in self._servers:
            try:
                server = self._stack.enter_context(
                    ephemeral(
                        flavor=flavor,
                        binary=self._plan.binary_for(flavor),
                        root=self._root,
                        workdir=self._workdir(flavor),
                        **options,
                    )
                )
            except DevServerError as exc:
                self._errors[flavor] = exc
            if flavor in self._errors:  # failed outside the except: no chained traceback
                fail(self._errors[flavor])
            handle = DevServer(server)
            self._stack.callback(handle.close)
            self._servers[flavor] = handle
        return self._servers[flavor]

    def close(self) -> None:
        self._stack.close()
