"""Checks, latency and the runner against an in-memory fake client and a fake clock.

The fake lets each test break one behaviour (wrong order, BRPOP that does not block, a lost
connection) and see that verify notices it, without a server or real waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import redis

from devserver.config import DEFAULT_THRESHOLDS_MS
from devserver.errors import VerifyError
from devserver.verify import functional, latency, runner
from devserver.verify.functional import CheckFailed, Keys
from devserver.verify.latency import OpLatency, percentile
from devserver.verify.target import Target

TARGET = Target(host="127.0.0.1", port=6399, password="hunter2", configured=True)


class Clock:
    """Advances only when told to (each call can also add a fixed tick)."""

    def __init__(self, tick: float = 0.0001) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class FakeConnection:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


class FakePool:
    connection_class = FakeConnection
    connection_kwargs: ClassVar[dict[str, Any]] = {}


class FakeRedis:
    """Just enough of redis.Redis for verify; ``fail`` maps a method name to an exception."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.data: dict[str, Any] = {}
        self.connection_pool = FakePool()
        self.fail: dict[str, Exception] = {}
        self.clock = clock or Clock()
        self.closed = False
        self.calls: list[str] = []

    def _hit(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def ping(self) -> bool:
        self._hit("ping")
        return True

    def info(self, section: str) -> dict[str, Any]:
        self._hit("info")
        return {"redis_version": "7.2.4", "redis_mode": "standalone"}

    def set(self, key: str, value: bytes, ex: int | None = None) -> bool:
        self._hit("set")
        self.data[key] = bytes(value)
        return True

    def get(self, key: str) -> bytes | None:
        self._hit("get")
        return self.data.get(key)

    def lpush(self, key: str, *values: bytes) -> int:
        self._hit("lpush")
        items = self.data.setdefault(key, [])
        for value in values:
            items.insert(0, value)
        return len(items)

    def llen(self, key: str) -> int:
        return len(self.data.get(key, []))

    def brpop(self, keys: list[str], timeout: float) -> tuple[bytes, bytes] | None:
        self._hit("brpop")
        assert timeout > 0, "verify must never block forever"
        items = self.data.get(keys[0])
        if not items:
            self.clock.now += timeout
            return None
        value = items.pop()
        if not items:
            del self.data[keys[0]]
        return keys[0].encode(), value

    def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return list(self.data.get(key, []))

    def expire(self, key: str, seconds: int) -> bool:
        return key in self.data

    def delete(self, *keys: str) -> int:
        self._hit("delete")
        return sum(1 for k in keys if self.data.pop(k, None) is not None)

    def exists(self, *keys: str) -> int:
        return sum(1 for k in keys if k in self.data)

    def close(self) -> None:
        self.closed = True


def _run(fake: FakeRedis, iterations: int = 5, **thresholds: float) -> runner.Report:
    limits = {**DEFAULT_THRESHOLDS_MS, **thresholds}
    return runner.run(TARGET, iterations, limits, client=fake, clock=fake.clock, keys=Keys("test"))


def test_all_checks_pass_and_json_has_the_design_shape() -> None:
    fake = FakeRedis()
    report = _run(fake)
    assert report.ok, report.failed
    assert [c.name for c in report.checks] == [
        "connection",
        "server",
        "set/get",
        "queue",
        "queue timeout",
        "latency",
        "cleanup",
    ]
    assert report.server == "redis 7.2.4 (standalone)"
    data = report.as_json()
    assert set(data) == {"ok", "url", "checks", "latency_ms", "warnings"}
    assert data["warnings"] == []
    assert data["url"] == "redis://:***@127.0.0.1:6399/0"
    assert all(set(c) == {"name", "ok", "detail"} for c in data["checks"])
    assert set(data["latency_ms"]) == set(latency.OPERATIONS)
    for figures in data["latency_ms"].values():
        assert set(figures) == {"p50", "p99", "max", "threshold", "samples", "warning"}
        assert figures["warning"] is None
    assert fake.data == {}  # everything verify wrote is gone
    assert fake.closed


def test_other_keys_are_never_touched() -> None:
    fake = FakeRedis()
    fake.data = {"app:jobs": [b"b", b"a"], "devserver:verify:other:x": b"theirs"}
    _run(fake)
    assert fake.data == {"app:jobs": [b"b", b"a"], "devserver:verify:other:x": b"theirs"}


def test_fifo_broken_queue_fails_the_queue_check() -> None:
    fake = FakeRedis()
    fake.lrange = lambda key, start, end: []  # type: ignore[method-assign]
    report = _run(fake)
    queue = next(c for c in report.checks if c.name == "queue")
    assert not queue.ok and "LRANGE after BRPOP" in queue.detail
    assert not report.ok


def test_brpop_that_does_not_block_fails() -> None:
    fake = FakeRedis(Clock(tick=0.0))  # no time passes: BRPOP "returned at once"
    fake.brpop = lambda keys, timeout: None  # type: ignore[method-assign]
    with pytest.raises(CheckFailed, match=r"returned after 0\.000 s"):
        functional.queue_timeout(fake, Keys("t"), fake.clock)


def test_brpop_timeout_window_accepts_a_real_block() -> None:
    fake = FakeRedis(Clock(tick=0.0))
    assert "waited 0.200 s" in functional.queue_timeout(fake, Keys("t"), fake.clock)


def test_corrupted_value_fails_set_get() -> None:
    fake = FakeRedis()
    fake.get = lambda key: b"mangled"  # type: ignore[method-assign]
    with pytest.raises(CheckFailed, match="different text value"):
        functional.set_get(fake, Keys("t"))


def test_unknown_command_fails_its_checks_but_cleanup_still_runs() -> None:
    fake = FakeRedis()
    fake.fail["brpop"] = redis.ResponseError("unknown command 'BRPOP', with args beginning with")
    report = _run(fake)
    by_name = {c.name: c for c in report.checks}
    assert "unknown command BRPOP" in by_name["queue"].detail
    assert "unknown command BRPOP" in by_name["latency"].detail
    assert report.latency["brpop"].p99 is None
    assert by_name["cleanup"].ok
    assert fake.data == {}


def test_lost_connection_mid_run_is_a_fault_naming_the_check() -> None:
    fake = FakeRedis()
    fake.fail["lpush"] = redis.ConnectionError("Connection closed by server.")
    with pytest.raises(VerifyError, match="during queue"):
        _run(fake)
    assert "delete" in fake.calls  # cleanup was attempted anyway
    assert fake.closed


def test_connection_fault_writes_nothing() -> None:
    fake = FakeRedis()
    fake.fail["ping"] = redis.AuthenticationError("Authentication required.", status_code="NOAUTH")
    with pytest.raises(VerifyError, match=r"^NOAUTH"):
        _run(fake)
    assert "set" not in fake.calls and "delete" not in fake.calls


def test_median_at_the_threshold_fails_and_says_what_it_measured() -> None:
    # every timed call takes exactly 1 ms on this clock (one tick between its two reads)
    report = _run(FakeRedis(Clock(tick=0.001)), ping=1.0)
    assert not report.latency["ping"].ok
    latency_check = next(c for c in report.checks if c.name == "latency")
    assert not latency_check.ok
    assert "ping median 1 ms >= 1 ms (over 5 pings timed from this machine)" in (
        latency_check.detail
    )
    assert report.latency["get"].ok


def test_a_slow_p99_with_a_fine_median_is_a_warning_not_a_failure() -> None:
    """One slow connect on a loaded machine must not stop `up`."""
    samples = [0.7] * 195 + [18.5] * 5  # 18.5 ms p99 against 10, as seen on a busy laptop
    figures = latency.summarize("connect", samples, 10.0)
    assert figures.p99 == 18.5 and figures.p50 == 0.7
    assert figures.ok
    assert "connect p99 18.5 ms >= 10 ms" in figures.warning
    ok, _ = latency.verdict({"connect": figures}, [])
    assert ok
    assert latency.warnings({"connect": figures}) == [figures.warning]
    assert figures.as_json()["warning"] == figures.warning


def test_warnings_reach_the_report_json() -> None:
    report = runner.Report(url="redis://x")
    report.latency = {"ping": latency.summarize("ping", [1.0] * 98 + [9.0] * 2, 5.0)}
    data = report.as_json()
    assert data["warnings"] and "ping p99 9 ms >= 5 ms" in data["warnings"][0]


def test_connect_is_sampled_on_few_connections_and_the_rest_reuse_one() -> None:
    """200 iterations used to open 201 connections (TIME_WAIT pile-up, AOF noise)."""
    opened: list[int] = []

    class CountingConnection(FakeConnection):
        def connect(self) -> None:
            opened.append(1)

    fake = FakeRedis()
    fake.connection_pool.connection_class = CountingConnection  # type: ignore[assignment]
    report = _run(fake, iterations=200)
    assert report.ok
    assert len(opened) <= latency.CONNECT_SAMPLES + 2  # samples, warm-up, connection check
    assert report.latency["connect"].samples == latency.CONNECT_SAMPLES
    assert report.latency["ping"].samples == 200


@pytest.mark.parametrize(
    ("samples", "fraction", "expected"),
    [
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0], 0.5, 1.0),
        (list(map(float, range(1, 201))), 0.99, 198.0),
        (list(map(float, range(1, 101))), 0.5, 50.0),
        (list(map(float, range(1, 101))), 0.99, 99.0),
    ],
)
def test_nearest_rank_percentile(samples: list[float], fraction: float, expected: float) -> None:
    assert percentile(samples, fraction) == expected


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_unmeasured_operation_is_not_ok() -> None:
    assert not OpLatency("brpop", threshold=15.0).ok
    assert OpLatency("ping", threshold=5.0, p50=1, p99=4.999, max=9).ok
    assert OpLatency("ping", threshold=5.0, p50=1, p99=50, max=90).ok  # the median decides


