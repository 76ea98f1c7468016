"""devserver/cli/cliguard.py against the real exceptions Invoke raises (no subprocess)."""

from __future__ import annotations

import pytest
from invoke.config import Config
from invoke.env import Environment

from devserver.cli import cliguard


def _raised(
    monkeypatch: pytest.MonkeyPatch, defaults: dict[str, object], var: str
) -> BaseException:
    monkeypatch.setenv(var, "abc")
    env = Environment(config=Config(defaults=defaults), prefix="INVOKE_")
    with pytest.raises(Exception) as info:
        env.load()
    return info.value


def test_a_list_key_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = _raised(monkeypatch, {"api": {"env": [1, 2]}}, "INVOKE_API_ENV")
    described = cliguard.describe(exc, exc.__traceback__)
    assert described is not None and "INVOKE_API_ENV cannot set api.env" in described[0]


def test_an_unquoted_number_with_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = _raised(monkeypatch, {"server": {"port": 6379}}, "INVOKE_SERVER_PORT")
    described = cliguard.describe(exc, exc.__traceback__)
    assert described is not None
    assert "invalid value for server.port: 'abc' from INVOKE_SERVER_PORT" in described[0]


def test_other_errors_are_left_alone() -> None:
    try:
        raise ValueError("mine")
    except ValueError as exc:
        assert cliguard.describe(exc, exc.__traceback__) is None
