"""The example worker: takes jobs (BLMOVE), does the "work" (reverses the text), acks them."""

from __future__ import annotations

import json
import signal
import sys

import jobs


def main() -> int:
    client = jobs.connect()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    recovered = jobs.recover(client)
    print(f"worker: waiting for jobs ({recovered} recovered from a previous run)", flush=True)
    while not stopping:
        raw = jobs.take(client, timeout=0.5)
        if raw is None:
            continue
        payload = json.loads(raw)["payload"]
        jobs.ack(client, raw, payload[::-1])
        print(f"worker: done {json.loads(raw)['id']}: {payload!r}", flush=True)
    print("worker: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
