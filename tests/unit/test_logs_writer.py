"""RotatingWriter and tee: rotation at line boundaries, bounded size, write faults, flush timing.

Faults are injected (an opener whose file raises ENOSPC/EACCES, a rename that raises
PermissionError as Windows does for a file someone holds open), never produced by filling a
disk. Timing logic runs on a fake clock; the tee runs on a real pipe with real threads.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from devserver.supervisor import logs
from devserver.supervisor.logs import RotatingWriter
from devserver.supervisor.tee import BackgroundSink, tee
from tests.platforms import needs_posix


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stamp() -> str:
    return "[T] "


def all_files(path: Path) -> list[Path]:
    """Oldest first: .N ... .1, then the current file."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path] if path.exists() else backups


def all_lines(path: Path) -> list[str]:
    return [line for p in all_files(path) for line in p.read_text().splitlines()]


def numbered(start: int, stop: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(start, stop))


def test_rotation_keeps_every_line_whole_and_in_order(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, max_bytes=1000, backups=100, stamp=stamp)
    for start in range(0, 2000, 37):  # blocks that never align with the limit
        writer.write(numbered(start, min(start + 37, 2000)))
        writer.flush()
    writer.close()
    files = all_files(log)
    assert len(files) > 20
    assert all(p.stat().st_size <= 1000 for p in files)
    assert all(p.read_bytes().endswith(b"\n") for p in files)  # no line torn across files
    assert all_lines(log) == [f"line {i:06d}" for i in range(2000)]


def test_total_size_is_bounded_and_oldest_backups_go(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, max_bytes=500, backups=3, stamp=stamp)
    for start in range(0, 5000, 10):
        writer.write(numbered(start, start + 10))
    writer.close()
    files = all_files(log)
    assert [p.name for p in files] == ["redis.log.3", "redis.log.2", "redis.log.1", "redis.log"]
    assert sum(p.stat().st_size for p in files) <= 4 * 500
    numbers = [int(line.split()[1]) for line in all_lines(log)]
    assert numbers == list(range(numbers[0], 5000))  # a contiguous, newest suffix


def test_no_backups_means_truncate_in_place(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, max_bytes=200, backups=0, stamp=stamp)
    writer.write(numbered(0, 100))
    writer.close()
    assert all_files(log) == [log]
    assert log.stat().st_size <= 200
    assert log.read_text().splitlines()[-1] == "line 000099"


def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, max_bytes=100, backups=5, stamp=stamp)
    writer.write(b"short\n" + b"x" * 300 + b"\nafter\n")
    writer.close()
    assert [p.read_bytes() for p in all_files(log)] == [b"short\n", b"x" * 300 + b"\n", b"after\n"]


