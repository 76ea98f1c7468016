"""start_dev.bat end to end with the real Windows CPython 3.11 under Wine (no stub interpreter).

From a fresh project copy: Wine's cmd runs start_dev.bat, which finds ``python`` (the cached
cp311 interpreter, on Wine's PATH through WINEPATH), creates ``.venv`` with it, installs
requirements.txt with pip offline from the win_amd64 wheelhouse (PIP_NO_INDEX and
PIP_FIND_LINKS, which pip reads from the environment), then ``invoke fetch`` downloads the
test server's zip from a loopback mirror (release.url) and checks its sha256
(release.sha256), ``invoke start``, ``invoke verify``, and ``invoke up --no-fetch
--no-verify`` runs a small API script (api.command, through up's process manager) that
talks to the server through REDIS_URL. ``invoke stop`` afterwards, with the venv the script
made, must leave no process. (``fetch --archive`` of the same zip is run by the
lifecycle fixtures: start_dev.bat passes no options to fetch, so here the configuration says
where the archive is.)

Where Wine differs (so what this does not show): Wine's ``fc`` is a stub that always reports
"same" (the requirements stamp's change detection is only read); the pause after an error
needs a console and is skipped with DEV_NO_PAUSE=1 (the double-click window is only read);
the ``py`` launcher does not exist here, so the ``python`` fallback is what runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.fakegithub import FakeGitHub
from tests.winpython import wine
from tests.winpython.conftest import ASSET, WinProject, copy_tree, linux_processes

pytestmark = pytest.mark.winpython

API_SCRIPT = """\
import os, sys
import redis

url = os.environ["REDIS_URL"]
client = redis.Redis.from_url(url)
client.lpush("api:jobs", "job-1")
job = client.brpop(["api:jobs"], timeout=5)
client.delete("api:jobs")
print("api saw", url, job[1].decode(), sys.platform, flush=True)
"""


def test_start_dev_bat_end_to_end(
    winpy: wine.Prepared,
    wine_env: dict[str, str],
    server_zip: tuple[Path, str],
    tmp_path: Path,
) -> None:
    root = copy_tree(tmp_path / "my project")  # a space in the path, as in "My Documents"
    (root / "api_check.py").write_text(API_SCRIPT, encoding="utf-8")
    archive, digest = server_zip
    port = free_port()
    with FakeGitHub() as mirror:
        url = mirror.asset(archive.name, archive)
        env = {
            **wine_env,
            "WINEPATH": wine.z_path(winpy.python.parent),  # `python` is the real cp311
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": wine.z_path(winpy.wheels),
            "DEV_NO_PAUSE": "1",
            "NO_COLOR": "1",
            "INVOKE_SERVER_FLAVOR": "redis",
            "INVOKE_SERVER_PORT": str(port),
            "INVOKE_SERVER_STARTUP_TIMEOUT": "60",
            "INVOKE_RELEASE_URL": url,
            "INVOKE_RELEASE_SHA256": digest,
            "INVOKE_VERIFY_ITERATIONS": "20",
            # Latency under Wine on a shared machine is not Windows' latency: not judged here.
            **{
                f"INVOKE_VERIFY_THRESHOLDS_MS_{op}": "100000"
                for op in ("CONNECT", "PING", "SET", "GET", "LPUSH", "BRPOP")
            },
            "INVOKE_API_COMMAND": ".venv\\Scripts\\python.exe api_check.py",
        }
        proc = wine.popen_wine(["cmd", "/c", wine.z_path(root / "start_dev.bat")], env, tmp_path)
        result = wine.finish(proc, timeout=1200)
        requested = mirror.paths()
    output = result.stdout + result.stderr
    project = WinProject(root, root / ".venv" / "Scripts" / "python.exe", wine_env, port)
    try:
        assert result.returncode == 0, output
        assert (root / ".venv" / "pyvenv.cfg").is_file()
        cfg = (root / ".venv" / "pyvenv.cfg").read_text(encoding="utf-8")
        assert "cp311" in cfg  # made by the real interpreter found on PATH
        headers = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("==>")]
        assert headers == ["fetch", "start", "verify", "up"], output
        assert any(ASSET in p for p in requested), requested
        manifest = (root / "bin" / "redis.json").read_text(encoding="utf-8")
        assert digest in manifest
        assert f"api saw redis://127.0.0.1:{port}" in result.stdout, output
        assert "job-1 win32" in result.stdout, output
        state = project.state()
        assert int(state["port"]) == port  # type: ignore[call-overload]
        pid = str(state["pid"])
        assert project.probe("procs", pid)[pid]["alive"] is True  # it outlived the script

        stopped = project.invoke("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert project.probe("procs", pid)[pid]["alive"] is False
        assert [p for p in linux_processes(f"--port {port} ") if "redis-server" in p[1]] == []
        assert not project.state_file.exists()
    finally:
        if (root / ".venv").exists():
            project.kill_recorded()
        shutil.rmtree(root / ".venv", ignore_errors=True)
