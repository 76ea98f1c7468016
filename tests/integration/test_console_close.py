"""``start --foreground``: what the Windows CTRL_CLOSE handler runs stops the server in time.

The handler itself (SetConsoleCtrlHandler through ctypes) is unit-tested with the calls
asserted (tests/unit/test_compat_windows.py); here the stop it runs is real: a real
redis-server in the foreground supervisor, the "close" arriving on another thread as Windows
delivers it, and the server must be stopped gracefully, logged, and its state removed before
the handler returns (Windows ends the process then).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from devserver.server import resp
from devserver.supervisor import foreground
from devserver.system import signals
from tests.conftest import SettingsFactory


def test_console_close_stops_the_foreground_server_gracefully(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers: list[Callable[[], object]] = []
    monkeypatch.setattr(signals, "on_console_close", lambda stop: handlers.append(stop) or True)
    settings = make_settings()
    outcome: dict[str, object] = {}

    def close_the_console() -> None:
        deadline = time.monotonic() + 30  # guards against a hang only
        while time.monotonic() < deadline:
            if settings.state_file.exists() and resp.ping("127.0.0.1", settings.port) == "ready":
                break
            time.sleep(0.02)
        outcome["ready"] = True
        pid = int(json.loads(settings.state_file.read_text())["pid"])
        outcome["pid"] = pid
        handlers[0]()  # Windows calls the handler on a thread of its own
        outcome["state_left"] = settings.state_file.exists()
        outcome["log"] = Path(settings.log_file("redis")).read_text(errors="replace")

    closer = threading.Thread(target=close_the_console, daemon=True)
    closer.start()
    code = foreground.run_foreground(settings, sink=lambda text: None)
    closer.join(timeout=30)
    assert outcome.get("ready") and len(handlers) == 1
    assert code == 0  # SHUTDOWN SAVE: a clean exit, not a kill
    assert outcome["state_left"] is False  # done before the handler returned
    assert "server exited with code 0" in str(outcome["log"])
    assert not psutil.pid_exists(int(str(outcome["pid"]))) or (
        psutil.Process(int(str(outcome["pid"]))).status() == psutil.STATUS_ZOMBIE
    )
