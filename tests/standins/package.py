"""Release archives of the stand-ins, packaged the way the real releases are, plus ``dotnet``.

Test-only. Dragonfly's ``dragonfly-<arch>.tar.gz`` is flat: the binary ``dragonfly-<arch>`` and
``LICENSE.md``. Garnet's ``linux-x64-based.tar.xz`` holds one
build per framework, ``net8.0/`` and ``net10.0/`` (.azure/pipelines/createbinaries.ps1 packs
``../linux-x64/*`` after copying each framework's publish folder into it), its single-file
``GarnetServer`` without the exec bit. The "binary" is a small Python launcher whose shebang
is this interpreter; it runs the stand-in from tests/standins with ``STANDIN_CONFIG`` baked in
(the reported version, a slow save), so the process the tool starts is the launcher itself
(its pid, exe and cmdline are what a supervisor records).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from devserver.system import host
from tests.archives import build

HERE = Path(__file__).resolve().parent


def launcher(stand_in: str, **config: Any) -> bytes:
    """The executable text that runs ``tests/standins/<stand_in>.py`` with ``config``."""
    script = HERE / f"{stand_in}.py"
    return (
        f"#!{sys.executable}\n"
        f"# Test stand-in written by tests/standins/package.py: not a real {stand_in} binary.\n"
        "import runpy, sys\n"
        "argv0 = sys.argv[0]  # run_path replaces it with the script's path\n"
        f"config = {config!r}\n"
        f"runpy.run_path({str(script)!r}, "
        "init_globals={'STANDIN_CONFIG': config, 'STANDIN_ARGV0': argv0}, run_name='__main__')\n"
    ).encode()


def dragonfly_archive(folder: Path, **config: Any) -> Path:
    """``dragonfly-<arch>.tar.gz`` as GitHub serves it (the name carries no version)."""
    name = f"dragonfly-{host.cpu_arch()}"
    folder.mkdir(parents=True, exist_ok=True)
    return build(
        folder / f"{name}.tar.gz",
        "tar.gz",
        [
            ("file", name, launcher("dragonfly", **config), 0o755),
            ("file", "LICENSE.md", b"Business Source License 1.1 (stand-in copy)\n"),
        ],
    )


def garnet_archive(folder: Path, **config: Any) -> Path:
    """``linux-x64-based.tar.xz`` with a net8.0/ and a net10.0/ build."""
    members: list[tuple[Any, ...]] = []
    for framework in (8, 10):
        top = f"net{framework}.0"
        members += [
            ("dir", top),
            (
                "file",
                f"{top}/GarnetServer",
                launcher("garnet", framework=framework, **config),
                0o644,
            ),
            ("file", f"{top}/GarnetServer.pdb", b"symbols"),
            ("dir", f"{top}/extensions"),
            ("file", f"{top}/extensions/GarnetJSON.dll", b"MZ stand-in"),
        ]
    folder.mkdir(parents=True, exist_ok=True)
    return build(folder / "linux-x64-based.tar.xz", "tar.xz", members)


def install_dotnet(folder: Path, majors: tuple[int, ...] = (8,)) -> Path:
    """A stand-in ``dotnet`` in ``folder`` (put it first on PATH) that knows ``--list-runtimes``
    (the format of the real one: name, version, [location]) and ``--version``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        f"Microsoft.NETCore.App {m}.0.11 [/usr/share/dotnet/shared/Microsoft.NETCore.App]\n"
        f"Microsoft.AspNetCore.App {m}.0.11 [/usr/share/dotnet/shared/Microsoft.AspNetCore.App]\n"
        for m in majors
    )
    script = (
        f"#!{sys.executable}\n"
        "# Test stand-in for the dotnet host, written by tests/standins/package.py.\n"
        "import sys\n"
        "args = sys.argv[1:]\n"
        "if args == ['--list-runtimes']:\n"
        f"    sys.stdout.write({lines!r})\n"
        "elif args == ['--version']:\n"
        f"    print('{max(majors, default=8)}.0.100')\n"
        "else:\n"
        "    sys.exit('dotnet stand-in: only --list-runtimes and --version')\n"
    )
    path = folder / "dotnet"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path
