"""Housekeeping Huey does not do: declaring dead jobs lost, and forgetting old ones.

Huey delivers a task at most once: if the consumer running it is SIGKILLed (or its machine dies),
nothing ever retries or reports it. A running job therefore renews a heartbeat, and
``reap_stale_jobs`` marks it ``lost`` once that heartbeat is older than the timeout. It runs
periodically in every consumer and, lazily, whenever the API reads, cancels or submits jobs, so a lost job is reported
even when no consumer is left alive.

A consumer can also die after taking a task from the queue but before claiming its job (queued ->
running, milliseconds later): the job would then wait as ``queued`` for ever, its task gone.
``reap_orphaned_jobs`` marks such a job lost once it has seen it queued, with no task in Huey's
queue, on two looks at least the heartbeat timeout apart (a consumer claims a job it dequeued long
before that, and a job being submitted or put back is missing from the queue only for an instant).
It runs in the consumers' reaper threads only: reading the queue's tasks back unpickles their
training data, which is no work for a web request. And it reads them only when the queue holds
fewer tasks than there are queued jobs, which is when a task can be missing at all.
"""

from __future__ import annotations

import logging
import threading
import time

from .store import CANCELLED, LOST, QUEUED, RUNNING

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

        # A job whose cancel was requested has stopped as its client asked: cancelled, not lost with advice to
        # submit it again (nor counted among the lost jobs a dead consumer leaves).
        ending = {"status": CANCELLED} if seen["cancel_requested"] else {"status": LOST, "error": reason}
        if store.update(job_id, expect=unchanged, finished_at=now, **ending) is not None:
            logger.warning("job %s %s: %s", job_id, ending["status"], reason)
            reaped.append(job_id)
    return reaped


def reap_orphaned_jobs(backend, timeout: float, now: float | None = None) -> list[str]:
    """Mark queued jobs lost whose task has been missing from the queue for ``timeout`` seconds or more
    (judged across calls: ``backend.unqueued_since`` remembers when each was first seen missing)."""
    now = time.time() if now is None else now
    watch = backend.unqueued_since
    queued = backend.store.queued_ids()
    waiting = backend.huey.pending_count() if queued else 0
    if waiting >= len(queued):  # no queued job, or every one can still have its task in the queue
        watch.clear()
        return []
    tasks = backend.huey.pending()
    if len(tasks) < waiting:
        # Huey skips (and logs) a task it cannot unpickle; its job is then not missing, only unknown,
        # and which job it is cannot be told: judge nothing until the queue reads back whole.
        return []
    in_queue = {task.id for task in tasks}
    for job_id in set(watch) - set(queued) | (set(watch) & in_queue):
        watch.pop(job_id, None)  # claimed, finished or deleted since; or its task is (back) in the queue
    reaped = []
    for job_id in queued:
        if job_id in in_queue:
            continue
        first_seen = watch.setdefault(job_id, now)
        if now - first_seen < timeout:
            continue
        reason = (
            f"its task left the queue but no consumer started it for {now - first_seen:.0f} s: the consumer that "
            "took it was stopped or killed before it could begin, and Huey delivers a task at most once. "
            "Submit the job again."
        )
        if backend.store.update(job_id, expect={QUEUED}, status=LOST, error=reason, finished_at=now) is not None:
            logger.warning("job %s lost: %s", job_id, reason)
            reaped.append(job_id)
        watch.pop(job_id, None)
    return reaped


def purge_expired_jobs(backend, now: float | None = None) -> list[str]:
    """Delete finished jobs (record, history, trained model) older than the retention period."""
    now = time.time() if now is None else now
    expired = backend.store.finished_before(now - backend.settings.retention_seconds)
    for job_id in expired:
        backend.delete_result(job_id)
        backend.store.delete(job_id)
    return expired


def housekeeping(backend, now: float | None = None, orphans: bool = False) -> None:
    """Reap stale jobs and purge expired ones; with ``orphans`` (the consumers' reaper threads), also
    reap queued jobs whose task was taken but never started."""
    reap_stale_jobs(backend.store, backend.settings.heartbeat_timeout, now)
    if orphans:
        reap_orphaned_jobs(backend, backend.settings.heartbeat_timeout, now)
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
                housekeeping(self.backend, orphans=True)
            except Exception:  # a hiccup of the store must not end the consumer's housekeeping for good
                logger.exception("job housekeeping failed; retrying in %s s", self.interval)
