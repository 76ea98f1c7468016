"""Is the port free, and if not, who holds it: checked before a start, named in the error."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from devserver.errors import PortInUse
from devserver.server import resp
from devserver.system import reserved_ports
from devserver.system.host import refused_connect_is_slow

# WSL's NAT-mode localhost forwarder (wslrelay.exe) keeps listening on a port for up to
# about a second after the Linux server closed it (WSL's localhost.cpp rescans the Linux
# listeners once a second), so `invoke restart` of Dragonfly under WSL would find its own
# port taken. Such a holder is waited for this long before the port counts as in use.
RELAY_GRACE = 2.5
RELAY_NAMES = ("wslrelay.exe", "wslrelay")
_WILDCARDS = ("0.0.0.0", "::", "")


def _owner_text(pid: int | None) -> str:
    if not pid:
        return ""
    try:
        import psutil  # only for a taken port: a start on a free one never loads it (~40 ms)

        return f"{psutil.Process(pid).name()} (pid {pid})"
    except Exception:  # AccessDenied for a service, a process that just exited
        return f"pid {pid}"


def port_owner(port: int) -> str:
    """'name (pid N)' of the process listening on ``port``, when the OS tells us."""
    try:
        import psutil  # only for a taken port: a start on a free one never loads it (~40 ms)

        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except Exception:  # AccessDenied on macOS, races with exiting processes
        return ""
    return ""


def _connect_probe(host: str, port: int) -> tuple[bool, str]:
    """POSIX: does something accept connections on the port? (then ask who it is)"""
    probe = resp.connect_host(host)
    family = socket.AF_INET6 if ":" in probe else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        in_use = sock.connect_ex((probe, port)) == 0
    return in_use, port_owner(port) if in_use else ""


def _listener_table(host: str, port: int) -> tuple[bool, str]:
    """Windows: read the TCP listener table (no probe: a refused connect costs ~2 s there).

    A listener on the wildcard address, on our host, or on loopback when we bind loopback
    conflicts with our bind; one on another interface's address does not.
    """
    import psutil  # Windows only: a start elsewhere never loads it (~40 ms)

    loopback = host.startswith("127.") or host in ("localhost", "::1")
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        ip = conn.laddr.ip
        if ip in _WILDCARDS or ip == host or (loopback and (ip.startswith("127.") or ip == "::1")):
            return True, _owner_text(conn.pid)
    return False, ""


def _probe(host: str, port: int) -> tuple[bool, str]:
    if refused_connect_is_slow():
        try:
            return _listener_table(host, port)
        except Exception:  # psutil refused: fall back to what works everywhere
            pass
    return _connect_probe(host, port)


def _check_bindable(host: str, port: int) -> None:
    """Windows: a port no listener holds may still be refused (reserved ranges): test-bind it."""
    code = reserved_ports.refused_bind(resp.connect_host(host), port)
    if code == reserved_ports.WSAEADDRINUSE:
        raise PortInUse(
            f"port {port} is already in use (a test bind was refused)",
            hint="stop that process or choose another port (--port or server.port)",
        )
    if code == reserved_ports.WSAEACCES:
        found = reserved_ports.excluded_range(port)
        where = f" (excluded range {found[0]}-{found[1]})" if found else ""
        raise PortInUse(
            f"port {port} is reserved by Windows{where}: no program may bind it (WSAEACCES)",
            hint="Hyper-V, WSL2 or Docker reserve port ranges (they can change at every "
            f"reboot): see them with `{reserved_ports.NETSH_COMMAND}`, and choose a port "
            "outside them (--port or server.port)",
        )


def check_port_free(
    host: str,
    port: int,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Fail fast, naming the owner, when something already listens on the port.

    A connect probe (POSIX) or the listener table (Windows) rather than a test bind: on
    Windows a bind can succeed beside another program's listener (SO_REUSEADDR semantics
    differ). A port held by WSL's relay is waited for briefly (see RELAY_GRACE). A port no
    one listens on is then test-bound on Windows (see reserved_ports: reserved ranges).
    """
    deadline = clock() + RELAY_GRACE
    while True:
        in_use, owner = _probe(host, port)
        if not in_use:
            _check_bindable(host, port)
            return
        relay = owner.lower().startswith(RELAY_NAMES)
        if not relay or clock() >= deadline:
            break
        sleep(0.1)
    hint = "stop that process or choose another port (--port or server.port)"
    if relay:
        hint = (
            "WSL's localhost relay still forwards this port: a server inside WSL listens on "
            "it (check with `wsl.exe -e ss -ltnp`), or choose another port (--port)"
        )
    raise PortInUse(f"port {port} is already in use" + (f" by {owner}" if owner else ""), hint=hint)
