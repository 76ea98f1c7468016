"""``verify --flavor``: the same checks and latency on a throwaway server of each flavor.

Why throwaway servers: the question is "does the application's queue path work on this
flavor, and how fast", not "is my dev server healthy", so each flavor gets a server of its
own through ``ephemeral()`` (free port, temporary data, nothing saved) and the project's own
running server is never touched. The servers run one after another, so their latency
figures do not compete for the same cores. Never prints: the task renders ``FlavorRun``s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from devserver.catalog import FLAVORS, get_flavor
from devserver.config import Settings
from devserver.errors import DevServerError, VerifyError
from devserver.fetch.binaries import flavor_of_executable
from devserver.fetch.choice import find_binary, installed_flavors
from devserver.library import ephemeral
from devserver.verify import runner
from devserver.verify.latency import OPERATIONS
from devserver.verify.target import Target

ALL = "all"


@dataclass(frozen=True)
class FlavorRun:
    """One flavor's result: its report, or why there is none (``stage``: what failed)."""

    flavor: str
    version: str = ""
    report: runner.Report | None = None
    stage: str = ""  # "binary", "start" or "connection" when there is no report
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok

    @property
    def passed(self) -> tuple[int, int]:
        """(checks passed, checks run); a flavor that never got to its checks has (0, 0)."""
        if self.report is None:
            return 0, 0
        return sum(c.ok for c in self.report.checks), len(self.report.checks)

    @property
    def failure(self) -> str:
        """The first thing that failed, as "check: why" on one line ("" when all passed);
        the whole detail (a failed start's log lines) is in ``as_json``."""
        if self.report is None:
            return f"{self.stage}: {_first(self.error)}"
        failed = self.report.failed
        return f"{failed[0].name}: {_first(failed[0].detail)}" if failed else ""

    def p50(self, op: str) -> float | None:
        found = self.report.latency.get(op) if self.report is not None else None
        return found.p50 if found is not None else None

    def as_json(self) -> dict[str, Any]:
        passed, total = self.passed
        failed = (
            [{"name": c.name, "detail": c.detail} for c in self.report.failed]
            if self.report is not None
            else [{"name": self.stage, "detail": self.error}]
        )
        return {
            "flavor": self.flavor,
            "version": self.version,
            "ok": self.ok,
            "checks_passed": passed,
            "checks_total": total,
            "p50_ms": {op: self.p50(op) for op in OPERATIONS},
            "failed": failed,
            "verify": self.report.as_json() if self.report is not None else None,
        }


def flavors_asked(settings: Settings, asked: str) -> tuple[list[str], list[str]]:
    """The flavors to compare and, for ``all``, the ones not found here.

    A list is taken as given (a named flavor without an executable is a failed row, with
    fetch's hint); ``all`` means every flavor with an executable, as ``fetch --list`` sees.
    """
    names = list(dict.fromkeys(n.strip() for n in asked.split(",") if n.strip()))
    if names == [ALL]:
        found, missing = installed_flavors(settings)
        return [b.flavor for b in found], missing
    if not names:
        raise VerifyError(
            "--flavor is empty", hint=f"name flavors ({', '.join(FLAVORS)}) or say all"
        )
    for name in names:
        get_flavor(name)  # an unknown name is a ConfigError naming the valid ones
    return names, []


Starter = Callable[..., Any]


def run_flavor(
    settings: Settings,
    flavor: str,
    iterations: int,
    thresholds_ms: Mapping[str, float],
    start: Starter | None = None,
) -> FlavorRun:
    """Start a throwaway server of ``flavor``, verify it, stop it; failures become the row."""

    start = start or ephemeral
    # The project's bin/ and PATH are searched as `invoke start` searches them;
    # server.binary counts only for the flavor it belongs to.
    own = None
    if settings.binary is not None and flavor_of_executable(settings.binary) == flavor:
        own = replace(settings, flavor=flavor)
    try:
        binary = find_binary(own or replace(settings, flavor=flavor, binary=None), flavor)
    except DevServerError as exc:
        return FlavorRun(flavor, stage="binary", error=_line(exc))
    try:
        with start(flavor=flavor, binary=binary.path, root=settings.root) as server:
            target = Target(host=server.host, port=server.port, password=server.password)
            try:
                report = runner.run(target, iterations, thresholds_ms)
            except VerifyError as exc:
                return FlavorRun(flavor, server.version, stage="connection", error=exc.message)
            return FlavorRun(flavor, server.version or binary.version, report)
    except DevServerError as exc:
        return FlavorRun(flavor, binary.version, stage="start", error=_line(exc))


def _first(text: str) -> str:
    return (text.splitlines() or [""])[0]


def _line(exc: DevServerError) -> str:
    return exc.message + (f" ({exc.hint})" if exc.hint else "")


def as_json(runs: list[FlavorRun], not_found: list[str]) -> dict[str, Any]:
    """The ``--json`` object: one entry per flavor, plus the flavors ``all`` did not find."""
    return {
        "ok": bool(runs) and all(r.ok for r in runs),
        "flavors": [r.as_json() for r in runs],
        "not_found": not_found,
    }
