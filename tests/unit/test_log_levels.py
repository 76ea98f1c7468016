"""Redis log levels for `tail --level`, and the start-up logo left out of the live echo."""

from __future__ import annotations

from pathlib import Path

import pytest

from devserver.cli.console import level_of
from devserver.server.readiness import LogEcho, banner_line

STAMP = "[2026-12-01 18:21:57] "


@pytest.mark.parametrize(
    ("line", "level"),
    [
        (
            "19994:M 01 Dec 2026 18:21:57.368 # WARNING Memory overcommit must be enabled!",
            "warning",
        ),
        ("19994:M 01 Dec 2026 18:21:57.368 # Error trying to save the DB, can't exit.", "error"),
        ("19994:M 01 Dec 2026 18:21:57.368 # Server initialized", "info"),
        (
            "19994:C 01 Dec 2026 18:21:57.358 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo",
            "info",
        ),
        ("19994:M 01 Dec 2026 18:21:57.372 # User requested shutdown...", "info"),
        ("19994:M 01 Dec 2026 18:21:57.372 # Redis is now ready to exit, bye bye...", "info"),
        # notice/verbose/debug lines are info whatever words they hold
        ("19994:M 01 Dec 2026 18:21:57.368 * DB loaded from disk (error count 0)", "info"),
        ("19994:M 01 Dec 2026 18:21:57.368 - Client closed connection: warning test", "info"),
        ("19994:S 01 Dec 2026 18:21:57.368 . debug line", "info"),
        ("19994:M 01 Dec 2026 18:21:57.368 # Short read or OOM loading DB. Unrecoverable", "error"),
        ("*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***", "error"),
        ("W1201 10:00:00.000 12 main.cc:1] low memory", "warning"),
        ("E1201 10:00:00.000 12 main.cc:1] failed", "error"),
    ],
)
def test_levels_with_and_without_the_tee_stamp(line: str, level: str) -> None:
    assert level_of(line) == level
    assert level_of(STAMP + line) == level


LOGO = [
    "                _._                                                  ",
    "           _.-``__ ''-._                                             ",
    "      _.-``    `.  `_.  ''-._           Redis Community Edition      ",
    "  .-`` .-```.  ```\\/    _.,_ ''-._     8.0.2 (00000000/0) 64 bit",
    " (    '      ,       .-`  | `,    )     Running in standalone mode",
    " |`-._`-...-` __...-.``-._|'` _.-'|     Port: 6379",
    " |    `-._   `._    /     _.-'    |     PID: 1234",
    "  `-._    `-._  `-./  _.-'    _.-'                                   ",
    " |`-._`-._    `-.__.-'    _.-'_.-'|                                  ",
    " |    `-._`-._        _.-'_.-'    |           https://redis.io       ",
    "      `-._    `-.__.-'    _.-'                                       ",
    "          `-._        _.-'                                           ",
    "              `-.__.-'                                               ",
    "",
]


def test_the_logo_is_left_out_of_the_live_echo_but_kept_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text("")
    shown: list[str] = []
    echo = LogEcho(log, shown.append)
    real = [
        "1:C 01 Dec 2026 18:21:57.358 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo",
        "1:M 01 Dec 2026 18:21:57.369 * Ready to accept connections tcp",
    ]
    lines = [real[0], *LOGO, real[1]]
    log.write_text("".join(STAMP + line + "\n" for line in lines))
    echo.poll()
    assert shown == [STAMP + real[0], STAMP + real[1]]
    assert all(banner_line(STAMP + line) for line in LOGO)
    assert not any(banner_line(STAMP + line) for line in real)
    assert log.read_text().count("\n") == len(lines)  # the log keeps everything


def test_echo_remembers_this_runs_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text(STAMP + "an earlier run's line\n")
    echo = LogEcho(log, None)
    with log.open("a") as handle:
        handle.write(STAMP + "this run\n")
    echo.poll()
    assert list(echo.recent) == [STAMP + "this run"]
    assert "earlier" not in echo.hint() and "this run" in echo.hint()
    assert not echo.load_failure
