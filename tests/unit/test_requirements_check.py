"""devserver.requirements_check: start_dev.sh skips pip only when everything is installed."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from devserver import requirements_check
from tests.conftest import ROOT


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_installed_pins_are_satisfied_and_markers_are_honoured(tmp_path: Path) -> None:
    pytest_version = metadata.version("pytest")
    path = _file(
        tmp_path,
        "# comment\n--only-binary=x\n"
        f"pytest=={pytest_version}  # why\n"
        'no-such-package-anywhere==1.0; sys_platform == "no-such-os"\n',
    )
    assert requirements_check.satisfied(path)


def test_a_missing_or_different_version_is_not(tmp_path: Path) -> None:
    assert not requirements_check.satisfied(_file(tmp_path, "pytest==0.0.1\n"))
    assert not requirements_check.satisfied(_file(tmp_path, "no-such-package-anywhere==1.0\n"))


def test_the_command_prints_satisfied_only_when_it_is(tmp_path: Path) -> None:
    def run(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devserver.requirements_check", str(_file(tmp_path, text))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    good = run(f"pytest=={metadata.version('pytest')}\n")
    assert good.returncode == 0 and good.stdout == "satisfied\n"
    bad = run("this is not a requirement ===\n")
    assert bad.returncode == 1 and bad.stdout == ""
