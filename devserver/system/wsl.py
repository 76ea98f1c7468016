"""Dragonfly on Windows runs inside WSL2: the plumbing around ``wsl.exe``.

Nothing here asks which OS it is on; it is used only for a binary fetch marked ``via_wsl``.
Facts behind it:

- The pid Windows sees is ``wsl.exe``'s. Killing it closes the relay and most likely
  SIGHUPs Dragonfly inside the VM with no snapshot (microsoft/WSL src/linux/init/init.cpp,
  src/windows/common/svccomm.cpp; older WSL left it running, WSL issue 2496). So Dragonfly
  writes its Linux pid with ``--pidfile`` (an absl flag of dragonflydb/dragonfly
  src/server/dfly_main.cc, read at commit f975d5d0: "If not empty - server writes its pid
  into the file"), and a stop escalates inside WSL (``kill -TERM``, then ``-KILL``, each
  confirmed with ``kill -0``) before ``wsl.exe`` itself is killed, last.
- Windows paths are mapped by WSL's own ``wslpath -a -u`` (a custom ``[automount] root``,
  network drives and UNC paths are not ``/mnt/<drive>``); the ``/mnt/<drive>`` rule is only
  the fallback when wslpath cannot be run.
- ``WSL_UTF8=1`` makes wsl.exe's own messages UTF-8; without it they are UTF-16 (NULs in
  the log, and in our parsing).
- Only the default distribution is used (no ``-d``), so every wsl.exe call below and the
  server share one Linux pid namespace.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from devserver.catalog import DRAGONFLY
from devserver.errors import StartError, StopError, UnsupportedPlatform
from devserver.system import kill

if TYPE_CHECKING:
    from devserver.config import Settings
    from devserver.server.state import ServerState

WSL = "wsl.exe"
# Written by Dragonfly in its working directory, the flavor's data dir (as ``--dir=.``).
PIDFILE = "dragonfly.pid"
# A snapshot written through /mnt/c (9P) is far slower than on a Linux disk: under WSL the
# configured server.stop_timeout is multiplied by this before escalating.
STOP_FACTOR = 3
# After ``kill -TERM`` (a graceful stop with a snapshot) and after ``kill -KILL``.
TERM_WAIT = 10.0
KILL_WAIT = 3.0

# argv, timeout -> (exit code, output); swapped for a fake in the tests.
Runner = Callable[[Sequence[str], float], tuple[int, str]]


def wsl_path(path: Path | str) -> str:
    """``C:\\x\\y`` -> ``/mnt/c/x/y``: the default automount rule, only :func:`linux_path`'s
    fallback when WSL's own ``wslpath`` cannot be asked (a custom automount root, network
    drives and UNC paths map differently)."""
    win = PureWindowsPath(path)
    drive = win.drive.rstrip(":").lower()
    if not drive:
        return PurePosixPath(*win.parts).as_posix()
    return PurePosixPath("/mnt", drive, *win.parts[1:]).as_posix()


def wsl_env(env: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Let variables cross into WSL: Windows passes only those listed in ``WSLENV``."""
    result = dict(env)
    listed = [item for item in result.get("WSLENV", "").split(":") if item]
    listed += [f"{name}/u" for name in names if name in result]
    if listed:
        result["WSLENV"] = ":".join(listed)
    return result


