"""The fork tests' list of a process's children survives a thread that ends meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.proclist import children_of_self

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


def test_a_thread_gone_since_the_listing_is_skipped() -> None:
    tids = [*os.listdir("/proc/self/task"), "999999999"]  # a thread that has just ended
    assert children_of_self(tids=tids) == []


def test_a_child_is_listed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children_of_self()
    finally:
        child.kill()
        child.wait()
