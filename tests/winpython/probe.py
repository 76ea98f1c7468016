"""Run by the *Windows* interpreter under Wine: what the Windows side sees of processes.

The Linux test process cannot ask about Windows pids itself (they are Wine's, not Linux's),
so it runs this script in the same Wine prefix and reads one JSON object from stdout.

    probe.py procs PID...        -> {"PID": {"alive", "create_time", "ppid", "children",
                                              "exe", "name"}} (exe/name: text or "error: ...")
    probe.py kill STATE_FILE     -> kill the server and supervisor it names (identity-checked
                                    by create time, trees included); {"killed": [pids]}

Kept standalone (only psutil), so it runs in any venv that has the requirements.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import psutil


def _read(call: Any) -> str:
    try:
        return str(call())
    except Exception as exc:  # Wine: OSError WinError 87; Windows: AccessDenied
        return f"error: {type(exc).__name__}: {exc}"


def procs(pids: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            info = {
                "alive": proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE,
                "create_time": proc.create_time(),
                "ppid": proc.ppid(),
                "children": [c.pid for c in proc.children(recursive=True)],
                "exe": _read(proc.exe),
                "name": _read(proc.name),
                "cmdline": _read(lambda p=proc: json.dumps(p.cmdline())),  # type: ignore[misc]
            }
        except psutil.NoSuchProcess:
            info = {"alive": False}
        out[str(pid)] = info
    return out


def kill(state_file: str) -> dict[str, Any]:
    try:
        with open(state_file, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return {"killed": []}
    killed = []
    for key, ctime_key in (("pid", "create_time"), ("supervisor_pid", "supervisor_create_time")):
        pid = state.get(key)
        if not isinstance(pid, int) or pid <= 0:
            continue
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - float(state.get(ctime_key, 0))) >= 0.05:
                continue
            for victim in [*proc.children(recursive=True), proc]:
                try:
                    victim.kill()
                    killed.append(victim.pid)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
    return {"killed": killed}


def main() -> None:
    command, args = sys.argv[1], sys.argv[2:]
    result = procs([int(a) for a in args]) if command == "procs" else kill(args[0])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
