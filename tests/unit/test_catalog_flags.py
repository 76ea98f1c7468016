"""Every flag a launch passes is one the server defines, checked against its source as data.

tests/standins/*_flags.txt list the flag names each server defines, taken from its source at
the commit named in the file's header (tests/standins/extract_flags.py regenerates them):
Dragonfly's ABSL_FLAGs plus the helio/absl flags it links, Garnet's [Option]s, Redis's config
table. A wrong or renamed flag fails here instead of on a user's first start (Dragonfly and
Garnet reject unknown flags; Garnet even exits 0 while doing so).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from devserver.catalog import DRAGONFLY, FLAVORS, GARNET, REDIS, Flavor, build_launch
from devserver.config import load_settings

STANDINS = Path(__file__).resolve().parent.parent / "standins"


def source_flags(flavor: str) -> set[str]:
    lines = (STANDINS / f"{flavor}_flags.txt").read_text(encoding="utf-8").splitlines()
    return {line.split()[0] for line in lines if line and not line.startswith("#")}


def unknown_flags(name: str, argv: tuple[str, ...]) -> set[str]:
    """Flag names in a launch's argv (``--name=value``, ``--name value``; absl's ``--noname``
    is a boolean's false form) that the server's source does not define."""
    known = source_flags(name)
    unknown = set()
    for arg in argv[1:]:
        if not arg.startswith("--"):
            continue  # a value, or redis-server's "-" (its config from stdin)
        flag = arg[2:].split("=", 1)[0]
        negated = name == "dragonfly" and flag.startswith("no") and flag[2:] in known
        if flag not in known and not negated:
            unknown.add(flag)
    return unknown


def launches(flavor: Flavor, tmp_path: Path) -> list[tuple[str, ...]]:
    """The launch argv for every combination of the settings that change it."""
    out = []
    for password, threads in itertools.product(["", "pw"], ["1", "4"]):
        settings = load_settings(
            {"server": {"password": password, "threads": threads, "maxmemory": "2gb"}}, tmp_path
        )
        out.append(build_launch(flavor, settings, "/bin/server", {}).argv)
    return out


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_launch_passes_only_flags_the_server_defines(name: str, tmp_path: Path) -> None:
    for argv in launches(FLAVORS[name], tmp_path):
        assert any(a.startswith("--") for a in argv), argv
        unknown = unknown_flags(name, argv)
        assert not unknown, f"{name} would start with flags its source does not define: {unknown}"


def test_the_check_catches_a_wrong_flag() -> None:
    """A flag the server does not define is caught (the issue's examples: --cli, --log-level)."""
    argv = (
        "dragonfly",
        "--cli",
        "--log-level=info",
        "--logtostderr",
        "--nologtostderr",
        "--port",
        "1",
    )
    assert unknown_flags("dragonfly", argv) == {"cli", "log-level"}
    assert unknown_flags("garnet", ("g", "--requirepass", "x", "--config-import-path", "f")) == {
        "requirepass"
    }
    assert unknown_flags("redis", ("r", "--appendonly", "yes", "--logtostderr")) == {"logtostderr"}


def test_dragonfly_stop_asks_for_the_save_explicitly() -> None:
    # server_family.cc ShutdownCmd accepts SAVE|SAFE, NOSAVE, NOW, FORCE (SAVE since <= v1.10).
    assert DRAGONFLY.stop_plan(save=True) == ([["SHUTDOWN", "SAVE"]], False)
    assert DRAGONFLY.stop_plan(save=False) == ([["SHUTDOWN", "NOSAVE"]], False)
    assert REDIS.stop_plan(save=True) == ([["SHUTDOWN", "SAVE"]], False)
    assert GARNET.stop_plan(save=True) == ([["SAVE"]], True)  # Garnet has no SHUTDOWN
