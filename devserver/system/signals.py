"""Ctrl+C, signals and console events: how a stop request reaches our processes on each OS.

POSIX delivers signals (SIGINT, SIGTERM, SIGHUP) that handlers turn into a graceful stop;
Windows delivers console control events (Ctrl+C, Ctrl+Break, a closed window) to every
process attached to a console, and none to a detached one. Handlers can be set only from the
main thread: off it, everything here leaves the handlers alone.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from devserver.system import host

if TYPE_CHECKING:
    from devserver.system.posix import Child

CTRL_BREAK_EVENT = 1  # signal.CTRL_BREAK_EVENT, which exists only on Windows


def install_stop_signals(on_stop: Callable[[], object]) -> None:
    """The detached supervisor: SIGTERM means "stop the server gracefully"; ignore hang-ups.

    Windows has neither, and a detached process gets no console events: there ``invoke stop``
    reaches the supervisor through its control socket only.
    """
    if host.WINDOWS:
        return
    signal.signal(signal.SIGTERM, lambda *_: on_stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


# The console control event (wincon.h) sent when the console window is closed. (Logoff and
# shutdown events reach services only: interactive processes are simply ended then.)
CTRL_CLOSE_EVENT = 2
_console_handlers: list[Any] = []  # ctypes callbacks must stay alive while registered


def on_console_close(stop: Callable[[], object]) -> bool:
    """Windows ``start --foreground``: run ``stop`` when the console window is closed.

    Closing the window sends CTRL_CLOSE_EVENT to every process attached; Windows ends ours when
    the handler returns, or about 5 s after the event regardless. Without a handler the
    supervisor dies at once and the server, in its own windowless console, runs on orphaned.
    The handler runs on a thread Windows creates; ``stop`` must finish the graceful stop
    within that grace (the supervisor's ``stop_within``). Ctrl+C and Ctrl+Break are left to
    Python's own handler (we return FALSE for them). POSIX: nothing to do (hang-ups are
    handled by signals); returns False there and when the handler could not be set.
    """
    if not host.WINDOWS:
        return False
    import ctypes  # costs milliseconds; the supervisor imports this module before the spawn
    from ctypes import wintypes

    routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined]

    def handler(event: int) -> int:
        if event != CTRL_CLOSE_EVENT:
            return 0
        with suppress(Exception):
            stop()
        return 1

    callback = routine(handler)
    try:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        if not kernel32.SetConsoleCtrlHandler(callback, True):
            return False
    except Exception:  # a foreground start must not fail over its close hook
        return False
    _console_handlers.append(callback)
    return True


def wait_interruptible(proc: subprocess.Popen[bytes] | Child) -> int:
    """Wait for a child in a way Ctrl+C can interrupt.

    On Windows an untimed wait cannot be broken by Ctrl+C (a CPython limitation), so poll
    with a short timeout there; POSIX signals interrupt a blocking wait, which also reacts to
    the child's exit at once.
    """
    if not host.WINDOWS:
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def interrupt_once() -> Iterator[Callable[[], bool]]:
    """The first Ctrl+C raises KeyboardInterrupt as usual; later ones cannot abort the cleanup.

    Around ``invoke start``: the first Ctrl+C starts the cleanup of what was spawned. A
    second one must never cut that cleanup short (it used to, leaving server, supervisor and
    state behind); it is only remembered, and ``hurried()`` (yielded) turns True so the
    cleanup can skip its polite wait and kill at once. Windows: Ctrl+Break the same. Only the
    main thread can set signal handlers; elsewhere nothing changes.
    """
    import threading  # the supervisor imports this module before the spawn, threading after

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        if len(seen) == 1:
            raise KeyboardInterrupt

    names = ("SIGINT", "SIGBREAK") if host.WINDOWS else ("SIGINT",)
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {num: signal.signal(num, handler) for num in numbers}
    try:
        yield lambda: len(seen) > 1
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the block; one that arrives is delivered at its end.

    Around forking the supervisor: between ``fork()`` returning and the caller holding the
    handle, a KeyboardInterrupt would leave a server that nobody undoes. Unlike
    :func:`interrupts_deferred` the signal is not consumed: the handler in force (say
    :func:`interrupt_once`'s) sees it as usual. Windows has no signal masks: nothing.
    """
    if host.WINDOWS or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl+C that arrives inside the block until its end, then raise it.

    Around imports: a KeyboardInterrupt raised while CPython runs an import's internal
    callbacks (the weakref callback of a module lock) is printed as "Exception ignored in
    ..." with a traceback, and then lost. Off the main thread this does nothing.
    """
    got: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            raise KeyboardInterrupt


def ignore_interrupts() -> None:
    """Ignore Ctrl+C (and Ctrl+Break) from now on: for a program that is only exiting after
    it handled one. Main thread only; elsewhere nothing changes."""
    import threading  # the supervisor imports this module before the spawn, threading after

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


@contextmanager
def foreground_stop_signals() -> Iterator[None]:
    """``start --foreground``: a closed terminal (SIGHUP) or SIGTERM means the same graceful
    stop as Ctrl+C, so each is turned into KeyboardInterrupt, which the supervisor's wait and
    every cleanup path already handle. Windows: the console-close event is the hook point of
    the Windows console handler (not installed here). Main thread only.
    """
    import threading  # the supervisor imports this module before the spawn, threading after

    if host.WINDOWS or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    numbers = [signal.SIGTERM, signal.SIGHUP]
    previous = {num: signal.signal(num, handler) for num in numbers}
    try:
        yield
    finally:
        for num, old in previous.items():
            signal.signal(num, old)


def interrupt_signals() -> list[int]:
    """The signals that mean "stop" for a foreground tool: Ctrl+C everywhere, Ctrl+Break on
    Windows, SIGTERM and a terminal hang-up on POSIX."""
    names = ("SIGINT", "SIGBREAK") if host.WINDOWS else ("SIGINT", "SIGTERM", "SIGHUP")
    return [getattr(signal, name) for name in names if hasattr(signal, name)]
