"""More server arguments for ephemeral() and the pytest plugin (a keyword, an option, an ini
key): redis-py's own tests need DEBUG, which Redis 7 refuses unless the server was started
with ``--enable-debug-command yes``. They come after the no-persistence switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

import devserver

USES_DEBUG = """
def test_debug(redis_client):
    assert redis_client.execute_command("DEBUG", "SLEEP", "0")
    assert redis_client.config_get("save") == {"save": ""}  # still nothing saved
"""


def _debug_allowed(server: devserver.Server) -> bool:
    with server.client() as client:
        try:
            client.execute_command("DEBUG", "SLEEP", "0")
        except redis.ResponseError:
            return False
        return True


@pytest.mark.parametrize("extra", [["--enable-debug-command", "yes"], "--enable-debug-command yes"])
def test_ephemeral_passes_extra_arguments(redis_server_path: Path, extra: object) -> None:
    with devserver.ephemeral(flavor="redis", binary=redis_server_path, extra_args=extra) as server:  # type: ignore[arg-type]
        assert _debug_allowed(server)
    with devserver.ephemeral(flavor="redis", binary=redis_server_path) as server:
        assert not _debug_allowed(server)  # the default stays Redis's


def test_the_plugin_takes_extra_arguments_from_an_option(
    pytester: pytest.Pytester, redis_server_path: Path
) -> None:
    pytester.makepyfile(test_app=USES_DEBUG)
    result = pytester.runpytest(
        "-p",
        "devserver.pytest_plugin",
        "--devserver-flavor=redis",
        f"--devserver-binary={redis_server_path}",
        "--devserver-extra-args=--enable-debug-command yes",
    )
    result.assert_outcomes(passed=1)


def test_the_plugin_takes_extra_arguments_from_the_ini_file(
    pytester: pytest.Pytester, redis_server_path: Path
) -> None:
    pytester.makeini(
        f"[pytest]\ndevserver_flavor = redis\ndevserver_binary = {redis_server_path}\n"
        "devserver_extra_args = --enable-debug-command yes\n"
    )
    pytester.makepyfile(test_app=USES_DEBUG)
    result = pytester.runpytest("-p", "devserver.pytest_plugin")
    result.assert_outcomes(passed=1)
