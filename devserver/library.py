"""The library API for scripts: ``devserver.ephemeral()`` and the tasks' start / stop / status.

Why a module of its own: the tasks talk to a person and read invoke.yaml through Invoke; a
script (or the pytest plugin) wants values and exceptions, no output, and a throwaway server
that never touches the project's own data. Everything here goes through the same
``start.start`` / supervisor as ``invoke start``. Like the rest of the library it never
prints: failures are :class:`devserver.errors.DevServerError` with a message and a hint.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devserver.catalog import FLAVORS
from devserver.config import Settings, load_settings
from devserver.errors import StartError
from devserver.system import signals

# Ephemeral servers keep nothing: the per-flavor switches that turn persistence off.
_NO_PERSISTENCE: Mapping[str, str] = {name: f.ephemeral_args for name, f in FLAVORS.items()}


@dataclass(frozen=True)
class Server:
    """A running server, as a script or a test needs it."""

    host: str
    port: int
    flavor: str
    version: str
    password: str = ""
    pid: int = 0
    log_file: str = ""
    data_dir: str = ""

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0``, ready for redis-py's ``from_url``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{auth}{host}:{self.port}/0"

    def client(self, **kwargs: Any) -> Any:
        """A new redis-py client for this server (the caller closes it), as the pytest
        fixture's ``devserver.client()``; ``kwargs`` go to ``redis.Redis.from_url``."""
        import redis  # redis-py (tens of ms) only when a client is asked for

        return redis.Redis.from_url(self.url, **kwargs)


def settings(root: str | Path = ".", **server: Any) -> Settings:
    """Validated Settings for a project folder, with ``server.*`` keys given as keywords.

    E.g. ``settings(".", flavor="redis", port=6380)``. invoke.yaml is not read here (that is
    Invoke's job, for the tasks); keys not given take the documented defaults.
    """
    return load_settings({"server": server}, Path(root))


def start(config: Settings) -> Server:
    """Start the project's server in the background (as ``invoke start``), or find it running.

    A running server that is not the one ``config`` asks for (another port, flavor or
    binary) is refused with StartError, as ``invoke start --port N`` refuses it: handing back
    a server on another port than the caller connects to would only fail later.
    """
    # The server layer is imported by the call that needs it: `import devserver` for
    # settings or a URL stays cheap.
    from devserver.server.running import differences
    from devserver.server.start import start as start_server

    result = start_server(config)
    if result.already_running:
        asked = {
            "port": config.port,
            "flavor": config.flavor,
            "binary": str(config.binary) if config.binary else None,
        }
        differ = differences(result.state, asked)
        if differ:
            state = result.state
            raise StartError(
                f"{state.flavor} {state.version} is already running (pid {state.pid}, "
                f"{state.host}:{state.port}), not the one asked for: {'; '.join(differ)}",
                hint="stop it first (devserver.stop with the settings it was started with), "
                "or ask for the running one",
            )
    return _server(config, result.state)


def stop(config: Settings, save: bool = True) -> bool:
    """Stop the project's server (as ``invoke stop``); False when it was not running."""
    from devserver.server.stop import stop as stop_server  # the server layer, on use

    return stop_server(config, save=save).was_running


