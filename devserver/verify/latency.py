"""Latency per operation over N iterations: p50, p99 and max against thresholds.

The operations are the ones the application's queue path pays for: opening a connection,
PING, SET, GET, LPUSH and BRPOP on a list that already holds an item (so BRPOP's time is the
server's, not the timeout's). Each operation gets one untimed warm-up call, so the first
connection's setup cost is not blamed on GET.

The threshold applies to the median (p50): a slow *server* moves the median, while one slow
connect on a loaded 2-core laptop only moves p99, and a dev environment must not refuse to
start over that. A p99 at or over its limit is reported as a warning, never a failure.
Connects are sampled ``CONNECT_SAMPLES`` times at most: every new TCP connection leaves a
TIME_WAIT socket behind, and 200 of them per run is a cost for no extra insight; every other
operation reuses the client's one pooled connection.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devserver.verify.functional import (
    READY_BRPOP_TIMEOUT_S,
    SAFETY_TTL_S,
    CheckFailed,
    Clock,
    Keys,
    step,
)

OPERATIONS = ("connect", "ping", "set", "get", "lpush", "brpop")
CONNECT_SAMPLES = 15


@dataclass(frozen=True)
class OpLatency:
    """One operation's figures in milliseconds; ``None`` when it could not be measured."""

    op: str
    threshold: float
    p50: float | None = None
    p99: float | None = None
    max: float | None = None

    samples: int = 0

    @property
    def ok(self) -> bool:
        """A median at or above the threshold fails, as does an operation that never ran."""
        return self.p50 is not None and self.p50 < self.threshold

    @property
    def warning(self) -> str:
        """Set when the median is fine but p99 reached the limit: shown, never failing."""
        if not self.ok or self.p99 is None or self.p99 < self.threshold:
            return ""
        return (
            f"{self.op} p99 {self.p99:g} ms >= {self.threshold:g} ms (median {self.p50:g} ms "
            f"is fine: a few slow ones out of {self.samples}, e.g. a busy machine)"
        )

    def as_json(self) -> dict[str, float | int | str | None]:
        return {
            "p50": self.p50,
            "p99": self.p99,
            "max": self.max,
            "threshold": self.threshold,
            "samples": self.samples,
            "warning": self.warning or None,
        }


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence.

    Nearest rank always returns a value that was really observed, which is what a person
    comparing "p99" with a log line expects; with 200 samples p99 is the 198th fastest.
    """
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(op: str, samples_ms: Sequence[float], threshold: float) -> OpLatency:
    ordered = sorted(samples_ms)
    return OpLatency(
        op=op,
        threshold=threshold,
        p50=round(percentile(ordered, 0.50), 3),
        p99=round(percentile(ordered, 0.99), 3),
        max=round(ordered[-1], 3),
        samples=len(ordered),
    )


def _timed(iterations: int, action: Callable[[int], object], clock: Clock) -> list[float]:
    action(-1)  # warm-up, untimed
    samples = []
    for i in range(iterations):
        started = clock()
        action(i)
        samples.append((clock() - started) * 1000.0)
    return samples


def measure(
    client: Any,
    keys: Keys,
    iterations: int,
    thresholds_ms: Mapping[str, float],
    clock: Clock = time.perf_counter,
) -> tuple[dict[str, OpLatency], list[str]]:
    """Time every operation; return the figures and the problems that stopped any of them.

    An error reply (say BRPOP is unknown) leaves that operation unmeasured and is reported;
    the others still run, so one missing command does not hide the rest of the picture.
    """
    pool = client.connection_pool
    value = b"x" * 64
    string_key = keys("latency:string")
    queue_key = keys("latency:queue")

    def connect(_: int) -> None:
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()
        conn.disconnect()

    def brpop(_: int) -> None:
        if client.brpop([queue_key], timeout=READY_BRPOP_TIMEOUT_S) is None:
            raise CheckFailed("BRPOP found no item on a list that should hold one")

    def lpush(i: int) -> None:
        client.lpush(queue_key, value)
        if i < 0:  # the warm-up created the list: give it the safety TTL, untimed
            client.expire(queue_key, SAFETY_TTL_S)

    actions: dict[str, tuple[str, Callable[[int], object]]] = {
        "connect": ("connect", connect),
        "ping": ("PING", lambda _: client.ping()),
        "set": ("SET", lambda _: client.set(string_key, value, ex=SAFETY_TTL_S)),
        "get": ("GET", lambda _: client.get(string_key)),
        # warm-up + N pushes leave N + 1 items: BRPOP's warm-up + N pops always find one ready.
        "lpush": ("LPUSH", lpush),
        "brpop": ("BRPOP", brpop),
    }
    results: dict[str, OpLatency] = {}
    problems: list[str] = []
    for op in OPERATIONS:
        command, action = actions[op]
        threshold = float(thresholds_ms[op])
        results[op] = OpLatency(op=op, threshold=threshold)
        if op == "brpop" and results["lpush"].p99 is None:
            # Without the pushed items every BRPOP would wait out its timeout.
            problems.append("brpop not measured: it needs the items LPUSH could not push")
            continue
        runs = min(iterations, CONNECT_SAMPLES) if op == "connect" else iterations
        try:
            samples = step(command, functools.partial(_timed, runs, action, clock))
        except CheckFailed as exc:
            problems.append(f"{op} not measured: {exc}")
            continue
        results[op] = summarize(op, samples, threshold)
    return results, problems


def verdict(results: Mapping[str, OpLatency], problems: Sequence[str]) -> tuple[bool, str]:
    """The latency check's line: which medians reached their thresholds, or that all are under.

    The failure says what was measured (the median of how many round trips from this
    machine), so nobody goes looking in the server's log for a client-side timing.
    """
    slow = [
        f"{r.op} median {r.p50:g} ms >= {r.threshold:g} ms (over {r.samples} {r.op}s "
        "timed from this machine)"
        for r in results.values()
        if r.p50 is not None and not r.ok
    ]
    issues = list(problems) + slow
    if issues:
        return False, "; ".join(issues)
    return True, f"all {len(results)} operations have a median under their thresholds"


def warnings(results: Mapping[str, OpLatency]) -> list[str]:
    """p99s over their limits while the medians are fine: shown, not failing."""
    return [r.warning for r in results.values() if r.warning]
