"""HTTP for fetch: URL policy, GitHub API calls and resumable, hashed, streamed downloads.

Only ``invoke fetch`` needs the network, so only this module imports requests, and the modules
that call it import it lazily: a fetch that finds the binary installed never pays for the import.

Why the retry loop is written out instead of using urllib3's ``Retry``: a download that dies
half-way must continue from the bytes already on disk (HTTP Range) while the sha256 keeps
running over exactly the bytes written, and a server that ignores Range must make us start
over with a fresh hash. ``Retry`` knows nothing of either.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import NameResolutionError

from devserver.errors import FetchError, NetworkError
from devserver.fetch.hashing import BackgroundSha256

CHUNK = 1024 * 1024
USER_AGENT = "devserver-fetch/0.1 (+https://github.com/)"
_RETRY_STATUS = {429, 500, 502, 503, 504}

ProgressFn = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Policy:
    """How patient the network code is; tests shrink the backoff to keep the suite fast."""

    retries: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    # Seconds for a whole API lookup, retries included (None: retries x timeout). A proxy
    # that accepts and never answers must not cost minutes.
    total: float | None = None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: the only hosts plain http may be used with."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Refuse anything but https, and plain http to a non-loopback host (it can be tampered)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https" and parts.hostname:
        return
    if scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    if scheme == "http":
        raise FetchError(
            f"refusing plain http download from {parts.hostname}: {url}",
            hint="use an https URL (plain http is only allowed from a loopback mirror)",
        )
    raise FetchError(f"unsupported URL {url!r}", hint="give an https:// URL")


class ReleaseNotFound(FetchError):
    """The API answered 404: an unknown tag or repository (release.py words the message)."""


class _Session(requests.Session):
    """A session that applies :func:`check_url` to every redirect before following it."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target:
            check_url(urljoin(resp.url, target))
        return target


def new_session() -> requests.Session:
    """requests honours HTTPS_PROXY/NO_PROXY from the environment on its own."""
    session = _Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def _retry_wait(policy: Policy, attempt: int) -> None:
    policy.sleep(policy.backoff * (2 ** (attempt - 1)))


