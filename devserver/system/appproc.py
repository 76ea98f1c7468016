"""The application's processes: ``invoke api`` in the foreground, ``invoke up``'s several at
once, and how Ctrl+C and a stop reach each of them on each OS.

A command line is what people write as they would type it: a simple one is split and
executed directly, one with shell syntax goes through ``/bin/sh -c``; Windows always uses
``cmd.exe /c``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from devserver.system import host, kill, signals
from devserver.system.spawn import CREATE_NEW_PROCESS_GROUP

if TYPE_CHECKING:
    from pathlib import Path

# Characters and first words that need a real shell; anything else is split like sh would
# (shlex) and executed directly, as Ruby's ``system(string)`` does.
_SHELL_CHARS = frozenset("|&;<>()$`\\*?[]{}~!#\n")
_SHELL_BUILTINS = (
    "cd . source exec export set unset eval if for while until case alias ulimit umask trap "
    "wait command type test [ true false exit return shift read"
)
_SHELL_WORDS = frozenset(_SHELL_BUILTINS.split())


def _needs_shell(command: str) -> bool:
    if any(ch in _SHELL_CHARS for ch in command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: let the shell report it in its own words
        return True
    return not words or "=" in words[0] or words[0] in _SHELL_WORDS


def spawn_foreground(command: str, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Run a command line in the foreground, sharing our terminal/console.

    ``api.command`` is a line people write as they would type it. POSIX: a simple command
    (``uvicorn app:app --port 8000``) is split and executed directly, so the API itself is our
    child: its exit code is returned exactly and a Ctrl+C reaches it alone (dash does not exec
    the last command of ``sh -c``, and after a Ctrl+C it would report 130 instead of the API's
    own code). Anything with shell syntax (``cd api && ...``, ``FOO=1 cmd``, pipes) runs through
    ``/bin/sh -c``. Windows: always ``cmd.exe /c``, because ``npm`` and friends are .cmd files
    only cmd finds, and cmd passes on its child's exit code. Either way the child stays in our
    process group / console, so the terminal's Ctrl+C reaches it directly and it can read the
    terminal (a debugger prompt), exactly as when the user runs it by hand.
    """
    if host.WINDOWS or _needs_shell(command):
        return subprocess.Popen(command, shell=True, env=dict(env), cwd=str(cwd))
    return subprocess.Popen(shlex.split(command), env=dict(env), cwd=str(cwd))


