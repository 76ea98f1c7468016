"""``invoke cli``'s argument check: which word Invoke would take for the next task."""

from __future__ import annotations

import pytest

from devserver.cli.redis_prompt import stray_word

TASKS = ["cli", "status", "stop"]


@pytest.mark.parametrize(
    ("after", "stray"),
    [
        ([], None),
        (["PING"], None),
        (['SET k "v w"'], None),  # one word, split by cli itself
        (["PING", "status"], None),  # a real task chained after it
        (["--", "SET", "k", "v"], None),
        (["-r", "--", "GET", "k"], None),
        (["GET", "k"], "k"),
        (["-r", "GET", "k"], "k"),
        (["--raw", "SET", "k", "v"], "k"),
        (["-c", "GET", "k"], "k"),  # GET is -c's value, k is left over
        (["--command=GET", "k"], "k"),
        (["-c", "PING", "stop"], None),
    ],
)
def test_stray_word(after: list[str], stray: str | None) -> None:
    assert stray_word(after, TASKS) == stray
