"""A tiny reliable job queue on a Redis-protocol server, shared by the API and the worker.

Configured the twelve-factor way, from the environment that `invoke up` / `invoke run` /
`invoke env` provide: JOB_QUEUE_PROVIDER (only "redis" here: any Redis-protocol server, such
as Dragonfly, Redis or Garnet) and REDIS_URL.

Reliable queue: the worker moves a job from "pending" to "processing" atomically (BLMOVE), and
removes it from "processing" only once it is done (the ack). A worker killed half-way leaves
the job in "processing", and the next worker to start puts it back in "pending".
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

PENDING = "jobqueue:pending"
PROCESSING = "jobqueue:processing"


def connect() -> Any:
    """A redis-py client for REDIS_URL, or a one-line error when the settings are wrong."""
    provider = os.environ.get("JOB_QUEUE_PROVIDER", "")
    if provider != "redis":
        sys.exit(f"JOB_QUEUE_PROVIDER must be 'redis' (got {provider!r}): see invoke.yaml")
    url = os.environ.get("REDIS_URL")
    if not url:
        sys.exit("REDIS_URL is not set: run this through `invoke up` or `invoke run -- ...`")
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def submit(client: Any, payload: str) -> str:
    """Queue a job; its id, for asking about it later."""
    job_id = uuid.uuid4().hex[:12]
    client.hset(f"jobqueue:job:{job_id}", mapping={"status": "queued", "payload": payload})
    client.lpush(PENDING, json.dumps({"id": job_id, "payload": payload}))
    return job_id


def job(client: Any, job_id: str) -> dict[str, str]:
    """The job's status ("queued", "done") and result; empty when unknown."""
    return dict(client.hgetall(f"jobqueue:job:{job_id}"))


def take(client: Any, timeout: float) -> str | None:
    """The next job, moved to "processing" (oldest first); None after ``timeout`` seconds."""
    return client.blmove(PENDING, PROCESSING, timeout, "RIGHT", "LEFT")


def ack(client: Any, raw: str, result: str) -> None:
    """Record the result and remove the job from "processing", in one transaction."""
    data = json.loads(raw)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"jobqueue:job:{data['id']}", mapping={"status": "done", "result": result})
        pipe.lrem(PROCESSING, 1, raw)
        pipe.execute()


def recover(client: Any) -> int:
    """Put jobs a killed worker left in "processing" back in "pending"; how many."""
    count = 0
    while client.lmove(PROCESSING, PENDING, "LEFT", "RIGHT") is not None:
        count += 1
    return count
