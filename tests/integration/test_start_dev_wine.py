"""start_dev.bat, run for real by Wine's cmd with a stub interpreter (DEV_PYTHON).

What this proves: the steps run in order through ``call "%PY%"``, each failing step stops the
chain with exit 1 and its name, the API runs last, and it all works from another folder and
from a path with spaces. What it cannot prove: the venv and pip branch (needs a Windows
Python) and the requirements stamp (Wine's ``fc`` is a stub that always reports "same").

Wine quirks (see shared/reference/testing-notes.md): ``cmd /c start_dev.bat`` is mistaken
for the ``start`` built-in, so the script is called by absolute ``Z:\\`` path; and Wine's
``call`` of a batch file reports 1 for any non-zero ``exit /b N``, so the API's exact exit code
cannot be checked here (only that non-zero stays non-zero); Windows keeps it.

Wine missing is a failure, not a skip: CI installs it (.ci/run), and a silently skipped test
would let the batch file rot. One prefix per session: creating it takes seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest

pytestmark = pytest.mark.wine

ROOT = Path(__file__).resolve().parents[2]
WINE = Path("/usr/lib/wine/wine64")
STEPS = ["fetch", "start", "verify"]

# The stand-in interpreter: append the arguments to STUB_LOG; fail the step named in STUB_FAIL
# (with 7: the script must answer with its own exit 1); end `-m invoke api` with STUB_API_CODE.
STUB_CMD = "\r\n".join(
    [
        "@echo off",
        '>>"%STUB_LOG%" echo %*',
        'if not "%STUB_FAIL%"=="" if "%STUB_FAIL%"=="%3" exit /b 7',
        'if "%3"=="api" exit /b %STUB_API_CODE%',
        "exit /b 0",
        "",
    ]
)


def z_path(path: Path) -> str:
    """The Windows path Wine shows for a Linux path: /tmp/x -> Z:\\tmp\\x."""
    return str(PureWindowsPath("Z:\\", *path.resolve().parts[1:]))


@pytest.fixture(scope="session")
def wine_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Wine prefix for the whole session, created once (the slow part) and warmed up."""
    if not WINE.exists():
        pytest.fail(
            f"Wine is required for these tests: {WINE} is missing "
            "(apt-get install wine64; CI installs it)"
        )
    prefix = tmp_path_factory.mktemp("wineprefix")
    env = {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all"}
    for name in ("DEV_PYTHON", "STUB_FAIL", "STUB_API_CODE", "STUB_LOG"):
        env.pop(name, None)
    # A wineserver that outlives each run (else every run starts Wine's services anew and
    # waits for them to exit: about 2 s a run), but only by 30 s, so a killed test session
    # leaves nothing behind for long. The warm-up writes to a file, not a pipe: the services it
    # starts live on and would hold a pipe open (communicate() would wait for them).
    server = WINE.parent / "wineserver"
    subprocess.run(
        [str(server), "-p30"],
        env=env,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = prefix / "warmup.txt"
    with open(out, "wb") as sink:
        subprocess.run(
            [str(WINE), "cmd", "/c", "echo", "ready"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=180,
        )
    assert "ready" in out.read_text(errors="replace"), out.read_text(errors="replace")
    yield env
    subprocess.run(
        [str(server), "-k"],
        env=env,
        check=False,
        capture_output=True,
        timeout=60,
    )


def _project(folder: Path) -> Path:
    """A copy of start_dev.bat (and requirements.txt) plus the stub, in ``folder``."""
    folder.mkdir(parents=True)
    shutil.copy2(ROOT / "start_dev.bat", folder / "start_dev.bat")
    shutil.copy2(ROOT / "requirements.txt", folder / "requirements.txt")
    (folder / "stub python.cmd").write_bytes(STUB_CMD.encode("ascii"))
    return folder


def run_bat(
    wine_env: dict[str, str], script: Path, cwd: Path, log: Path, **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    r"""Run the script under Wine's cmd; return the result and the stub's argument lines.

    By absolute path from another folder; by ``.\start_dev.bat`` when ``cwd`` is its own
    folder (cmd /c strips the quotes around a path holding parentheses, a real folder name
    such as "Program Files (x86)"; Explorer's double-click quotes twice, which Wine's argv
    quoting cannot reproduce).
    """
    env = {**wine_env, "STUB_LOG": z_path(log), **extra}
    target = ".\\" + script.name if cwd == script.parent else z_path(script)
    result = subprocess.run(
        [str(WINE), "cmd", "/c", target],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        errors="replace",
    )
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return result, [line.strip() for line in lines if line.strip()]


def test_steps_in_order_from_another_folder_with_spaces(
    wine_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(tmp_path / "my dev project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stub = z_path(project / "stub python.cmd")
    result, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        elsewhere,
        tmp_path / "log.txt",
        DEV_PYTHON=stub,
        STUB_API_CODE="0",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [f"-m invoke {step}" for step in [*STEPS, "api"]]
    assert not (project / ".venv").exists()  # DEV_PYTHON: no venv, no pip
    headers = [line for line in result.stdout.splitlines() if line.startswith("==>")]
    assert [h.split()[2] for h in headers] == [*STEPS, "api"]
    assert ".venv\\Scripts\\activate.bat" in result.stdout  # how to reach invoke afterwards


@pytest.mark.parametrize("failing", STEPS)
def test_a_failing_step_stops_before_the_api(
    wine_env: dict[str, str], tmp_path: Path, failing: str
) -> None:
    project = _project(tmp_path / "dev (x86) & co")  # parentheses and & in %~dp0 and %PY%
    result, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        project,
        tmp_path / "log.txt",
        DEV_PYTHON=f'"{z_path(project / "stub python.cmd")}"',  # quoted, as people set it
        STUB_FAIL=failing,
    )
    assert result.returncode == 1
    assert calls == [f"-m invoke {step}" for step in STEPS[: STEPS.index(failing) + 1]]
    assert f"the {failing} step failed" in result.stdout
    assert "invoke tail" in result.stdout


def test_the_api_failing_fails_the_script(wine_env: dict[str, str], tmp_path: Path) -> None:
    project = _project(tmp_path / "app")
    result, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        tmp_path,
        tmp_path / "log.txt",
        DEV_PYTHON=z_path(project / "stub python.cmd"),
        STUB_API_CODE="5",
    )
    assert calls[-1] == "-m invoke api"
    assert result.returncode != 0  # Wine's call reports 1 for any non-zero code (see top)


def test_no_python_says_where_to_get_it(wine_env: dict[str, str], tmp_path: Path) -> None:
    """No DEV_PYTHON, no .venv, neither `py` nor `python` in Wine: a clear message, exit 1."""
    project = _project(tmp_path / "app")
    result, calls = run_bat(wine_env, project / "start_dev.bat", tmp_path, tmp_path / "log.txt")
    assert result.returncode == 1
    assert "Python 3.10 or newer was not found" in result.stdout
    assert "python.org" in result.stdout
    assert calls == []
    assert not (project / ".venv").exists()
