"""start_dev.bat, run for real by Wine's cmd with stub interpreters.

What this proves: the steps run in order through ``call "%PY%"``, each failing step stops the
chain with exit 1 and its name, the API runs last, and it all works from another folder and
from a path with spaces; every exit pauses unless DEV_NO_PAUSE is set; with an existing .venv
(a stub ``python.exe`` built with mingw) the server is stopped before pip runs, and a pip
failure is reported. What it cannot prove: creating the venv (needs a Windows Python; the
winpython layer and the Windows workflow do it) and the requirements stamp comparison (Wine's
``fc`` is a stub that always reports "same").

Wine quirks (tests/winpython/README.md has more): ``cmd /c start_dev.bat`` is mistaken
for the ``start`` built-in, so the script is called by absolute ``Z:\\`` path; and Wine's
``call`` reports 1 for any non-zero exit code, of a batch file or an .exe, so neither the
API's exact exit code nor a negative NTSTATUS code can reach the script through ``call``
here (Windows keeps both): the ``if not "%errorlevel%"=="0"`` idiom is checked on its own,
with an .exe run without ``call``.

Wine missing is a failure, not a skip: CI installs it (.ci/run), and a silently skipped test
would let the batch file rot. One prefix per session: creating it takes seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest

pytestmark = pytest.mark.wine

ROOT = Path(__file__).resolve().parents[2]
WINE = Path("/usr/lib/wine/wine64")
STEPS = ["fetch", "start", "verify"]
APP = "up --no-fetch --no-verify"  # the last step: what `invoke up` runs for the application

# The stand-in interpreter: append the arguments to STUB_LOG; fail the step named in STUB_FAIL
# (with 7: the script must answer with its own exit 1); end `-m invoke up` with STUB_API_CODE.
STUB_CMD = "\r\n".join(
    [
        "@echo off",
        '>>"%STUB_LOG%" echo %*',
        'if not "%STUB_FAIL%"=="" if "%STUB_FAIL%"=="%3" exit /b 7',
        'if "%3"=="up" exit /b %STUB_API_CODE%',
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
    for name in ("DEV_PYTHON", "STUB_FAIL", "STUB_API_CODE", "STUB_LOG", "STUB_CODE"):
        env.pop(name, None)
    env["DEV_NO_PAUSE"] = "1"  # as CI sets it; the pause tests take it away
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
    wine_env: dict[str, str],
    script: Path,
    cwd: Path,
    log: Path,
    pause: bool = False,
    **extra: str,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    r"""Run the script under Wine's cmd; return the result and the stub's argument lines.

    By absolute path from another folder; by ``.\start_dev.bat`` when ``cwd`` is its own
    folder (cmd /c strips the quotes around a path holding parentheses, a real folder name
    such as "Program Files (x86)"; Explorer's double-click quotes twice, which Wine's argv
    quoting cannot reproduce). ``pause``: without DEV_NO_PAUSE, as a double-click runs it
    (a key press is fed on stdin; Wine's ``pause`` also returns at end of input).
    """
    env = {**wine_env, "STUB_LOG": z_path(log), **extra}
    if pause:
        env.pop("DEV_NO_PAUSE", None)
    target = ".\\" + script.name if cwd == script.parent else z_path(script)
    result = subprocess.run(
        [str(WINE), "cmd", "/c", target],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        input="\r\n",
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
    assert calls == [f"-m invoke {step}" for step in [*STEPS, APP]]
    assert not (project / ".venv").exists()  # DEV_PYTHON: no venv, no pip
    headers = [line for line in result.stdout.splitlines() if line.startswith("==>")]
    assert [h.split()[2] for h in headers] == [*STEPS, "up"]
    assert ".venv\\Scripts\\activate.bat" in result.stdout  # how to reach invoke afterwards


@pytest.mark.parametrize("failing", STEPS)
def test_a_failing_step_stops_before_the_application(
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


def test_the_application_failing_fails_the_script(wine_env: dict[str, str], tmp_path: Path) -> None:
    project = _project(tmp_path / "app")
    result, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        tmp_path,
        tmp_path / "log.txt",
        DEV_PYTHON=z_path(project / "stub python.cmd"),
        STUB_API_CODE="5",
    )
    assert calls[-1] == f"-m invoke {APP}"
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


# ---- the pause, DEV_NO_PAUSE, errorlevel tests, stop before pip ---------------------------

PAUSE_PROMPT = "Press any key"  # Windows' and Wine's pause print this

# A stand-in python.exe (a real Windows executable, so .venv\Scripts\python.exe runs):
# appends its arguments to STUB_LOG; exits with STUB_CODE (default 7) when one of its
# arguments equals STUB_FAIL.
STUB_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    const char *log = getenv("STUB_LOG"), *fail = getenv("STUB_FAIL");
    const char *code = getenv("STUB_CODE");
    int failing = 0;
    FILE *f = log ? fopen(log, "a") : NULL;
    for (int i = 1; i < argc; i++) {
        if (f) fprintf(f, i > 1 ? " %s" : "%s", argv[i]);
        if (fail && *fail && strcmp(argv[i], fail) == 0) failing = 1;
    }
    if (f) { fputc('\n', f); fclose(f); }
    if (failing) return code && *code ? (int)strtoul(code, NULL, 0) : 7;
    return 0;
}
"""
MINGW = "x86_64-w64-mingw32-gcc"


@pytest.fixture(scope="session")
def stub_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the stub python.exe once (a failure, not a skip, without mingw: CI installs it)."""
    if shutil.which(MINGW) is None:
        pytest.fail(f"{MINGW} is required (apt-get install gcc-mingw-w64-x86-64; CI installs it)")
    folder = tmp_path_factory.mktemp("stubexe")
    (folder / "stub.c").write_text(STUB_C)
    subprocess.run(
        [MINGW, "-O1", "-o", str(folder / "python.exe"), str(folder / "stub.c")],
        check=True,
        timeout=120,
    )
    return folder / "python.exe"


def test_an_error_pauses_unless_dev_no_pause(wine_env: dict[str, str], tmp_path: Path) -> None:
    """A double-clicked start_dev.bat must keep its window open on an error."""
    project = _project(tmp_path / "app")
    stub = z_path(project / "stub python.cmd")
    paused, _ = run_bat(
        wine_env,
        project / "start_dev.bat",
        project,
        tmp_path / "a.txt",
        pause=True,
        DEV_PYTHON=stub,
        STUB_FAIL="start",
    )
    assert paused.returncode == 1
    assert "the start step failed" in paused.stdout
    assert PAUSE_PROMPT in paused.stdout.split("the start step failed", 1)[1]  # after the error
    quiet, _ = run_bat(
        wine_env,
        project / "start_dev.bat",
        project,
        tmp_path / "b.txt",
        DEV_PYTHON=stub,
        STUB_FAIL="start",
    )
    assert quiet.returncode == 1 and "the start step failed" in quiet.stdout
    assert PAUSE_PROMPT not in quiet.stdout


def test_no_python_pauses_too_and_the_application_end_as_well(
    wine_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(tmp_path / "app")
    result, _ = run_bat(
        wine_env, project / "start_dev.bat", tmp_path, tmp_path / "l.txt", pause=True
    )
    assert result.returncode == 1 and "Python 3.10 or newer was not found" in result.stdout
    assert PAUSE_PROMPT in result.stdout
    ended, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        tmp_path,
        tmp_path / "m.txt",
        pause=True,
        DEV_PYTHON=z_path(project / "stub python.cmd"),
        STUB_API_CODE="0",
    )
    assert ended.returncode == 0 and calls[-1] == f"-m invoke {APP}"
    assert PAUSE_PROMPT in ended.stdout  # the application ending at once must not close the window


def test_existing_venv_stops_the_server_before_pip(
    wine_env: dict[str, str], tmp_path: Path, stub_exe: Path
) -> None:
    """Requirements to install into an existing .venv: `invoke stop` runs before pip (a
    running supervisor holds psutil's .pyd open, and pip would fail with WinError 5)."""
    project = _project(tmp_path / "app")
    scripts = project / ".venv" / "Scripts"
    scripts.mkdir(parents=True)
    shutil.copy2(stub_exe, scripts / "python.exe")
    result, calls = run_bat(
        wine_env, project / "start_dev.bat", tmp_path, tmp_path / "log.txt", STUB_API_CODE="0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [
        "-c import sys",
        "-m invoke stop",
        "-m pip install --disable-pip-version-check -r requirements.txt",
        *[f"-m invoke {step}" for step in [*STEPS, APP]],
    ]
    assert (project / ".venv" / "requirements.installed.txt").exists()  # the stamp


def test_pip_failing_is_named_and_pauses(
    wine_env: dict[str, str], tmp_path: Path, stub_exe: Path
) -> None:
    project = _project(tmp_path / "app")
    (project / ".venv" / "Scripts").mkdir(parents=True)
    shutil.copy2(stub_exe, project / ".venv" / "Scripts" / "python.exe")
    result, calls = run_bat(
        wine_env,
        project / "start_dev.bat",
        tmp_path,
        tmp_path / "log.txt",
        pause=True,
        STUB_FAIL="pip",
    )
    assert result.returncode == 1
    assert calls[-1].startswith("-m pip install")  # nothing after the failed install
    assert "installing the requirements failed" in result.stdout
    assert PAUSE_PROMPT in result.stdout
    assert not (project / ".venv" / "requirements.installed.txt").exists()


def test_negative_exit_codes_need_the_string_comparison(
    wine_env: dict[str, str], tmp_path: Path, stub_exe: Path
) -> None:
    """`if errorlevel 1` means ">= 1": an NTSTATUS exit such as 0xC000013A (negative in cmd)
    passes it as success; the script's `if not "%errorlevel%"=="0"` catches it. (Run
    without `call`: Wine's call turns every non-zero code into 1, Windows' does not.)"""
    probe = tmp_path / "probe.cmd"
    probe.write_bytes(
        "\r\n".join(
            [
                "@echo off",
                f'"{z_path(stub_exe)}" crash',
                "echo code=%errorlevel%",
                "if errorlevel 1 echo old-idiom-caught-it",
                'if not "%errorlevel%"=="0" echo new-idiom-caught-it',
                "",
            ]
        ).encode("ascii")
    )
    result = subprocess.run(
        [str(WINE), "cmd", "/c", z_path(probe)],
        env={**wine_env, "STUB_FAIL": "crash", "STUB_CODE": "0xC000013A"},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        errors="replace",
    )
    assert "code=-1073741510" in result.stdout
    assert "new-idiom-caught-it" in result.stdout
    assert "old-idiom-caught-it" not in result.stdout
    script = (ROOT / "start_dev.bat").read_text()
    assert not re.search(r"(?im)^\s*if\s+(not\s+)?errorlevel\b", script)  # none of those left
    assert 'pushd "%~dp0"' in script and "popd" in script


# ---- the console's code page: 65001 while the script runs, the old one again afterwards ----

# A stand-in chcp.exe (put in the folder the script starts in, which cmd searches before
# PATH): without an argument it reports CHCP_NOW ("Active code page: 850" by default), with
# one it appends it to CHCP_LOG, as the code pages the script set, in order.
CHCP_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    const char *log = getenv("CHCP_LOG"), *now = getenv("CHCP_NOW");
    if (argc < 2) { printf("Active code page: %s\n", now && *now ? now : "850"); return 0; }
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) { fprintf(f, "%s\n", argv[1]); fclose(f); }
    printf("Active code page: %s\n", argv[1]);
    return 0;
}
"""


@pytest.fixture(scope="session")
def chcp_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(MINGW) is None:
        pytest.fail(f"{MINGW} is required (apt-get install gcc-mingw-w64-x86-64; CI installs it)")
    folder = tmp_path_factory.mktemp("chcpexe")
    (folder / "chcp.c").write_text(CHCP_C)
    subprocess.run(
        [MINGW, "-O1", "-o", str(folder / "chcp.exe"), str(folder / "chcp.c")],
        check=True,
        timeout=120,
    )
    return folder / "chcp.exe"


@pytest.mark.parametrize(
    ("path", "now", "restored"),
    [
        ("success", "850", "850"),
        ("failing step", "437", "437"),
        ("no python", "850.", "850"),  # localised chcp output ends with a dot (German)
    ],
)
def test_the_code_page_is_restored_on_every_exit(
    wine_env: dict[str, str],
    tmp_path: Path,
    chcp_exe: Path,
    path: str,
    now: str,
    restored: str,
) -> None:
    """`chcp 65001` changes the console's code page, which outlives the script (setlocal does
    not restore it): the person's console would stay UTF-8 afterwards."""
    project = _project(tmp_path / "app")
    shutil.copy2(chcp_exe, project / "chcp.exe")
    chcp_log = tmp_path / "chcp.txt"
    extra = {"CHCP_LOG": z_path(chcp_log), "CHCP_NOW": now}
    if path != "no python":
        extra["DEV_PYTHON"] = z_path(project / "stub python.cmd")
        extra["STUB_API_CODE"] = "0"
    if path == "failing step":
        extra["STUB_FAIL"] = "start"
    result, _ = run_bat(
        wine_env, project / "start_dev.bat", project, tmp_path / "log.txt", pause=True, **extra
    )
    assert result.returncode == (0 if path == "success" else 1), result.stdout + result.stderr
    assert chcp_log.read_text().split() == ["65001", restored]
