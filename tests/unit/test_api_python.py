"""``api.command: python -m myapp.api`` runs the tool's own interpreter.

The documented example (docs/configuration.md) says ``python``; with the venv not activated,
PATH's ``python`` is the system one, which lacks the venv's packages. A fake ``python`` first on
PATH stands in for it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from devserver.app import api
from devserver.system import host, venv


def _fake_system_python(folder: Path) -> Path:
    folder.mkdir()
    if host.WINDOWS:  # cmd.exe finds python.cmd for `python` (PATHEXT)
        (folder / "python.cmd").write_text("@echo WRONG-PYTHON\r\n@exit /b 7\r\n")
        return folder
    fake = folder / "python"
    fake.write_text("#!/bin/sh\necho WRONG-PYTHON\nexit 7\n")
    fake.chmod(0o755)
    return folder


def test_python_in_api_command_is_the_tools_interpreter(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_dir = _fake_system_python(tmp_path / "sysbin")
    base = {"PATH": f"{fake_dir}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)}
    code = "import os, sys; print(sys.executable); print(os.environ['PATH'])"
    result = api.run_api(f'python -c "{code}"', {}, tmp_path, base_env=base)
    out = capfd.readouterr().out.splitlines()
    assert result.code == 0, out
    assert "WRONG-PYTHON" not in out
    assert out[0] == sys.executable
    path = out[1].split(os.pathsep)
    assert path[0] == sysconfig.get_path("scripts")  # the venv's scripts first
    assert str(fake_dir) in path  # the rest of PATH is kept


def test_python_inside_a_shell_command_finds_the_venv_first(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``cd x && python ...`` goes through sh: PATH order decides, and the venv comes first."""
    fake_dir = _fake_system_python(tmp_path / "sysbin")
    (tmp_path / "sub").mkdir()
    scripts = Path(sysconfig.get_path("scripts"))
    if not (scripts / host.exe_name("python")).exists():
        pytest.skip("this interpreter's scripts folder has no `python` (not a venv)")
    base = {"PATH": f"{fake_dir}{os.pathsep}/usr/bin:/bin"}
    result = api.run_api(
        'cd sub && python -c "import sys; print(sys.prefix)"', {}, tmp_path, base_env=base
    )
    out = capfd.readouterr().out
    assert result.code == 0 and "WRONG-PYTHON" not in out
    assert out.strip() == sys.prefix


def test_only_a_leading_python_word_is_replaced(posix: None) -> None:
    exe = "/opt/venv/bin/python"
    assert venv.own_python("python -m myapp.api", exe) == f"{exe} -m myapp.api"
    assert venv.own_python("python3 app.py", exe) == f"{exe} app.py"
    assert venv.own_python("python3.11 app.py", exe) == f"{exe} app.py"
    assert venv.own_python("pythonista run", exe) == "pythonista run"
    assert venv.own_python("uvicorn app:app", exe) == "uvicorn app:app"
    spaced = venv.own_python("python -m x", "/my venv/bin/python")
    assert spaced == "'/my venv/bin/python' -m x"


def test_windows_quotes_the_interpreter_for_cmd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    exe = r"C:\Users\me\proj\.venv\Scripts\python.exe"
    assert venv.own_python("python -m myapp.api", exe) == f'"{exe}" -m myapp.api'
    assert venv.own_python("python.exe -m x", exe) == f'"{exe}" -m x'
    assert venv.own_python("PYTHON app.py", exe) == f'"{exe}" app.py'


def test_windows_puts_scripts_first_on_its_path_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows spells it ``Path`` and separates with ``;``: reuse that key, never add PATH."""
    monkeypatch.setattr(host, "WINDOWS", True)
    scripts = r"C:\proj\.venv\Scripts"
    env = {"Path": r"C:\Windows\system32;C:\Python311;c:\proj\.venv\scripts\\", "X": "1"}
    out = venv.scripts_first(env, scripts)
    assert "PATH" not in out and out["X"] == "1"
    assert out["Path"] == r"C:\proj\.venv\Scripts;C:\Windows\system32;C:\Python311"


def test_posix_scripts_first_without_a_path(posix: None) -> None:
    assert venv.scripts_first({}, "/v/bin") == {"PATH": "/v/bin"}
    assert venv.scripts_first({"PATH": "/usr/bin:/v/bin"}, "/v/bin")["PATH"] == "/v/bin:/usr/bin"
