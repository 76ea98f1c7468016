"""The library API for scripts: devserver.ephemeral() and start / stop / status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

import devserver
from devserver.errors import DevServerError, StartError
from tests.conftest import ROOT, free_port, kill_recorded


def test_ephemeral_runs_a_throwaway_server_and_removes_it(redis_server_path: Path) -> None:
    with devserver.ephemeral(flavor="redis", binary=redis_server_path) as server:
        assert server.flavor == "redis" and server.version
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        data = Path(server.data_dir)
        assert data.is_dir()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            assert client.config_get("appendonly") == {"appendonly": "no"}  # keeps nothing
            assert client.config_get("save") == {"save": ""}
        pid = server.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not data.exists()  # its temporary folder is gone too


def test_ephemeral_takes_a_given_port_and_says_when_no_binary(
    redis_server_path: Path, tmp_path: Path
) -> None:
    port = free_port()
    with devserver.ephemeral(flavor="redis", binary=redis_server_path, port=port) as server:
        assert server.port == port
    missing = devserver.ephemeral(flavor="redis", binary=tmp_path / "missing")
    with pytest.raises(DevServerError) as caught, missing:
        pass
    assert caught.value.hint  # the same message and hint `invoke start` shows


def test_start_status_stop_on_a_project(redis_server_path: Path, project: Path) -> None:
    config = devserver.settings(
        project, flavor="redis", binary=str(redis_server_path), port=free_port()
    )
    try:
        server = devserver.start(config)
        assert devserver.status(config)["running"] is True
        assert (project / "data" / "server.json").exists()  # relative to the given root
        assert server.port == config.port
        assert devserver.stop(config) is True
        assert devserver.status(config)["running"] is False
        assert devserver.stop(config) is False
    finally:
        kill_recorded(project / "data" / "server.json")


def test_start_refuses_a_running_server_on_another_port(
    redis_server_path: Path, project: Path
) -> None:
    """devserver.start(settings(port=B)) while the project's server runs on A must not hand
    back the server on A (the caller would connect to B), as `invoke start --port B` refuses;
    the same settings again get the running server."""
    first = devserver.settings(
        project, flavor="redis", binary=str(redis_server_path), port=free_port()
    )
    other = devserver.settings(
        project, flavor="redis", binary=str(redis_server_path), port=free_port()
    )
    try:
        running = devserver.start(first)
        with pytest.raises(StartError) as caught:
            devserver.start(other)
        assert f"it runs on {first.port}" in caught.value.message
        assert caught.value.hint
        assert devserver.start(first).pid == running.pid  # the same one: fine
        assert devserver.stop(first) is True
    finally:
        kill_recorded(project / "data" / "server.json")


def test_a_library_server_gives_a_client_like_the_fixture(redis_server_path: Path) -> None:
    with (
        devserver.ephemeral(flavor="redis", binary=redis_server_path) as server,
        server.client(decode_responses=True) as client,
    ):
        client.set("k", "v")
        assert client.get("k") == "v"


def test_the_library_prints_nothing(redis_server_path: Path, tmp_path: Path) -> None:
    code = (
        "import devserver, sys\n"
        f"with devserver.ephemeral(flavor='redis', binary={str(redis_server_path)!r}) as s:\n"
        "    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_console_script_reads_the_current_folders_invoke_yaml(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "invoke.yaml").write_text(f'server:\n  flavor: redis\n  port: "{port}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "devserver.cli.program", "status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr  # not running
    assert f'"port": {port}' in result.stdout
    assert str(tmp_path / "data" / "server.json") in result.stdout  # paths from the project


@pytest.mark.parametrize("runner", ["invoke", "devserver"])
def test_invoke_variables_apply_in_a_project_without_invoke_yaml(
    tmp_path: Path, runner: str
) -> None:
    """Invoke applies INVOKE_* only to keys its config has: the collection brings them all."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.update(INVOKE_SERVER_PORT=str(port), INVOKE_SERVER_FLAVOR="redis")
    if runner == "invoke":
        (tmp_path / "tasks.py").write_text("from devserver.tasks import ns  # noqa: F401\n")
        argv = [sys.executable, "-m", "invoke", "status", "--json"]
    else:
        argv = [sys.executable, "-m", "devserver.cli.program", "status", "--json"]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert f'"port": {port}' in result.stdout and '"flavor": "redis"' in result.stdout
    assert str(tmp_path / "data" / "server.json") in result.stdout


def test_console_script_finds_the_project_upward_as_invoke_does(tmp_path: Path) -> None:
    port = free_port()
    project = tmp_path / "app"
    (project / "src").mkdir(parents=True)
    (project / "invoke.yaml").write_text(f'server:\n  flavor: redis\n  port: "{port}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "devserver.cli.program", "status", "--json"],
        cwd=project / "src",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert f'"port": {port}' in result.stdout
    assert str(project / "data" / "server.json") in result.stdout
    assert result.stderr == ""  # a project was found: nothing to say
    assert not (project / "src" / "data").exists()


def test_console_script_outside_any_project_says_where_its_files_go(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "devserver.cli.program", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert f"using {tmp_path} as the project (bin/, data/, logs/ go there)" in result.stderr


@pytest.mark.parametrize("no_fork", ["", "1"], ids=["forked", "spawned"])
def test_an_ephemeral_stop_leaves_no_unclosed_file(redis_server_path: Path, no_fork: str) -> None:
    """`python -W always` showed `unclosed file <_io.BufferedReader name=6>` at every stop:
    the supervisor's report pipe, opened at its start."""
    code = (
        "import devserver\n"
        f"with devserver.ephemeral(flavor='redis', binary={str(redis_server_path)!r}) as s:\n"
        "    pass\n"
        "import gc; gc.collect()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEVSERVER_NO_FORK": no_fork}
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "unclosed file" not in result.stderr, result.stderr
