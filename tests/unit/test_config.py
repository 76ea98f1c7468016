"""Settings validation: every bad value is a ConfigError naming the key, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devserver.config import (
    DEFAULT_THRESHOLDS_MS,
    load_settings,
    near_miss_sections,
    refuse_empty_variables,
)
from devserver.errors import ConfigError


def test_defaults_when_config_is_empty(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path)
    assert (s.flavor, s.host, s.port, s.version) == ("auto", "127.0.0.1", 6379, "latest")
    assert s.bin_dir == tmp_path.resolve() / "bin"
    assert s.state_file == tmp_path.resolve() / "data" / "server.json"
    assert s.log_file("redis") == tmp_path.resolve() / "logs" / "redis.log"
    assert s.flavor_data_dir("dragonfly") == tmp_path.resolve() / "data" / "dragonfly"
    assert s.maxmemory == 1024**3 and s.threads == 2
    assert dict(s.verify.thresholds_ms) == DEFAULT_THRESHOLDS_MS


def test_strings_from_environment_are_converted(tmp_path: Path) -> None:
    s = load_settings(
        {
            "server": {
                "port": "6380",
                "startup_timeout": "2.5",
                "maxmemory": "512MiB",
                "extra_args": "--loglevel 'verbose mode'",
                "flavor": "Redis",
            }
        },
        tmp_path,
    )
    assert s.port == 6380 and s.startup_timeout == 2.5
    assert s.maxmemory == 512 * 1024**2
    assert s.extra_args == ("--loglevel", "verbose mode")
    assert s.flavor == "redis"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", "0"),
        ("port", "70000"),
        ("port", "abc"),
        ("port", True),
        ("flavor", "memcached"),
        ("startup_timeout", "-1"),
        ("startup_timeout", "nan"),
        ("maxmemory", "lots"),
        ("extra_args", "'unclosed"),
        ("host", "two words"),
        ("log_backups", "-2"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"server": {key: value}}, tmp_path)
    assert f"server.{key}" in info.value.message
    assert f"INVOKE_SERVER_{key.upper()}" in info.value.hint


def test_overrides_are_validated_and_named_as_options(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path)
    assert s.with_overrides(port="7000", flavor=None).port == 7000
    assert s.with_overrides() is s
    with pytest.raises(ConfigError) as info:
        s.with_overrides(port="abc")
    assert "--port" in info.value.message


def test_thresholds_merge_and_reject_unknown_operations(tmp_path: Path) -> None:
    s = load_settings({"verify": {"thresholds_ms": {"ping": "2"}, "iterations": "7"}}, tmp_path)
    assert s.verify.thresholds_ms["ping"] == 2.0
    assert s.verify.thresholds_ms["set"] == DEFAULT_THRESHOLDS_MS["set"]
    assert s.verify.iterations == 7
    with pytest.raises(ConfigError):
        load_settings({"verify": {"thresholds_ms": {"flush": "1"}}}, tmp_path)


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    s = load_settings({"server": {"data_dir": str(elsewhere)}}, tmp_path / "root")
    assert s.data_dir == elsewhere


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"server": {"prot": "26422"}}, "unknown key server.prot: did you mean server.port?"),
        ({"release": {"sha265": "x"}}, "unknown key release.sha265: did you mean release.sha256?"),
        ({"verify": {"iteration": "5"}}, "did you mean verify.iterations?"),
        ({"api": {"comand": "x"}}, "did you mean api.command?"),
        ({"app": {"process": {}}}, "did you mean app.processes?"),
    ],
)
def test_an_unknown_key_in_the_tools_sections_is_an_error(
    tmp_path: Path, config: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, tmp_path)
    assert caught.value.message.endswith(needle)
    assert "invoke.yaml" in caught.value.hint


def test_an_unknown_key_far_from_any_says_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"api": {"zzzzzz": "1"}}, tmp_path)
    assert caught.value.message == "unknown key api.zzzzzz"
    assert "command, env" in caught.value.hint


def test_the_users_own_mappings_stay_free(tmp_path: Path) -> None:
    s = load_settings(
        {"api": {"env": {"ANYTHING": "1"}}, "app": {"processes": {"web": "run"}}}, tmp_path
    )
    assert dict(s.api.env) == {"ANYTHING": "1"} and dict(s.app.processes) == {"web": "run"}


def test_near_miss_top_level_sections_are_found_and_the_rest_stay_free() -> None:
    keys = ["sever", "relase", "apps", "verfy", "server", "run", "tasks", "mycompany", "db"]
    assert near_miss_sections(keys, free=["run", "tasks"]) == [
        ("sever", "server"),
        ("relase", "release"),
        ("apps", "app"),
        ("verfy", "verify"),
    ]


def test_an_empty_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        refuse_empty_variables({"INVOKE_SERVER_PORT": ""})
    assert caught.value.message == "INVOKE_SERVER_PORT is set but empty"
    assert "unset INVOKE_SERVER_PORT" in caught.value.hint


def test_an_empty_variable_whose_default_is_empty_is_a_value() -> None:
    refuse_empty_variables(
        {"INVOKE_SERVER_PASSWORD": "", "INVOKE_SERVER_EXTRA_ARGS": "", "INVOKE_API_COMMAND": ""}
    )
