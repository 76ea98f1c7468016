"""verify: check the server with redis-py and say what failed."""

from __future__ import annotations

import os

from invoke.context import Context
from invoke.tasks import task

from devserver.cli import console
from devserver.cli.invoke_args import handled, settings_from
from devserver.cli.report import report_verify
from devserver.config import Settings
from devserver.config_values import whole_number
from devserver.errors import VerifyError


def _verify_iterations(settings: Settings, given: str | None) -> int:
    """--iterations, validated like the config keys (a bad value is one line, not a traceback)."""
    if given is None:
        return settings.verify.iterations
    return whole_number("--iterations", given, 1, 1_000_000, hint="pass e.g. --iterations 200")


@task(
    help={
        "url": "check this server instead of the configured one: "
        "redis://[user:password@]host:port/db, or rediss://... for TLS",
        "json": "print one JSON object (ok, url, checks, latency_ms, warnings) and nothing else "
        "on stdout",
        "iterations": "timed runs per operation for the latency figures "
        "(default: verify.iterations)",
    }
)
@handled
def verify(
    c: Context, url: str | None = None, json: bool = False, iterations: str | None = None
) -> None:
    """Check the server with redis-py: PING, SET/GET, the LPUSH/BRPOP queue, INFO, latency."""
    # redis-py and the checks: imported when verify runs (see the package comment).
    from devserver.verify import runner
    from devserver.verify import target as targets

    settings = settings_from(c)
    count = _verify_iterations(settings, iterations)
    if url is not None:
        target = targets.from_url(url)
    else:
        asked = settings.port if "INVOKE_SERVER_PORT" in os.environ else None
        target = targets.from_settings(settings, asked)
        note = targets.port_note(settings, asked, "INVOKE_SERVER_PORT")
        if note:
            console.warn(note)
    try:
        report = runner.run(target, count, settings.verify.thresholds_ms)
    except VerifyError as exc:
        if json:  # JSON consumers always get their object, here with the failed connection
            console.print_json(runner.failure_report(target, exc.message).as_json())
        raise
    if json:
        console.print_json(report.as_json())
    else:
        report_verify(report)
    if not report.ok:
        first = report.failed[0]
        raise VerifyError(
            f"verify failed: {first.name}: {first.detail}", hint=_verify_hint(first.name)
        )


def _verify_hint(check: str) -> str:
    if check == "latency":
        return (
            "the median round trip from this machine to the server was over its limit "
            "(verify.thresholds_ms in invoke.yaml, e.g. INVOKE_VERIFY_THRESHOLDS_MS_CONNECT=50); "
            "a busy machine or a remote server may need larger limits"
        )
    if check == "cleanup":
        return "verify's keys expire on their own within 10 minutes"
    return (
        "the application needs this to work: see the table above, and the server's log "
        "(`invoke tail`)"
    )
