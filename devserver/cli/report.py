"""What the person reads when a task is done: one line per outcome, the status and fetch reports,
the verify tables. The library returns results and never prints; these turn them into text."""

from __future__ import annotations

import os
from typing import Any

from invoke.exceptions import Exit

from devserver.cli import console
from devserver.config import Settings
from devserver.errors import DevServerError, StartError

# `status` exits 3 when the server is not running (LSB init-script convention), so scripts
# can test it: `invoke status >/dev/null || invoke start`.
STATUS_NOT_RUNNING = 3

SOURCES = {
    "explicit": "server.binary",
    "bin": "installed in bin/",
    "path": "from PATH",
    "bundled": "bundled by a Python package",
}


def describe_binary(binary: Any) -> str:
    version = binary.version or "unknown version"
    return f"{binary.flavor} {version} ({binary.path}, {SOURCES.get(binary.source, binary.source)})"


def note_other_port(settings: Settings, state: Any) -> None:
    """env, run and cli follow the running server; say so when the port asked for differs.

    ``INVOKE_SERVER_PORT=6380 invoke env`` printed the running server's 6379 without a word
    (verify names the difference the same way, on stderr, so stdout stays clean).
    """
    if state is not None and state.port != settings.port:
        how = "INVOKE_SERVER_PORT" if "INVOKE_SERVER_PORT" in os.environ else "server.port"
        console.warn(
            f"the running server is on {state.port}; {how} says {settings.port}: using the "
            f"running server (`invoke restart --port {settings.port}` moves it)"
        )


def report_start(result: Any, asked: dict[str, Any]) -> None:
    state = result.state
    if result.stale is not None:
        console.warn(f"removed a stale state file (pid {result.stale.pid} is gone or not ours)")
    for warning in result.warnings:
        console.warn(warning)
    if result.already_running:
        _already_running(state, asked, result.supervised)
        return
    if not result.broke_away:
        console.warn(
            "could not break away from the launcher's job object: the server may stop "
            "when this terminal or launcher exits"
        )
    console.ok(
        f"{state.flavor} {state.version} ready on {state.host}:{state.port} "
        f"(pid {state.pid}) in {result.seconds:.2f}s; log: {state.log_file}"
    )


def _already_running(state: Any, asked: dict[str, Any], supervised: bool = True) -> None:
    """Fine (exit 0) when nothing particular was asked; exit 1 naming what differs otherwise.
    A server whose supervisor is gone is said to be unsupervised (its log is not captured)."""
    # Imported here: only a start that finds its server running needs it, and every task
    # imports this module.
    from devserver.server.running import differences, restart_hint

    where = f"(pid {state.pid}, {state.host}:{state.port})"
    differ = differences(state, asked)
    if differ:
        raise StartError(
            f"{state.flavor} {state.version} is already running {where}, "
            f"not the one asked for: {'; '.join(differ)}",
            hint=f"run `{restart_hint(asked)}` to replace it (or drop the option to use it)",
        )
    if not supervised:
        console.warn(
            f"{state.flavor} {state.version} is already running {where} but UNSUPERVISED: its "
            "supervisor is gone, so its log is not captured; run `invoke restart` to put it "
            "under a supervisor again"
        )
        return
    console.ok(f"{state.flavor} {state.version} is already running {where}")


