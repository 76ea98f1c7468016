"""tail.py: last lines across rotation, huge and binary lines, following real files.

The follow tests use real files, the real RotatingWriter and real threads: a writer thread
logs numbered lines while ``follow`` runs in another, and every number must arrive exactly
once, in order, whatever rotation, truncation or deletion happened in between.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devserver import tail
from devserver.supervisor.logs import RotatingWriter
from devserver.tail import Follower, follow, last_lines
from tests.platforms import needs_posix


def write_lines(path: Path, numbers: range, mode: str = "w") -> None:
    with open(path, mode) as handle:
        handle.writelines(f"line {i}\n" for i in numbers)


def test_last_lines_of_one_file(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    write_lines(log, range(1000))
    assert last_lines(log, 3) == ["line 997", "line 998", "line 999"]
    assert last_lines(log, 0) == []
    assert len(last_lines(log, 5000)) == 1000
    assert last_lines(tmp_path / "missing.log", 5) == []


def test_a_partial_last_line_and_blank_lines_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(b"\nfirst\n\nlast without newline")
    assert last_lines(log, 10) == ["", "first", "", "last without newline"]


def test_last_lines_span_into_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    write_lines(tail.backup(log, 2), range(0, 10))
    write_lines(tail.backup(log, 1), range(10, 12))
    write_lines(log, range(12, 15))
    assert last_lines(log, 2) == ["line 13", "line 14"]
    assert last_lines(log, 6) == [f"line {i}" for i in range(9, 15)]
    assert last_lines(log, 100) == [f"line {i}" for i in range(15)]


def test_lines_crossing_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "BLOCK", 7)
    log = tmp_path / "redis.log"
    write_lines(log, range(200))
    assert last_lines(log, 150) == [f"line {i}" for i in range(50, 200)]


def test_a_filter_looks_back_through_backups(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    write_lines(tail.backup(log, 1), range(0, 100))
    write_lines(log, range(100, 200))
    found = last_lines(log, 3, accept=lambda line: line.endswith("7"))
    assert found == ["line 177", "line 187", "line 197"]
    assert last_lines(log, 12, accept=lambda line: line.endswith("7"))[0] == "line 87"


def test_a_2gb_single_line_prints_its_end_truncated_with_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "huge.log"
    with open(log, "wb") as handle:
        handle.truncate(2 * 1024**3)  # sparse: 2 GB of NUL bytes and no newline
        handle.seek(-10, os.SEEK_END)
        handle.write(b"THE END.\r\n")
    tracemalloc.start()
    lines = last_lines(log, 50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(lines) == 1
    assert lines[0].startswith(tail.TRUNCATED) and lines[0].endswith("THE END.")
    assert len(lines[0]) == len(tail.TRUNCATED) + tail.MAX_LINE - 1  # the "\n" is not shown
    assert peak < 16 * 1024 * 1024  # bounded memory; its speed is benchmarks/bench_tail.py's


def test_binary_garbage_never_crashes_and_prints_no_control_codes(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(random.Random(5).randbytes(300_000) + b"\nok \x1b[31mred\x1b[0m \xff\n")
    lines = last_lines(log, 10_000)
    assert lines[-1] == "ok red \ufffd"
    for line in lines:
        assert all(ch == "\t" or (ord(ch) >= 32 and ord(ch) != 127) for ch in line)


# -- following ------------------------------------------------------------------------------


class Collector:
    """Runs follow() in a thread and collects what it yields."""

    def __init__(self, path: Path, follower: Follower | None = None) -> None:
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.gen: Iterator[str] = follow(path, self.stop, follower=follower or Follower(path))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.gen:
            self.lines.append(line)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 5.0) -> float:
        began = time.monotonic()
        while not predicate(self.lines):
            assert time.monotonic() - began < timeout, f"timed out; got {self.lines[-3:]}"
            time.sleep(0.002)
        return time.monotonic() - began

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        assert not self.thread.is_alive()


def numbers_of(lines: list[str]) -> list[int]:
    return [int(line.split()[-1]) for line in lines if line.startswith("line ")]


def produce(writer: RotatingWriter, total: int, batch: int = 50, pause: float = 0.001) -> None:
    for start in range(0, total, batch):
        writer.write(b"".join(b"line %d\n" % i for i in range(start, min(start + batch, total))))
        writer.flush()
        time.sleep(pause)
    writer.close()


@pytest.mark.parametrize(
    "windows",
    [
        pytest.param(
            False,
            id="rename",
            marks=needs_posix(
                "renaming a file another handle holds open: the writer falls back to copy and"
                " truncate there, the windows-copy-truncate case"
            ),
        ),
        pytest.param(True, id="windows-copy-truncate"),
    ],
)
def test_follow_across_many_rotations_loses_and_repeats_nothing(
    tmp_path: Path, windows: bool
) -> None:
    log = tmp_path / "redis.log"

    def refuse(src: Path, dst: Path) -> None:
        raise PermissionError(errno.EACCES, "in use by another process")

    # Renames are atomic, so the follower copes with several rotations per poll (here one
    # every ~10 ms). Copy-and-truncate rewrites files in place: it is only promised to keep
    # up when rotations are further apart than a poll, as with any real log size.
    rename = refuse if windows else os.replace
    max_bytes = 40_000 if windows else 4000
    writer = RotatingWriter(log, max_bytes=max_bytes, backups=50, rename=rename)
    writer.marker("before following")
    collector = Collector(log)
    produce(writer, 20_000)
    collector.wait_for(lambda lines: numbers_of(lines)[-1:] == [19_999])
    collector.close()
    assert numbers_of(collector.lines) == list(range(20_000))
    assert len(list(tmp_path.glob("redis.log.*"))) >= (3 if windows else 40)


def test_follow_sees_a_new_line_within_100ms(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, 1 << 20, 2)
    writer.marker("started")
    collector = Collector(log)
    time.sleep(0.1)
    delays = []
    for i in range(5):
        writer.write(b"line %d\n" % i)
        writer.flush_if_due(0)  # as the tee does when the pipe is drained
        delays.append(collector.wait_for(lambda lines, i=i: numbers_of(lines)[-1:] == [i]))
        time.sleep(0.013)
    collector.close()
    writer.close()
    assert max(delays) < 0.1


def test_follow_after_truncation_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    write_lines(log, range(0, 100))
    collector = Collector(log)
    write_lines(log, range(100, 105), mode="a")
    collector.wait_for(lambda lines: numbers_of(lines)[-1:] == [104])
    with open(log, "r+b") as handle:
        handle.truncate(0)  # e.g. someone emptied it; nothing to catch up in a backup
    time.sleep(0.15)
    write_lines(log, range(105, 108), mode="a")
    collector.wait_for(lambda lines: numbers_of(lines)[-1:] == [107])
    collector.close()
    assert numbers_of(collector.lines) == list(range(100, 108))


@needs_posix("the deletion of a file another handle holds open (a sharing violation)")
def test_follow_waits_while_the_file_is_deleted_and_continues(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    write_lines(log, range(0, 3))
    collector = Collector(log)
    log.unlink()
    time.sleep(0.2)
    assert collector.thread.is_alive() and collector.lines == []
    write_lines(log, range(3, 6))
    collector.wait_for(lambda lines: numbers_of(lines)[-1:] == [5])
    collector.close()
    assert numbers_of(collector.lines) == [3, 4, 5]


def test_follow_spans_a_server_stop_and_start(tmp_path: Path) -> None:
    """Each server run has its own writer appending to the same file."""
    log = tmp_path / "redis.log"
    collector = Collector(log)  # no log yet: it appears with the first start
    for run in range(2):
        writer = RotatingWriter(log, 1 << 20, 2)
        writer.marker(f"starting run {run}")
        produce(writer, 3)
        time.sleep(0.1)
    collector.wait_for(lambda lines: len(lines) == 8)
    collector.close()
    assert [line.split("] ", 1)[-1] for line in collector.lines] == [
        "[devserver] starting run 0",
        "line 0",
        "line 1",
        "line 2",
        "[devserver] starting run 1",
        "line 0",
        "line 1",
        "line 2",
    ]


def test_a_huge_line_while_following_is_cut_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(b"")
    collector = Collector(log)
    with open(log, "ab") as handle:
        for _ in range(40):
            handle.write(b"y" * 10_000)
            handle.flush()
            time.sleep(0.005)
        handle.write(b"!\nline 1\n")
    collector.wait_for(lambda lines: numbers_of(lines) == [1])
    collector.close()
    assert collector.lines[0].startswith(tail.TRUNCATED) and collector.lines[0].endswith("y!")
    assert len(collector.lines[0]) == len(tail.TRUNCATED) + tail.MAX_LINE


def test_follow_uses_the_injected_sleep_and_stops_on_the_event(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(b"old\n")
    stop = threading.Event()
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            log.write_bytes(b"old\nnew\n")
        else:
            stop.set()

    assert list(follow(log, stop, interval=0.25, sleep=fake_sleep)) == ["new"]
    assert sleeps == [0.25, 0.25]


def test_a_long_line_whose_start_is_known_is_cut_but_older_lines_still_show(
    tmp_path: Path,
) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(b"first\n" + b"z" * (tail.MAX_LINE + 500) + b"\nlast\n")
    lines = last_lines(log, 3)
    assert lines[0] == "first" and lines[2] == "last"
    assert lines[1] == tail.TRUNCATED + "z" * tail.MAX_LINE
