"""The queue and the job records together: one Huey instance and the store that lives beside it.

SqliteHuey on ``MINIGRAD_DATA_DIR/jobs.sqlite3`` by default (no server), RedisHuey when
``MINIGRAD_REDIS_URL`` is set; the task code is the same for both. Web workers use a backend to
submit and read jobs; the consumer (``service.worker``) uses one to run them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid

from huey import RedisHuey, SqliteHuey
from huey import signals as huey_signals

from .settings import JobSettings
from .store import CANCELLED, QUEUED, RUNNING, SUCCEEDED, RedisJobStore, SqliteJobStore, new_record

TRAIN_TASK = "train"

logger = logging.getLogger("minigrad.jobs")


class WaitingRequests:
    """How many requests of this process are waiting for a job to finish, up to ``limit`` (0: none)."""

    def __init__(self, limit: int):
        self.limit = max(limit, 0)
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Take a place; False (and nothing taken) when all ``limit`` places are taken."""
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


class JobBackend:
    def __init__(self, settings: JobSettings):
        self.settings = settings
        if settings.redis_url:
            self.huey = RedisHuey(settings.queue_name, url=settings.redis_url)
            self.store = RedisJobStore(self.huey.storage.conn, settings.queue_name)
        else:
            try:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                # As SQLite's own "unable to open database file": the queue cannot be reached (a 503 to retry,
                # the dashboard without its jobs), here saying which setting to fix.
                raise sqlite3.OperationalError(f"MINIGRAD_DATA_DIR {str(settings.data_dir)!r}: cannot create the "
                                               f"directory: {error.strerror or error}") from error
            self.huey = SqliteHuey(settings.queue_name, filename=str(settings.sqlite_path))
            self.store = SqliteJobStore(settings.sqlite_path, settings.queue_name)
        self.train_task = self.huey.task(name=TRAIN_TASK)(self._run_train_task)
        self.huey.post_execute(name="minigrad.mark_succeeded")(self._mark_succeeded)
        self.huey.signal(huey_signals.SIGNAL_INTERRUPTED)(self._requeue_interrupted)
        self._registry = None
        self.last_purge = 0.0  # when this process last purged expired jobs (see housekeeping_on_read)
        self.unqueued_since: dict[str, float] = {}  # queued jobs seen without a task in the queue (reaper)
        # Web side: POST /train?wait= requests waiting now in this process (see service.train_api).
        self.waiting_requests = WaitingRequests(settings.max_waiting_requests)

    @property
    def backend_name(self) -> str:
        return "redis" if self.settings.redis_url else "sqlite"

    # -- submitting and reading ------------------------------------------------------------------

    def submit(self, request_summary: dict, payload: dict, epochs: int) -> dict | None:
        """Record a queued job and enqueue its task; None when too many jobs are already active."""
        job_id = uuid.uuid4().hex
        record = new_record(job_id, request_summary, epochs)
        if not self.store.create(record, self.settings.limits.max_active_jobs):
            return None
        # The task id is the job id, so Huey stores the trained model under the job's id.
        try:
            self.huey.enqueue(self.train_task.s(job_id, payload, id=job_id))
        except BaseException:
            # The client is told to retry (503): the record must not stay behind as a queued job that
            # no task will ever run, holding an active-jobs slot until the reaper calls it lost.
            try:
                self.store.delete(job_id)
            except Exception:  # the store is down too: the orphan reaper ends the record as lost
                logger.exception("job %s: its task could not be queued, nor its record deleted", job_id)
            raise
        return record

    def trained_document(self, job_id: str):
        """The model a succeeded job handed back. Read with preserve=True (a peek): Huey's default
        read pops the result, and then the next reader, in any web worker, would find nothing."""
        return self.huey.result(job_id, preserve=True)

    def delete_result(self, job_id: str) -> None:
        self.huey.delete(job_id)

    @property
    def registry(self):
        # Imported late: the registry module belongs to the service and the worker only needs it
        # once a job asks for a registered model or a save_as.
        if self._registry is None:
            from service.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings.model_dir)
        return self._registry

    # -- consumer side ---------------------------------------------------------------------------

    def _run_train_task(self, job_id, payload):
        from .runner import run_training_job

        return run_training_job(self, job_id, payload)

    def _mark_succeeded(self, task, value, exception):
        # Runs after Huey stored the task's return value, so a job is never "succeeded" without its model.
        # A run put back in the queue and claimed again meanwhile has no result yet (the claim clears it).
        if task.name == TRAIN_TASK and exception is None and value is not None:
            self.store.update(task.id, expect=lambda r: r["status"] == RUNNING and r["result"] is not None,
                              status=SUCCEEDED, finished_at=time.time())

    def _requeue_interrupted(self, signal, task):
        # The consumer was stopped (SIGTERM, Ctrl-C twice) while this job ran: put it back in the queue
        # so the next consumer runs it from the start, instead of leaving it to the reaper as lost.
        if task.name != TRAIN_TASK:
            return
        # A running job whose cancel was requested (the client got a 202) ends cancelled, not queued again
        # to wait for the next consumer, which would only then find the cancel.
        if self.store.update(task.id, expect=lambda r: r["status"] == RUNNING and r["cancel_requested"],
                             status=CANCELLED, finished_at=time.time()) is not None:
            return
        reset = {"status": QUEUED, "started_at": None, "heartbeat_at": None, "worker": None, "epoch": 0,
                 "attempt": None, "result": None, "handing_back": False}

        # Also a job still queued: its task was taken from the queue but the stop came before the claim,
        # and without a task in the queue it would only wait to be reaped as lost.
        def unfinished(record):
            return record["status"] == RUNNING or (record["status"] == QUEUED and not record["cancel_requested"])

        if self.store.update(task.id, expect=unfinished, **reset) is not None:
            self.store.clear_history(task.id)
            self.huey.enqueue(task)
            logger.warning("job %s interrupted by the consumer's shutdown: put back in the queue", task.id)
