"""The application's tasks: up and down, api, env, run."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from devserver.app.shellenv import export_lines, words_after_dashdash
from devserver.app.shellenv import run_command as run_words
from devserver.cli import console
from devserver.cli.invoke_args import handled, settings_from
from devserver.cli.report import api_not_configured, note_other_port, server_now
from devserver.cli.tasks import fetch, server, verify
from devserver.config import Settings
from devserver.errors import ConfigError, DevServerError


@task(help={"no_save": server.NO_SAVE_HELP})
def down(c: Context, no_save: bool = False) -> None:
    """Stop what `invoke up` started: the application processes (from any shell), the server.

    An API started on its own with `invoke api` is stopped too (`invoke run`'s one-off
    commands are not: docker compose's `down` leaves `run` alone as well).
    """
    try:
        _stop_app_processes(c)
    except Exit:  # already reported; the server is stopped all the same, then exit 1
        server.stop(c, no_save=no_save)
        raise
    server.stop(c, no_save=no_save)


@handled
def _stop_app_processes(c: Context) -> None:
    from devserver.app import records as owned  # the app layer: imported when a task runs

    settings = settings_from(c)
    left: list[str] = []
    for who in ("up", "api"):
        done = owned.stop_recorded(settings, settings.stop_timeout, who)
        if done.stale:
            what = "application processes" if who == "up" else "`invoke api`'s API"
            console.warn(f"removed a stale record of {what} (none of them runs)")
        elif done.left:
            pass  # named below: not "stopped"
        elif done.stopped and who == "api":
            console.ok("stopped the API that `invoke api` runs")
        elif done.stopped:
            by = "`invoke up` stopped" if done.by_owner else "stopped"
            console.ok(f"{by} the application processes: {', '.join(done.stopped)}")
        left += done.left
    if left:
        raise DevServerError(
            f"application processes still running after a kill: {'; '.join(left)}",
            hint="check them with your OS's process tools",
        )


@task(
    optional=["write"],
    help={
        "write": "merge into a .env file instead of printing (default: .env in the project)",
        "shell": "print POSIX sh `export NAME='value'` lines for eval \"$(invoke env --shell)\"",
    },
)
@handled
def env(c: Context, write: Any = None, shell: bool = False) -> None:
    """Print the application's settings (REDIS_URL, api.env) in .env format, or merge them."""
    # The app layer: imported when a task runs (see the package comment).
    from devserver.app import env as app

    settings = settings_from(c)
    values = _connection_values(settings, "these are the configured settings")
    if shell:
        sys.stdout.write(export_lines(values))
        sys.stdout.flush()
        return
    if write is None or write is False:
        sys.stdout.write(app.format_env(values))
        sys.stdout.flush()
        return
    path = settings.root / ".env" if write is True else Path(str(write)).expanduser()
    result = app.merge_env_file(path, values)
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("updated", result.updated),
            ("added", result.added),
            ("unchanged", result.unchanged),
        )
        if names
    ]
    verb = "wrote" if result.written else "nothing to change in"
    console.ok(f"{verb} {result.path} ({'; '.join(parts)}); other lines untouched")


@task
@handled
def api(c: Context) -> None:
    """Run the application's API (api.command) in the foreground with REDIS_URL exported.

    Exits with the API command's own exit code. Ctrl+C goes to the API; the server keeps running.
    It is recorded like `up`'s processes, so `invoke down` from another shell stops it too.
    """
    # The app layer: imported when a task runs (see the package comment).
    from devserver.app import env as app
    from devserver.app import records as owned
    from devserver.app.api import run_api
    from devserver.system import appproc, apptree

    settings = settings_from(c)
    if not settings.api.command:
        raise api_not_configured()
    state = app.running_server(settings)
    other = owned.running_owner(settings, "api")
    if other is not None:
        raise DevServerError(
            f"the API already runs under another `invoke api` (pid {other})",
            hint="stop it with Ctrl+C in that terminal, or `invoke down` (which stops the "
            "server too)",
        )
    leftover = owned.stop_recorded(settings, settings.stop_timeout, "api")
    if leftover.stopped:
        console.warn("stopped the API a killed `invoke api` left running")
    values = app.connection_env(settings, state)
    console.info(
        f"running the API: {settings.api.command}  "
        f"(REDIS_URL={app.redact_url(values['REDIS_URL'])}, cwd {settings.root})"
    )
    run = apptree.new_run()
    shells = ["api"] if appproc.through_shell(settings.api.command) else []
    try:
        result = run_api(
            settings.api.command,
            {**values, **apptree.tag_env(run, "api")},
            settings.root,
            on_started=lambda pid: owned.record(settings, {"api": pid}, "api", run, shells),
        )
        by_down = owned.stop_was_requested(settings, "api")
    finally:
        owned.clear(settings, "api")
    if by_down:
        console.ok("`invoke down` stopped the API (it stops the server next)")
        return
    if result.interrupted:
        console.info(f"the API stopped (exit code {result.code}); {server_now(settings)}")
    elif result.code != 0:
        console.warn(f"the API command exited with code {result.code}")
    if result.code != 0:
        raise Exit(code=result.code)


