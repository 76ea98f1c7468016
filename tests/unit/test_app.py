"""devserver.app.env: REDIS_URL, .env formatting and merging, and the API runner with real children.

The merge tests compare bytes: "without touching its other lines" means byte for byte, line
endings and odd encodings included. The runner tests start real Python processes, because
exit codes and Ctrl+C are exactly what fakes would get wrong.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from redis.connection import parse_url

from devserver.app import api
from devserver.app import env as app
from devserver.config import load_settings
from devserver.errors import ConfigError
from devserver.system import appproc, host, kill

ROOT = Path(__file__).resolve().parents[2]


# --- URL ------------------------------------------------------------------------------------


def test_url_without_password() -> None:
    assert app.redis_url("127.0.0.1", 6380) == "redis://127.0.0.1:6380/0"


@pytest.mark.parametrize("password", ["s3cret", "p@ss:w/rd", "a#b%c d", "ünï?&=+", "%41"])
def test_password_is_url_encoded_and_round_trips_through_redis_py(password: str) -> None:
    url = app.redis_url("127.0.0.1", 6379, password)
    userinfo = url.split("//", 1)[1].rsplit("@", 1)[0]
    assert all(ch not in userinfo[1:] for ch in "@:/#? ")
    parsed = parse_url(url)  # type: ignore[no-untyped-call]
    assert parsed["password"] == password
    assert (parsed["host"], parsed["port"], parsed["db"]) == ("127.0.0.1", 6379, 0)


def test_wildcard_bind_is_reached_on_loopback_and_ipv6_gets_brackets() -> None:
    assert app.redis_url("0.0.0.0", 1) == "redis://127.0.0.1:1/0"
    assert app.redis_url("::1", 2) == "redis://[::1]:2/0"


def test_redact_hides_only_the_password() -> None:
    url = app.redis_url("127.0.0.1", 6379, "p@ss:w/rd")
    assert app.redact_url(url) == "redis://:***@127.0.0.1:6379/0"
    assert app.redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_connection_env_uses_config_then_api_env(tmp_path: Path) -> None:
    settings = load_settings(
        {"server": {"port": "7001", "password": "x y"}, "api": {"env": {"APP_MODE": "dev"}}},
        tmp_path,
    )
    assert app.connection_env(settings) == {
        "REDIS_URL": "redis://:x%20y@127.0.0.1:7001/0",
        "APP_MODE": "dev",
    }


def test_connection_env_rejects_bad_names(tmp_path: Path) -> None:
    settings = load_settings({"api": {"env": {"1BAD": "x"}}}, tmp_path)
    with pytest.raises(ConfigError, match="1BAD"):
        app.connection_env(settings)


# --- .env format --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("redis://:p%40ss@127.0.0.1:6379/0", "redis://:p%40ss@127.0.0.1:6379/0"),
        ("", ""),
        ("two words", "'two words'"),
        ("$HOME #x", "'$HOME #x'"),
        ("it's", '"it\'s"'),
        ('a"b\\c\nd', '"a\\"b\\\\c\\nd"'),
    ],
)
def test_format_value(value: str, expected: str) -> None:
    assert app.format_value(value) == expected


def test_format_values_parse_back_with_a_dotenv_reading() -> None:
    """Our quoting is the subset every dotenv parser reads the same way."""
    values = {"A": "plain", "B": "two words", "C": "it's", "D": "x\ny"}
    text = app.format_env(values)
    assert text.splitlines()[0] == "A=plain"
    assert _read_dotenv(text) == values


def _read_dotenv(text: str) -> dict[str, str]:
    """A tiny reader with python-dotenv's quoting rules (enough for our output)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if value[:1] == "'":
            value = value[1:-1]
        elif value[:1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out[name] = value
    return out


# --- .env merge -----------------------------------------------------------------------------


def test_merge_keeps_every_other_line_byte_for_byte(tmp_path: Path) -> None:
    original = (
        b"# my settings \xe9 (latin-1 byte)\n"
        b"export SECRET_KEY='abc'   # trailing comment\n"
        b"\n"
        b"REDIS_URL=redis://old:1/0\n"
        b'MULTI="line one\n'
        b"REDIS_URL=inside a quoted value\n"
        b'"\n'
        b"APP_MODE=prod\n"
        b"LAST=no newline at end"
    )
    path = tmp_path / ".env"
    path.write_bytes(original)
    result = app.merge_env_file(
        path, {"REDIS_URL": "redis://127.0.0.1:7/0", "APP_MODE": "dev", "NEW_ONE": "x"}
    )
    assert result.written
    assert (result.updated, result.added) == (["REDIS_URL", "APP_MODE"], ["NEW_ONE"])
    assert path.read_bytes() == (
        b"# my settings \xe9 (latin-1 byte)\n"
        b"export SECRET_KEY='abc'   # trailing comment\n"
        b"\n"
        b"REDIS_URL=redis://127.0.0.1:7/0\n"
        b'MULTI="line one\n'
        b"REDIS_URL=inside a quoted value\n"
        b'"\n'
        b"APP_MODE=dev\n"
        b"LAST=no newline at end\n"
        b"NEW_ONE=x\n"
    )


def test_merge_keeps_crlf_bom_export_and_replaces_duplicates(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfexport REDIS_URL=a\r\nKEEP=1\r\nREDIS_URL=b\r\n")
    app.merge_env_file(path, {"REDIS_URL": "c"})
    assert path.read_bytes() == b"\xef\xbb\xbfexport REDIS_URL=c\r\nKEEP=1\r\nREDIS_URL=c\r\n"


def test_merge_is_a_noop_when_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\nREDIS_URL=x\n")
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    result = app.merge_env_file(path, {"REDIS_URL": "x"})
    assert not result.written and result.unchanged == ["REDIS_URL"]
    assert path.stat().st_mtime_ns == before


def test_merge_creates_a_private_file_and_keeps_an_existing_mode(tmp_path: Path) -> None:
    new = tmp_path / "new.env"
    app.merge_env_file(new, {"REDIS_URL": "x"})
    assert new.read_text() == "REDIS_URL=x\n"
    old = tmp_path / "old.env"
    old.write_text("A=1\n")
    old.chmod(0o640)
    app.merge_env_file(old, {"REDIS_URL": "x"})
    if not host.WINDOWS:
        assert stat.S_IMODE(new.stat().st_mode) == 0o600
        assert stat.S_IMODE(old.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(host.WINDOWS, reason="symlinks need privileges on Windows")
def test_merge_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "shared.env"
    real.write_text("A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(real)
    app.merge_env_file(link, {"REDIS_URL": "x"})
    assert link.is_symlink()
    assert real.read_text() == "A=1\nREDIS_URL=x\n"


def test_merge_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(app.EnvFileError, match="does not exist"):
        app.merge_env_file(tmp_path / "nope" / ".env", {"REDIS_URL": "x"})


# --- API runner -----------------------------------------------------------------------------


def _py(code: str) -> str:
    """A shell command line running ``code`` with this interpreter (quoted for sh and cmd)."""
    return f'"{sys.executable}" -c "{code}"'


@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_api_returns_the_childs_exit_code(tmp_path: Path, code: int) -> None:
    result = api.run_api(_py(f"import sys; sys.exit({code})"), {}, tmp_path)
    assert result == api.ApiResult(code, interrupted=False)


def test_run_api_exports_redis_url_and_api_env_and_runs_in_cwd(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    code = (
        "import os; open('seen.txt', 'w').write(os.environ['REDIS_URL'] + ' ' "
        "+ os.environ['APP_MODE'] + ' ' + os.environ['KEPT'])"
    )
    result = api.run_api(
        _py(code),
        {"REDIS_URL": "redis://127.0.0.1:1/0", "APP_MODE": "dev"},
        tmp_path,
        base_env={**os.environ, "KEPT": "yes"},
    )
    assert result.code == 0
    assert out.read_text() == "redis://127.0.0.1:1/0 dev yes"


def test_shell_syntax_runs_through_the_shell(tmp_path: Path) -> None:
    result = api.run_api(_py("import sys; sys.exit(4)") + " || exit 9", {}, tmp_path)
    assert result.code == 9


# The POSIX rule (cmd.exe runs every command on Windows); a pure function, so it runs anywhere.
@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("uvicorn app:app --port 8000", False),
        ('"/a b/python" -m x', False),
        ("cd api && npm start", True),
        ("FOO=1 run", True),
        ("run $PORT", True),
        ("exec run", True),
        ("run 'unbalanced", True),
    ],
)
def test_simple_commands_are_executed_directly(command: str, shell: bool) -> None:
    assert appproc._needs_shell(command) is shell


@pytest.mark.skipif(host.WINDOWS, reason="POSIX: simple commands run without a shell")
def test_a_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(api.ApiError, match="no-such-command-for-devserver-tests"):
        api.run_api("no-such-command-for-devserver-tests --flag", {}, tmp_path)


@pytest.mark.skipif(host.WINDOWS, reason="POSIX signals")
def test_ctrl_c_goes_to_the_api_and_its_exit_code_comes_back(tmp_path: Path) -> None:
    """SIGINT to the runner (no terminal): forwarded to the API, which exits 42 on its own."""
    child = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGINT, lambda *a: sys.exit(42))
        open('ready', 'w').close()
        time.sleep(30)
        sys.exit(1)
    """)
    (tmp_path / "api.py").write_text(child)
    runner = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from devserver.app import api
        result = api.run_api('"{sys.executable}" api.py', {{}}, Path('.'))
        print(result.code, result.interrupted)
        sys.exit(result.code)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", runner],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline, "the API child never started"
            assert proc.poll() is None, "the runner exited early"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 42
    assert out.split() == ["42", "True"]


def test_signal_death_becomes_128_plus_n() -> None:
    assert kill.exit_code(0) == 0
    assert kill.exit_code(5) == 5
    if not host.WINDOWS:
        assert kill.exit_code(-signal.SIGINT) == 130


# --- Windows branches, checked on any OS by patching host.WINDOWS ---------------------


def test_windows_always_runs_the_api_through_cmd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """npm, yarn and friends are .cmd files that only cmd.exe finds."""
    calls: list[tuple[object, dict[str, object]]] = []

    def fake_popen(args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        return object()

    monkeypatch.setattr(host, "WINDOWS", True)
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    appproc.spawn_foreground("npm run dev", {"A": "1"}, tmp_path)
    assert calls == [("npm run dev", {"shell": True, "env": {"A": "1"}, "cwd": str(tmp_path)})]


@pytest.mark.usefixtures("default_int_handler")
def test_windows_reports_ctrl_c_but_never_forwards_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console already sent Ctrl+C to the child; we only note it and keep waiting."""

    class Child:
        def __init__(self) -> None:
            self.sent: list[int] = []

        def poll(self) -> None:
            return None

        def send_signal(self, signum: int) -> None:
            self.sent.append(signum)

    monkeypatch.setattr(host, "WINDOWS", True)
    child = Child()
    seen: list[int] = []
    with appproc.relay_interrupts(child, seen.append):  # type: ignore[arg-type]
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
    assert seen == [signal.SIGINT] and child.sent == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert kill.exit_code(-1073741510) == -1073741510  # Windows codes pass unchanged
