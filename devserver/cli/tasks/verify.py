"""verify: check the server with redis-py and say what failed."""

from __future__ import annotations

import os

from invoke.context import Context
from invoke.tasks import task

from devserver.cli import console
from devserver.cli.invoke_args import handled, settings_from
from devserver.cli.report import report_matrix, report_verify
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
        "flavor": "compare flavors instead: a comma-separated list or all (every installed "
        "flavor), each on a throwaway server, one table side by side; the running server is "
        "not touched",
    }
)
@handled
def verify(
    c: Context,
    url: str | None = None,
    json: bool = False,
    iterations: str | None = None,
    flavor: str | None = None,
) -> None:
    """Check the server with redis-py: PING, SET/GET, the LPUSH/BRPOP queue, INFO, latency."""
    # redis-py and the checks: imported when verify runs (see the package comment).
    from devserver.verify import runner
    from devserver.verify import target as targets

    settings = settings_from(c)
    count = _verify_iterations(settings, iterations)
    if flavor is not None:
        if url is not None:
            raise VerifyError(
                "--flavor and --url do not go together",
                hint="--flavor starts its own throwaway servers; --url checks one that runs",
            )
        _compare(settings, flavor, count, json)
        return
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


def _compare(settings: Settings, asked: str, iterations: int, json: bool) -> None:
    """verify --flavor: every asked flavor on a throwaway server, one table; exit 1 on a fail."""
    from devserver.verify import matrix  # with the checks (above): redis-py when verify runs

    names, not_found = matrix.flavors_asked(settings, asked)
    if not names:
        raise VerifyError(
            "verify --flavor all: no server executable found for any flavor",
            hint="run `invoke fetch --flavor NAME` (or install redis-server) and try again",
        )
    runs = []
    for name in names:
        if not json:
            console.info(f"verify: starting a throwaway {name} server ...")
        runs.append(matrix.run_flavor(settings, name, iterations, settings.verify.thresholds_ms))
    if json:
        console.print_json(matrix.as_json(runs, not_found))
    else:
        report_matrix(runs, not_found)
    failed = [r for r in runs if not r.ok]
    if failed:
        raise VerifyError(
            f"verify failed on {', '.join(r.flavor for r in failed)}: "
            + "; ".join(f"{r.flavor}: {r.failure}" for r in failed),
            hint="the table above says which check failed on which flavor; "
            "`invoke verify --flavor NAME` shows that flavor alone",
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