def _offline(exc: BaseException) -> bool:
    """A failed DNS lookup means no network (or a wrong host): retrying only delays the
    offline fallback, so it fails at once. Refused or reset connections are retried."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NameResolutionError)


def _network_error(url: str, exc: BaseException, attempts: int = 1) -> NetworkError:
    host = urlsplit(url).hostname or url
    kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
    tries = f", {attempts} tries" if attempts > 1 else ""
    return NetworkError(
        f"{host} {kind} ({type(exc).__name__}{tries})",
        hint="check the network or proxy (HTTPS_PROXY), or install offline with --archive PATH",
    )


def get_json(session: requests.Session, url: str, policy: Policy) -> Any:
    """GET a GitHub API document, retrying connection errors and 5xx with backoff.

    GITHUB_TOKEN is sent to the API only (never to asset hosts), to lift the anonymous rate
    limit of 60 requests an hour.
    """
    check_url(url)
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    token = os.environ.get("GITHUB_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    attempt = 0
    deadline = None if policy.total is None else time.monotonic() + policy.total
    while True:
        attempt += 1
        timeout = policy.timeout
        if deadline is not None and policy.total is not None:
            # What is left of the budget, never more than the budget itself: a coarse
            # monotonic clock (Windows) can leave start + total - start a hair above total.
            left = min(policy.total, deadline - time.monotonic())
            timeout = max(0.05, min(timeout, left))
        try:
            resp = session.get(url, headers=headers, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            wait = policy.backoff * (2 ** (attempt - 1))
            out_of_time = deadline is not None and time.monotonic() + wait + 0.05 >= deadline
            if attempt > policy.retries or _offline(exc) or out_of_time:
                raise _network_error(url, exc, attempt) from None
            _retry_wait(policy, attempt)
            continue
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if resp.status_code in _RETRY_STATUS and attempt <= policy.retries and not out_of_time:
            _retry_wait(policy, attempt)
            continue
        if resp.status_code == 404:
            raise ReleaseNotFound(f"not found: {url}", hint="check the release tag (--version)")
        if resp.status_code == 403 and resp.headers.get("X-RateLimit-Remaining") == "0":
            raise FetchError(
                "GitHub API rate limit reached",
                hint="set GITHUB_TOKEN to a personal access token, or wait an hour",
            )
        if resp.status_code in _RETRY_STATUS:
            raise NetworkError(
                f"{url} answered HTTP {resp.status_code} after {attempt} tries",
                hint="the release server has trouble: try again later",
            )
        if resp.status_code != 200:
            raise FetchError(
                f"{url} answered HTTP {resp.status_code}",
                hint="check release.github_api in invoke.yaml",
            )
        try:
            return resp.json()
        except ValueError:
            raise FetchError(
                f"{url} did not return JSON", hint="check release.github_api in invoke.yaml"
            ) from None


class _Truncated(Exception):
    """The body ended before Content-Length: resume (or restart) like a dropped connection."""


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked; loop. Tests replace this to inject ENOSPC."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def download(
    session: requests.Session,
    url: str,
    dest: Path,
    policy: Policy,
    progress: ProgressFn | None = None,
) -> tuple[str, int]:
    """Stream ``url`` into ``dest`` (created), returning (sha256 hex, size).

    The hash is updated chunk by chunk as bytes are written (on a second core, see
    hashing.py), so the archive is never held in memory and never read a second time.
    ``dest`` is the caller's temp file: the caller removes it on any failure, Ctrl+C included.
    """
    check_url(url)
    hasher = BackgroundSha256()
    done = 0
    attempt = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    try:
        while True:
            attempt += 1
            before = done
            try:
                with _open_stream(session, url, done, policy) as resp:
                    if done and resp.status_code == 200:
                        # The server ignored our Range: start over, hash included.
                        os.lseek(fd, 0, os.SEEK_SET)
                        os.ftruncate(fd, 0)
                        hasher.close()
                        hasher, done = BackgroundSha256(), 0
                    length = resp.headers.get("Content-Length")
                    total = done + int(length) if length and length.isdigit() else None
                    for chunk in resp.iter_content(CHUNK):
                        write_all(fd, chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                    if total is not None and done != total:
                        raise _Truncated(f"got {done} of {total} bytes")
                    return hasher.hexdigest(), done
            except (
                requests.ConnectionError,
                requests.Timeout,
                _Truncated,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if done > before:
                    attempt = 1  # progress was made: the retry budget is per stall
                if attempt > policy.retries or _offline(exc):
                    if isinstance(exc, _Truncated):
                        raise FetchError(
                            f"download of {url} was cut short ({exc})",
                            hint="try again; the server ended early",
                        ) from None
                    raise _network_error(url, exc) from None
                _retry_wait(policy, attempt)
            except requests.RequestException as exc:
                raise FetchError(f"download of {url} failed: {exc}", hint="check the URL") from None
            except OSError as exc:
                raise _disk_error(dest, exc) from None
    finally:
        hasher.close()
        os.close(fd)


def _disk_error(dest: Path, exc: OSError) -> FetchError:
    if exc.errno == errno.ENOSPC:
        return FetchError(
            f"disk full while writing {dest.parent}", hint="free some space and run fetch again"
        )
    return FetchError(
        f"cannot write {dest}: {exc.strerror or exc}",
        hint="check permissions and free space next to bin/",
    )


def _open_stream(
    session: requests.Session, url: str, offset: int, policy: Policy
) -> requests.Response:
    """One GET (with Range when resuming); HTTP errors that retrying cannot fix raise here."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    resp = session.get(url, headers=headers, stream=True, timeout=policy.timeout)
    status = resp.status_code
    if status in _RETRY_STATUS:
        resp.close()
        raise requests.ConnectionError(f"HTTP {status}")
    if status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        resp.close()
        raise FetchError(
            f"{url} answered a Range request with the wrong bytes",
            hint="try again, or download the file and use --archive",
        )
    if status not in (200, 206):
        resp.close()
        hint = "check the URL or --version tag" if status == 404 else "check the URL"
        raise FetchError(f"download failed: HTTP {status} for {url}", hint=hint)
    if "text/html" in resp.headers.get("Content-Type", "").lower():
        resp.close()
        raise FetchError(
            f"{url} returned an HTML page instead of the archive",
            hint="a login page or proxy error? check the URL and the proxy settings",
        )
    return resp
