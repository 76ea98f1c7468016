"""start_dev.sh, run for real by /bin/sh: step order and failures with a stub interpreter,
the venv / requirements logic with a stub python3 on PATH, and once end to end with the real
tasks against a real redis-server (no network: redis on Linux downloads nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, kill_recorded

# The POSIX script; on Windows start_dev.bat is tested instead (Wine here, the workflow there).
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="start_dev.sh is POSIX-only")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "start_dev.sh"
STEPS = ["fetch", "start", "verify"]
APP = "up --no-fetch --no-verify"  # the last step: what `invoke up` runs for the application

# A stand-in interpreter: records its arguments, fails the step named in STUB_FAIL (with 7,
# which the script must turn into its own exit 1), and ends `-m invoke up` with STUB_API_CODE.
STUB = """#!/bin/sh
echo "$*" >> "$STUB_LOG"
[ "${2:-}" = devserver.requirements_check ] && [ -n "${STUB_SATISFIED:-}" ] && echo satisfied
[ -n "${STUB_FAIL:-}" ] && [ "${3:-}" = "$STUB_FAIL" ] && exit 7
[ "${3:-}" = up ] && exit "${STUB_API_CODE:-0}"
exit 0
"""

# A stand-in system python3 for the venv path: `-m venv DIR` makes DIR/bin/python a copy of
# the stub above (marked "venv" in the log), anything else (the version check) succeeds.
BASE_STUB = """#!/bin/sh
echo "base $*" >> "$STUB_LOG"
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
    mkdir -p "$3/bin" && cp "$STUB_SRC" "$3/bin/python" && chmod +x "$3/bin/python"
fi
exit 0
"""


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _project(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SCRIPT, where / SCRIPT.name)
    shutil.copy2(ROOT / "requirements.txt", where / "requirements.txt")
    return where


def _run(script: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture()
def stub_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a stub run: DEV_PYTHON is the stub, its log in tmp_path/log.txt."""
    stub = _write_exe(tmp_path / "stub python", STUB)
    return {
        **os.environ,
        "DEV_PYTHON": str(stub),
        "STUB_LOG": str(tmp_path / "log.txt"),
        "STUB_SRC": str(stub),
    }


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "log.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_steps_run_in_order_then_the_application_and_its_code_is_returned(
    tmp_path: Path, stub_env: dict[str, str]
) -> None:
    project = _project(tmp_path / "with space" / "proj")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run(project / "start_dev.sh", elsewhere, {**stub_env, "STUB_API_CODE": "5"})
    assert result.returncode == 5, result.stderr
    assert _log(tmp_path) == [f"-m invoke {step}" for step in [*STEPS, APP]]
    assert not (project / ".venv").exists()  # DEV_PYTHON: no venv, no pip


@pytest.mark.parametrize("failing", STEPS)
def test_a_failing_step_stops_the_chain_and_names_it(
    tmp_path: Path, stub_env: dict[str, str], failing: str
) -> None:
    project = _project(tmp_path / "app")
    result = _run(project / "start_dev.sh", tmp_path, {**stub_env, "STUB_FAIL": failing})
    assert result.returncode == 1
    done = STEPS[: STEPS.index(failing) + 1]
    assert _log(tmp_path) == [f"-m invoke {step}" for step in done]
    assert f"the {failing} step failed" in result.stderr
    assert "invoke tail" in result.stderr