@task(
    help={
        "port": "TCP port for the server (default: server.port); a running server on another "
        "port is an error naming `invoke restart --port`",
        "flavor": "server flavor: auto, dragonfly, redis or garnet (default: server.flavor)",
        "no_verify": "skip the verify step (start, then straight to the application)",
        "no_fetch": "never download: use the installed or local binary (start fails without)",
    }
)
def up(
    c: Context,
    port: str | None = None,
    flavor: str | None = None,
    no_verify: bool = False,
    no_fetch: bool = False,
) -> None:
    """Fetch (only if the binary is missing), start, verify, then the application's processes.

    The processes are api.command (as "api") and app.processes in invoke.yaml (or a Procfile),
    each with REDIS_URL and api.env exported and its output prefixed with its name; the first
    to end stops the others and gives `up` its exit code; Ctrl+C stops them all (the server
    keeps running); `invoke down` from another shell stops them and the server. The first step
    that fails stops the chain: exit 1 with the step named. Already running is fine.
    Detached (`up -d` in docker compose: the server only, in the background) is `invoke start`.
    """
    # up's steps use the fetch, server and app layers: imported when up runs.
    from devserver.app import env as app
    from devserver.cli.up import (
        app_commands,
        binary_missing,
        refuse_a_differing_server,
        up_app,
        up_header,
        up_step,
    )

    try:
        refuse_a_differing_server(c, port, flavor)
        if no_fetch:
            up_header(1, "fetch", "skipped (--no-fetch)")
        else:
            why, ready = binary_missing(c, flavor)
            if why:
                up_step(c, 1, "fetch", lambda c: fetch.fetch(c, flavor=flavor), why)
            else:
                up_header(1, "fetch", f"skipped, {ready} is ready")
        up_step(c, 2, "start", lambda c: server.start(c, flavor=flavor, port=port))
        if no_verify:
            up_header(3, "verify", "skipped (--no-verify)")
        else:
            up_step(c, 3, "verify", verify.verify)
        settings = settings_from(c)
        commands = app_commands(settings)
        if commands:
            up_header(4, "app", ", ".join(commands))
            up_app(settings, commands)
            return
        url = app.redact_url(
            app.connection_env(settings, app.running_server(settings))["REDIS_URL"]
        )
    except DevServerError as exc:  # from up's own checks; the steps report their own
        console.error(exc.message, exc.hint)
        raise Exit(code=1) from None
    up_header(
        4,
        "app",
        "skipped, nothing configured (set api.command or app.processes in invoke.yaml)",
    )
    checked = "running (not verified: --no-verify)" if no_verify else "running and verified"
    console.ok(
        f"up: the server is {checked} at {url} "
        "(`invoke env` prints it for .env files; `invoke down` stops it)"
    )


@task(name="run")
@handled
def run_command(c: Context) -> None:
    """Run a one-off command with REDIS_URL and api.env exported: invoke run -- CMD ARGS.

    Everything after `--` is the command, its words kept exactly as your shell passed them
    (quotes included); its exit code is passed on. Works while the server is stopped too
    (REDIS_URL is then the configured address, with a warning).
    """
    # The app layer: imported when a task runs (see the package comment).
    from devserver.app import procs

    words = words_after_dashdash(sys.argv, ("run",))
    if not words:
        raise ConfigError(
            "no command given", hint="put it after `--`: invoke run -- python -m myapp.migrate"
        )
    settings = settings_from(c)
    values = _connection_values(settings, "REDIS_URL is the configured address")
    code = run_words(words, procs.process_env(os.environ, values), Path.cwd())
    if code != 0:
        raise Exit(code=code)


def _connection_values(settings: Settings, when_stopped: str) -> dict[str, str]:
    """REDIS_URL and api.env for ``env`` and ``run``: the running server's address, or the
    configured one with a warning saying ``when_stopped``; a differing port is named."""
    # The app and server layers: imported when a task runs (see the package comment).
    from devserver.app import env as app
    from devserver.server.state import current_state

    state, proc = current_state(settings)
    if proc is None:
        state = None
        console.warn(f"the server is not running: {when_stopped}")
    note_other_port(settings, state)
    return app.connection_env(settings, state)
