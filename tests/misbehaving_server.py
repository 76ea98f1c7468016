"""A stand-in Redis that misbehaves on purpose, for the stop tests.

Installed by the tests as ``bin/redis-server`` (a two-line script calling :func:`main`), so
the tool runs it like the real thing: ``--port N`` on its argv, a config on stdin. It
answers PING (start succeeds), and on SHUTDOWN does what ``behaviours`` says:

- ``hang``: never answers SHUTDOWN (the connection stays open)
- ``ok_stays``: answers +OK and keeps running
- ``refuse``: answers -ERR like Redis when it cannot save
- ``slow_save``: logs a save like Redis, writes ``dump.rdb`` slowly (``SAVE_SECONDS``),
  then exits 0
- ``ok_then_save``: like Dragonfly, answers +OK first, then writes its snapshot slowly
  without a word in the log, then exits 0
- ``ignore_term``: SIGTERM is ignored (default: SIGTERM "saves" and exits 0)
- ``noisy``: prints a line every few milliseconds (log load for the rotation tests)
- ``crash_after_pong``: exits with code 1 shortly after its first PONG (a crash loop for the
  restart tests: long enough after it for ``start`` to hand the server over)
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

SAVE_SECONDS = 3.0
CRASH_AFTER = 0.3  # crash_after_pong: seconds from the first PONG to the crash


def _crash() -> None:
    _say("crashing on purpose")
    os._exit(1)


def _say(text: str) -> None:
    print(text, flush=True)


def _slow_save(quiet: bool = False) -> None:
    if not quiet:
        _say("User requested shutdown...")
        _say("Saving the final RDB snapshot before exiting.")
    with open("temp-save.rdb", "wb") as out:
        steps = 30
        for _ in range(steps):
            out.write(b"x" * 4096)
            out.flush()
            time.sleep(SAVE_SECONDS / steps)
    os.replace("temp-save.rdb", "dump.rdb")
    if not quiet:
        _say("DB saved on disk")
    os._exit(0)


def _serve(conn: socket.socket, behaviours: set[str]) -> None:
    buf = b""
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            upper = buf.upper()
            if b"SHUTDOWN" in upper:
                buf = b""
                if "hang" in behaviours:
                    continue
                if "refuse" in behaviours:
                    _say("Error trying to save the DB, can't exit.")
                    conn.sendall(b"-ERR Errors trying to SHUTDOWN. Check logs.\r\n")
                    continue
                if "ok_stays" in behaviours:
                    conn.sendall(b"+OK\r\n")
                    continue
                if "ok_then_save" in behaviours:
                    conn.sendall(b"+OK\r\n")
                    _slow_save(quiet=True)
                if "slow_save" in behaviours:
                    _slow_save()
                os._exit(0)
            if b"PING" in upper:
                conn.sendall(b"+PONG\r\n")
                if "crash_after_pong" in behaviours:
                    threading.Timer(CRASH_AFTER, _crash).start()
            elif b"AUTH" in upper or b"SET" in upper:
                conn.sendall(b"+OK\r\n")
            elif b"INFO" in upper:
                conn.sendall(b"$17\r\nconnected_clients:1\r\n")
            else:
                continue
            buf = b""


def _on_term(signum: int, frame: object) -> None:
    _say("Received SIGTERM scheduling shutdown...")
    os._exit(0)


def main(spec: str) -> None:
    behaviours = set(spec.split(","))
    if "--version" in sys.argv:
        _say("Redis server v=0.0.1")
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN if "ignore_term" in behaviours else _on_term)
    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = socket.create_server(("127.0.0.1", port))
    _say(f"misbehaving server ({spec}) ready on {port}")
    if "noisy" in behaviours:

        def chatter() -> None:
            count = 0
            while True:
                count += 1
                _say(f"noise line {count}")
                time.sleep(0.002)

        threading.Thread(target=chatter, daemon=True).start()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn, behaviours), daemon=True).start()


def install(project_bin: object, spec: str, save_seconds: float = SAVE_SECONDS) -> None:
    """Write ``bin/redis-server`` that runs this module with ``spec``."""
    from pathlib import Path

    exe = Path(str(project_bin)) / "redis-server"
    exe.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    exe.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
        "import tests.misbehaving_server as fake\n"
        f"fake.SAVE_SECONDS = {save_seconds!r}\nfake.main({spec!r})\n"
    )
    exe.chmod(0o755)
