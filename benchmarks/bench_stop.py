"""Stop's time budget: how long ``stop`` takes whatever the server does.

Target: every stop returns within ``server.stop_timeout + 1.5 s`` (hangs on SHUTDOWN, +OK
and stays up, ignores SIGTERM, refuses with -ERR), except while the server visibly saves;
five idle clients on the control port add no more than a few tens of milliseconds; a
supervisor that cannot be reached costs no connect timeout.
Run: ``python benchmarks/bench_stop.py [--budget 3]`` (or ``invoke bench --only stop``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.config import Settings, load_settings  # noqa: E402
from devserver.server.start import start as start_server  # noqa: E402
from devserver.server.stop import stop as stop_server  # noqa: E402
from tests import misbehaving_server  # noqa: E402

BEHAVIOURS = [
    "hang",
    "ok_stays",
    "hang,ignore_term",
    "ok_stays,ignore_term",
    "refuse",
    "refuse,ignore_term",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(project: Path, budget: float) -> Settings:
    return load_settings(
        {"server": {"flavor": "redis", "port": _free_port(), "stop_timeout": budget}}, project
    )


def _one(behaviour: str, budget: float) -> dict[str, object]:
    project = Path(tempfile.mkdtemp(prefix="devserver-bench-stop-"))
    if behaviour not in ("real redis", "real redis, 5 idle control clients", "no supervisor"):
        misbehaving_server.install(project / "bin", behaviour)
    settings = _settings(project, budget)
    state = start_server(settings).state
    idle = []
    if "idle" in behaviour:
        idle = [socket.create_connection(("127.0.0.1", state.control_port)) for _ in range(5)]
    if behaviour == "no supervisor":
        raw = json.loads(settings.state_file.read_text())
        raw["control_port"] = _free_port()
        settings.state_file.write_text(json.dumps(raw))
    result = stop_server(settings)
    for conn in idle:
        conn.close()
    return {
        "server": behaviour,
        "method": result.method,
        "seconds": round(result.seconds, 3),
        "within_budget": result.seconds <= budget + 1.5,
        "data_at_risk": result.data_at_risk,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="stop's time budget")
    parser.add_argument("--budget", type=float, default=3.0, help="server.stop_timeout")
    args = parser.parse_args()
    rows = [
        _one(b, args.budget)
        for b in ["real redis", "real redis, 5 idle control clients", "no supervisor", *BEHAVIOURS]
    ]
    width = max(len(str(r["server"])) for r in rows)
    print(f"stop_timeout {args.budget:g}s; target: within {args.budget + 1.5:g}s")
    for row in rows:
        print(
            f"  {row['server']!s:<{width}}  {row['method']!s:<8} {row['seconds']:>7.3f}s"
            f"  {'ok' if row['within_budget'] else 'OVER BUDGET'}"
        )
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
