"""Run every check against one target and collect a Report; never prints.

Order matters: the connection check goes first, because when the server cannot be reached,
authenticated or understood there is nothing else to learn, and the person needs one clear
line (a VerifyError) rather than a table of identical failures. After that, each check is
independent: one failing check (say BRPOP is unknown) does not stop the others, and the
cleanup of verify's own keys runs in a ``finally`` whatever happened before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devserver.verify import functional, latency
from devserver.verify.client import fault, is_fault, make_client
from devserver.verify.functional import CheckFailed, Clock, Keys
from devserver.verify.target import Target


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """What verify found; ``as_json`` is the object DESIGN.md promises for ``--json``."""

    url: str
    checks: list[CheckResult] = field(default_factory=list)
    latency: dict[str, latency.OpLatency] = field(default_factory=dict)
    server: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    @property
    def warnings(self) -> list[str]:
        """Worth showing, never failing: p99s over their limits with a fine median."""
        return latency.warnings(self.latency)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "url": self.url,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "latency_ms": {op: r.as_json() for op, r in self.latency.items()},
            "warnings": self.warnings,
        }


def failure_report(target: Target, message: str) -> Report:
    """The report of a run that could not connect: one failed connection check."""
    return Report(
        url=target.display_url, checks=[CheckResult("connection", False, target.scrub(message))]
    )


def run(
    target: Target,
    iterations: int,
    thresholds_ms: Mapping[str, float],
    *,
    client: Any = None,
    clock: Clock = time.perf_counter,
    keys: Keys | None = None,
) -> Report:
    """Run all checks. Raises VerifyError when the server cannot be talked to at all.

    ``client``, ``clock`` and ``keys`` are for tests; by default a fresh redis-py client with
    short timeouts and no retries, the real clock and a new random key prefix are used.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    client = client if client is not None else make_client(target)
    keys = keys or Keys()
    report = Report(url=target.display_url)
    stage = "connection"

    def check(name: str, body: Callable[[], str]) -> str:
        nonlocal stage
        if name != "cleanup":  # a fault names the check that hit it, not the cleanup after
            stage = name
        try:
            detail = body()
        except CheckFailed as exc:
            report.checks.append(CheckResult(name, False, target.scrub(str(exc))))
            return ""
        report.checks.append(CheckResult(name, True, target.scrub(detail)))
        return detail

    try:
        try:
            check("connection", lambda: functional.connection(client, clock))
            report.server = check("server", lambda: functional.server_identity(client))
            check("set/get", lambda: functional.set_get(client, keys))
            check("queue", lambda: functional.queue(client, keys))
            check("queue timeout", lambda: functional.queue_timeout(client, keys, clock))
            check(
                "latency", lambda: _latency(client, keys, iterations, thresholds_ms, clock, report)
            )
        finally:
            # Runs after a lost connection too (the pool reconnects if the server is back);
            # when even that fails, the keys' safety TTL removes them.
            try:
                check("cleanup", lambda: functional.cleanup(client, keys))
            except Exception as exc:
                if not is_fault(exc):
                    raise
                report.checks.append(
                    CheckResult(
                        "cleanup",
                        False,
                        target.scrub(
                            f"could not delete verify's keys ({exc}); they expire within "
                            f"{functional.SAFETY_TTL_S} s"
                        ),
                    )
                )
    except Exception as exc:
        if is_fault(exc):
            raise fault(exc, target, during="" if stage == "connection" else stage) from None
        raise
    finally:
        client.close()
    return report


def _latency(
    client: Any,
    keys: Keys,
    iterations: int,
    thresholds_ms: Mapping[str, float],
    clock: Clock,
    report: Report,
) -> str:
    results, problems = latency.measure(client, keys, iterations, thresholds_ms, clock)
    report.latency = results
    ok, detail = latency.verdict(results, problems)
    if not ok:
        raise CheckFailed(detail)
    connects = report.latency["connect"].samples if "connect" in report.latency else 0
    note = f" ({iterations} iterations each, {connects} connects)"
    if report.warnings:
        note += f"; {len(report.warnings)} p99 warning(s) below"
    return detail + note
