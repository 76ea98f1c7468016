"""The example API (standard library only): POST /jobs queues a job, GET /jobs/<id> reads it.

    curl -X POST --data 'hello' http://127.0.0.1:8000/jobs    ->  {"id": "..."}
    curl http://127.0.0.1:8000/jobs/<id>                      ->  {"status": "done", ...}

The port is JOBQ_PORT (default 8000).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jobs

CLIENT: Any = None


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path != "/jobs":
            self._reply(404, {"error": "POST /jobs"})
            return
        size = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(size).decode("utf-8", "replace")
        self._reply(201, {"id": jobs.submit(CLIENT, payload)})

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"ok": bool(CLIENT.ping())})
            return
        if self.path.startswith("/jobs/"):
            found = jobs.job(CLIENT, self.path[len("/jobs/") :])
            self._reply(200 if found else 404, found or {"error": "no such job"})
            return
        self._reply(404, {"error": "GET /jobs/<id> or /health"})

    def log_message(self, format: str, *args: Any) -> None:
        print(f"api: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


def main() -> int:
    global CLIENT
    CLIENT = jobs.connect()
    port = int(os.environ.get("JOBQ_PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"api: listening on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    print("api: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