def test_appends_to_an_existing_log_and_rotates_when_it_is_already_full(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_bytes(b"old\n" * 100)  # 400 bytes, over the limit: a restart with a new limit
    writer = RotatingWriter(log, max_bytes=100, backups=2, stamp=stamp)
    writer.write(b"new\n")
    writer.close()
    assert log.read_bytes() == b"new\n"
    assert (tmp_path / "redis.log.1").read_bytes() == b"old\n" * 100


@needs_posix("the deletion of a file another handle holds open (a sharing violation)")
def test_a_log_deleted_under_the_writer_is_recreated(tmp_path: Path) -> None:
    log, clock = tmp_path / "redis.log", FakeClock()
    writer = RotatingWriter(log, 10_000, 2, stamp=stamp, clock=clock)
    writer.write(b"before\n")
    writer.flush()
    log.unlink()
    clock.now += 1.0
    writer.write(b"after\n")
    writer.close()
    assert log.read_bytes() == b"after\n"


class FlakyFile:
    """A raw file whose writes fail while ``fail`` is set (or after ``budget`` bytes)."""

    def __init__(self, path: Path, owner: Flaky) -> None:
        self.real = open(path, "ab", buffering=0)  # noqa: SIM115
        self.owner = owner

    def write(self, data: bytes) -> int:
        if self.owner.error is not None:
            if self.owner.budget is None:
                raise self.owner.error
            take = min(self.owner.budget, len(data))
            if take == 0:
                raise self.owner.error
            self.owner.budget -= take
            return self.real.write(data[:take]) or 0
        return self.real.write(data) or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.real.seek(offset, whence)

    def truncate(self, size: int) -> int:
        return self.real.truncate(size)

    def close(self) -> None:
        self.real.close()


class Flaky:
    """Opener with an injectable fault: ``error`` on write (after ``budget`` bytes)."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.budget: int | None = None
        self.open_error: OSError | None = None

    def __call__(self, path: Path) -> IO[bytes]:
        if self.open_error is not None:
            raise self.open_error
        return FlakyFile(path, self)  # type: ignore[return-value]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_write_errors_drop_lines_with_a_count_and_recover(tmp_path: Path, code: int) -> None:
    log, clock, flaky = tmp_path / "redis.log", FakeClock(), Flaky()
    writer = RotatingWriter(log, 10_000, 2, opener=flaky, stamp=stamp, clock=clock)
    writer.write(numbered(0, 3))
    writer.flush()
    flaky.error = OSError(code, os.strerror(code))
    writer.write(numbered(3, 10))
    writer.flush()  # fails: 7 lines dropped, nothing raised
    clock.now += 0.5
    writer.write(numbered(10, 12))
    writer.flush()  # still backing off: 2 more dropped without touching the disk
    assert writer.dropped == 9
    flaky.error = None
    clock.now += logs.ROTATE_RETRY
    writer.write(numbered(12, 14))
    writer.close()
    lines = log.read_text().splitlines()
    assert lines[:3] == ["line 000000", "line 000001", "line 000002"]
    note = rf"\[T\] \[devserver\] 9 log lines dropped \(\[Errno {code}\] .*\)"
    assert re.fullmatch(note, lines[3])
    assert lines[4:] == ["line 000012", "line 000013"]


def test_markers_are_written_even_during_the_back_off(tmp_path: Path) -> None:
    log, clock, flaky = tmp_path / "redis.log", FakeClock(), Flaky()
    writer = RotatingWriter(log, 10_000, 2, opener=flaky, stamp=stamp, clock=clock)
    flaky.error = OSError(errno.ENOSPC, "No space left on device")
    writer.write(numbered(0, 2))
    writer.flush()
    flaky.error = None  # the disk recovered within the back-off: the exit marker still gets out
    writer.marker("server exited with code 0 after 1.0s")
    writer.close()
    assert log.read_text().splitlines() == [
        "[T] [devserver] 2 log lines dropped ([Errno 28] No space left on device)",
        "[T] [devserver] server exited with code 0 after 1.0s",
    ]


def test_open_failure_is_counted_too(tmp_path: Path) -> None:
    log, clock, flaky = tmp_path / "redis.log", FakeClock(), Flaky()
    writer = RotatingWriter(log, 10_000, 2, opener=flaky, stamp=stamp, clock=clock)
    flaky.open_error = PermissionError(errno.EACCES, "Permission denied")
    writer.write(numbered(0, 4))
    writer.flush()
    assert writer.dropped == 4
    flaky.open_error = None
    clock.now += logs.ROTATE_RETRY
    writer.write(numbered(4, 5))
    writer.close()
    assert log.read_text().splitlines()[-2:] == [
        "[T] [devserver] 4 log lines dropped ([Errno 13] Permission denied)",
        "line 000004",
    ]


def test_a_write_failing_half_way_leaves_no_torn_line(tmp_path: Path) -> None:
    log, clock, flaky = tmp_path / "redis.log", FakeClock(), Flaky()
    writer = RotatingWriter(log, 10_000, 2, opener=flaky, stamp=stamp, clock=clock)
    writer.write(numbered(0, 2))
    writer.flush()
    flaky.error, flaky.budget = OSError(errno.ENOSPC, "No space left on device"), 17
    writer.write(numbered(2, 6))
    writer.flush()
    assert log.read_bytes() == numbered(0, 2)  # the 17 bytes that got out were cut back
    assert writer.dropped == 4


def test_windows_rename_refusal_falls_back_to_copy_and_truncate(tmp_path: Path) -> None:
    """On Windows a file someone holds open cannot be renamed: rotate without renaming it."""
    log = tmp_path / "redis.log"
    refused: list[tuple[str, str]] = []

    def windows_rename(src: Path, dst: Path) -> None:
        refused.append((src.name, dst.name))
        raise PermissionError(errno.EACCES, "The process cannot access the file", str(src))

    writer = RotatingWriter(log, max_bytes=300, backups=3, rename=windows_rename, stamp=stamp)
    writer.write(numbered(0, 20))
    writer.flush()
    identity = os.stat(log).st_ino
    writer.write(numbered(20, 60))
    writer.close()
    assert ("redis.log", "redis.log.1") in refused and ("redis.log.1", "redis.log.2") in refused
    assert os.stat(log).st_ino == identity  # the held file was truncated, never renamed
    numbers = [int(line.split()[1]) for line in all_lines(log)]
    assert numbers == list(range(numbers[0], 60))
    assert all(p.stat().st_size <= 300 for p in all_files(log))


def test_rotation_that_fails_entirely_drops_and_retries_later(tmp_path: Path) -> None:
    log, clock = tmp_path / "redis.log", FakeClock()

    def no_rename(src: Path, dst: Path) -> None:
        raise OSError(errno.EIO, "I/O error")  # not a PermissionError: no fallback either

    writer = RotatingWriter(log, 100, 2, rename=no_rename, stamp=stamp, clock=clock)
    writer.write(numbered(0, 10))  # 120 bytes: the rotation at 100 fails
    writer.flush()
    assert writer.dropped == 2  # the 8 lines that fit were written
    before = log.stat().st_size
    writer.write(numbered(10, 11))
    writer.flush()  # within the back-off: no rotation attempt, no growth
    assert log.stat().st_size == before and writer.dropped == 3
    writer.rename = os.replace
    clock.now += logs.ROTATE_RETRY
    writer.write(numbered(11, 12))
    writer.close()
    assert log.read_text().splitlines() == [
        "[T] [devserver] 3 log lines dropped ([Errno 5] I/O error)",
        "line 000011",
    ]


def test_flush_is_due_50ms_after_the_oldest_buffered_line(tmp_path: Path) -> None:
    log, clock = tmp_path / "redis.log", FakeClock()
    writer = RotatingWriter(log, 10_000, 2, stamp=stamp, clock=clock)
    assert not writer.flush_if_due()  # nothing buffered
    writer.write(b"a\n")
    clock.now += 0.03
    writer.write(b"b\n")  # does not restart the clock
    clock.now += 0.019
    assert not writer.flush_if_due() and not log.exists()
    clock.now += 0.002
    assert writer.flush_if_due()
    assert log.read_bytes() == b"a\nb\n"
    assert not writer.flush_if_due()
    writer.close()


def test_big_buffers_are_written_without_waiting(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    writer = RotatingWriter(log, 10 << 20, 2, stamp=stamp, clock=FakeClock())
    writer.write(b"x" * (logs.BUFFER_BYTES - 1) + b"\n")
    assert log.stat().st_size == logs.BUFFER_BYTES
    writer.close()


def run_tee(tmp_path: Path, console: Any = None, chunk: int = 65536) -> tuple[int, Any, Any]:
    """A tee on a real pipe in a real thread; returns (write fd, thread, writer)."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "rb")
    writer = RotatingWriter(tmp_path / "redis.log", 10 << 20, 2)
    thread = threading.Thread(
        target=tee, args=(stream, writer, console), kwargs={"chunk": chunk}, daemon=True
    )
    thread.start()
    return write_fd, thread, writer


def wait_for(predicate: Any, timeout: float = 2.0) -> float:
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.002)
    return time.monotonic() - began


