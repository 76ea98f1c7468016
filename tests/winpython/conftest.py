"""Fixtures of the ``winpython`` layer: our real code under Wine with a real Windows CPython.

Session: the cached interpreter, wheelhouse and venv (tests/winpython/wine.py), a private copy
of the cached Wine prefix, the test server (resp_server.c compiled by mingw) zipped as a
redis-windows release asset, and one project copy into which ``invoke fetch --archive``
installed it. Each test: its own copy of that project, a free port, and a finalizer that kills,
from the Windows side and identity-checked, whatever the project's state file names (the
session's ``wineserver -k`` is the last resort).

Missing prerequisites (no wine64, no mingw, no network for the first download) fail every
test under CI=true, so the layer cannot silently stop running there; elsewhere they skip with
the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.winpython import wine

# What a project copy holds: the tool as a person checks it out (no tests, no venv).
PROJECT_FILES = ("tasks.py", "invoke.yaml", "requirements.txt", "start_dev.bat")
PROJECT_DIRS = ("devserver",)
SERVER_VERSION = "7.2.99"
ASSET = f"Redis-{SERVER_VERSION}-Windows-x64-msys2"


@pytest.fixture(scope="session")
def winpy() -> wine.Prepared:
    try:
        return wine.prepare()
    except (wine.Missing, subprocess.CalledProcessError, OSError) as exc:
        message = f"the winpython layer cannot run: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI must run this layer: .ci/run installs what it needs)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def wine_env(
    winpy: wine.Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    target = tmp_path_factory.mktemp("wine") / "prefix"
    with wine.session_prefix(winpy.prefix, target) as env:
        # Warm up into a file, not a pipe: the services this first run starts live on and
        # would hold a pipe open (cmd, unlike python.exe, writes to a file fine).
        out = target.parent / "warmup.txt"
        with open(out, "wb") as sink:
            subprocess.run(
                [str(wine.WINE), "cmd", "/c", "echo", "ready"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
        assert "ready" in out.read_text(errors="replace")
        yield env


@pytest.fixture(scope="session")
def server_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The test server as redis-windows ships Redis: ``<asset>/redis-server.exe`` in a zip."""
    work = tmp_path_factory.mktemp("server")
    exe = wine.build_server(work / "redis-server.exe")
    archive = work / f"{ASSET}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(exe, f"{ASSET}/redis-server.exe")
        zf.writestr(f"{ASSET}/README.txt", "test server for the winpython layer\n")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def copy_tree(target: Path) -> Path:
    """A copy of the project as a person has it (the tool, no tests)."""
    target.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(wine.ROOT / name, target / name)
    for name in PROJECT_DIRS:
        shutil.copytree(
            wine.ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


@dataclass
class WinProject:
    """One project copy and how to run the tool in it with the Windows venv python."""

    root: Path
    python: Path
    env: dict[str, str]
    port: int
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.root / "data" / "server.json"

    def state(self) -> dict[str, object]:
        return dict(json.loads(self.state_file.read_text(encoding="utf-8")))

    def environ(self, **extra: str) -> dict[str, str]:
        return {
            **self.env,
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(self.port),
            "INVOKE_SERVER_STARTUP_TIMEOUT": "60",
            "INVOKE_SERVER_STOP_TIMEOUT": "10",
            "NO_COLOR": "1",
            **self.overrides,
            **extra,
        }

    def invoke(
        self, *args: str, timeout: float = 180, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return wine.run_wine(
            [str(self.python), "-m", "invoke", *args],
            self.environ(**extra),
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def popen_invoke(self, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        """Start ``invoke ARGS`` and return at once; collect it with :func:`wine.finish`."""
        return wine.popen_wine(
            [str(self.python), "-m", "invoke", *args], self.environ(**extra), cwd=self.root
        )

    def python_code(
        self, code: str, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with the project's Windows interpreter in the project folder."""
        return wine.run_wine(
            [str(self.python), "-c", code],
            self.environ(**extra),
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def probe(self, *args: str) -> dict[str, dict[str, object]]:
        """What the Windows side sees of these processes (probe.py)."""
        result = wine.run_wine(
            [str(self.python), str(Path(__file__).with_name("probe.py")), *args],
            self.env,
            timeout=120,
        )
        return dict(json.loads(result.stdout))

    def kill_recorded(self) -> None:
        if self.state_file.exists():
            self.probe("kill", wine.z_path(self.state_file))


def linux_processes(needle: str) -> list[tuple[int, str]]:
    """Linux processes (each Windows process under Wine is one) whose command line has ``needle``.

    Wine shows a Windows process's command line as its Linux one, so a unique port or path
    finds our server however it was started, without asking Wine.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
        except OSError:
            continue
        if needle in cmdline:
            found.append((int(entry.name), cmdline.strip()))
    return found


@pytest.fixture(scope="session")
def fetched_project(
    winpy: wine.Prepared,
    wine_env: dict[str, str],
    server_zip: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A project whose bin/ got the test server by ``invoke fetch --archive ZIP --sha256 HEX``."""
    root = copy_tree(tmp_path_factory.mktemp("fetched") / "proj")
    archive, digest = server_zip
    project = WinProject(root, winpy.venv_python, wine_env, free_port())
    result = project.invoke("fetch", "--archive", wine.z_path(archive), "--sha256", digest)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


@pytest.fixture()
def winproject(
    winpy: wine.Prepared,
    wine_env: dict[str, str],
    fetched_project: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> Iterator[WinProject]:
    root = tmp_path / "winproj"  # not "proj": the root conftest's fixture owns that
    shutil.copytree(fetched_project[0], root)
    project = WinProject(root, winpy.venv_python, wine_env, free_port())
    yield project
    project.kill_recorded()
