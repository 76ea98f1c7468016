"""Issue 9 item 13: config shapes Invoke itself chokes on give one line, not a traceback.

Invoke merges the project's invoke.yaml, a runtime config (``INVOKE_RUNTIME_CONFIG`` or
``-f``) and the environment after importing tasks.py; devserver/cli/cliguard.py turns its errors
into the tool's ``error:``/``hint:`` pair. The project's own invoke.yaml is shared by the
whole suite, so these cases come through a runtime config file or the user's config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_cli import assert_clean_failure, env_for, invoke


@pytest.mark.parametrize(
    ("config", "extra_env", "needle"),
    [
        ('server: "abc"\n', {}, "server must be a mapping"),
        ("api:\n  env: [1, 2]\n", {}, "api.env must be a mapping"),
        ("verify:\n  thresholds_ms: 5\n", {}, "verify.thresholds_ms must be a mapping"),
        ("server: {port: [\n", {}, "invalid YAML in"),
        ("server:\n  port: 6379\n", {"INVOKE_SERVER_PORT": "abc"}, "'abc' from INVOKE_SERVER_PORT"),
        ("verify:\n  iterations: 0\n", {}, "invalid value for verify.iterations: 0"),
    ],
)
def test_bad_config_shapes_are_one_line(
    project: Path, config: str, extra_env: dict[str, str], needle: str
) -> None:
    runtime = project / "runtime.yaml"
    runtime.write_text(config)
    env = env_for(project, free_port(), INVOKE_RUNTIME_CONFIG=str(runtime), **extra_env)
    assert_clean_failure(invoke(env, "status"), needle)


def test_a_section_as_a_string_in_the_user_config(project: Path) -> None:
    home = project / "home"
    home.mkdir()
    (home / ".invoke.yaml").write_text('server: "abc"\n')
    env = env_for(project, free_port(), HOME=str(home), USERPROFILE=str(home))  # Windows: ~
    assert_clean_failure(invoke(env, "status"), "server must be a mapping")


def test_iterations_zero_is_refused_from_yaml_as_from_the_environment(project: Path) -> None:
    env = env_for(project, free_port(), INVOKE_VERIFY_ITERATIONS="0")
    assert_clean_failure(invoke(env, "verify"), "invalid value for verify.iterations")


def test_a_misspelt_key_is_refused_before_anything_starts(project: Path) -> None:
    runtime = project / "runtime.yaml"
    runtime.write_text('server:\n  prot: "26422"\n')
    env = env_for(project, free_port(), INVOKE_RUNTIME_CONFIG=str(runtime))
    assert_clean_failure(invoke(env, "start"), "unknown key server.prot: did you mean server.port?")
    assert not (project / "data").exists()  # refused before anything was made


def test_a_misspelt_section_is_a_warning_naming_both(project: Path) -> None:
    runtime = project / "runtime.yaml"
    runtime.write_text('sever:\n  port: "26422"\nmy_own_section:\n  x: 1\n')
    env = env_for(project, free_port(), INVOKE_RUNTIME_CONFIG=str(runtime))
    result = invoke(env, "status")
    assert result.returncode == 3, result  # not running: the warning does not stop it
    assert result.stderr.count("'sever'") == 1 and "did you mean 'server'?" in result.stderr
    assert "my_own_section" not in result.stderr


def test_an_empty_variable_does_not_override_the_config(project: Path) -> None:
    env = env_for(project, free_port(), INVOKE_SERVER_PORT="")
    assert_clean_failure(invoke(env, "start"), "INVOKE_SERVER_PORT is set but empty")
    assert not (project / "data").exists()