def test_tee_stamps_lines_and_a_reader_sees_them_within_100ms(tmp_path: Path) -> None:
    write_fd, thread, _ = run_tee(tmp_path)
    log = tmp_path / "redis.log"
    os.write(write_fd, b"hello\r\nbad \xff byte\npartial")
    assert wait_for(lambda: log.exists() and b"byte" in log.read_bytes()) < 0.1
    os.write(write_fd, b" end\n")
    os.close(write_fd)
    thread.join(5)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [re.sub(r"^\[[-\d: ]+\] ", "", line) for line in lines] == [
        "hello",
        "bad \ufffd byte",
        "partial end",
    ]


def test_tee_flushes_within_50ms_even_when_a_full_read_is_followed_by_silence(
    tmp_path: Path,
) -> None:
    """A read that fills the chunk exactly looks "not drained"; the flusher thread covers it."""
    write_fd, thread, _ = run_tee(tmp_path, chunk=16)
    log = tmp_path / "redis.log"
    os.write(write_fd, b"0123456789abcd\n")  # 16 bytes: exactly one chunk
    assert wait_for(lambda: log.exists() and log.stat().st_size > 0) < 0.1
    os.close(write_fd)
    thread.join(5)


def test_a_stalled_console_never_slows_the_tee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("devserver.supervisor.tee.CONSOLE_PENDING", 4)
    release = threading.Event()
    shown: list[str] = []

    def stalled_console(text: str) -> None:
        release.wait()
        shown.append(text)

    write_fd, thread, _ = run_tee(tmp_path, console=stalled_console)
    for start in range(0, 200_000, 1000):
        os.write(write_fd, numbered(start, start + 1000))
    os.close(write_fd)
    thread.join(10)  # finishes although the console never took a line (close waits 2 s)
    assert not thread.is_alive()
    assert len((tmp_path / "redis.log").read_text().splitlines()) == 200_000
    release.set()
    wait_for(lambda: any("console fell behind" in text for text in shown))


def test_background_sink_reports_what_it_dropped() -> None:
    gate = threading.Event()
    out: list[str] = []
    sink = BackgroundSink(lambda text: (gate.wait(), out.append(text)), max_pending=2)
    for i in range(10):
        sink(f"{i}\n")
    gate.set()
    sink.close()
    assert out[-1].startswith("[devserver] the console fell behind: ")
    dropped = int(out[-1].split(": ")[1].split()[0])
    assert dropped + len(out) - 1 == 10
