"""The children of this process on Linux, read from /proc, for scripts the tests run.

Why a helper: ``/proc/self/task/<tid>/children`` is per thread, and a thread listed a moment
ago may have ended before its file is read (FileNotFoundError, or ESRCH on the read), which
made a fork test fail under load. A thread that is gone has no children to report.
"""

from __future__ import annotations

import os


def children_of_self(task_dir: str = "/proc/self/task", tids: list[str] | None = None) -> list[int]:
    """Every child pid of every thread of this process (``tids``: the threads to read)."""
    found: list[int] = []
    for tid in os.listdir(task_dir) if tids is None else tids:
        try:
            with open(os.path.join(task_dir, tid, "children")) as handle:
                found += [int(pid) for pid in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended since the listing
    return found
