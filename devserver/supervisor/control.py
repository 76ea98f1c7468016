"""The supervisor's control socket: ``invoke stop`` asks it, over loopback, to stop the server.

The request is ``<token> stop save|nosave``: the token (random, in the state file, which
only its owner can read) keeps other local users out. The answer is the shutdown's outcome,
then, on the same connection, ``exited <status>`` once the server is gone.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devserver.supervisor.core import Supervisor

# At most this many clients at once, each with a short read deadline (the request is one
# line a local process sends at once).
CONTROL_CLIENTS = 32
CONTROL_READ_TIMEOUT = 1.0


def serve_control(sup: Supervisor, listener: Any) -> None:
    """Accept control connections; each gets its own short-lived thread.

    Why a thread each: an idle or slow local client must not hold up a real stop request
    behind it. Beyond ``CONTROL_CLIENTS`` open connections new ones are closed at once.
    """
    active = threading.BoundedSemaphore(CONTROL_CLIENTS)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the listener was closed: the server has exited
        if not active.acquire(blocking=False):
            conn.close()
            continue
        threading.Thread(target=_control_client, args=(sup, conn, active), daemon=True).start()


def _control_client(sup: Supervisor, conn: Any, active: Any) -> None:
    """``<token> stop save|nosave``: answer the shutdown's outcome, then, on the same
    connection, ``exited <status>`` once the server is gone. Anything else is denied."""
    import hmac  # here: it loads OpenSSL (4 MiB), which only a stop request needs

    try:
        with conn:
            conn.settimeout(CONTROL_READ_TIMEOUT)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            words = data.split()
            if len(words) != 3 or not hmac.compare_digest(words[0], sup.token.encode()):
                conn.sendall(b"denied\n")
                return
            sup.replying.append(threading.current_thread())
            answer = sup.shutdown(save=words[2] != b"nosave")
            conn.sendall(answer.encode("utf-8", "replace") + b"\n")
            conn.settimeout(None)
            sup.exited.wait()
            conn.sendall(f"exited {sup.exit_status}\n".encode())
    except Exception:
        pass  # a client that went away, or garbage: nothing to do
    finally:
        active.release()