def utf8_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` that makes wsl.exe write UTF-8 instead of UTF-16."""
    return {**env, "WSL_UTF8": "1"}


def decode(raw: bytes) -> str:
    """wsl.exe output: UTF-8 with WSL_UTF8=1, UTF-16-LE from a WSL too old to honour it."""
    if b"\x00" in raw:
        return raw.decode("utf-16-le", "replace").replace("\x00", "")
    return raw.decode("utf-8", "replace")


def run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run wsl.exe (stdin closed, output captured); FileNotFoundError when it is missing."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env=utf8_env(os.environ),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return done.returncode, decode(done.stdout + done.stderr)


def linux_path(path: Path | str, runner: Runner | None = None) -> str:
    """The path WSL sees for a Windows path, by WSL's own ``wslpath -a -u``."""
    runner = runner or run
    try:
        code, out = runner([WSL, "-e", "wslpath", "-a", "-u", str(path)], 30)
    except OSError:
        code, out = 1, ""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if code == 0 and lines and lines[-1].startswith("/"):
        return lines[-1]
    return wsl_path(path)


def launched_program(argv: Sequence[str]) -> str:
    """The Linux path a recorded WSL launch ran (``wsl.exe -e PATH ...``); "" for any other.

    The identity check compares with this, the path ``wslpath -a -u`` gave at the start, not
    with one rebuilt from the Windows path: under a custom ``[automount] root`` (or a network
    drive) the rebuilt ``/mnt/<drive>/...`` names nothing the server was started with.
    """
    if len(argv) >= 3 and is_wsl_server("", argv) and argv[1] == "-e":
        return str(argv[2])
    return ""


def server_argv(argv: Sequence[str], runner: Runner | None = None) -> list[str]:
    """Run Dragonfly's argv through WSL, with its Linux pid written to PIDFILE."""
    runner = runner or run
    return [WSL, "-e", linux_path(argv[0], runner), *argv[1:], f"--pidfile={PIDFILE}"]


def check_default_distro(runner: Runner | None = None) -> str:
    """The name of WSL's default distribution; a clear error unless it exists and is WSL2.

    ``wsl.exe --list --verbose`` marks the default with ``*`` and ends each line with its
    WSL version. Asked before a start, so a machine without WSL2 gets a hint, not a
    server that "exited during startup".
    """
    runner = runner or run
    other = "or use a native flavor: --flavor redis (or garnet)"
    try:
        code, out = runner([WSL, "--list", "--verbose"], 60)
    except OSError:
        raise UnsupportedPlatform(
            "DragonflyDB runs on Windows only through WSL2, and wsl.exe was not found",
            hint=f"install WSL2 (`wsl --install` in an administrator terminal), {other}",
        ) from None
    default = [line.strip() for line in out.splitlines() if line.strip().startswith("*")]
    if code != 0 or not default:
        raise StartError(
            "WSL has no default Linux distribution, which DragonflyDB needs on Windows",
            hint=f"install one (`wsl --install -d Ubuntu`), {other}",
        )
    words = default[0].lstrip("*").split()
    name, version = words[0], words[-1]
    if version != "2":
        raise StartError(
            f"WSL's default distribution {name} runs as WSL {version}; DragonflyDB needs WSL2",
            hint=f"convert it: `wsl --set-version {name} 2`, {other}",
        )
    return name


def is_wsl_server(exe: str, argv: Sequence[str]) -> bool:
    """Does a recorded server run through wsl.exe (its pid is then wsl.exe's)?"""
    name = exe.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return name == WSL or (bool(argv) and str(argv[0]).lower() == WSL)


def read_pid(pidfile: Path) -> int | None:
    """Dragonfly's Linux pid from its pidfile, None when absent or unreadable."""
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def linux_alive(pid: int, runner: Runner | None = None) -> bool:
    """``kill -0`` inside WSL: does the Linux process still exist?"""
    runner = runner or run
    try:
        code, _ = runner([WSL, "-e", "kill", "-0", str(pid)], 30)
    except OSError:
        return False
    return code == 0


def is_dragonfly(pid: int, runner: Runner | None = None) -> bool:
    """Is Linux pid ``pid`` a Dragonfly (its ``/proc/<pid>/comm``)? Checked before the first
    signal, so a stale pidfile's number, reused since, is never signalled."""
    runner = runner or run
    try:
        code, out = runner([WSL, "-e", "cat", f"/proc/{pid}/comm"], 30)
    except OSError:
        return False
    return code == 0 and out.strip().startswith(DRAGONFLY.exe_prefixes)


def _wait_linux_gone(
    pid: int, seconds: float, runner: Runner, sleep: Callable[[float], None]
) -> bool:
    deadline = time.monotonic() + seconds
    while linux_alive(pid, runner):
        if time.monotonic() >= deadline:
            return False
        sleep(0.25)
    return True


def stop_escalation(
    pidfile: Path,
    wsl_proc: Any,
    runner: Runner | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Force Dragonfly down inside WSL, then ``wsl.exe`` (a checked psutil handle) last.

    Only a pid that is a Dragonfly (``is_dragonfly``) is signalled: ``kill -TERM`` (Dragonfly
    saves its snapshot on SIGTERM), confirmed with ``kill -0``; then ``kill -KILL``;
    StopError if it survives even that. Without a pidfile (Dragonfly died before writing
    it) only wsl.exe is left to kill. Returns how it ended: "SIGTERM" or "kill".
    """
    runner = runner or run
    pid = read_pid(pidfile)
    method = "kill"
    if pid is not None and is_dragonfly(pid, runner):
        runner([WSL, "-e", "kill", "-TERM", str(pid)], 30)
        method = "SIGTERM"
        if not _wait_linux_gone(pid, TERM_WAIT, runner, sleep):
            runner([WSL, "-e", "kill", "-KILL", str(pid)], 30)
            method = "kill"
            if not _wait_linux_gone(pid, KILL_WAIT, runner, sleep):
                raise StopError(
                    f"dragonfly (Linux pid {pid} inside WSL) did not exit even after SIGKILL",
                    hint=f"check it with `wsl.exe -e ps -p {pid}`, or `wsl --shutdown`",
                )
    kill.kill_tree(wsl_proc)
    return method


# --- what start.py, undo.py and stop.py call for a recorded server -------------------------


def launch(
    argv: list[str], env: dict[str, str], secret_names: Sequence[str], via_wsl: bool
) -> tuple[list[str], dict[str, str]]:
    """The server's argv and environment as the supervisor launches them: through wsl.exe
    when ``via_wsl`` (``secret_names``: variables that must cross into WSL), else as given."""
    if not via_wsl:
        return argv, env
    return server_argv(argv), utf8_env(wsl_env(env, secret_names))


def before_start(settings: Settings, flavor: str, via_wsl: bool) -> None:
    """A start through WSL: check the default distribution before anything else costs time,
    and drop an old pidfile (Dragonfly rewrites it at start; an old one must never name the
    new server). Nothing for any other start."""
    if not via_wsl:
        return
    check_default_distro()
    pidfile(settings, flavor).unlink(missing_ok=True)


def pidfile(settings: Settings, flavor: str) -> Path:
    """Where Dragonfly writes its Linux pid: its data dir, which is its working directory."""
    return settings.flavor_data_dir(flavor) / PIDFILE


def _ours(state: ServerState) -> bool:
    return is_wsl_server(state.exe, state.argv)


def stop_timeout(settings: Settings, state: ServerState) -> float:
    """The graceful stop's timeout: longer under WSL (a snapshot through /mnt/c is slow)."""
    return settings.stop_timeout * (STOP_FACTOR if _ours(state) else 1)


def left_running(settings: Settings, state: ServerState) -> bool:
    """wsl.exe is gone, but is Dragonfly gone inside WSL too? (wsl.exe may have been killed)"""
    if not _ours(state):
        return False
    pid = read_pid(pidfile(settings, state.flavor))
    return pid is not None and is_dragonfly(pid)


def escalate(settings: Settings, state: ServerState, proc: Any) -> str:
    """The forced stop of a server run through WSL (:func:`stop_escalation`): "SIGTERM" or
    "kill"; "" (doing nothing) for any other server."""
    if not _ours(state):
        return ""
    return stop_escalation(pidfile(settings, state.flavor), proc)


def stop_left_running(settings: Settings, state: ServerState, proc: Any) -> tuple[str, str]:
    """After a graceful stop: wsl.exe is gone (killed?) but Dragonfly may still run inside
    WSL, so it is not stopped yet: force it (:func:`escalate`). (how it ended, why it was
    needed), or ("", "") when nothing was left running."""
    if not left_running(settings, state):
        return "", ""
    return escalate(settings, state, proc), "wsl.exe exited but dragonfly kept running inside WSL"


def kill_now(settings: Settings, state: ServerState) -> None:
    """A failed start: SIGKILL the Linux Dragonfly at once (the caller then kills wsl.exe)."""
    if not _ours(state):
        return
    pid = read_pid(pidfile(settings, state.flavor))
    if pid is not None and is_dragonfly(pid):
        run([WSL, "-e", "kill", "-KILL", str(pid)], 30)
