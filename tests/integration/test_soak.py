"""The opt-in soak (``python -m pytest -m soak``; deselected by default in pyproject.toml).

SOAK_MINUTES sets its length (default 2); ``python benchmarks/soak.py --minutes 10`` is the
full run whose figures docs/performance.md quotes. Pass: supervisor RSS flat, every log line
found, no client errors, a clean graceful stop (see benchmarks/soak.py).
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.soak
def test_soak() -> None:
    import soak  # benchmarks/soak.py

    report = soak.run(float(os.environ.get("SOAK_MINUTES", "2")))
    assert report.ok, report.failures
    assert report.log_lines_found == report.log_lines_sent > 0
    assert report.log_files > 1  # rotation was active