def report_stop(result: Any) -> None:
    """One line on how the server ended; exit 1 when data may have been lost."""
    # Loaded by the stop that produced ``result`` already; not at import (lean `--list`).
    from devserver.server.stop import StopStep

    left = (
        f"; the state file could not be removed ({result.state_left}), fix the data "
        "folder's permissions"
        if result.state_left
        else ""
    )
    if result.untrusted:
        console.warn(f"ignored an untrusted state file, nothing was signalled: {result.untrusted}")
    elif result.stale and result.state:
        console.warn(
            f"removed a stale state file: pid {result.state.pid} is gone or not ours "
            f"(nothing was signalled){left}"
        )
    elif not result.was_running:
        console.ok("the server is not running")
    if result.found_by == "process scan" and result.state:
        console.warn(
            f"no state file named it, but a process scan found this project's server "
            f"(pid {result.state.pid}) running untracked"
        )
    if not result.was_running:
        if result.state_left:
            raise Exit(code=1)
        return
    state = result.state
    took = f"in {result.seconds:.2f}s"
    status = f", {result.exit_status}" if result.exit_status else ""
    name = f"{state.flavor} (pid {state.pid})"
    if result.method == StopStep.SHUTDOWN:
        saved = (
            f"; waited {result.saving_seconds:.1f}s past the budget while it saved"
            if result.saving_seconds
            else ""
        )
        code = f" (exit {result.exit_status})" if result.exit_status else ""
        console.ok(f"{name} stopped (graceful) {took}{code}{saved}{left}")
    elif result.method == StopStep.SIGTERM and not result.data_at_risk:
        console.warn(f"{name} stopped by SIGTERM{status} {took}: {result.problem}{left}")
    else:
        how = "killed it" if result.method == StopStep.KILL else f"{result.method} ended it{status}"
        loss = (
            ": data written since the last successful save may be lost"
            if result.data_at_risk
            else " (a stop without saving, as asked)"
        )
        text = f"{name}: {result.problem}; {how}{loss} ({took}){left}"
        if result.data_at_risk:
            console.error(text, "the server log (`invoke tail`) may say why it did not stop")
            raise Exit(code=1)
        console.warn(text)
    if result.state_left:
        raise Exit(code=1)


def report_status(info: dict[str, Any], json: bool) -> None:
    """status's report on stdout; Exit(3) when the server is not running."""
    if json:
        console.print_json(info)
        if not info["running"]:
            raise Exit(code=STATUS_NOT_RUNNING)
        return
    if not info["running"]:
        if info.get("state_error"):
            console.warn(f"{info['state_error']}: ignored, the next start replaces it")
        elif info.get("gave_up"):
            console.warn(f"the server {info['gave_up']}")
        elif info.get("restarting"):
            ended = info["exit_status"] or "an unknown status"
            console.warn(f"the server crashed ({ended}); its supervisor is restarting it")
        elif info["stale"]:
            ended = info["exit_status"] or "an unknown status"
            console.warn(f"the last server ended with {ended}; its state file is stale")
        console.line("not running")
        if info["log_file"]:
            console.line(f"log: {info['log_file']}")
        raise Exit(code=STATUS_NOT_RUNNING)
    if info.get("found_by") == "process scan":
        console.warn(info["untracked"])
    if info.get("supervised") is False:
        console.line(
            f"running UNSUPERVISED: {info['flavor']} {info['version'] or ''} (pid {info['pid']})",
            "yellow",
        )
        console.warn(
            "its supervisor is gone, so its log is not captured; `invoke restart` fixes that"
        )
    else:
        what = f"{info['flavor']} {info['version'] or ''}".strip()
        console.line(f"running: {what} (pid {info['pid']})", "green")
    rows = [
        ("address", f"{info['host']}:{info['port']}"),
        ("uptime", console.human_seconds(info["uptime_s"] or 0)),
        (
            "memory",
            console.human_bytes(info.get("memory_rss_bytes", 0)) + " RSS"
            if "memory_rss_bytes" in info
            else "unknown",
        ),
        ("clients", str(info.get("clients", "unknown"))),
        ("binary", str(info["binary"])),
        ("log", str(info["log_file"])),
    ]
    if info.get("restarts"):
        last = info.get("last_exit") or {}
        rows.append(("restarts", f"{info['restarts']} (last crash: {last.get('status')})"))
    for key, value in rows:
        console.line(f"  {key:<8} {value}")


class FetchReporter:
    """How devserver.fetch reports progress: the library never prints, this does."""

    def info(self, text: str) -> None:
        console.info(text)

    def warn(self, text: str) -> None:
        console.warn(text)

    def progress(self, label: str, total: int | None) -> Any:
        return console.Progress(label, total)


