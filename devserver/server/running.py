"""Does the running server match what a command asked for?

``invoke start --port 6380`` while a server runs on 6379 used to say "already running" and exit
0, so a script went on talking to 6380 and failed later, far from the cause. Only what the
person *asked for on the command line* counts here: a plain ``start`` with nothing asked is
satisfied by whatever of ours runs (exit 0, as before); a differing request is named, with the
``invoke restart ...`` line that would give it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devserver.server.state import ServerState


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def differences(state: ServerState, asked: Mapping[str, Any]) -> list[str]:
    """What differs between the running server and the options given (None: not given).

    Keys: ``port`` (int), ``flavor`` (``auto`` asks for nothing in particular), ``binary``
    (a path). Returns readable phrases such as "port 6380 (it runs on 6379)".
    """
    found: list[str] = []
    port = asked.get("port")
    if port is not None and int(port) != state.port:
        found.append(f"port {port} (it runs on {state.port})")
    flavor = asked.get("flavor")
    if flavor not in (None, "", "auto") and str(flavor).lower() != state.flavor:
        found.append(f"flavor {flavor} (it runs {state.flavor})")
    binary = asked.get("binary")
    if binary and not _same_path(str(Path(str(binary)).expanduser()), state.binary or state.exe):
        found.append(f"binary {binary} (it runs {state.binary or state.exe})")
    return found


def restart_hint(options: Mapping[str, Any]) -> str:
    """``invoke restart --port 6380 ...`` with the options given, shell-quoted."""
    words = ["invoke", "restart"]
    for name, value in options.items():
        if value not in (None, ""):
            words += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(w) for w in words)
