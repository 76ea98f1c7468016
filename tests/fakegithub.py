"""A local stand-in for the GitHub releases API and its asset downloads (tests, benchmarks).

An ``http.server`` on 127.0.0.1 (free port, daemon thread) that answers
``/repos/{owner}/{repo}/releases/latest`` and ``/releases/tags/{tag}`` with JSON shaped like
GitHub's, and serves assets with the faults fetch must survive: a connection dropped
half-way, Range ignored, 5xx answers, HTML instead of the archive. Every request is recorded
so tests can assert that a fetch made no network call, or that it resumed with Range.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Route:
    """What one path answers. ``data`` (bytes) or ``file`` (a path, streamed) is the body."""

    data: bytes = b""
    file: Path | None = None
    status: int = 200
    content_type: str = "application/octet-stream"
    ranges: bool = True  # honour Range requests
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 0  # ... this many times (then serve normally); -1: always
    fail_first: int = 0  # answer 503 this many times first
    redirect: str = ""

    def size(self) -> int:
        return self.file.stat().st_size if self.file else len(self.data)


@dataclass
class Request:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FakeGitHub:
    """Start with ``with FakeGitHub() as gh:``; ``gh.url`` is the API base and asset host."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def asset(self, name: str, data: bytes | Path, **route: Any) -> str:
        """Serve an asset at /download/<name>; returns its URL."""
        body = {"file": data} if isinstance(data, Path) else {"data": data}
        self.routes[f"/download/{name}"] = Route(**body, **route)  # type: ignore[arg-type]
        return f"{self.url}/download/{name}"

    def release(
        self,
        repo: str,
        tag: str,
        assets: dict[str, bytes | Path],
        latest: bool = True,
        digests: bool = True,
        body: str = "",
        **route: Any,
    ) -> dict[str, Any]:
        """Publish a release: JSON at /releases/tags/<tag> (and /latest), assets served."""
        entries = []
        for name, data in assets.items():
            url = self.asset(name, data, **route)
            raw = (
                data.read_bytes()
                if isinstance(data, Path) and data.stat().st_size < 2**26
                else data
                if isinstance(data, bytes)
                else None
            )
            digest = (
                f"sha256:{hashlib.sha256(raw).hexdigest()}" if digests and raw is not None else None
            )
            size = len(raw) if raw is not None else Path(data).stat().st_size  # type: ignore[arg-type]
            entries.append(
                {"name": name, "size": size, "browser_download_url": url, "digest": digest}
            )
        doc = {"tag_name": tag, "name": tag, "body": body, "assets": entries}
        encoded = json.dumps(doc).encode()
        route_json = Route(data=encoded, content_type="application/json")
        self.routes[f"/repos/{repo}/releases/tags/{tag}"] = route_json
        if latest:
            self.routes[f"/repos/{repo}/releases/latest"] = route_json
        return doc

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with fake._lock:
                    fake.requests.append(Request(self.path, dict(self.headers.items())))
                    route = fake.routes.get(self.path.split("?")[0])
                    if route is not None and route.fail_first > 0:
                        route.fail_first -= 1
                        route = Route(data=b"busy", status=503, content_type="text/plain")
                if route is None:
                    route = Route(
                        data=b'{"message": "Not Found"}',
                        status=404,
                        content_type="application/json",
                    )
                if route.redirect:
                    self.send_response(302)
                    self.send_header("Location", route.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._serve(route)

            def _serve(self, route: Route) -> None:
                size = route.size()
                start = 0
                wanted = self.headers.get("Range", "")
                if route.ranges and route.status == 200 and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                limit = size
                with fake._lock:
                    if route.drop_after is not None and route.drops != 0:
                        route.drops -= 1
                        limit = min(size, max(start, route.drop_after))
                        self.close_connection = True
                self._body(route, start, limit)

            def _body(self, route: Route, start: int, end: int) -> None:
                try:
                    if route.file is None:
                        self.wfile.write(route.data[start:end])
                    else:
                        with open(route.file, "rb") as handle:
                            handle.seek(start)
                            left = end - start
                            while left > 0:
                                chunk = handle.read(min(left, 1024 * 1024))
                                if not chunk:
                                    break
                                self.wfile.write(chunk)
                                left -= len(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler
