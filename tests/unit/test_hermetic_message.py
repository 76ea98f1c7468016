"""The session's hermetic check names who may have changed the checkout's files."""

from __future__ import annotations


def test_the_hermetic_check_does_not_blame_the_tests_for_the_developers_restart() -> None:
    # Following the README (start_dev, then the tests) and using the server meanwhile
    # (`invoke restart`) failed the session with "the tests touched this checkout's own
    # files: ['data/server.json']", which was not true.
    from tests.conftest import checkout_changed_message

    message = checkout_changed_message(["data/server.json"])
    assert "['data/server.json']" in message
    assert "the tests touched" not in message
    assert "restarted meanwhile" in message
