"""Queue one job from the command line and wait for its result:

invoke -f examples/jobqueue/invoke.yaml run -- python examples/jobqueue/enqueue.py "some text"
"""

from __future__ import annotations

import sys
import time

import jobs


def main(argv: list[str]) -> int:
    client = jobs.connect()
    job_id = jobs.submit(client, " ".join(argv) or "hello")
    for _ in range(100):
        found = jobs.job(client, job_id)
        if found.get("status") == "done":
            print(found["result"])
            return 0
        time.sleep(0.1)
    print(f"job {job_id} is still queued: is the worker running (`invoke up`)?", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
