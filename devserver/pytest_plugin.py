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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.errors import DevServerError
from devserver.library import ephemeral
from devserver.pytest_servers import (
    DevServer,
    FlavorPlan,
    ServerPool,
    external,
    fail,
    flavor_plan,
    option,
    worker_index,
)

__all__ = ["DevServer", "devserver", "devserver_factory", "redis_client", "redis_url"]

_OPTIONS = {
    "devserver_flavor": "server flavor: auto (default), dragonfly, redis or garnet; a "
    "comma-separated list, or all (every flavor installed here), runs each test once per flavor",
    "devserver_binary": "server executable to run (default: the tool's choice, as `invoke start`); "
    "with several flavors, it is used for the flavor its name says",
    "devserver_extra_args": "more arguments for the ephemeral server, shell-style, e.g. "
    "--devserver-extra-args='--enable-debug-command yes'",
    "devserver_restart": "what the supervisor does when the server crashes: no (default: a "
    "test that kills it sees it dead) or on-failure",
    "devserver_url": "use this running server instead of starting one, e.g. "
    "redis://127.0.0.1:6379/9 (each test empties its database: worker N of pytest-xdist uses "
    "the URL's database + N)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devserver", "devserver: a real Redis-compatible server")
    for name, text in _OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), dest=name, default=None, help=text)
        parser.addini(name, text, default="")


def pytest_report_header(config: pytest.Config) -> str | None:
    """Which flavors run (and, under ``all``, which were not found here)."""
    if option(config, "devserver_url"):
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
    if "devserver" not in metafunc.fixturenames or option(metafunc.config, "devserver_url"):
        return
    plan = flavor_plan(metafunc.config)
    if plan.matrix and plan.flavors:
        metafunc.parametrize(
            "devserver", plan.flavors, indirect=True, ids=list(plan.flavors), scope="session"
        )


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
    url = option(config, "devserver_url")
    if url:
        try:
            handle = external(url, worker_index())
        except DevServerError as exc:
            fail(exc)
        yield handle
        handle.close()
        return
    plan = flavor_plan(config)
    flavor = _flavor(request, plan)
    if not flavor:  # `all` with nothing installed
        fail(
            DevServerError(
                "--devserver-flavor all: no server executable found for any flavor",
                hint="run `invoke fetch` (or install redis-server) and try again",
            )
        )
    yield _devserver_pool.get(
        flavor,
        extra_args=option(config, "devserver_extra_args"),
        restart=option(config, "devserver_restart") or "no",
    )


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
            fail(failed[0])
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
