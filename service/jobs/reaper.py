"""Housekeeping Huey does not do: declaring dead jobs lost, and forgetting old ones.

Huey delivers a task at most once: if the consumer running it is SIGKILLed (or its machine dies),
nothing ever retries or reports it. A running job therefore renews a heartbeat, and
``reap_stale_jobs`` marks it ``lost`` once that heartbeat is older than the timeout. It runs
periodically in every consumer and, lazily, whenever the API reads jobs, so a lost job is reported
even when no consumer is left alive.
"""

from __future__ import annotations

import logging
import threading
import time

from .store import LOST, RUNNING

logger = logging.getLogger("minigrad.jobs")


def reap_stale_jobs(store, timeout: float, now: float | None = None) -> list[str]:
    """Mark running jobs whose heartbeat is older than ``timeout`` seconds as lost; returns their ids."""
    now = time.time() if now is None else now
    cutoff = now - timeout
    reaped = []
    for job_id in store.running_with_heartbeat_before(cutoff):
        seen = store.get(job_id)
        if seen is None or seen["status"] != RUNNING:
            continue
        silent = now - seen["heartbeat_at"]
        reason = (
            f"worker {seen['worker']} sent no heartbeat for {silent:.1f} s (timeout {timeout:g} s): its consumer "
            "was killed or lost its machine mid-run, and Huey delivers a task at most once, so nothing "
            "retried it. Submit the job again."
        )

        # Compare-and-set on the heartbeat we judged: the worker may have renewed it meanwhile.
        def unchanged(record, seen=seen):
            return record["status"] == RUNNING and record["heartbeat_at"] == seen["heartbeat_at"]

        if store.update(job_id, expect=unchanged, status=LOST, error=reason, finished_at=now) is not None:
            logger.warning("job %s lost: %s", job_id, reason)
            reaped.append(job_id)
    return reaped


def purge_expired_jobs(backend, now: float | None = None) -> list[str]:
    """Delete finished jobs (record, history, trained model) older than the retention period."""
    now = time.time() if now is None else now
    expired = backend.store.finished_before(now - backend.settings.retention_seconds)
    for job_id in expired:
        backend.delete_result(job_id)
        backend.store.delete(job_id)
    return expired


def housekeeping(backend, now: float | None = None) -> None:
    reap_stale_jobs(backend.store, backend.settings.heartbeat_timeout, now)
    purge_expired_jobs(backend, now)


class ReaperThread(threading.Thread):
    """Runs ``housekeeping`` every ``interval`` seconds inside a consumer process."""

    def __init__(self, backend, interval: float):
        super().__init__(name="minigrad-reaper", daemon=True)
        self.backend, self.interval = backend, interval
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            try:
                housekeeping(self.backend)
            except Exception:  # a hiccup of the store must not end the consumer's housekeeping for good
                logger.exception("job housekeeping failed; retrying in %s s", self.interval)
