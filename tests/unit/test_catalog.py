"""argv per flavor: the right flags, and never the password on a command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from devserver.catalog import DRAGONFLY, FLAVORS, GARNET, REDIS, build_launch, get_flavor
from devserver.config import load_settings
from devserver.errors import ConfigError

SECRET = 's3cr3t pass"word'


def settings(tmp_path: Path, **server: object):  # type: ignore[no-untyped-def]
    base = {"port": "7001", "password": SECRET, "extra_args": "--x 1"}
    base.update(server)  # type: ignore[arg-type]
    return load_settings({"server": base}, tmp_path)


def test_dragonfly_argv_and_password_in_child_env_only(tmp_path: Path) -> None:
    s = settings(tmp_path, threads="3", maxmemory="1gb")
    env = {"PATH": "/bin", "DFLY_stray": "1", "dfly_other": "2", "INVOKE_SERVER_PASSWORD": "x"}
    launch = build_launch(DRAGONFLY, s, "/b/dragonfly", env)
    assert launch.argv[0] == "/b/dragonfly"
    assert "--bind=127.0.0.1" in launch.argv and "--port=7001" in launch.argv
    assert "--dir=." in launch.argv  # the supervisor runs it in data/dragonfly
    assert "--dbfilename=dump" in launch.argv  # no extension: the default format rejects one
    assert "--logtostderr" in launch.argv and "--version_check=false" in launch.argv
    assert "--proactor_threads=3" in launch.argv
    assert f"--maxmemory={1024**3}" in launch.argv
    assert launch.argv[-2:] == ("--x", "1")
    assert launch.env["DFLY_requirepass"] == SECRET
    assert "DFLY_stray" not in launch.env and "dfly_other" not in launch.env  # stray ones are fatal
    assert "INVOKE_SERVER_PASSWORD" not in launch.env
    assert launch.env["PATH"] == "/bin" and env["DFLY_stray"] == "1"  # caller's env untouched
    assert not any(SECRET in a for a in launch.argv)


def test_dragonfly_memory_floor_per_thread(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="256 MiB per thread"):
        build_launch(DRAGONFLY, settings(tmp_path, threads="4", maxmemory="512mb"), "d", {})


def test_redis_password_goes_to_stdin_config(tmp_path: Path) -> None:
    launch = build_launch(REDIS, settings(tmp_path), "/usr/bin/redis-server", {})
    assert launch.argv[:2] == ("/usr/bin/redis-server", "-")
    argv = list(launch.argv)
    for flag, value in [
        ("--port", "7001"),
        ("--bind", "127.0.0.1"),
        ("--protected-mode", "yes"),
        ("--appendonly", "yes"),
        ("--appendfsync", "everysec"),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert not any(SECRET in a for a in launch.argv)
    assert launch.stdin_config == 'requirepass "s3cr3t pass\\"word"\n'


def test_redis_without_password_reads_no_stdin(tmp_path: Path) -> None:
    launch = build_launch(REDIS, settings(tmp_path, password=""), "redis-server", {})
    assert "-" not in launch.argv and launch.stdin_config == ""


def test_garnet_password_goes_to_a_private_config_file(tmp_path: Path) -> None:
    launch = build_launch(GARNET, settings(tmp_path), "GarnetServer", {})
    assert launch.secret_file is not None and SECRET.replace('"', '\\"') in launch.secret_file[1]
    assert "--config-import-path" in launch.argv
    assert not any(SECRET in a for a in launch.argv)
    assert GARNET.stop_method == "save_terminate"


def test_catalog_is_data() -> None:
    assert set(FLAVORS) == {"dragonfly", "redis", "garnet"}
    assert DRAGONFLY.assets[("linux", "x86_64")].pattern == "dragonfly-x86_64.tar.gz"
    assert DRAGONFLY.assets[("windows", "x86_64")].via_wsl
    assert "macos" not in {os_ for os_, _ in DRAGONFLY.assets}
    with pytest.raises(ConfigError, match="unknown flavor"):
        get_flavor("memcached")
