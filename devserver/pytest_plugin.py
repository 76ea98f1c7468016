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

The flavor matrix: ``--devserver-flavor redis,dragonfly`` (or ``all``: every flavor with a
runnable executable here) runs each test that uses a fixture once per flavor, the flavor in
its id (``test_x[redis]``). The servers live in one pool per session (per xdist worker): each
flavor's is started when a test first needs it and all are stopped at the session's end, so
pytest's reordering of parametrized session fixtures never stops and restarts one. A single
flavor is not parametrized at all: its test ids stay as they were. ``devserver_factory``
starts extra servers inside one test and stops them at its end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from devserver.catalog import DRAGONFLY, GARNET, REDIS, TLS_URL_SCHEME, URL_SCHEME
from devserver.errors import DevServerError
from devserver.library import Server, ephemeral

_OPTIONS = {
    "devserver_flavor": "server flavor: auto (default), dragonfly, redis or garnet; a "
    "comma-separated list, or all (every flavor installed here), runs each test once per flavor",
    "devserver_binary": "server executable to run (default: the tool's choice, as `invoke start`); "
    "with several flavors, it is used for the flavor its name says",
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
        from devserver.fetch.binaries import flavor_of_executable

        return self.binary if flavor_of_executable(Path(self.binary)) == flavor else None


_PLAN = pytest.StashKey[FlavorPlan]()


def flavor_plan(config: pytest.Config) -> FlavorPlan:
    """The session's FlavorPlan, worked out once (xdist workers each work out the same)."""
    if _PLAN in config.stash:
        return config.stash[_PLAN]
    raw = _option(config, "devserver_flavor") or "auto"
    binary = _option(config, "devserver_binary")
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
    from devserver.fetch.choice import installed_flavors
    from devserver.library import settings

    with tempfile.TemporaryDirectory(prefix="devserver-flavors-") as scratch:
        try:
            found, missing = installed_flavors(settings(root, data_dir=scratch))
        except DevServerError as exc:
            raise pytest.UsageError(f"--devserver-flavor all: {exc.message}") from None
    return tuple(b.flavor for b in found), tuple(missing)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Which flavors run (and, under ``all``, which were not found here)."""
    if _option(config, "devserver_url"):
        return None
    plan = flavor_plan(config)
    if not plan.matrix:
        return None
    line = f"devserver flavors: {', '.join(plan.flavors) or 'none found'}"
    if plan.everything:
        line += f"; not found here: {', '.join(plan.missing) or 'none'}"
    return line


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test that needs a server (``devserver`` in its fixture closure) once per flavor."""
    if "devserver" not in metafunc.fixturenames or _option(metafunc.config, "devserver_url"):
        return
    plan = flavor_plan(metafunc.config)
    if plan.matrix and plan.flavors:
        metafunc.parametrize(
            "devserver", plan.flavors, indirect=True, ids=list(plan.flavors), scope="session"
        )


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
            _fail(self._errors[flavor])
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
                _fail(self._errors[flavor])
            handle = DevServer(server)
            self._stack.callback(handle.close)
            self._servers[flavor] = handle
        return self._servers[flavor]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="session")
def _devserver_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    config = request.config
    pool = ServerPool(
        flavor_plan(config),
        config.rootpath,
        lambda flavor: tmp_path_factory.mktemp(f"devserver-{flavor}"),
    )
    try:
        yield pool
    finally:
        pool.close()


def _flavor(request: pytest.FixtureRequest, plan: FlavorPlan) -> str:
    """The test's flavor: its matrix parameter, else the one configured."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "devserver" in callspec.params:
        return str(callspec.params["devserver"])
    return str(getattr(request, "param", "") or (plan.flavors[0] if plan.flavors else ""))


@pytest.fixture(scope="session")
def devserver(request: pytest.FixtureRequest, _devserver_pool: ServerPool) -> Iterator[DevServer]:
    """The session's server of this test's flavor (per xdist worker), stopped at the end."""
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
    plan = flavor_plan(config)
    flavor = _flavor(request, plan)
    if not flavor:  # `all` with nothing installed
        _fail(
            DevServerError(
                "--devserver-flavor all: no server executable found for any flavor",
                hint="run `invoke fetch` (or install redis-server) and try again",
            )
        )
    yield _devserver_pool.get(flavor)


@pytest.fixture()
def devserver_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., DevServer]]:
    """Start extra ephemeral servers inside one test; all are stopped when the test ends.

    ``devserver_factory(flavor=None, password="", binary=None, **options)``: ``flavor``
    defaults to the test's own (its matrix flavor, else the configured one); ``options`` go
    to ``devserver.ephemeral()``. Each server has its own free port and folders.
    """
    plan = flavor_plan(request.config)
    default = _flavor(request, plan) or "auto"
    stack = contextlib.ExitStack()
    started = 0

    def start(
        flavor: str | None = None, password: str = "", binary: str | None = None, **options: Any
    ) -> DevServer:
        nonlocal started
        name = flavor or default
        started += 1
        failed: list[DevServerError] = []
        try:
            server = stack.enter_context(
                ephemeral(
                    flavor=name,
                    binary=binary or plan.binary_for(name),
                    root=request.config.rootpath,
                    password=password,
                    workdir=tmp_path / f"devserver-{started}-{name}",
                    **options,
                )
            )
        except DevServerError as exc:
            failed.append(exc)
        if failed:
            _fail(failed[0])
        handle = DevServer(server)
        stack.callback(handle.close)
        return handle

    with stack:
        yield start


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
