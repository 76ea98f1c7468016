"""The version a Dragonfly install reports: from the release tag, else from the binary itself.

Dragonfly's asset name (dragonfly-x86_64.tar.gz) has no version, so an install from --url or
--archive without a pinned version used to record "unknown"; the binary's own ``--version``
(``dragonfly v1.40.1-<sha>`` in ANSI green) says which release it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from devserver.catalog import DRAGONFLY
from devserver.config import load_settings
from devserver.fetch import binaries
from devserver.fetch.manifest import installed_binary
from devserver.system import host


def test_release_version_from_what_the_binary_reports() -> None:
    assert binaries.release_version("1.40.1-6fa2c9d1e0b6") == "v1.40.1"
    assert binaries.release_version("v1.24.0") == "v1.24.0"
    assert binaries.release_version("") == ""
    assert binaries.release_version("unknown") == ""


@pytest.mark.skipif(host.os_name() == "windows", reason="runs a #! script")
def test_read_version_ignores_the_ansi_colours(tmp_path: Path) -> None:
    exe = tmp_path / "dragonfly"
    text = "dragonfly \\x1b[0;32mv1.40.1-6fa2c9d1\\x1b[m\\nbuild time: \\x1b[0;33m2026\\x1b[m\\n"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write('{text}')\n")
    exe.chmod(0o755)
    assert binaries.read_version(DRAGONFLY, exe) == "1.40.1-6fa2c9d1"


def test_an_unknown_recorded_version_falls_back_to_the_binarys(tmp_path: Path) -> None:
    settings = load_settings({"server": {"flavor": "dragonfly"}}, tmp_path)
    settings.bin_dir.mkdir(parents=True)
    (settings.bin_dir / "dragonfly").write_text("#!/bin/sh\nexit 1\n")
    manifest = {"version": "unknown", "exe": "dragonfly", "exe_version": "1.40.1-6fa2c9d1"}
    (settings.bin_dir / "dragonfly.json").write_text(json.dumps(manifest))
    found = installed_binary(settings, DRAGONFLY)
    assert found is not None and found.version == "v1.40.1"
