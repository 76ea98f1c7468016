"""The detached supervisor's first milliseconds on POSIX: spec in, server spawned, state out.

Why a module of its own: everything between ``start`` sending the spec and the state file
appearing is on the critical path of ``invoke start`` and of ``server.start.start``, and in a
fresh interpreter the usual tools cost more than the server's own start-up. Measured here
(Python 3.11, ``python -X importtime``): ``import subprocess`` 11 ms (it pulls in re, enum,
locale), json 10 ms, ``import devserver.supervisor.core`` 30-40 ms in all, against 10-20 ms for
``redis-server`` from exec to PONG. So this module imports only what the interpreter has
loaded or builds in (os, sys, marshal, _socket, _signal, _json, _thread), forks and execs
the server itself, writes the state file from /proc, and only then imports the full
supervisor (threads, the log tee, the control port), while the server boots: its imports
below the top are made where they are for that reason.

The server is forked and exec'd by devserver/system/posix.py (PR_SET_PDEATHSIG needs code in the
child); this process has started no thread when it forks. The spec framing and the state
record are wire.py's, shared with Windows, whose supervisor spawns through subprocess (no
fork there; entry.py). fork.py reuses this module's state write for the supervisor it forks.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import os

from devserver.supervisor.wire import Spec, read_spec, state_record, to_json
from devserver.system.posix import Child, load_prctl, proc_identity, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


# --- the state file, written before anything else is imported -------------------------------


def write_private(path: str, text: str) -> None:
    """Write ``path`` atomically (temp file, rename), readable by its owner only: what
    ``atomic.write_atomic(..., mode=PRIVATE_MODE)`` does on POSIX, which it imports too much
    for this moment (pathlib, the platform modules)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # os.open's mode is masked by the umask
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def control_listener() -> Any:
    """The loopback socket ``invoke stop`` reaches the supervisor on (``_socket``: the socket
    module's import pulls in enum and selectors, 3 ms here)."""
    import _socket  # here: loaded from disk, after the spawn rather than before

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def record_first(spec: Spec, child: Child) -> tuple[Any, str, OSError | None]:
    """Write the state file now, from /proc: (listener, token, None) once written, (None, ""
    , None) where /proc tells nothing (the supervisor records it through psutil), or the
    listener and the error the write failed with (the supervisor stops the server then)."""
    server, me = proc_identity(child.pid), proc_identity(os.getpid())
    if server is None or me is None:
        return None, "", None
    listener = control_listener()
    token = os.urandom(16).hex()
    record = state_record(spec, child.pid, server, me, listener.getsockname()[1], token)
    try:
        write_private(spec["state_file"], to_json(record))
    except OSError as exc:
        return listener, token, exc
    return listener, token, None


def main() -> None:
    """``python -S -c "from devserver.supervisor.bootstrap import main; main()"`` (POSIX).

    An empty stdin means ``start`` gave up before sending a spec: exit quietly. Whatever
    happens next is handed to devserver.supervisor.entry, which ends the process (``finish``).
    """
    # An ignored SIGCHLD (inherited from whoever started ``start``) would hide the server's
    # exit status from waitpid.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    prctl = load_prctl()  # while ``start`` still runs its checks
    warm_up(0)
    try:
        spec = read_spec(0)
    except ValueError as exc:
        _hand_over("report", exc)
    if spec is None:
        os._exit(0)
    secret_dir = secret_path = ""
    try:
        if spec.get("secret_file"):  # Garnet's password file: rare, so imported only then
            from devserver.supervisor.starting import write_secret  # (it imports subprocess)

            secret_dir, secret_path = write_secret(spec)
        child = spawn(spec, secret_path, prctl)
    except OSError as exc:
        _hand_over("spawn_failed", spec, exc, secret_dir)
    except Exception as exc:
        from devserver.supervisor.starting import remove_secret  # here: it imports subprocess

        remove_secret(secret_dir)
        _hand_over("report", exc)
    log_fd = open_log(spec)
    try:
        first = record_first(spec, child)
    except Exception:  # e.g. no loopback socket: the supervisor's own path tries and reports
        first = (None, "", None)
    _hand_over("adopt", spec, child, secret_dir, first, log_fd)


def open_log(spec: Spec) -> int:
    """Open the log for appending before the state is written, -1 if it cannot be: once
    ``start`` has returned, the log is ours even if the project folder is moved before the
    log writer exists (it must never recreate the folder at the old place)."""
    try:
        return os.open(spec["log_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError:
        return -1


# What the supervisor needs after the spawn, heaviest last (``import devserver.supervisor.core``
# is 25-40 ms in a fresh interpreter, mostly subprocess, typing and re).
_WARM = (
    "threading",
    "socket",
    "json",
    "devserver.supervisor.logs",
    "devserver.system.host",
    "devserver.system.kill",
    "devserver.system.lifetime",
    "devserver.system.signals",
    "devserver.system.spawn",
    "devserver.supervisor.core",
    "devserver.supervisor.entry",
)


def warm_up(fd: int) -> None:
    """Import what comes after the spawn, one module at a time, while no spec is waiting.

    ``invoke start`` sends the spec some 100 ms after launching us (it imports the library
    and runs its checks first): then all of this is done by the time it arrives, and the tee
    runs within a millisecond of the spawn. ``server.start.start`` sends it at once: then nothing
    is imported before the spawn, and the rest follows while the server boots.
    """
    import select  # loaded from disk: here, with the rest of the warm-up

    for name in _WARM:
        if select.select([fd], [], [], 0)[0]:
            return  # the spec (or the end of stdin) is there: spawn first
        __import__(name)


def _hand_over(name: str, *args: Any) -> NoReturn:
    """Call ``devserver.supervisor.entry.<name>(*args)`` and end the process with its result."""
    from devserver.supervisor import entry  # the full supervisor: after the spawn, see above

    entry.finish(getattr(entry, name)(*args))
