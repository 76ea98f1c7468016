"""verify checks the server that runs, even when it was started on another port."""

from __future__ import annotations

import dataclasses

from devserver.server.start import start as start_server
from devserver.server.stop import stop as stop_server
from devserver.verify.target import from_settings
from tests.conftest import SettingsFactory, free_port


def test_verify_targets_the_running_server(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    start_server(settings)  # as after `invoke start --port N`
    configured_elsewhere = dataclasses.replace(settings, port=free_port())
    assert from_settings(configured_elsewhere).port == settings.port
    stop_server(settings)
    assert from_settings(configured_elsewhere).port == configured_elsewhere.port
