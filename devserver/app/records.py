"""What ``invoke up`` (or ``invoke api``) started for the application, recorded so ``invoke
down`` can stop it: docker compose's ``down`` stops what ``up`` or one of its parts started.

``data/app.json`` sits beside the server's state file and holds the owner (the ``up`` process)
and each application process as (name, pid, create time, executable, start ticks), checked
with identity.verified_process before any signal, exactly like the server: a PID reused since
is never signalled, and on Linux the start in clock ticks since boot decides (psutil's create
time moves with every wall-clock step, and a live process would look like a reused pid).

``down`` from another shell first asks the owner (``"stop_requested": true`` in the file; the
owner polls it every 0.1 s), which stops its processes the way it stops them on Ctrl+C and
removes the file. Only when the owner is gone or does not answer within the same budget does
``down`` stop them itself (app/teardown.py: SIGTERM to each main process, then a kill of
everything the run started, found by the run's tag that the file records).

``invoke api`` (the API alone, in the foreground) keeps its own record, ``data/api.json``, in
the same shape (``who="api"``). Its owner does not poll: it waits on its API, which shares the
terminal, so ``down`` marks the stop as requested and stops the API itself; the owner then
sees the mark, says who stopped it and removes the record. ``invoke run`` is a one-off (a
migration, a script) and is not recorded, as ``docker compose down`` leaves ``run``'s
containers alone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devserver.app import teardown
from devserver.config import Settings
from devserver.errors import DevServerError
from devserver.server.identity import identity_of, verified_process
from devserver.system import appproc, apptree, lifetime
from devserver.system.atomic import PRIVATE_MODE, write_atomic


def app_state_file(settings: Settings, who: str = "up") -> Path:
    """``data/app.json`` for ``up``'s processes, ``data/api.json`` for ``invoke api``'s."""
    return settings.data_dir / ("app.json" if who == "up" else f"{who}.json")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entry(name: str, pid: int) -> dict[str, Any]:
    ident = identity_of(pid)
    create_time, exe = ident if ident else (0.0, "")
    ticks = lifetime.start_ticks(pid) or 0
    return {"name": name, "pid": pid, "create_time": create_time, "exe": exe, "start_ticks": ticks}


def _live(entry: Mapping[str, Any]) -> Any | None:
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    ticks = entry.get("start_ticks")
    return verified_process(
        pid,
        float(entry.get("create_time") or 0),
        str(entry.get("exe", "")),
        ticks if isinstance(ticks, int) else 0,
    )


def running_owner(settings: Settings, who: str = "up") -> int | None:
    """The pid of an ``up`` (``invoke api``) that still runs this project's processes."""
    data = _read(app_state_file(settings, who))
    if data is None or _live(data.get("owner") or {}) is None:
        return None
    return int(data["owner"]["pid"])


def record(
    settings: Settings,
    pids: Mapping[str, int],
    who: str = "up",
    run: str = "",
    shells: Collection[str] = (),
) -> None:
    """Written by ``up`` once every process runs (private: nothing secret, but no reason).

    ``run``: the tag its processes carry (apptree), so ``down`` finds what they started;
    ``shells``: the names run under ``sh -c`` (the shell's children get the SIGTERM too).
    """
    data = {
        "owner": _entry(who, os.getpid()),
        "processes": [{**_entry(name, pid), "shell": name in shells} for name, pid in pids.items()],
        "run": run,
        "stop_requested": False,
    }
    path = app_state_file(settings, who)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2), mode=PRIVATE_MODE)


def clear(settings: Settings, who: str = "up") -> None:
    """The owner removes the record once its processes have ended."""
    path = app_state_file(settings, who)
    data = _read(path)
    if data is not None and (data.get("owner") or {}).get("pid") != os.getpid():
        return  # not ours (another up recorded since): leave it
    path.unlink(missing_ok=True)


def stop_was_requested(settings: Settings, who: str = "up") -> bool:
    """Polled by the owner: has ``invoke down`` asked it to stop?"""
    data = _read(app_state_file(settings, who))
    return bool(data and data.get("stop_requested"))


@dataclass
class AppStop:
    """What ``down`` did to the application processes, for its report.

    ``left``: "name: prog (pid N)" of each process the app started that still runs after
    the kill; ``down`` then says so and exits 1, never "stopped".
    """

    stopped: list[str] = field(default_factory=list)
    by_owner: bool = False
    stale: bool = False
    left: list[str] = field(default_factory=list)


def _wait_file_gone(path: Path, until: float) -> None:
    while path.exists() and time.monotonic() < until:
        time.sleep(0.05)


def stop_recorded(settings: Settings, timeout: float, who: str = "up") -> AppStop:
    """Stop what ``up`` started: through its owner when it answers, else ourselves, within
    one budget of ``timeout`` seconds (then a kill of everything they started).

    ``who="api"``: the owner (``invoke api``) is told, not waited for; we stop its API.
    """
    path = app_state_file(settings, who)
    data = _read(path)
    result = AppStop()
    if data is None:
        return result
    began = time.monotonic()
    entries = [e for e in data.get("processes") or [] if isinstance(e, dict)]
    live = [(e, p) for e in entries if (p := _live(e)) is not None]
    owner = _live(data.get("owner") or {})
    run = str(data.get("run") or "")
    trees = teardown.Trees(run, {str(e.get("name")): p for e, p in live})
    trees.refresh(scan=True)
    if owner is None and not trees.remaining():
        path.unlink(missing_ok=True)
        result.stale = True
        return result
    result.stopped = sorted({name for name, _proc in trees.remaining()})
    deadline = began + timeout
    if owner is not None:
        try:
            write_atomic(path, json.dumps({**data, "stop_requested": True}), mode=PRIVATE_MODE)
        except OSError as exc:
            raise DevServerError(f"cannot write {path}: {exc.strerror or exc}") from None
        # The owner stops them within the same budget and kills at its end; a moment more
        # for that kill to land and for it to remove the record.
        if who == "up" and trees.wait_gone(deadline + 0.5):
            _wait_file_gone(path, time.monotonic() + 2.0)
            result.by_owner = True
            return result
    else:
        for entry, proc in live:
            appproc.stop_recorded_app(proc, bool(entry.get("shell")))
        terminate_orphans(trees, [str(e.get("name")) for e in entries if _live(e) is None])
        trees.wait_gone(deadline)
    if who == "api" and owner is not None:  # told, not waited for: we stop its API
        for entry, proc in live:
            appproc.stop_recorded_app(proc, bool(entry.get("shell")))
        trees.wait_gone(deadline)
    if trees.remaining():
        trees.kill_all()
        trees.wait_gone(time.monotonic() + teardown.KILL_WAIT_S)
    result.left = trees.left()
    if who == "api" and owner is not None and apptree.alive([owner]):
        _wait_file_gone(path, time.monotonic() + 5.0)  # it reads the mark, then removes the record
    path.unlink(missing_ok=True)
    return result


def terminate_orphans(trees: teardown.Trees, names: list[str]) -> None:
    """What an exited process left running has no main process to stop it: asked directly."""
    teardown.terminate(trees.orphans(names))
