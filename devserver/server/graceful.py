"""The graceful half of ``invoke stop``: the request, the watch for a visible save, the words.

The graceful request goes to the supervisor (it knows the password the server was started
with), which answers the outcome of SHUTDOWN (``ok``, ``refused <the server's error>``,
``failed <why>``) and later, on the same connection, the server's exit status. Without a
supervisor the flavor's stop commands are sent straight to the server. It runs in a thread
so the loop in stop.py can watch the process, the save and the clock together.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from devserver.catalog import get_flavor
from devserver.config import Settings
from devserver.server import resp
from devserver.server.state import ServerState

# A refused connect on loopback is immediate; a dead supervisor must not cost seconds.
CONTROL_CONNECT_TIMEOUT = 0.25
GRACEFUL_SHARE = 0.7  # of stop_timeout for SHUTDOWN; SIGTERM gets the rest
SAVE_QUIET = 1.0  # data folder unchanged this long: no longer "visibly saving"

# Log lines that open and close a save on shutdown (Redis, Valkey; Dragonfly shows its save
# through growing snapshot files instead).
SAVE_STARTED = ("Saving the final RDB snapshot", "Synchronously saving", "Saving snapshot")
SAVE_ENDED = ("DB saved on disk", "Error trying to save", "Failed opening the RDB file")


class Request(threading.Thread):
    """The graceful request, through the supervisor or straight to the server."""

    def __init__(
        self, state: ServerState, settings: Settings, save: bool, timeout: float, patience: float
    ) -> None:
        super().__init__(daemon=True)
        self.state, self.settings, self.save = state, settings, save
        self.timeout = timeout  # for a direct SHUTDOWN
        self.patience = patience  # for the supervisor's answers, which follow the server's end
        self.answer = ""  # "", then "ok", "refused ...", "failed ...", "unreachable"
        self.exit_status = ""
        self.direct = False
        self.done = threading.Event()

    def run(self) -> None:
        try:
            if not self._via_supervisor():
                self.direct = True
                self._direct()
        finally:
            self.done.set()

    def _via_supervisor(self) -> bool:
        state = self.state
        if not state.control_port:
            return False
        try:
            conn = socket.create_connection(
                ("127.0.0.1", state.control_port), timeout=CONTROL_CONNECT_TIMEOUT
            )
        except OSError:
            return False
        with conn:
            try:
                mode = "save" if self.save else "nosave"
                conn.sendall(f"{state.control_token} stop {mode}\n".encode())
                conn.settimeout(self.patience)
                reader = conn.makefile("rb")
                first = reader.readline().decode("utf-8", "replace").strip()
            except TimeoutError:
                return True  # no answer yet: the request is under way
            except OSError:
                first = ""
            if first in ("", "denied"):
                return False  # closed unanswered (too many clients?) or not our supervisor
            if first.startswith("graceful shutdown failed: "):  # an older supervisor
                first = "failed " + first.split(": ", 1)[1]
            self.answer = first
            try:
                second = reader.readline().decode("utf-8", "replace").strip()
            except OSError:
                return True
            if second.startswith("exited "):
                self.exit_status = second[len("exited ") :]
        return True

    def _direct(self) -> None:
        settings, state = self.settings, self.state
        commands, _ = get_flavor(state.flavor).stop_plan(self.save)
        if not commands:
            self.answer = "ok"
            return
        try:
            resp.call(
                resp.connect_host(state.host),
                state.port,
                commands,
                timeout=self.timeout,
                password=settings.password,
            )
        except resp.ConnectionClosed:
            self.answer = "ok"
        except resp.RespError as exc:
            self.answer = f"refused {exc}"
        except TimeoutError:
            self.answer = ""  # no answer: maybe saving, maybe hung; the loop decides
        except OSError as exc:
            self.answer = f"failed {exc.strerror or exc}"
        else:
            self.answer = "ok"


class SaveWatch:
    """Is the server visibly saving? Its log since the stop began, and its data folder."""

    def __init__(self, data_dir: Path, log_file: Path, clock: Callable[[], float]) -> None:
        self.data_dir, self.log_file, self.clock = data_dir, log_file, clock
        self.offset = _size(log_file)
        self.first = self._snapshot()
        self.last = self.first
        self.changed_at = -1e9
        self.log_saving = False

    def _snapshot(self) -> dict[str, int]:
        try:
            with os.scandir(self.data_dir) as entries:
                return {e.name: e.stat().st_size + e.stat().st_mtime_ns for e in entries}
        except OSError:
            return {}

    def poll(self) -> bool:
        now = self.clock()
        snap = self._snapshot()
        if snap != self.last:
            self.last, self.changed_at = snap, now
        try:
            with open(self.log_file, "rb") as handle:
                if handle.seek(0, os.SEEK_END) < self.offset:
                    self.offset = 0  # rotated meanwhile
                handle.seek(self.offset)
                text = handle.read(1 << 20).decode("utf-8", "replace")
                self.offset += len(text.encode("utf-8", "replace"))
        except OSError:
            text = ""
        for line in text.splitlines():
            if any(mark in line for mark in SAVE_STARTED):
                self.log_saving = True
            if any(mark in line for mark in SAVE_ENDED):
                self.log_saving = False
        return self.log_saving or now - self.changed_at < SAVE_QUIET

    def written(self) -> int:
        """Bytes in data files that appeared or changed since the stop began."""
        total = 0
        try:
            with os.scandir(self.data_dir) as entries:
                for entry in entries:
                    if self.first.get(entry.name) != self.last.get(entry.name):
                        total += entry.stat().st_size
        except OSError:
            pass
        return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def hopeless(request: Request, refused: str) -> bool:
    """The graceful request cannot succeed: refused, or the server cannot be reached."""
    return bool(refused) or request.answer.startswith("failed ")


def why_forced(request: Request, refused: str, budget: float) -> str:
    """Why SIGTERM was needed, in words."""
    via = "the supervisor did not answer, and " if request.direct else ""
    if refused:
        return f"{via}the server refused to stop: {refused}"
    if request.answer.startswith("failed "):
        return f"{via}SHUTDOWN could not be sent: {request.answer[len('failed ') :]}"
    waited = f"{budget * GRACEFUL_SHARE:.1f}s"
    if request.answer == "ok":
        return f"{via}the server accepted SHUTDOWN but was still running after {waited}"
    return f"{via}SHUTDOWN got no answer within {waited}"


def save_progress(watch: SaveWatch, elapsed: float, limit: float) -> str:
    written = watch.written()
    size = f"{written / 1024:.0f} KiB" if written < 1 << 20 else f"{written / 1048576:.1f} MiB"
    size = f"{size} written, " if written else ""
    return (
        f"the server is saving its data ({size}{elapsed:.0f}s since the stop began); "
        f"waiting for it, up to server.save_timeout ({limit:g}s) past the stop budget"
    )