def status(config: Settings) -> dict[str, Any]:
    """The same object as ``invoke status --json`` (``running`` is False when stopped)."""
    from devserver.server.status import status as server_status  # the server layer, on use

    return server_status(config)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def ephemeral(
    flavor: str = "auto",
    port: int | None = None,
    binary: str | Path | None = None,
    root: str | Path = ".",
    password: str = "",
    startup_timeout: float = 30,
    owner_pid: int | None = None,
    workdir: str | Path | None = None,
    extra_args: str | Sequence[str] = (),
    restart: str = "no",
) -> Iterator[Server]:
    """A throwaway server for the ``with`` block: free port, temporary data and logs, no save.

    ``root`` is where ``bin/`` (a fetched server) is looked for. The server is stopped when
    the block ends, and also when this process dies without ending it (``owner_pid``,
    default this process: the supervisor notices and stops it). ``workdir``: put the data
    and log folders there (kept) instead of a temporary folder (removed). ``extra_args``:
    more server arguments (a list, or one shell-style string such as
    ``"--enable-debug-command yes"``), after the flavor's no-persistence switches.
    ``restart``: what the supervisor does when the server crashes, ``no`` (a test that kills
    its server wants to see it dead) or ``on-failure`` (as ``server.restart``).
    """
    # Imported on use; the server layer below only after the supervisor is launched.
    from devserver.supervisor.fork import can_fork
    from devserver.supervisor.launch import launch_supervisor

    # A spawned supervisor's interpreter starts while we import and check (as `start`); a
    # single-threaded Linux process forks one after the checks instead, which is faster.
    early = None if can_fork() else launch_supervisor()
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="devserver-"))
    try:
        try:
            config = ephemeral_settings(
                flavor, port, binary, root, password, startup_timeout, base, extra_args, restart
            )
            # Imported while the early supervisor starts up (the two overlap).
            from devserver.server.start import start as start_server
            from devserver.server.stop import stop as stop_server
        except BaseException:
            if early is not None:
                _dismiss(early[0])
            raise
        result = start_server(
            config,
            supervisor=early,
            owner_pid=os.getpid() if owner_pid is None else owner_pid,
            owner_folder=str(base) if workdir is None else "",
        )
        try:
            yield _server(config, result.state)
        finally:
            if not _exiting():
                # A second Ctrl+C must not cut the stop short (it is raised after it).
                with signals.interrupts_deferred():
                    stop_server(config, save=False)
    finally:
        if workdir is None and not _exiting():
            shutil.rmtree(base, ignore_errors=True)


def _exiting() -> bool:
    """Is the interpreter shutting down (a ``with`` left open, closed at exit)? Then no stop
    can run here: no new thread starts any more (a stop starts one, and would wait forever),
    and builtins are being torn down. Nothing is lost by skipping it: the supervisor sees
    this process end (``owner_pid``), stops the server and removes its temporary folder."""
    return sys.is_finalizing()


def ephemeral_settings(
    flavor: str,
    port: int | None,
    binary: str | Path | None,
    root: str | Path,
    password: str,
    startup_timeout: float,
    base: Path,
    extra_args: str | Sequence[str] = (),
    restart: str = "no",
) -> Settings:
    """Settings of an ephemeral server, with its flavor's no-persistence switches.

    With flavor auto the binary is chosen here, so the switches are the right flavor's.
    """
    from devserver.fetch.choice import choose_binary  # on use, as the server layer

    host = "127.0.0.1"
    config = settings(
        root,
        flavor=flavor,
        binary=str(binary or ""),
        host=host,
        port=port or free_port(host),
        password=password,
        data_dir=str(base / "data"),
        log_dir=str(base / "logs"),
        startup_timeout=startup_timeout,
        stop_timeout=5,
        restart=restart,
    )
    mine = extra_args if isinstance(extra_args, str) else shlex.join(extra_args)

    def args_for(flavor: str) -> str:
        return " ".join(part for part in (_NO_PERSISTENCE.get(flavor, ""), mine) if part)

    if config.flavor != "auto":  # known already: start chooses the binary once, as usual
        return config.with_overrides(extra_args=args_for(config.flavor))
    chosen = choose_binary(config)
    return config.with_overrides(
        flavor=chosen.flavor, binary=str(chosen.path), extra_args=args_for(chosen.flavor)
    )


def _dismiss(sup: subprocess.Popen[bytes]) -> None:
    """A supervisor launched early with nothing to run: no spec on its stdin, so it exits."""
    if sup.stdin is not None:
        sup.stdin.close()
    try:
        sup.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sup.kill()
        sup.wait()


def _server(config: Settings, state: Any) -> Server:
    return Server(
        host=state.host,
        port=int(state.port),
        flavor=state.flavor,
        version=state.version or "",
        password=config.password,
        pid=int(state.pid),
        log_file=str(state.log_file or ""),
        data_dir=str(config.data_dir),
    )
