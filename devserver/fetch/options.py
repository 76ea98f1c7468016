"""What a fetch is given and what it gives back: the command-line options, the reporter it
talks through (the library never prints), and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devserver.fetch.dotnet import Runner, run_quietly


class Bar(Protocol):
    def update(self, done: int) -> None: ...
    def close(self) -> None: ...


class Reporter(Protocol):
    """How the library talks through the tasks without printing (cli/report.py implements it)."""

    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def progress(self, label: str, total: int | None) -> Bar: ...


class QuietReporter:
    """Says nothing: for tests and library callers that only want the result."""

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def progress(self, label: str, total: int | None) -> Bar:
        return _NoBar()


class _NoBar:
    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FetchOptions:
    """Command-line choices. ``url``/``archive`` given here are explicit requests to install."""

    upgrade: bool = False
    force: bool = False
    url: str = ""
    sha256: str = ""
    archive: Path | None = None
    allow_unverified: bool = False
    retries: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    dotnet: Runner = run_quietly


@dataclass(frozen=True)
class FetchResult:
    """What fetch did: "installed", "current" (nothing to do), "local" (redis on POSIX: the
    system or bundled binary is used) or "fallback" (offline: local redis instead).

    ``repeated``: a fallback to the same local server as the last one, whose full warning
    was said then (``short`` is its reason in a few words, for a one-line report)."""

    action: str
    flavor: str
    version: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    reason: str = ""
    repeated: bool = False
    short: str = ""


def policy(options: FetchOptions, total: float | None = None) -> Any:
    """The download policy (retries, backoff, timeouts) for these options."""
    # Imported here: download.py imports requests, which only a real download needs.
    from devserver.fetch.download import Policy

    return Policy(
        retries=options.retries, backoff=options.backoff, timeout=options.timeout, total=total
    )
