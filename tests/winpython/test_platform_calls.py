"""Windows platform calls of devserver/system run by the real Windows CPython under Wine.

Each test runs one small script with the layer's venv interpreter in this tree (``-B``: no
bytecode written into it). What Wine cannot show (an excluded port range, Smart App Control,
an elevated token, a DACL kept on disk: Wine reports a synthesized one) is in
docs/windows.md, with the unit tests that assert those calls on Linux.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.winpython import wine
from tests.winpython.conftest import WinProject

pytestmark = pytest.mark.winpython


def run_script(
    winpy: wine.Prepared, env: dict[str, str], tmp_path: Path, code: str, *args: str, **extra: str
) -> dict[str, object]:
    """Run ``code`` (it prints one JSON line last) with the Windows interpreter in this tree."""
    script = tmp_path / "check.py"
    script.write_text("import sys\nsys.path.insert(0, '.')\n" + code, encoding="utf-8")
    result = wine.run_wine(
        [str(winpy.venv_python), "-B", wine.z_path(script), *args],
        {**env, **extra},
        cwd=wine.ROOT,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_invoke_test_runs_an_interpreter_whose_path_has_spaces(
    winpy: wine.Prepared, wine_env: dict[str, str], tmp_path: Path
) -> None:
    """``invoke test`` hands c.run a cmd.exe line: an unquoted ``...\\dir with space\\python``
    is the command ``...\\dir`` there ("is not recognized"). The task itself runs, with
    sys.executable pointing at a stand-in in such a folder that records its arguments."""
    folder = tmp_path / "Program Files" / "Python 311"
    folder.mkdir(parents=True)
    log = tmp_path / "calls.txt"
    (folder / "python.cmd").write_bytes(b'@echo off\r\n>>"%STUB_LOG%" echo %*\r\nexit /b 0\r\n')
    code = (
        "import json\n"
        "sys.executable = sys.argv[1]\n"
        "from invoke.context import Context\n"
        "import tasks\n"
        "tasks.test(Context(), args='-k stop -x')\n"
        "print(json.dumps({'ran': True}))\n"
    )
    out = run_script(
        winpy,
        wine_env,
        tmp_path,
        code,
        wine.z_path(folder / "python.cmd"),
        STUB_LOG=wine.z_path(log),
    )
    assert out == {"ran": True}
    assert log.read_text().split() == ["-m", "pytest", "-k", "stop", "-x"]


def test_state_file_acl_names_the_users_own_sid(
    winpy: wine.Prepared, wine_env: dict[str, str], tmp_path: Path
) -> None:
    """The owner-only DACL grants the user's own SID (read from the process token), so a file
    an elevated start wrote (owner: the Administrators group) stays readable by the same
    user's normal terminal; Windows accepts the SDDL and sets it."""
    target = tmp_path / "server.json"
    code = (
        "import json\n"
        "from devserver.system import files\n"
        "sid = files.current_user_sid()\n"
        "open(sys.argv[1], 'w').close()\n"
        "print(json.dumps({'sid': sid, 'sddl': files.owner_only_sddl(sid),\n"
        "                  'set': files.restrict_to_owner(sys.argv[1])}))\n"
    )
    out = run_script(winpy, wine_env, tmp_path, code, wine.z_path(target))
    sid = str(out["sid"])
    assert sid.startswith("S-1-5-21-"), out  # a local or domain user's SID, not a group's
    assert out["sddl"] == f"D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;{sid})"
    assert out["set"] is True


def test_the_port_test_bind_passes_a_free_port_and_refuses_a_held_one(
    winpy: wine.Prepared, wine_env: dict[str, str], tmp_path: Path
) -> None:
    """The test bind (SO_EXCLUSIVEADDRUSE) that finds reserved ports: Windows accepts the
    option, a free port binds (0), and one a socket holds is refused (WSAEADDRINUSE)."""
    code = (
        "import json, socket\n"
        "from devserver.system import reserved_ports\n"
        "held = socket.socket()\n"
        "held.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)\n"
        "held.bind(('127.0.0.1', 0)); held.listen()\n"
        "port = held.getsockname()[1]\n"
        "free = socket.socket(); free.bind(('127.0.0.1', 0)); spare = free.getsockname()[1]\n"
        "free.close()\n"
        "print(json.dumps({'held': reserved_ports.refused_bind('127.0.0.1', port),\n"
        "                  'free': reserved_ports.refused_bind('127.0.0.1', spare),\n"
        "                  'option': socket.SO_EXCLUSIVEADDRUSE}))\n"
    )
    out = run_script(winpy, wine_env, tmp_path, code)
    assert out == {"held": 10048, "free": 0, "option": -5}


def test_foreground_from_the_venv_runs_outside_the_redirectors_job(
    winproject: WinProject,
) -> None:
    """``start --foreground`` by the venv's python.exe: the process running the foreground
    supervisor is the base interpreter's child (outside the redirector's kill-on-close job,
    so a closed console reaches its own handler), not the redirector's direct child. The
    close event itself is not shown: Wine has no console window to close (docs/windows.md).
    ``invoke stop`` then ends it, and the waiting process exits with the child's code 0."""
    fg = winproject.popen_invoke("start", "--foreground")
    try:
        deadline = time.monotonic() + 180
        while not winproject.state_file.exists() and fg.poll() is None:
            assert time.monotonic() < deadline, "no state file within 180 s"
            time.sleep(0.5)
        state = winproject.state()
        sup = str(state["supervisor_pid"])
        seen = winproject.probe("procs", sup)[sup]
        cmdline = json.loads(str(seen["cmdline"]))
        assert "cp311" in cmdline[0].lower() and "--foreground" in cmdline, cmdline
        parent = str(seen["ppid"])
        waiter = json.loads(str(winproject.probe("procs", parent)[parent]["cmdline"]))
        # The waiter is the base interpreter too; before, the parent was .venv\Scripts\python.exe.
        assert "cp311" in waiter[0].lower() and "scripts" not in waiter[0].lower(), waiter
        assert winproject.invoke("stop").returncode == 0
        ended = wine.finish(fg, timeout=120)
        assert ended.returncode == 0, ended.stdout + ended.stderr
    finally:
        if fg.poll() is None:
            fg.kill()
