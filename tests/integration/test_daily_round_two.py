"""Daily use, round two: what a new user and a script tripped over (start with a port from the
environment, `invoke api` with nothing configured, status's JSON, the `devserver` script in a
subfolder, the tasks a user's project gets).

Real Invoke in a subprocess against a real redis-server on a free port, in a throwaway copy of
the project; whatever a test started is stopped by recorded PID in the fixture's finalizer.
"""

from __future__ import annotations

import json
import socket

from tests.conftest import free_port
from tests.integration.test_daily_use import Daily, proj

__all__ = ["proj"]  # the fixture, imported to be used here


def test_start_names_a_port_asked_through_the_environment(proj: Daily) -> None:
    assert proj.invoke("start").returncode == 0
    other = free_port()
    again = proj.invoke("start", INVOKE_SERVER_PORT=str(other))
    assert again.returncode == 0, again.stderr  # the running server is used, as before
    assert f"the running server is on {proj.port}; INVOKE_SERVER_PORT says {other}" in again.stderr
    assert f"invoke restart --port {other}" in again.stderr


def test_status_json_exit_status_is_null_while_running_and_clients_leave_status_out(
    proj: Daily,
) -> None:
    assert proj.invoke("start").returncode == 0
    info = json.loads(proj.invoke("status", "--json").stdout)
    assert info["running"] is True and info["exit_status"] is None
    assert info["clients"] == 0  # nobody but status itself is connected


def test_api_with_nothing_configured_exits_1_with_the_hint(proj: Daily) -> None:
    result = proj.invoke("api", INVOKE_API_COMMAND="")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "error: no API command configured" in result.stderr
    assert "hint: set api.command in invoke.yaml" in result.stderr


def test_up_with_the_port_taken_does_not_point_at_the_server_log(proj: Daily) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", proj.port))
        holder.listen()
        result = proj.invoke("up", "--no-verify")
    assert result.returncode == 1, result
    assert "already in use" in result.stderr
    assert "up stopped: the start step failed" in result.stderr
    assert "invoke tail" not in result.stderr  # no server ran: its log cannot say why
