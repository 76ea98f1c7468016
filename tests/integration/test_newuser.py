"""Traps a new user hit following the README on a fresh clone.

Each test reproduces one: the command as the user typed it, and what they should have seen.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import free_port
from tests.integration.test_up import Project, proj  # noqa: F401  (the fixture)


def test_cli_with_several_words_says_how_to_pass_them(proj: Project) -> None:  # noqa: F811
    # `invoke cli GET k` is what a redis-cli user types; Invoke used to answer only
    # "No idea what 'k' is!" (it parses k as the next task), with no hint.
    for words in (("GET", "k"), ("SET", "k", "v"), ("--raw", "GET", "k")):
        result = proj.invoke("cli", *words)
        assert result.returncode == 1
        assert "No idea" not in result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert lines[0].startswith("error: `invoke cli` takes the command as one word")
        command = " ".join(w for w in words if not w.startswith("-"))
        assert lines[1] == (
            f"hint: put several words after --: invoke cli -- {command}   "
            f"(or quote them: invoke cli '{command}')"
        )
        assert result.stdout == ""
    spaced = proj.invoke("cli", "SET", "k", "v w")  # the hint keeps the quoting it needs
    assert (
        spaced.stderr.splitlines()[1]
        == "hint: put several words after --: invoke cli -- SET k 'v w'"
    )


def test_cli_words_after_dashdash_of_another_task_are_not_checked(proj: Project) -> None:  # noqa: F811
    # `invoke run -- echo cli GET k`: those words are run's command, not cli's.
    result = proj.invoke("run", "--", "echo", "cli", "GET", "k")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cli GET k\n"


def test_cli_without_a_server_does_not_talk_about_the_api(proj: Project) -> None:  # noqa: F811
    # It said "the server is not running, so the API would have nothing to connect to".
    result = proj.invoke("cli", "PING")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: the server is not running, so `invoke cli` would have nothing to connect to",
        "hint: start it with `invoke start` (or run everything with `invoke up`)",
    ]


def _into_closed_pipe(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """Run a task whose stdout reader is already gone, as in `invoke status | grep -q x`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=proj.root,
            env=proj.env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=90,
        )
    finally:
        os.close(write_end)


def test_start_into_a_closed_pipe_still_starts_the_server(proj: Project) -> None:  # noqa: F811
    # `invoke start | head -3`: the log echo hit BrokenPipeError, which aborted the start
    # (a traceback, exit 1, and the new server cleaned up again).
    started = _into_closed_pipe(proj, "start")
    assert "Traceback" not in started.stderr
    assert started.returncode == 0, started.stderr
    assert "ready on 127.0.0.1" in started.stderr
    assert proj.invoke("status").returncode == 0


def test_a_report_into_a_closed_pipe_is_no_traceback(proj: Project) -> None:  # noqa: F811
    # `invoke status | head -1` printed a BrokenPipeError traceback (only tail handled it).
    assert proj.invoke("start").returncode == 0
    for args, code in (
        (("status",), 0),  # the LSB code survives: running
        (("status", "--json"), 0),
        (("verify", "--iterations", "5"), 1),
        (("env",), 1),
        (("env", "--shell"), 1),
        (("fetch", "--list"), 1),
        (("cli", "PING"), 1),
        (("tail",), 0),
    ):
        result = _into_closed_pipe(proj, *args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "BrokenPipe" not in result.stderr, (args, result.stderr)
        assert result.returncode == code, (args, result.returncode, result.stderr)
    assert proj.invoke("stop").returncode == 0
    stopped = _into_closed_pipe(proj, "status")
    assert (stopped.returncode, stopped.stderr) == (3, "")  # not running: still 3


def test_env_cli_run_name_a_port_that_differs_from_the_running_server(proj: Project) -> None:  # noqa: F811
    # INVOKE_SERVER_PORT=<other> invoke env printed the running server's URL without a word.
    assert proj.invoke("start").returncode == 0
    other = str(free_port())
    note = (
        f"warning: the running server is on {proj.port}; INVOKE_SERVER_PORT says {other}: "
        f"using the running server (`invoke restart --port {other}` moves it)"
    )
    env = proj.invoke("env", INVOKE_SERVER_PORT=other)
    assert env.returncode == 0
    assert env.stdout == f"REDIS_URL=redis://127.0.0.1:{proj.port}/0\n"
    assert note in env.stderr.splitlines()
    ping = proj.invoke("cli", "PING", INVOKE_SERVER_PORT=other)
    assert (ping.returncode, ping.stdout) == (0, "PONG\n")
    assert note in ping.stderr.splitlines()
    ran = proj.invoke("run", "--", "printenv", "REDIS_URL", INVOKE_SERVER_PORT=other)
    assert ran.stdout == f"redis://127.0.0.1:{proj.port}/0\n"
    assert note in ran.stderr.splitlines()
    same = proj.invoke("env")  # the port asked for is the running one: nothing to say
    assert same.stderr == ""


def test_invokes_own_output_into_a_closed_pipe_is_no_traceback(proj: Project) -> None:  # noqa: F811
    # `invoke --list | head -1` printed Invoke's BrokenPipeError traceback (the tasks handled
    # it, Invoke's own --list and task help did not). Plain `invoke --help` is printed
    # before Invoke loads tasks.py, where no code of ours runs yet: not covered.
    for args in (("--list",), ("--help", "start"), ("start", "--help")):
        result = _into_closed_pipe(proj, *args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "BrokenPipe" not in result.stderr, (args, result.stderr)
        assert result.returncode == 1, (args, result.stderr)
