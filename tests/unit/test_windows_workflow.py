"""The GitHub Actions Windows job cannot run here: check it parses, has the shape docs/windows.md
promises, and runs exactly the commands docs/windows.md lists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from invoke.util import yaml  # the YAML parser invoke itself uses (vendored PyYAML)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "windows.yml"


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def doc_block(page: str, marker: str) -> list[str]:
    """The lines of the first fenced block after ``<!-- ci: marker -->`` in ``page``."""
    text = (ROOT / page).read_text(encoding="utf-8")
    after = text.split(f"<!-- ci: {marker} -->", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    assert block, f"no code block after the {marker} marker"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def steps() -> list[dict[str, Any]]:
    (job,) = workflow()["jobs"].values()
    return list(job["steps"])


def run_lines() -> list[str]:
    return [
        line.strip()
        for step in steps()
        if "run" in step
        for line in str(step["run"]).splitlines()
        if line.strip()
    ]


def test_windows_job_runs_on_windows_with_python_311_and_313() -> None:
    data = workflow()
    assert data["name"] == "windows"
    assert {"push", "pull_request"} <= set(data[True])  # YAML 1.1 reads the key `on` as True
    (job,) = data["jobs"].values()
    assert job["runs-on"] == "windows-latest"
    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.13"]
    assert job["defaults"]["run"]["shell"] == "cmd"
    assert job["env"]["DEV_NO_PAUSE"] == "1"  # start_dev.bat must not wait for a key
    setup = [s for s in steps() if str(s.get("uses", "")).startswith("actions/setup-python@")]
    assert setup and setup[0]["with"]["python-version"] == "${{ matrix.python-version }}"


def test_the_workflow_runs_the_documented_commands_in_order() -> None:
    documented = doc_block("docs/windows.md", "windows-commands")
    env_lines = [line for line in documented if line.startswith("set ") and "PATH" not in line]
    commands = [line for line in documented if line not in env_lines]
    assert run_lines() == commands
    (job,) = workflow()["jobs"].values()
    start_dev = next(s for s in steps() if s.get("run") == "start_dev.bat")
    given = {**job["env"], **start_dev.get("env", {})}
    for line in env_lines:  # `set NAME=value` in the page is the job's / step's env
        name, value = line[4:].split("=", 1)
        assert given[name] == value


def test_the_windows_test_command_is_the_readmes_test_command_minus_wine() -> None:
    linux = doc_block("README.md", "test-command")[0]
    windows = next(line for line in run_lines() if "pytest" in line)
    assert windows.startswith(linux + " ")  # the same suite, with only the Wine layers left out
    # A -m on the command line replaces addopts' -m 'not soak': it must say "not soak" again.
    assert windows.removeprefix(linux).strip() == '-m "not wine and not winpython and not soak"'


def test_ci_runs_the_suite_under_the_windows_interpreter_without_the_soak() -> None:
    """.ci/run runs the suite a second time under the Windows CPython (Wine), after the Linux
    run, and its -m (which replaces addopts' -m) keeps the soak out."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    linux = script.index('eval "$TEST_COMMAND"')
    command = "python -m tests.winpython.wine pytest "
    windows = next(line for line in script.splitlines() if line.startswith(command))
    assert script.index(windows) > linux
    assert '-m "not soak"' in windows


def test_stop_runs_even_when_a_step_failed_and_fetch_comes_first() -> None:
    names = [s.get("run", "") for s in steps()]
    stop = next(s for s in steps() if str(s.get("run", "")).endswith("invoke stop"))
    assert stop["if"] == "always()"
    fetch = next(i for i, r in enumerate(names) if "invoke fetch" in str(r))
    tests = next(i for i, r in enumerate(names) if "pytest" in str(r))
    assert fetch < tests < names.index("start_dev.bat")  # the suite uses the fetched Redis
