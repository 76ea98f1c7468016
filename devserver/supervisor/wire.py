"""What crosses between ``start`` and its supervisor: the launch spec and the state record.

Imported by the lean POSIX bootstrap before it spawns the server, so it imports only
what the interpreter has already loaded (os, time, marshal); see bootstrap.py for why. The
spec framing is shared with Windows, whose supervisor reads the same stdin.
"""

from __future__ import annotations

import marshal
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypedDict

    class Spec(TypedDict):
        """Everything the supervisor needs, sent by ``server.start.start`` on stdin (plain values
        only: it travels as marshal, see :func:`encode_spec`)."""

        argv: list[str]
        public_argv: list[str]
        env: dict[str, str]
        cwd: str
        flavor: str
        version: str
        binary: str
        host: str
        port: int
        state_file: str
        log_file: str
        log_max_bytes: int
        log_backups: int
        password: str
        stdin_config: str
        secret_file: list[str] | None
        stop_save: list[list[str]]
        stop_nosave: list[list[str]]
        terminate_after_stop: bool
        # The process whose death stops the server (owner.py); 0: nobody's, it stays.
        owner_pid: int
        owner_create_time: float
        owner_start_ticks: int  # Linux: the clock-step-proof identity (0: none)
        # Removed once the owner has died and the server is stopped ("" nothing): the
        # ephemeral server's temporary folder.
        owner_folder: str
        # The project id (server/marker.py), recorded in the state: a copied state file
        # names another project's server, which is then not ours.
        project: str
        # server.stop_timeout: SIGTERM to the supervisor ends the server within it.
        stop_timeout: float
        # After a crash (restart.py): "on-failure" or "no", the limit of crashes within the
        # window (seconds), how long a restarted server may take to answer PING, and the
        # project lock a restart takes (so it never races a stop or a start).
        restart: str
        restart_limit: int
        restart_window: float
        startup_timeout: float
        lock_file: str

else:
    # At run time a spec is a plain dict: typing's import would cost the bootstrap 10 ms.
    Spec = dict

_SPEC_MAGIC = b"devserver-spec-1 "


# --- the spec on stdin ---------------------------------------------------------------------


def encode_spec(spec: Spec | dict[str, Any]) -> bytes:
    """The spec as the supervisor reads it: a header line with the length, then marshal.

    marshal, not JSON: the spec is only dicts, lists, strings, numbers, booleans and None,
    and the supervisor would otherwise import json (10 ms) before it can spawn anything. The
    length lets the reader take exactly the spec and leave the rest of stdin (``ok``, the
    lifeline) unread.
    """
    payload = marshal.dumps(dict(spec))
    return _SPEC_MAGIC + str(len(payload)).encode("ascii") + b"\n" + payload


def read_spec(fd: int = 0) -> Spec | None:
    """The spec from ``fd``, read unbuffered; None when it ends first (``start`` gave up).

    ValueError when what arrives is not a spec (nothing is started then)."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            if header.strip():
                _bad("the spec ended in its header")
            return None
        header += byte
        if len(header) > 64:
            _bad("no spec header")
    if not header.startswith(_SPEC_MAGIC):
        _bad("no spec header")
    size = int(header[len(_SPEC_MAGIC) :])
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            return None  # ``start`` died while sending it
        chunks.append(chunk)
        got += len(chunk)
    try:
        spec = marshal.loads(b"".join(chunks))
    except (EOFError, TypeError, ValueError):
        _bad("the spec is not readable")
    if not isinstance(spec, dict):
        _bad("the spec is not a mapping")
    return spec  # type: ignore[return-value]


def _bad(why: str) -> NoReturn:
    raise ValueError(f"bad supervisor spec: {why}")


# --- the state file's record ---------------------------------------------------------------


def state_record(
    spec: Spec,
    pid: int,
    server: tuple[float, str, int],
    me: tuple[float, str, int],
    control_port: int,
    token: str,
) -> dict[str, Any]:
    """The state file's content (``state.ServerState``'s fields): the server's and this
    supervisor's identities (create time, exe, start ticks) and how to reach both."""
    return {
        "pid": pid,
        "create_time": server[0],
        "start_ticks": server[2],  # clock-step proof (0 where there is no /proc)
        "exe": server[1],
        "supervisor_pid": os.getpid(),  # not Popen's pid: a venv python.exe is a launcher
        "supervisor_create_time": me[0],
        "supervisor_start_ticks": me[2],
        "flavor": spec["flavor"],
        "version": spec["version"],
        "host": spec["host"],
        "port": spec["port"],
        "log_file": spec["log_file"],
        "started_at": time.time(),
        "binary": spec["binary"],
        "argv": spec["public_argv"],
        "control_port": control_port,
        "control_token": token,
        "status": "running",
        "exit_status": "",
        "project": spec.get("project", ""),
    }


def to_json(value: Any, indent: str = "") -> str:
    """JSON for the state's plain values, as ``json.dumps(value, indent=2, sort_keys=True)``
    reads back; without importing json (``_json`` is its C speed-up, built in)."""
    if isinstance(value, str):
        return _quote(value)
    if value is True or value is False or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a JSON number: {value!r}")
        return repr(value)
    inner = indent + "  "
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in value) + "\n" + indent + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{inner}{_quote(str(k))}: {to_json(value[k], inner)}" for k in sorted(value))
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _quote(text: str) -> str:
    try:  # here, not at the top: _json is loaded from disk, after the spawn rather than before
        from _json import encode_basestring_ascii
    except ImportError:  # an interpreter without the C speed-up
        import json

        return json.dumps(text)
    return encode_basestring_ascii(text)  # type: ignore[no-any-return]
