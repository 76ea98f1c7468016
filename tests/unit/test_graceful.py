"""stop's save detection (devserver/server/graceful.py), with a fake clock and real files."""

from __future__ import annotations

from pathlib import Path

from devserver.server.graceful import SAVE_QUIET, SaveWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_save_in_the_log_counts_until_it_ends(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text("old: Saving the final RDB snapshot before exiting.\n")  # before the stop
    clock = Clock()
    watch = SaveWatch(tmp_path / "data", log, clock)
    assert watch.poll() is False  # what the log said before the stop does not count
    with log.open("a") as out:
        out.write("[x] Saving the final RDB snapshot before exiting.\n")
    assert watch.poll() is True
    clock.now += 60
    assert watch.poll() is True  # still saving, however long it takes
    with log.open("a") as out:
        out.write("[x] Error trying to save the DB, can't exit.\n")
    assert watch.poll() is False


def test_growing_data_files_count_for_a_while(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"x" * 10)
    clock = Clock()
    watch = SaveWatch(data, tmp_path / "no.log", clock)
    assert watch.poll() is False
    (data / "dump-snapshot.dfs").write_bytes(b"y" * 4096)  # Dragonfly writes after its +OK
    assert watch.poll() is True and watch.written() == 4096
    clock.now += SAVE_QUIET / 2
    assert watch.poll() is True
    clock.now += SAVE_QUIET
    assert watch.poll() is False  # quiet for a second: no longer visibly saving