def report_fetch(result: Any) -> None:
    """One line saying which flavor and version will run, and where it came from."""
    source = SOURCES.get(result.source, result.source)
    version = result.version or "unknown version"
    if result.action == "installed":
        manifest = result.manifest
        check = "sha256 verified" if manifest.get("verified") else "UNVERIFIED"
        says = f", it reports {manifest['exe_version']}" if manifest.get("exe_version") else ""
        console.ok(f"installed {result.flavor} {version} -> {result.path} ({check}{says})")
    elif result.action == "current":
        why = f" ({result.reason})" if result.reason else ""
        console.ok(
            f"{result.flavor} {version} is installed: {result.path}; nothing downloaded{why}"
        )
    elif result.action == "local":
        console.ok(
            f"{result.flavor}: nothing to download on this platform; start will use "
            f"{result.path} ({version}, {source})"
        )
    elif result.repeated:  # said in full the first time; the same situation again: one line
        console.info(
            f"release still unreachable ({result.short}): using the local {result.flavor} "
            f"{version} again ({result.path}, {source}); `invoke fetch --force` asks now"
        )
    else:
        console.warn(
            f"release unreachable ({result.reason}); using the local {result.flavor} "
            f"instead: {result.path} ({version}, {source})"
        )
        console.info(
            "hint: set server.flavor: redis in invoke.yaml (or INVOKE_SERVER_FLAVOR=redis) to "
            "skip the lookup; `invoke fetch --force` asks again now"
        )


def report_verify(report: Any) -> None:
    """The human report on stdout: checks table, latency table, summary line."""
    console.line(f"verify {report.url}" + (f": {report.server}" if report.server else ""))
    console.line("")
    console.table(
        ["check", "result", "detail"],
        [[c.name, ("PASS", "green") if c.ok else ("FAIL", "red"), c.detail] for c in report.checks],
    )
    if report.latency:

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        console.line("")
        console.table(
            ["operation", "p50 ms", "p99 ms", "max ms", "threshold ms", "result"],
            [
                [
                    r.op,
                    num(r.p50),
                    num(r.p99),
                    num(r.max),
                    f"{r.threshold:g}",
                    ("FAIL", "red") if not r.ok else ("warn", "yellow") if r.warning else "ok",
                ]
                for r in report.latency.values()
            ],
        )
        for text in report.warnings:
            console.warn(text)  # shown, never failing: the median decides
    console.line("")
    failed = report.failed
    if failed:
        console.line(
            f"verify FAILED: {len(failed)} of {len(report.checks)} checks failed "
            f"({', '.join(c.name for c in failed)})",
            "red",
        )
    else:
        console.line(
            f"verify passed: all {len(report.checks)} checks"
            + (f" on {report.server}" if report.server else ""),
            "green",
        )


def report_matrix(runs: list[Any], not_found: list[str]) -> None:
    """``verify --flavor``: one row per flavor, side by side, then what failed and why."""
    from devserver.verify.latency import OPERATIONS  # verify's own layer, loaded by now

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    console.table(
        ["flavor", "version", "checks", *(f"{op} p50 ms" for op in OPERATIONS), "failed"],
        [
            [
                r.flavor,
                _short_version(r.version),
                (f"{r.passed[0]}/{r.passed[1]}", "green" if r.ok else "red"),
                *(num(r.p50(op)) for op in OPERATIONS),
                r.failure or "-",
            ]
            for r in runs
        ],
    )
    if not_found:
        console.line(f"not found here: {', '.join(not_found)} (`invoke fetch --list`)")
    bad = [r.flavor for r in runs if not r.ok]
    if bad:
        console.line(f"verify FAILED on {', '.join(bad)}", "red")
    else:
        console.line(f"verify passed on every flavor: {', '.join(r.flavor for r in runs)}", "green")


def _short_version(version: str) -> str:
    """A build suffix (Dragonfly's "1.40.1-<40-hex sha>") would double the table's width;
    ``--json`` keeps the whole string."""
    if not version:
        return "?"
    return version.split("-", 1)[0] if len(version) > 20 else version


def api_not_configured() -> DevServerError:
    """Exit 1, not 0: a script running ``invoke api`` must see that nothing ran."""
    return DevServerError(
        "no API command configured, so there is nothing to run",
        hint="set api.command in invoke.yaml (e.g. `command: python -m myapp.api` under `api:`) "
        "or the INVOKE_API_COMMAND environment variable; it runs with REDIS_URL set",
    )


def server_now(settings: Settings) -> str:
    """Whether the server still runs, checked now (it may have been stopped meanwhile)."""
    # Imported here, as in the tasks: every task imports this module, and the server layer is
    # a large import (api and up have it loaded by the time they ask).
    from devserver.server.state import current_state

    try:
        state, proc = current_state(settings)
    except DevServerError:
        state, proc = None, None
    if state is not None and proc is not None:
        return "the server keeps running: stop it with `invoke down`"
    return "the server is not running any more (`invoke up` starts it)"