@pytest.mark.parametrize(
    ("info", "text"),
    [
        (
            {"redis_version": "7.4.0", "dragonfly_version": "df-v1.25.1"},
            "dragonfly df-v1.25.1 (redis 7.4.0 compatible)",
        ),
        (
            {"redis_version": "7.2.4", "valkey_version": "8.0.1", "server_name": "valkey"},
            "valkey 8.0.1 (redis 7.2.4 compatible)",
        ),
        ({"garnet_version": "1.0.60"}, "garnet 1.0.60"),
        ({"redis_version": "8.2.1", "redis_mode": "standalone"}, "redis 8.2.1 (standalone)"),
        ({}, ""),
    ],
)
def test_describe_server(info: dict[str, Any], text: str) -> None:
    assert functional.describe_server(info) == text


def test_keys_live_under_one_unique_prefix() -> None:
    first, second = Keys(), Keys()
    assert first.prefix != second.prefix
    assert first("queue").startswith("devserver:verify:") and first.prefix.endswith(":")
    first("queue")
    assert first.used == [first.prefix + "queue"]


def test_zero_iterations_is_refused() -> None:
    run: Callable[..., Any] = runner.run
    with pytest.raises(ValueError):
        run(TARGET, 0, DEFAULT_THRESHOLDS_MS, client=FakeRedis())
