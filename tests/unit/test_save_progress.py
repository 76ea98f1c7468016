"""The progress line a stop shows while the server saves past its budget."""

from __future__ import annotations

from pathlib import Path

from devserver.server.graceful import SaveWatch, save_progress


def test_save_progress_does_not_compare_the_whole_wait_with_the_save_timeout(
    tmp_path: Path,
) -> None:
    """6 s since the stop began against a 4 s save_timeout read as if the limit had passed:
    the save_timeout counts from the end of the stop budget, and the line says so."""
    watch = SaveWatch(tmp_path, tmp_path / "log", clock=lambda: 0.0)
    text = save_progress(watch, 6.0, 4.0)
    assert "6s since the stop began" in text, text
    assert "up to server.save_timeout (4s) past the stop budget" in text, text
    assert "so far" not in text
