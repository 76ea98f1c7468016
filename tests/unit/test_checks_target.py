"""verify's target: URL validation, and a password that never shows in anything printed."""

from __future__ import annotations

import pytest

from devserver.errors import VerifyError
from devserver.verify.client import connection_kwargs
from devserver.verify.target import Target, from_settings, from_url
from tests.conftest import SettingsFactory


def test_plain_url_defaults() -> None:
    target = from_url("redis://example.com")
    assert (target.host, target.port, target.db, target.tls) == ("example.com", 6379, 0, False)
    assert target.display_url == "redis://example.com:6379/0"
    assert not target.configured


def test_full_url_with_acl_user_is_masked() -> None:
    target = from_url("rediss://app:s%40cret@cache.internal:6380/3")
    assert (target.username, target.password) == ("app", "s@cret")
    assert (target.port, target.db, target.tls) == (6380, 3, True)
    assert target.display_url == "rediss://app:***@cache.internal:6380/3"
    assert "s@cret" not in repr(target)


def test_password_only_and_query_options() -> None:
    target = from_url("redis://:pw123@127.0.0.1:7000?db=2&ssl_cert_reqs=none&password=x")
    assert target.password == "pw123"  # the userinfo wins over the query string
    assert target.db == 2
    assert target.options == (("ssl_cert_reqs", "none"),)
    assert "pw123" not in target.display_url
    assert target.display_url.startswith("redis://:***@127.0.0.1:7000/2")


def test_ipv6_address() -> None:
    target = from_url("redis://[::1]:6390/0")
    assert target.host == "::1"
    assert target.address == "[::1]:6390"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://u:hunter2@host:6379", "scheme"),
        ("localhost:6379", "scheme"),
        ("unix:///tmp/redis.sock", "scheme"),
        ("redis://", "no host"),
        ("redis://:hunter2@:6379/0", "no host"),
        ("redis://host:notaport/0", "port"),
        ("redis://u:hunter2@host:99999/0", "range"),
        ("redis://host:0/0", "port 0"),
        ("redis://host:6379/zero", "database must be a number"),
        ("redis://host:6379/-1", "database must be a number"),
    ],
)
def test_malformed_urls_are_one_clear_error_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(VerifyError) as caught:
        from_url(url)
    assert caught.value.message.startswith("malformed --url")
    assert reason.lower() in caught.value.message.lower()
    assert "hunter2" not in caught.value.message
    assert "redis://" in caught.value.hint


def test_scrub_removes_plain_and_encoded_secrets() -> None:
    target = Target(host="h", port=1, password="p@ss word")
    assert target.scrub("AUTH p@ss word and p%40ss%20word") == "AUTH *** and ***"
    assert Target(host="h", port=1).scrub("nothing") == "nothing"


def test_configured_target_uses_loopback_and_the_password(make_settings: SettingsFactory) -> None:
    settings = make_settings(host="0.0.0.0", port=7001, password="topsecret")
    target = from_settings(settings)
    assert (target.host, target.port, target.password) == ("127.0.0.1", 7001, "topsecret")
    assert target.configured
    assert target.display_url == "redis://:***@127.0.0.1:7001/0"
    assert "topsecret" not in target.display_url


def test_localhost_becomes_127_0_0_1(make_settings: SettingsFactory) -> None:
    assert from_settings(make_settings(host="localhost")).host == "127.0.0.1"


def test_connection_kwargs_fail_fast_and_keep_url_options() -> None:
    kwargs = connection_kwargs(from_url("rediss://u:p@h:1/4?socket_timeout=3&ssl_cert_reqs=none"))
    assert kwargs["retry"].get_retries() == 0
    assert kwargs["socket_timeout"] == 3.0  # the URL's own choice wins over the default
    assert kwargs["socket_connect_timeout"] == 1.0
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 1, 4)
    assert (kwargs["username"], kwargs["password"]) == ("u", "p")
    assert kwargs["connection_class"].__name__ == "SSLConnection"


def test_bad_query_option_value_is_malformed_url() -> None:
    with pytest.raises(VerifyError, match=r"malformed --url .*socket_timeout"):
        connection_kwargs(from_url("redis://:pw@h:1/0?socket_timeout=soon"))
