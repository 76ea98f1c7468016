"""Replace a file in one step, so a reader sees the old content or the new, never half.

One helper for every file the tool rewrites in place: the state file, .env, install
manifests. The temp file sits beside the target (same filesystem, so ``os.replace`` is an
atomic rename on POSIX and Windows alike) and is named by our pid, which avoids importing
``tempfile`` on the supervisor's start-up path.
"""

from __future__ import annotations

import os
from pathlib import Path

from devserver.system import files

# Files only their owner may read: the state file holds the supervisor's control token.
PRIVATE_MODE = 0o600


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename; ``mode`` applies to new content.

    ``durable`` fsyncs before the rename (for user files such as .env, where a crash must not
    leave an empty file); the state file skips it, being rewritten on every start.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # os.open's mode is masked by the umask
        if mode == PRIVATE_MODE:
            files.restrict_to_owner(tmp)  # Windows ignores the mode: an owner-only ACL
        # Windows refuses the rename while a reader has ``path`` open: retried briefly.
        files.retry_sharing(lambda: os.replace(tmp, path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_file(path: Path) -> None:
    """Delete a file if it exists, retrying briefly while another process has it open
    (Windows refuses to delete an open file, see ``files.retry_sharing``)."""
    files.retry_sharing(lambda: path.unlink(missing_ok=True))


def check_writable(directory: Path) -> None:
    """Create and delete a file in ``directory``; raise OSError when that is refused.

    A real attempt, because ``os.access`` says yes to root even on a read-only or immutable
    directory.
    """
    import tempfile  # costs milliseconds (random, shutil); a check before the start path's spawn

    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
    os.close(fd)
    os.unlink(probe)
