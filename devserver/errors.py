"""One small exception family: every expected failure carries a message and a hint.

The tasks turn a DevServerError into ``Exit(1)`` with both lines on stderr and no traceback,
so anything a user can cause or fix must be raised as one of these, never as a bare OSError.
"""

from __future__ import annotations

import errno


class DevServerError(Exception):
    """An expected failure: ``message`` says what happened, ``hint`` what to try."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(DevServerError):
    """A setting or option has an invalid value."""


class BinaryNotFound(DevServerError):
    """No executable for the chosen flavor is installed or on PATH."""


class UnsupportedPlatform(DevServerError):
    """The flavor publishes nothing that runs on this OS/CPU."""


class PortInUse(DevServerError):
    """Another process already listens on the configured port."""


class StartError(DevServerError):
    """The server did not come up (exited, timed out, could not be spawned)."""


class StopError(DevServerError):
    """The server could not be stopped."""


class StateError(DevServerError):
    """The state file is unreadable, foreign or locked by another start."""


class LockBusy(StateError):
    """Another start or stop of this project holds the lock."""


class UntrustedState(StateError):
    """The state file is corrupt or was not written by this tool: stale, never acted on."""


class BinaryBlocked(DevServerError):
    """Windows' Application Control (Smart App Control, WDAC) refused to run the server."""


class FetchError(DevServerError):
    """Downloading, verifying or installing a release failed."""


class NetworkError(FetchError):
    """The release source could not be reached (offline, DNS, timeout)."""


class ChecksumError(FetchError):
    """A download's sha256 does not match the expected digest."""


class UnsafeArchive(FetchError):
    """An archive member would escape the extraction directory or is not a plain file."""


class VerifyError(DevServerError):
    """verify could not run its checks (connection, auth, TLS, bad URL)."""


def too_long_hint(exc: OSError, otherwise: str, key: str = "server.data_dir") -> str:
    """The hint for a path the OS refused: a name too long is not a permissions problem."""
    if exc.errno == errno.ENAMETOOLONG:
        return f"its path is too long for this system: set {key} to a shorter one"
    return otherwise
