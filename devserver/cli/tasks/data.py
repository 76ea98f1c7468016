"""The data in the server: reset (an empty server) and cli (a Redis prompt)."""

from __future__ import annotations

import sys

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from devserver.cli import console
from devserver.cli import redis_prompt as redis_cli
from devserver.cli.invoke_args import CliTask, cli_words, handled, settings_from
from devserver.cli.report import note_other_port
from devserver.errors import ConfigError
from devserver.server import resp


@task(
    help={
        "flavor": "whose data: dragonfly, redis or garnet (default: the running server's, "
        "else server.flavor)",
        "yes": "do not ask for confirmation (needed without a terminal, e.g. in scripts)",
    }
)
@handled
def reset(c: Context, flavor: str | None = None, yes: bool = False) -> None:
    """Stop the server, then delete this flavor's data folder (data/<flavor>/): an empty server.

    Asks first (type y); without a terminal it refuses unless --yes is given. Nothing outside
    data/<flavor>/ is touched; another flavor's running server is left alone.
    """
    # The server layer: imported when a task runs (see the package comment).
    from devserver.server import reset as wipe
    from devserver.server.state import current_state, project_lock
    from devserver.server.stop import stop as stop_server

    settings = settings_from(c)
    state, proc = current_state(settings)
    running = state.flavor if state is not None and proc is not None else None
    name = wipe.pick_flavor(settings, flavor, running)
    found = wipe.footprint(settings, name)
    what = f"{found.path} ({found.files} files, {console.human_bytes(found.size)})"
    if not found.exists and running != name:
        console.ok(f"nothing to reset: {found.path} does not exist")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"reset would delete {what}, and there is no terminal to confirm it",
                hint="pass --yes to delete it without asking",
            )
        stopping = f" and stop the running {name} server" if running == name else ""
        sys.stderr.write(f"delete {what}{stopping}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            console.info("nothing deleted")
            return
    if running == name:
        stopped = stop_server(settings, save=False)  # its last snapshot is about to go anyway
        if stopped.was_running and stopped.state is not None:
            console.ok(f"{name} (pid {stopped.state.pid}) stopped")
    with project_lock(settings.lock_file, wait=settings.stop_timeout):
        again, live = current_state(settings)  # a start may have raced us
        if again is not None and live is not None and again.flavor == name:
            raise ConfigError(
                f"{name} was started again while resetting; nothing deleted",
                hint="stop it, then run `invoke reset` again",
            )
        wipe.remove(settings, name)
    console.ok(f"deleted {what}; the next start begins empty")


@task(
    klass=CliTask,
    help={
        "command": "the command as one word, e.g. PING or 'SET k \"v w\"' (split as "
        'redis-cli does); or the words after --: invoke cli -- SET k "v w"',
        "raw": "print replies as plain text (the default when stdout is not a terminal)",
    },
)
@handled
def cli(c: Context, command: str | None = None, raw: bool = False) -> None:
    """A Redis prompt on the managed server, AUTH done (no redis-cli needed).

    `invoke cli PING` or `invoke cli -- SET k "v w"` runs one command (an error reply: exit 1);
    `invoke cli` alone is interactive (quit or Ctrl+D leaves); commands piped on stdin run
    one per line.
    """
    from devserver.app import env as app  # the app and server layers: imported when it runs

    words = redis_cli.split_command(command) if command else (cli_words()[1] or [])
    settings = settings_from(c)
    state = app.running_server(settings, needed_by="`invoke cli`")
    note_other_port(settings, state)
    session = redis_cli.Session(resp.connect_host(state.host), state.port, settings.password)
    plain = raw or not sys.stdout.isatty()
    try:
        if words:
            try:
                reply = session.call(words)
            except resp.RespError as exc:
                raise redis_cli.CliError(f"{exc}", hint=f"the server refused {words[0]}") from None
            sys.stdout.write(redis_cli.format_reply(reply, plain) + "\n")
            return
        prompt = f"{state.host}:{state.port}> "
        interactive = sys.stdin.isatty()
        if interactive:
            console.info(
                f"{state.flavor} {state.version} on {state.host}:{state.port}; quit to leave"
            )
            redis_cli.enable_line_editing()

        def read() -> str | None:
            try:
                return input(prompt) if interactive else (sys.stdin.readline() or None)
            except EOFError:
                return None

        code = redis_cli.repl(session, read, sys.stdout, sys.stderr, raw=plain)
    finally:
        session.close()
    if code:
        raise Exit(code=code)
