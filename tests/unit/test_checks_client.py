"""redis-py failures -> one line that names the problem, with a hint, never the password."""

from __future__ import annotations

import ssl

import redis

from devserver.verify.client import command_error, fault, is_fault
from devserver.verify.target import Target

LOCAL = Target(host="127.0.0.1", port=6399, configured=True)
REMOTE = Target(host="cache", port=6380, password="hunter2")


def _auth(code: str, text: str) -> redis.AuthenticationError:
    return redis.AuthenticationError(text, status_code=code)


def test_refused_says_how_to_start() -> None:
    err = fault(
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused."), LOCAL
    )
    assert "connection refused" in err.message
    assert "invoke start" in err.hint


def test_refused_on_a_url_points_at_the_url() -> None:
    err = fault(
        redis.ConnectionError("Error 10061 connecting to cache:6380. No connection."), REMOTE
    )
    assert "connection refused" in err.message
    assert "--url" in err.hint


def test_noauth_and_wrongpass_are_named() -> None:
    noauth = fault(_auth("NOAUTH", "Authentication required."), LOCAL)
    assert noauth.message.startswith("NOAUTH:")
    assert "server.password" in noauth.hint
    wrong = fault(_auth("WRONGPASS", "invalid username-password pair"), REMOTE)
    assert wrong.message.startswith("WRONGPASS:")
    # redis-py sometimes strips the code: then whether we sent a password decides
    assert fault(_auth("", "Invalid Username or Password"), REMOTE).message.startswith("WRONGPASS")
    assert fault(_auth("", "HELLO must be called..."), LOCAL).message.startswith("NOAUTH")


def test_timeouts_reading_connecting_and_tls_handshake() -> None:
    mute = fault(redis.TimeoutError("Timeout reading from socket"), LOCAL)
    assert "did not answer" in mute.message and "timeout" in mute.message
    far = fault(redis.TimeoutError("Timeout connecting to server"), REMOTE)
    assert "timed out connecting" in far.message
    tls = Target(host="cache", port=6380, tls=True)
    assert "TLS handshake" in fault(redis.TimeoutError("Timeout connecting to server"), tls).message


def test_loopback_connect_timeout_means_nothing_listens() -> None:
    # what a refused loopback connect looks like on Windows with a 1 s connect timeout
    err = fault(redis.TimeoutError("Timeout connecting to server"), LOCAL)
    assert "nothing is listening" in err.message
    assert "invoke start" in err.hint


def test_tls_error_found_in_the_exception_chain() -> None:
    cause = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    cause.verify_message = "self-signed certificate"
    try:
        raise redis.ConnectionError("Error 1 connecting to cache:6380. [SSL] ...") from cause
    except redis.ConnectionError as exc:
        err = fault(exc, REMOTE)
    assert err.message.startswith("TLS error with cache:6380")
    assert "self-signed certificate" in err.message
    assert "ssl_ca_certs" in err.hint


def test_protocol_garbage_and_setup_errors() -> None:
    http = fault(redis.InvalidResponse("Protocol Error: b'HTTP/1.1 400 Bad Request'"), LOCAL)
    assert "does not speak the Redis protocol" in http.message
    db = fault(redis.ResponseError("DB index is out of range", status_code="ERR"), REMOTE)
    assert "ERR DB index is out of range" in db.message


def test_the_password_is_scrubbed_from_messages() -> None:
    err = fault(redis.ConnectionError("weird failure mentioning hunter2"), REMOTE)
    assert "hunter2" not in err.message and "***" in err.message


def test_stage_is_named() -> None:
    err = fault(redis.ConnectionError("Connection closed by server."), LOCAL, during="queue")
    assert "during queue" in err.message


def test_unknown_command_is_named() -> None:
    exc = redis.ResponseError("unknown command 'brpop', with args beginning with: 'k' '0.2' ")
    assert command_error("BRPOP", exc).startswith("unknown command BRPOP:")
    assert command_error("LPUSH", redis.ResponseError("ERR unknown command")).startswith(
        "unknown command LPUSH"
    )
    readonly = redis.ResponseError(
        "You can't write against a read only replica.", status_code="READONLY"
    )
    assert command_error("SET", readonly) == (
        "SET: READONLY You can't write against a read only replica."
    )


def test_faults_versus_command_errors() -> None:
    assert is_fault(redis.ConnectionError("x"))
    assert is_fault(redis.TimeoutError("x"))
    assert is_fault(ConnectionResetError())
    assert not is_fault(ValueError("a bug, not the server"))
