"""Windows: ports that no listener holds yet no program may bind (Hyper-V / WinNAT).

Windows reserves ranges of TCP ports for Hyper-V, WSL2 and Docker (``netsh int ipv4 show
excludedportrange protocol=tcp``), and they move with every reboot. A port in such a range
is in no listener table, so a check that reads the table passes it, and the server then
fails to bind with WSAEACCES (10013): Redis "exited during startup with code 1", Dragonfly
under WSL2's NAT relay never answers PING. A test bind finds it in well under a millisecond.

SO_EXCLUSIVEADDRUSE: without it Windows lets a bind succeed beside another program's socket
that set SO_REUSEADDR, so the test would pass a port the server cannot have either.
"""

from __future__ import annotations

import re
import socket
import subprocess

from devserver.system import host

WSAEACCES = 10013
WSAEADDRINUSE = 10048
# socket.SO_EXCLUSIVEADDRUSE exists only on Windows; its value there is ~SO_REUSEADDR (-5).
SO_EXCLUSIVEADDRUSE = getattr(socket, "SO_EXCLUSIVEADDRUSE", -5)
NETSH_COMMAND = "netsh int ipv4 show excludedportrange protocol=tcp"
_RANGE_RE = re.compile(r"^\s*(\d+)\s+(\d+)\b")


def refused_bind(address: str, port: int) -> int:
    """Windows: the Windows error a test bind of ``address:port`` gets (0 when it binds).

    WSAEACCES means a reserved (excluded) port or one a firewall policy forbids;
    WSAEADDRINUSE a socket the listener table did not show. Other errors (an address this
    machine does not have) are left to the server to report: 0. POSIX: always 0 (no test
    bind there; the connect probe decides).
    """
    if not host.WINDOWS:
        return 0
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1)
        sock.bind((address, port))
    except OSError as exc:
        code = getattr(exc, "winerror", None) or 0
        return code if code in (WSAEACCES, WSAEADDRINUSE) else 0
    finally:
        sock.close()
    return 0


def parse_excluded(text: str) -> list[tuple[int, int]]:
    """The (start, end) port ranges of netsh's excluded-port-range table."""
    found = []
    for line in text.splitlines():
        match = _RANGE_RE.match(line)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    return found


def excluded_range(port: int) -> tuple[int, int] | None:
    """The excluded range holding ``port``, by asking netsh (only after a refused bind)."""
    try:
        out = subprocess.run(
            NETSH_COMMAND.split(),
            capture_output=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("utf-8", "replace")
    return next(((a, b) for a, b in parse_excluded(text) if a <= port <= b), None)
