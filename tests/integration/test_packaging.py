"""The built wheel in a fresh venv, used from a new project folder outside this checkout.

What a team does: ``pip install`` the package, write a two-line tasks.py, run ``invoke start``
/ ``verify`` / ``stop`` there, use the ``redis_url`` fixture in their own tests (with and
without pytest-xdist) and the ``devserver`` console script. Offline on purpose (CI's machine
can reach PyPI, but a test that downloads is slow and flaky): the wheel is built without
isolation by the pinned setuptools of requirements-dev.txt, and the fresh venv sees the
dependencies already installed in the running environment through a .pth file, so pip
installs the wheel alone, after checking that its pinned dependencies are all satisfied
(so Invoke's own ``invoke`` script stays in that environment: ``python -m invoke`` is it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, kill_recorded

TWO_LINE_TASKS = '"""My application\'s tasks."""\nfrom devserver.tasks import ns  # noqa: F401\n'

USER_TEST = """
def test_queue(redis_client):
    assert redis_client.dbsize() == 0
    redis_client.lpush("jobs", "a")
    assert redis_client.brpop(["jobs"], timeout=1) == (b"jobs", b"a")

def test_url(redis_url):
    import redis
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("x", "1")
"""


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of this checkout (a build leaves build/ and *.egg-info behind)."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "devserver", source / "devserver", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*pip, "-q", "-w", wheels, source], tmp, dict(os.environ))
    (wheel,) = wheels.glob("devserver-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A new venv with the wheel installed; its dependencies come from this environment."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env
    ).strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")
    # No --no-deps: pip must find every pinned dependency already installed (no index).
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index", wheel],
        tmp,
        env,
    )
    return python


def test_wheel_in_a_fresh_venv_serves_a_new_project(
    tmp_path: Path, redis_server_path: Path
) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is pinned in requirements-dev.txt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NO_COLOR"] = "1"
    wheel = build_wheel(tmp_path)
    python = fresh_venv(tmp_path, wheel, env)
    scripts = python.parent
    env["PATH"] = str(scripts) + os.pathsep + env.get("PATH", "")

    project = tmp_path / "myapp"  # a new folder outside this checkout
    project.mkdir()
    where = run([python, "-c", "import devserver; print(devserver.__file__)"], project, env)
    assert str(tmp_path / "venv") in where and str(ROOT) not in where  # the installed copy
    # Every module of the checkout is in the wheel and imports from it (a sub-package left
    # out of pyproject's list would be missing here).
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "devserver").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    code += "print(len(sys.argv) - 1, 'imported')"
    imported = run([python, "-c", code, *modules], project, env)
    assert f"{len(modules)} imported" in imported and len(modules) > 50

    port = free_port()
    (project / "tasks.py").write_text(TWO_LINE_TASKS)
    (project / "invoke.yaml").write_text(
        "server:\n"
        "  flavor: redis\n"
        f'  port: "{port}"\n'
        f"  binary: {redis_server_path}\n"
        "verify:\n"
        '  iterations: "20"\n'
        "  thresholds_ms:\n"
        + "".join(
            f'    {op}: "1000"\n' for op in ("connect", "ping", "set", "get", "lpush", "brpop")
        )
    )
    try:
        started = run([python, "-m", "invoke", "start"], project, env)
        assert f"ready on 127.0.0.1:{port}" in started
        assert (project / "data" / "server.json").exists()  # the project's data/, not the venv's
        assert (project / "logs" / "redis.log").exists()
        run([python, "-m", "invoke", "verify"], project, env)
        status = run([scripts / "devserver", "status", "--json"], project, env)  # ./invoke.yaml
        assert f'"port": {port}' in status and '"running": true' in status
        run([python, "-m", "invoke", "stop"], project, env)
        assert not (project / "data" / "server.json").exists()
    finally:
        kill_recorded(project / "data" / "server.json")

    (project / "test_app.py").write_text(USER_TEST)
    flags = [
        "-p",
        "no:cacheprovider",
        "--devserver-flavor=redis",
        f"--devserver-binary={redis_server_path}",
    ]
    assert "2 passed" in run([python, "-m", "pytest", "-q", *flags], project, env)
    assert "2 passed" in run([python, "-m", "pytest", "-q", "-n", "2", *flags], project, env)

    helped = run([scripts / "devserver", "--help"], project, env)
    for name in ("start", "stop", "status", "verify", "up", "fetch", "tail"):
        assert f"  {name} " in helped
    assert run([scripts / "devserver", "--version"], project, env).strip() == "devserver 0.1.0"
