"""The port check on Windows: the listener table instead of connect probes, and WSL's relay
(wslrelay.exe keeps a port ~1 s after the Linux server closed it) waited for briefly."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any, ClassVar
from unittest import mock

import psutil
import pytest

from devserver.errors import PortInUse
from devserver.server import ports
from devserver.system import host, reserved_ports

PORT = 6379
REAL_REFUSED_BIND = reserved_ports.refused_bind


def listener(ip: str, pid: int, port: int = PORT) -> Any:
    return SimpleNamespace(
        status=psutil.CONN_LISTEN, laddr=SimpleNamespace(ip=ip, port=port), pid=pid
    )


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> dict[int, str]:
    """Windows, no connect probes allowed, and a process table of pid -> name."""
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(socket, "socket", mock.Mock(side_effect=AssertionError("no probe")))
    # The test bind after a free table (reserved ranges) has its own tests below: it binds.
    monkeypatch.setattr(ports.reserved_ports, "refused_bind", lambda address, port: 0)
    names: dict[int, str] = {}
    monkeypatch.setattr(psutil, "Process", lambda pid: SimpleNamespace(name=lambda: names[pid]))
    return names


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_windows_waits_while_wsls_relay_lets_go_of_the_port(
    windows: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    windows[40] = "wslrelay.exe"
    tables = [[listener("127.0.0.1", 40)], [listener("127.0.0.1", 40)], []]
    table = mock.Mock(side_effect=tables)
    monkeypatch.setattr(psutil, "net_connections", table)
    clock = Clock()
    ports.check_port_free("127.0.0.1", PORT, sleep=clock.sleep, clock=clock)
    assert table.call_args_list == [mock.call(kind="tcp")] * 3
    assert len(clock.sleeps) == 2


def test_windows_relay_that_stays_is_reported_with_a_wsl_hint(
    windows: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    windows[40] = "wslrelay.exe"
    monkeypatch.setattr(psutil, "net_connections", lambda kind: [listener("127.0.0.1", 40)])
    clock = Clock()
    with pytest.raises(PortInUse, match=r"in use by wslrelay\.exe \(pid 40\)") as err:
        ports.check_port_free("127.0.0.1", PORT, sleep=clock.sleep, clock=clock)
    assert "WSL" in err.value.hint
    assert clock.now >= ports.RELAY_GRACE  # it did wait for the relay first


def test_windows_other_owner_fails_at_once_naming_it(
    windows: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    windows[7] = "memurai.exe"
    monkeypatch.setattr(
        psutil, "net_connections", lambda kind: [listener("0.0.0.0", 7, port=80), listener("::", 7)]
    )
    clock = Clock()
    with pytest.raises(PortInUse, match=r"by memurai\.exe \(pid 7\)"):
        ports.check_port_free("127.0.0.1", PORT, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_windows_listener_on_another_interface_does_not_conflict(
    windows: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    windows[7] = "other.exe"
    monkeypatch.setattr(psutil, "net_connections", lambda kind: [listener("192.168.1.5", 7)])
    ports.check_port_free("127.0.0.1", PORT)


def test_windows_falls_back_to_a_probe_when_the_table_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(psutil, "net_connections", mock.Mock(side_effect=psutil.AccessDenied()))
    probe = mock.Mock(return_value=(False, ""))
    monkeypatch.setattr(ports, "_connect_probe", probe)
    ports.check_port_free("127.0.0.1", PORT)
    probe.assert_called_once_with("127.0.0.1", PORT)


def test_posix_keeps_the_connect_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    table = mock.Mock(side_effect=AssertionError("no table on POSIX"))
    monkeypatch.setattr(ports, "_listener_table", table)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            ports.check_port_free("127.0.0.1", port)


# ---- reserved (excluded) port ranges: a free table, yet the bind is refused ----------------

NETSH_OUTPUT = b"""
Protocol tcp Port Exclusion Ranges

Start Port    End Port
----------    --------
      5357        5357
      6300        6399
     50000       50059     *

* - Administered port exclusions.
"""


class RefusingSocket:
    """A socket whose bind fails as Windows' does for a port in an excluded range."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []

    def __init__(self, family: int, kind: int) -> None:
        self.calls.append(("socket", (family, kind)))

    def setsockopt(self, *args: Any) -> None:
        self.calls.append(("setsockopt", args))

    def bind(self, address: tuple[str, int]) -> None:
        self.calls.append(("bind", address))
        exc = PermissionError(13, "An attempt was made to access a socket in a way forbidden")
        exc.winerror = 10013  # type: ignore[attr-defined]
        raise exc

    def close(self) -> None:
        self.calls.append(("close", ()))


def test_windows_port_in_an_excluded_range_names_the_range_and_netsh(
    windows: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener table is empty, but Windows reserved the port (Hyper-V/WinNAT): the start
    must fail before the server does, naming the range and the command that lists them."""
    from devserver.system import reserved_ports

    monkeypatch.setattr(reserved_ports, "refused_bind", REAL_REFUSED_BIND)  # the real test bind
    monkeypatch.setattr(psutil, "net_connections", lambda kind: [])
    RefusingSocket.calls = []
    monkeypatch.setattr(reserved_ports.socket, "socket", RefusingSocket)
    netsh = mock.Mock(return_value=SimpleNamespace(stdout=NETSH_OUTPUT, returncode=0))
    monkeypatch.setattr(reserved_ports.subprocess, "run", netsh)
    with pytest.raises(PortInUse) as caught:
        ports.check_port_free("localhost", PORT)
    assert "6300-6399" in caught.value.message and "reserved by Windows" in caught.value.message
    assert "netsh int ipv4 show excludedportrange protocol=tcp" in (caught.value.hint or "")
    assert RefusingSocket.calls[:3] == [
        ("socket", (socket.AF_INET, socket.SOCK_STREAM)),
        ("setsockopt", (socket.SOL_SOCKET, reserved_ports.SO_EXCLUSIVEADDRUSE, 1)),
        ("bind", ("127.0.0.1", PORT)),
    ]
    assert reserved_ports.SO_EXCLUSIVEADDRUSE == -5  # ~SO_REUSEADDR, Windows' value
    assert netsh.call_args.args[0] == reserved_ports.NETSH_COMMAND.split()


def test_parse_excluded_reads_netshs_table() -> None:
    from devserver.system import reserved_ports

    assert reserved_ports.parse_excluded(NETSH_OUTPUT.decode()) == [
        (5357, 5357),
        (6300, 6399),
        (50000, 50059),
    ]


def test_posix_never_test_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    from devserver.system import reserved_ports

    monkeypatch.setattr(host, "WINDOWS", False)
    monkeypatch.setattr(reserved_ports.socket, "socket", RefusingSocket)
    RefusingSocket.calls = []
    assert reserved_ports.refused_bind("127.0.0.1", PORT) == 0
    assert RefusingSocket.calls == []
