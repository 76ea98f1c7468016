"""``python -m devserver.requirements_check requirements.txt``: already installed?

start_dev.sh asks this before running pip in a venv it has no install stamp for (the README's
set-up installs requirements-dev.txt by hand first, so pip would otherwise run again for
nothing). It prints ``satisfied`` and exits 0 only when every requirement in the file (its
environment marker honoured) is installed at a version the line allows; any doubt (a missing
package, an unreadable line, no ``packaging``) exits 1 and the script runs pip. Standard
library plus ``packaging`` (pip vendors one, used when the real one is not installed).
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _requirement_class() -> Any:
    for module in ("packaging.requirements", "pip._vendor.packaging.requirements"):
        try:
            return importlib.import_module(module).Requirement
        except ImportError:
            continue
    raise ImportError("neither packaging nor pip's vendored copy is installed")


def satisfied(path: Path) -> bool:
    """Whether every requirement line of ``path`` is met by what is installed."""
    requirement = _requirement_class()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue  # comments and pip options (--only-binary, -r: not followed here)
        req = requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def main(argv: list[str]) -> int:
    try:
        ok = satisfied(Path(argv[0] if argv else "requirements.txt"))
    except Exception:  # any doubt means "run pip", which reports problems in its own words
        return 1
    if ok:
        sys.stdout.write("satisfied\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
