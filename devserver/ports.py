"""Is the port free, and if not, who holds it: checked before a start, named in the error."""

from __future__ import annotations

import socket

from . import resp
from .errors import PortInUse


def port_owner(port: int) -> str:
    """'name (pid N)' of the process listening on ``port``, when the OS tells us."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except Exception:  # AccessDenied on macOS, races with exiting processes
        return ""
    return ""


def check_port_free(host: str, port: int) -> None:
    """Fail fast, naming the owner, when something already listens on the port.

    A connect probe rather than a test bind: on Windows a bind can succeed beside another
    program's listener (SO_REUSEADDR semantics differ), while a connect sees it either way.
    """
    probe = resp.connect_host(host)
    family = socket.AF_INET6 if ":" in probe else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        in_use = sock.connect_ex((probe, port)) == 0
    if not in_use:
        return
    owner = port_owner(port)
    raise PortInUse(
        f"port {port} is already in use" + (f" by {owner}" if owner else ""),
        hint="stop that process or choose another port (--port or server.port)",
    )
