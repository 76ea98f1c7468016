"""Remembering a failed release lookup, so `up` does not wait on a dead network every time.

Why: with flavor auto and no Dragonfly installed, every ``invoke up`` asks GitHub for the
latest release. Behind a proxy that accepts and never answers, each ask cost the whole
timeout before the offline fallback. After one failure the next runs within
``release.retry_after`` seconds go straight to the local server and say so; ``fetch --force``
asks again at once, and ``server.flavor: redis`` never asks. The note is a small JSON file in
bin/ (it describes what bin/ can get); losing it only means one more lookup.

The note also keeps which local server the last fallback ran (``fallback``), so the full
warning and its hint are said once per situation: while the network stays away and the same
local server is chosen, later runs say it in one line. A lookup that works removes the note,
so the next time the network is away is a new situation again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from devserver.system.atomic import write_atomic

NOTE = ".release-lookup-failed.json"


@dataclass(frozen=True)
class Failure:
    """A remembered lookup failure: what failed, and how many seconds ago."""

    reason: str
    age_s: float


def _read(bin_dir: Path) -> dict[str, object]:
    try:
        data = json.loads((bin_dir / NOTE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(bin_dir: Path, data: dict[str, object]) -> None:
    """Never fails the fetch over the note itself: without it, one more lookup or warning."""
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(bin_dir / NOTE, json.dumps(data))
    except OSError:
        pass


def remember(bin_dir: Path, reason: str, clock: float | None = None) -> None:
    """Record that the lookup failed now (the last fallback's choice is kept)."""
    when = time.time() if clock is None else clock
    kept = {k: v for k, v in _read(bin_dir).items() if k == "fallback"}
    _write(bin_dir, {**kept, "failed_at": when, "reason": reason})


def last_fallback(bin_dir: Path) -> str:
    """The local server the last fallback ran ("" when none is noted), whatever its age."""
    return str(_read(bin_dir).get("fallback", ""))


def note_fallback(bin_dir: Path, choice: str) -> None:
    """Record the local server this fallback runs, for the next run's one-line report."""
    data = _read(bin_dir)
    if data.get("fallback") != choice:
        _write(bin_dir, {**data, "fallback": choice})


def recent(bin_dir: Path, within_s: float, clock: float | None = None) -> Failure | None:
    """The failure noted less than ``within_s`` seconds ago, if any (a clock step back or an
    unreadable note counts as none: better one more lookup than a wrong skip)."""
    now = time.time() if clock is None else clock
    try:
        data = json.loads((bin_dir / NOTE).read_text(encoding="utf-8"))
        age = now - float(data["failed_at"])
        reason = str(data.get("reason", ""))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not 0 <= age < within_s:
        return None
    return Failure(reason, age)


def forget(bin_dir: Path) -> None:
    """The lookup worked: the next failure starts a new note."""
    try:
        (bin_dir / NOTE).unlink()
    except OSError:
        pass
