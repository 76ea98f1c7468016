"""The flavor matrix's pieces without a server: how --devserver-flavor and verify --flavor
read their lists, which flavor --devserver-binary belongs to, how a failed flavor's row reads."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devserver import pytest_servers as pytest_plugin
from devserver.config import load_settings
from devserver.errors import ConfigError, StartError, VerifyError
from devserver.verify import matrix, runner


class FakeConfig:
    """What flavor_plan reads of a pytest.Config: options, ini keys, stash, rootpath."""

    def __init__(self, root: Path, **options: str) -> None:
        self.options = options
        self.stash = pytest.Stash()
        self.rootpath = root

    def getoption(self, name: str) -> Any:
        return self.options.get(name)

    def getini(self, name: str) -> str:
        return ""


def plan(tmp_path: Path, **options: str) -> pytest_plugin.FlavorPlan:
    return pytest_plugin.flavor_plan(FakeConfig(tmp_path, **options))  # type: ignore[arg-type]


def test_one_flavor_is_no_matrix_and_keeps_test_ids(tmp_path: Path) -> None:
    assert plan(tmp_path) == pytest_plugin.FlavorPlan(("auto",), matrix=False)
    assert not plan(tmp_path, devserver_flavor="redis").matrix


def test_a_list_is_a_matrix_in_the_given_order_without_repeats(tmp_path: Path) -> None:
    found = plan(tmp_path, devserver_flavor=" garnet, redis,,garnet ")
    assert found.flavors == ("garnet", "redis") and found.matrix


def test_the_binary_belongs_to_the_flavor_its_name_says(tmp_path: Path) -> None:
    found = plan(
        tmp_path, devserver_flavor="redis,dragonfly", devserver_binary="/opt/x/valkey-server"
    )
    assert found.binary_for("redis") == "/opt/x/valkey-server"
    assert found.binary_for("dragonfly") is None
    single = plan(tmp_path, devserver_flavor="redis", devserver_binary="/opt/x/my-server")
    assert single.binary_for("redis") == "/opt/x/my-server"  # one flavor: as before


def test_a_binary_of_no_listed_flavor_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="its file name must say its flavor"):
        plan(tmp_path, devserver_flavor="redis,garnet", devserver_binary="/opt/x/my-server")


def test_verify_flavor_list_is_checked(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path)
    assert matrix.flavors_asked(settings, "redis, dragonfly,redis") == (["redis", "dragonfly"], [])
    with pytest.raises(VerifyError, match="empty"):
        matrix.flavors_asked(settings, " , ")
    with pytest.raises(ConfigError, match="unknown flavor 'redsi'"):
        matrix.flavors_asked(settings, "redis,redsi")


def test_a_flavor_that_cannot_start_is_a_one_line_failed_row(tmp_path: Path) -> None:
    exe = tmp_path / "redis-server"
    exe.write_text("#!/bin/sh\n")
    settings = load_settings({"server": {"binary": str(exe)}}, tmp_path)

    @contextmanager
    def start(**kwargs: Any) -> Any:
        assert kwargs["binary"] == exe and kwargs["flavor"] == "redis"
        raise StartError("redis exited during startup\nlog line 1\nlog line 2", hint="look")
        yield

    row = matrix.run_flavor(settings, "redis", 5, {}, start=start)
    assert not row.ok and row.passed == (0, 0)
    assert row.failure == "start: redis exited during startup"  # one line in the table
    data = row.as_json()
    assert data["failed"][0]["name"] == "start"
    assert "log line 2" in data["failed"][0]["detail"]  # the whole story in --json
    assert data["verify"] is None and set(data["p50_ms"]) >= {"connect", "brpop"}


def test_a_failed_check_is_named_first() -> None:
    report = runner.Report(
        url="redis://127.0.0.1:1/0",
        checks=[
            runner.CheckResult("connection", True, "ok"),
            runner.CheckResult("queue", False, "BRPOP unknown\nmore"),
            runner.CheckResult("latency", False, "slow"),
        ],
    )
    row = matrix.FlavorRun("dragonfly", "1.0", report)
    assert row.passed == (1, 3) and row.failure == "queue: BRPOP unknown"
    assert matrix.as_json([row], ["garnet"])["ok"] is False
