"""devserver: fetch, run, check and stop a local Redis-compatible server.

The library never prints and its core never imports invoke: it returns values and raises
:class:`devserver.errors.DevServerError`; the tasks (``devserver/cli/``) talk to
the person. For scripts: ``with devserver.ephemeral() as server: ...`` and
``devserver.start/stop/status(devserver.settings(...))`` (devserver/library.py), imported
only when used so ``import devserver`` (every ``invoke`` run) stays cheap.
"""

from __future__ import annotations

# Not ``from typing import TYPE_CHECKING``: typing pulls in re and collections (20 ms in a
# fresh interpreter), and every module of the package, the supervisor's bootstrap among them,
# pays for this file first. Type checkers treat this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:  # real types for type checkers; at run time imported on first use
    from typing import Any

    from devserver.library import Server, ephemeral, settings, start, status, stop

__all__ = ["Server", "__version__", "ephemeral", "settings", "start", "status", "stop"]

__version__ = "0.1.0"

_LIBRARY = ("Server", "ephemeral", "settings", "start", "status", "stop")


def __getattr__(name: str) -> Any:
    if name in _LIBRARY:
        from devserver import library  # on first use: `import devserver` stays cheap

        return getattr(library, name)
    raise AttributeError(f"module 'devserver' has no attribute {name!r}")