def _venv_env(tmp_path: Path, stub_env: dict[str, str]) -> dict[str, str]:
    """No DEV_PYTHON; a stub python3 first on PATH, sh's own tools after it."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    _write_exe(bindir / "python3", BASE_STUB)
    env = {k: v for k, v in stub_env.items() if k != "DEV_PYTHON"}
    env["PATH"] = f"{bindir}:/usr/bin:/bin"
    return env


def test_venv_is_created_requirements_installed_once_and_again_when_changed(
    tmp_path: Path, stub_env: dict[str, str]
) -> None:
    project = _project(tmp_path / "app")
    env = _venv_env(tmp_path, stub_env)
    pip = "-m pip install --disable-pip-version-check -r requirements.txt"
    invoke = [f"-m invoke {step}" for step in [*STEPS, APP]]

    first = _run(project / "start_dev.sh", tmp_path, env)
    assert first.returncode == 0, first.stderr
    log = _log(tmp_path)
    assert "base -m venv .venv" in log
    assert log[log.index("base -m venv .venv") + 1 :] == [CHECK, pip, *invoke]

    (tmp_path / "log.txt").unlink()
    second = _run(project / "start_dev.sh", tmp_path, env)
    assert second.returncode == 0
    assert _log(tmp_path) == ["-c import sys", *invoke]  # venv health check, no pip
    assert "unchanged" in second.stdout

    (tmp_path / "log.txt").unlink()
    with open(project / "requirements.txt", "a") as handle:
        handle.write("# changed\n")
    third = _run(project / "start_dev.sh", tmp_path, env)
    assert third.returncode == 0
    assert _log(tmp_path) == ["-c import sys", pip, *invoke]


CHECK = "-m devserver.requirements_check requirements.txt"


def test_pip_is_skipped_when_the_venv_already_has_every_requirement(
    tmp_path: Path, stub_env: dict[str, str]
) -> None:
    """README step 2 installs requirements-dev.txt by hand; start_dev must not redo it."""
    project = _project(tmp_path / "app")
    env = {**_venv_env(tmp_path, stub_env), "STUB_SATISFIED": "1"}
    result = _run(project / "start_dev.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    log = _log(tmp_path)
    assert CHECK in log and not any("pip install" in line for line in log)
    assert "already installed" in result.stdout
    assert (project / ".venv" / "requirements.installed.txt").read_text() == (
        project / "requirements.txt"
    ).read_text()


def test_the_end_says_how_to_run_invoke(tmp_path: Path, stub_env: dict[str, str]) -> None:
    """`invoke` is not on PATH after start_dev.sh: it says how to reach it (item 4)."""
    project = _project(tmp_path / "app")
    venv = _run(project / "start_dev.sh", tmp_path, _venv_env(tmp_path, stub_env))
    assert venv.returncode == 0, venv.stderr
    assert ". .venv/bin/activate" in venv.stdout and ".venv/bin/invoke status" in venv.stdout
    as_is = _run(project / "start_dev.sh", tmp_path, stub_env)
    assert f"{stub_env['DEV_PYTHON']} -m invoke status" in as_is.stdout


def test_a_failed_install_stops_before_any_step(tmp_path: Path, stub_env: dict[str, str]) -> None:
    project = _project(tmp_path / "app")
    env = {**_venv_env(tmp_path, stub_env), "STUB_FAIL": "install"}  # `-m pip install`: $3
    result = _run(project / "start_dev.sh", tmp_path, env)
    assert result.returncode == 1
    assert "installing the requirements failed" in result.stderr
    assert not any(line.startswith("-m invoke") for line in _log(tmp_path))
    assert not (project / ".venv" / "requirements.installed.txt").exists()


def test_a_broken_venv_is_recreated(tmp_path: Path, stub_env: dict[str, str]) -> None:
    project = _project(tmp_path / "app")
    (project / ".venv" / "bin").mkdir(parents=True)
    _write_exe(project / ".venv" / "bin" / "python", "#!/bin/sh\nexit 1\n")  # won't start
    result = _run(project / "start_dev.sh", tmp_path, _venv_env(tmp_path, stub_env))
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stdout
    assert "base -m venv .venv" in _log(tmp_path)


def test_no_python_at_all_says_where_to_get_it(tmp_path: Path) -> None:
    project = _project(tmp_path / "app")
    empty = tmp_path / "emptybin"
    empty.mkdir()
    for tool in ("dirname", "rm", "cp", "cmp"):  # what the script needs besides python
        found = shutil.which(tool)
        assert found
        (empty / tool).symlink_to(found)
    env = {"PATH": str(empty), "HOME": str(tmp_path)}
    result = _run(project / "start_dev.sh", tmp_path, env)
    assert result.returncode == 1
    assert "Python 3.10 or newer was not found" in result.stderr
    assert "python.org" in result.stderr


# --- End to end, for real ---------------------------------------------------------------


def _stop_server(project: Path, env: dict[str, str]) -> None:
    """`invoke stop` in the copy; when that fails, kill by the PIDs in data/server.json."""
    stopped = subprocess.run(
        [sys.executable, "-m", "invoke", "stop"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    state_file = project / "data" / "server.json"
    if stopped.returncode == 0 and not state_file.exists():
        return
    kill_recorded(state_file)


@pytest.fixture()
def real_project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temp copy of the project, its env (redis flavor, free port), stopped afterwards."""
    project = tmp_path / "real proj"
    project.mkdir()
    for name in ("tasks.py", "invoke.yaml", "requirements.txt", "start_dev.sh"):
        shutil.copy2(ROOT / name, project / name)
    for folder in ("devserver",):
        shutil.copytree(
            ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    # The API prints, then lets the worker (from the Procfile) print and end: `up` then stops
    # the API and passes on the worker's 0. Files, not timing, order the two.
    (project / "api_app.py").write_text(
        "import os, time\n"
        "print('API got REDIS_URL=' + os.environ['REDIS_URL'], flush=True)\n"
        "open('api-printed', 'w').close()\n"
        "time.sleep(60)\n"
    )
    (project / "worker_app.py").write_text(
        "import os, time\n"
        "deadline = time.monotonic() + 60\n"
        "while not os.path.exists('api-printed') and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('worker got REDIS_URL=' + os.environ['REDIS_URL'], flush=True)\n"
    )
    (project / "Procfile").write_text("worker: python worker_app.py\n")
    env = {
        **os.environ,
        "DEV_PYTHON": sys.executable,
        "INVOKE_SERVER_FLAVOR": "redis",
        "INVOKE_SERVER_PORT": str(free_port()),
        "INVOKE_API_COMMAND": "python api_app.py",
        "NO_COLOR": "1",
        # Lifecycle, not performance: a busy 2-core CI box must not fail on a latency p99.
        "INVOKE_VERIFY_ITERATIONS": "20",
        **{
            f"INVOKE_VERIFY_THRESHOLDS_MS_{op.upper()}": "1000"
            for op in ("connect", "ping", "set", "get", "lpush", "brpop")
        },
    }
    env.pop("INVOKE_SERVER_PASSWORD", None)
    yield project, env
    _stop_server(project, env)


def test_end_to_end_fetch_start_verify_then_ups_application(
    real_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = real_project
    result = subprocess.run(
        ["/bin/sh", str(project / "start_dev.sh")],
        cwd=project.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    port = env["INVOKE_SERVER_PORT"]
    # What `invoke up` runs: api.command and the Procfile's worker, prefixed with their names.
    assert f"api    | API got REDIS_URL=redis://127.0.0.1:{port}/0" in result.stdout, output
    assert f"worker | worker got REDIS_URL=redis://127.0.0.1:{port}/0" in result.stdout, output
    assert (project / "data" / "server.json").exists()  # the server keeps running after the app
    assert not (project / "data" / "app.json").exists()  # recorded for `down`, then cleared
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert [h.split()[2] for h in headers] == [*STEPS, "up"]


def test_the_end_says_to_cd_to_the_project_when_run_from_elsewhere(
    tmp_path: Path, stub_env: dict[str, str]
) -> None:
    """Run from another folder, `. .venv/bin/activate` (and `invoke`, which finds tasks.py
    from the current folder) would miss the project: the hint starts with a cd that works."""
    project = _project(tmp_path / "it's a proj")
    venv = _run(project / "start_dev.sh", tmp_path, _venv_env(tmp_path, stub_env))
    assert venv.returncode == 0, venv.stderr
    lines = [line for line in venv.stdout.splitlines() if "activate" in line]
    assert len(lines) == 1, venv.stdout
    cd = lines[0].split("To use invoke yourself: ", 1)[1].split(" && ", 1)[0]
    moved = subprocess.run(["/bin/sh", "-c", f"{cd} && pwd"], capture_output=True, text=True)
    assert moved.stdout.strip() == str(project), moved.stderr
    assert f"{cd} && .venv/bin/invoke status" in venv.stdout
    as_is = _run(project / "start_dev.sh", tmp_path, stub_env)
    assert f"{cd} && {stub_env['DEV_PYTHON']} -m invoke status" in as_is.stdout
    here = _run(project / "start_dev.sh", project, _venv_env(tmp_path, stub_env))
    assert "yourself: . .venv/bin/activate" in here.stdout  # from the project: no cd
