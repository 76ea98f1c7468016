"""Regenerate the flag lists the stand-ins accept and the catalog test checks against.

Run by hand, not by the tests: it reads local git mirrors of the servers' sources at the
commits named below and rewrites ``*_flags.txt`` beside this file. The lists are data taken
from the sources (definition sites only: no code is copied), so that a flag the catalog passes
and the server does not define fails a unit test, not a user's first start.

    python tests/standins/extract_flags.py MIRRORS_DIR

where MIRRORS_DIR holds ``dragonflydb+dragonfly/repo``, ``romange+helio/repo``,
``abseil+abseil-cpp/repo``, ``microsoft+garnet/repo`` and ``redis+redis/repo`` (bare repos).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

DRAGONFLY_COMMIT = "f8eca6d0b05c915cee9439036b5b04aebbb973bb"  # v1.40.0-87, 2026-08-22
# The helio submodule commit that dragonfly commit pins, and the abseil release helio fetches.
HELIO_COMMIT = "3d8b4ece14ed62cb516e36afbc8947c0cc392826"
ABSEIL_TAG = "20250512.1"
GARNET_COMMIT = "e508a41620f12b01a534826fa83eecfd350db7dd"  # v2.1.4-24, 2026-08-21
REDIS_TAG = "7.0.15"  # what Debian 12 ships as redis-server

# Sources that define flags but are not linked into the dragonfly binary (benchmarks, other
# mains, test helpers, examples).
_NOT_LINKED = (
    "_test.cc",
    "dash_bench.cc",
    "dfly_bench.cc",
    "ok_main.cc",
    "resp_validator.cc",
    "test_utils.cc",
    "gtest_main.cc",
    "http_main.cc",
    "examples/",
)
_ABSL_FLAG = re.compile(r"ABSL_(?:RETIRED_)?FLAG\(\s*([^,]+?),\s*(\w+)\s*,", re.S)
# absl's usage flags are handled by name in flags/internal/usage.cc, not defined with ABSL_FLAG.
_ABSL_USAGE = ("help", "helpfull", "helpshort", "helppackage", "version", "only_check_args",
               "helpon", "helpmatch")  # fmt: skip
_GARNET_OPTION = re.compile(r"\[Option\((?:'.', )?\"([^\"]+)\"")
_REDIS_CONFIG = re.compile(r"create\w+Config\(\"([a-z0-9-]+)\", *(?:\"([a-z0-9-]+)\"|NULL)")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def absl_flags(repo: Path, rev: str, under: list[str]) -> set[str]:
    """``name bool`` for boolean flags (they take no value: --name, --noname), else ``name``."""
    names: set[str] = set()
    files = git(repo, "grep", "-l", "-E", "ABSL_(RETIRED_)?FLAG\\(", rev, "--", *under)
    for line in files.splitlines():
        path = line.split(":", 1)[1]
        if any(mark in path for mark in _NOT_LINKED):
            continue
        for kind, name in _ABSL_FLAG.findall(git(repo, "show", f"{rev}:{path}")):
            names.add(f"{name} bool" if kind.strip() == "bool" else name)
    return names


def write(name: str, header: list[str], flags: set[str]) -> None:
    text = "".join(f"# {line}\n" for line in header) + "".join(f"{f}\n" for f in sorted(flags))
    (HERE / name).write_text(text, encoding="utf-8")


def main(mirrors: Path) -> None:
    dfly = absl_flags(mirrors / "dragonflydb+dragonfly/repo", DRAGONFLY_COMMIT, ["src"])
    helio = absl_flags(mirrors / "romange+helio/repo", HELIO_COMMIT, ["base", "util", "io"])
    absl = absl_flags(
        mirrors / "abseil+abseil-cpp/repo", ABSEIL_TAG, ["absl/flags/parse.cc", "absl/log/flags.cc"]
    )
    write(
        "dragonfly_flags.txt",
        [
            "Flags the dragonfly binary accepts (absl: --name=value or --name value; a flag marked",
            "bool takes no value: --name, --noname, --name=false).",
            f"dragonflydb/dragonfly {DRAGONFLY_COMMIT}: ABSL_FLAG and ABSL_RETIRED_FLAG in src/",
            f"romange/helio {HELIO_COMMIT} (its submodule): base/, util/, io/",
            f"abseil/abseil-cpp {ABSEIL_TAG}: flags/parse.cc, log/flags.cc, usage flags",
            "Regenerate with tests/standins/extract_flags.py.",
        ],
        dfly | helio | absl | {f"{name} bool" for name in _ABSL_USAGE},
    )
    garnet_src = git(
        mirrors / "microsoft+garnet/repo",
        "show",
        f"{GARNET_COMMIT}:libs/host/Configuration/Options.cs",
    )
    write(
        "garnet_flags.txt",
        [
            "Long options GarnetServer accepts (CommandLineParser, --name value).",
            f"microsoft/garnet {GARNET_COMMIT}: [Option] in libs/host/Configuration/Options.cs",
            "Regenerate with tests/standins/extract_flags.py.",
        ],
        set(_GARNET_OPTION.findall(garnet_src)) | {"help", "version"},
    )
    config_c = git(mirrors / "redis+redis/repo", "show", f"{REDIS_TAG}:src/config.c")
    redis = {n for pair in _REDIS_CONFIG.findall(config_c) for n in pair if n}
    # Directives loadServerConfigFromString handles itself, outside the standard table.
    redis |= {"include", "rename-command", "user", "loadmodule", "sentinel"}
    write(
        "redis_flags.txt",
        [
            "Config directives redis-server accepts (as --name value on its command line).",
            f"redis/redis {REDIS_TAG}: the standardConfig table in src/config.c, plus the",
            "directives loadServerConfigFromString handles by name.",
            "Regenerate with tests/standins/extract_flags.py.",
        ],
        redis,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