def _signal_tree(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send a signal to the child and everything it started, as a terminal would to its group.

    Through psutil handles (PID-reuse checked) of processes that are our own descendants.
    """
    import psutil  # ~20 ms: `invoke up` imports this module before it starts the server

    try:
        root = psutil.Process(proc.pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for victim in victims:
        with suppress(psutil.Error):
            victim.send_signal(signum)


def _terminal_delivers_to_our_group() -> bool:
    """POSIX: is our process group the terminal's foreground group (so the child got it too)?"""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: whoever signalled us did not signal the child
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


@contextmanager
def relay_interrupts(
    proc: subprocess.Popen[bytes], on_signal: Callable[[int], None]
) -> Iterator[None]:
    """While a foreground child runs, Ctrl+C does not kill us: it is the child's to handle.

    We wait for the child and report ``on_signal(signum)``; the child decides how to stop and
    its exit code is what we return. Passing the signal on differs per OS:
    - POSIX: a terminal Ctrl+C (or hang-up) already went to the whole foreground process group,
      child included, so it is forwarded only when we are not that group (e.g. ``kill -INT``
      aimed at us alone, no terminal): a second SIGINT makes many servers force-quit. SIGTERM
      is aimed at us specifically, so it is always forwarded.
    - Windows: a console Ctrl+C / Ctrl+Break goes to every process attached to the console,
      and the child shares ours; there is nothing to forward (CTRL_C_EVENT cannot target one
      process that is not a group leader).
    Signal handlers can only be set from the main thread; elsewhere this only reports.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        on_signal(signum)
        if host.WINDOWS or proc.poll() is not None:
            return
        if signum == signal.SIGTERM or not _terminal_delivers_to_our_group():
            _signal_tree(proc, signum)

    previous = {num: signal.signal(num, handler) for num in signals.interrupt_signals()}
    try:
        yield
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


def wait_relaying(proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
    """Wait for a foreground child under :func:`relay_interrupts`: (exit code, interrupted).

    The one wait that ``invoke api`` and ``invoke run`` share: the child handles Ctrl+C
    itself, we keep waiting for it and pass its code on (128+N after a signal death).
    """
    seen: list[int] = []
    with relay_interrupts(proc, seen.append):
        returncode = proc.wait()
    return kill.exit_code(returncode), bool(seen)


def spawn_app(command: str, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start one of ``up``'s application processes with its output on a pipe we prefix.

    Unlike :func:`spawn_foreground` each gets its own process group (POSIX: a new session;
    Windows: CREATE_NEW_PROCESS_GROUP), so we decide how and when it is stopped: a terminal
    Ctrl+C reaches ``up`` alone, which then stops every process the same way, and one
    process's crash cannot take the terminal's group down with it. stdin is closed: several
    processes cannot share one terminal's input. The command line is run as in
    :func:`spawn_foreground` (direct exec when simple, else ``/bin/sh -c``; ``cmd /c`` on
    Windows).
    """
    common: dict[str, Any] = {
        "env": dict(env),
        "cwd": str(cwd),
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT,
    }
    if host.WINDOWS:
        return subprocess.Popen(
            command, shell=True, creationflags=CREATE_NEW_PROCESS_GROUP, **common
        )
    if _needs_shell(command):
        return subprocess.Popen(command, shell=True, start_new_session=True, **common)
    return subprocess.Popen(shlex.split(command), start_new_session=True, **common)


def through_shell(command: str) -> bool:
    """Whether :func:`spawn_app` / :func:`spawn_foreground` run ``command`` under a shell."""
    return host.WINDOWS or _needs_shell(command)


def _term_shells_children(proc: Any) -> None:
    """``sh -c 'cd x && celery worker'``: the shell neither execs the last command nor passes
    SIGTERM on, so its own children (the worker's main process, not the worker's pool) get it."""
    import psutil  # ~20 ms: `invoke up` imports this module before it starts the server

    try:
        children = proc.children()
    except psutil.Error:
        return
    for child in children:
        with suppress(psutil.Error):
            child.send_signal(signal.SIGTERM)


def ask_app_to_stop(proc: subprocess.Popen[bytes], shell: bool = False) -> bool:
    """Politely stop a process started by :func:`spawn_app`; False when that was impossible.

    POSIX: SIGTERM to the main process alone (plus, under ``sh -c``, to the shell's children),
    as systemd's KillMode=mixed and docker compose do: a worker with a pool of children (Celery,
    RQ) then finishes its jobs in flight, which a SIGTERM to its whole process group would kill.
    What it started is killed at the end of the budget (app/teardown.py). Safe against PID
    reuse because the child is ours and not yet reaped (``poll()`` is None). Windows: a
    CTRL_BREAK_EVENT to its process group, which works only while we have a console to share
    with it: without one (Wine without a terminal, some IDEs) GenerateConsoleCtrlEvent fails,
    and CPython reports that as SystemError rather than OSError. The caller then kills it.
    """
    if proc.poll() is not None:
        return True
    try:
        if host.WINDOWS:
            proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signals.CTRL_BREAK_EVENT))
            return True
        if shell:
            import psutil  # ~20 ms: `invoke up` imports this module before it starts the server

            with suppress(psutil.Error):
                _term_shells_children(psutil.Process(proc.pid))
        proc.send_signal(signal.SIGTERM)
    except (OSError, SystemError):
        return proc.poll() is not None
    return True


def kill_app(proc: subprocess.Popen[bytes]) -> None:
    """Force-stop a :func:`spawn_app` process and its children (after the grace period)."""
    if proc.poll() is not None:
        return
    if not host.WINDOWS:
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    import psutil  # ~20 ms: `invoke up` imports this module before it starts the server

    with suppress(psutil.Error):
        kill.kill_tree(psutil.Process(proc.pid))


def stop_recorded_app(proc: Any, shell: bool = False) -> None:
    """Stop an identity-checked psutil.Process that another ``up`` started (``invoke down``).

    POSIX: SIGTERM to it alone (plus, under ``sh -c``, to the shell's children), as
    :func:`ask_app_to_stop` does; Windows: we do not share its console, so there is no polite
    signal to send and the tree is killed.
    """
    import psutil  # ~20 ms: `invoke up` imports this module before it starts the server

    if host.WINDOWS:
        kill.kill_tree(proc)
        return
    if shell:
        _term_shells_children(proc)
    with suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
