"""The body of the Huey task: one training job from ``queued`` to a finished status.

Huey delivers a task at most once and knows nothing of our statuses, so this code owns them: it
claims the job (queued -> running), keeps a heartbeat while it trains, records progress, stops when a
cancel is requested, and records why it failed. Success is marked by ``JobBackend._mark_succeeded``
once Huey has stored the returned model document.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import numpy as np
from threadpoolctl import threadpool_limits

import minigrad
from service.metrics import service_metrics
from service.registry import InvalidModelFile, ModelNotFound, RegistryError
from service.training import TrainingSpec, train

from .store import CANCELLED, FAILED, QUEUED, RUNNING

logger = logging.getLogger("minigrad.jobs")

# Progress is written at most this often: an XOR epoch takes microseconds, a store write does not.
PROGRESS_INTERVAL = 0.25


def owned_by(attempt):
    """``expect`` for a running job's own writes: still running under this attempt. A consumer stopped
    by SIGTERM puts the job back in the queue while its worker thread still runs until the process exits;
    another consumer may claim it meanwhile, and the old run must then neither write its progress into
    the new one nor register or hand back a model."""
    return lambda record: record["status"] == RUNNING and record.get("attempt") == attempt


class Heartbeat:
    """Renews ``heartbeat_at`` from a thread, so an epoch longer than the timeout is not taken for a
    dead worker; it stops on its own once the job is no longer running."""

    def __init__(self, store, job_id, interval, attempt=None):
        self.store, self.job_id, self.interval = store, job_id, interval
        self.mine = owned_by(attempt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                renewed = self.store.update(self.job_id, expect=self.mine, heartbeat_at=time.time())
            except Exception:  # a store hiccup (Redis restarting, SQLite busy) must not end the heartbeat for good
                logger.warning("job %s: heartbeat not renewed; retrying in %g s", self.job_id, self.interval,
                               exc_info=True)
                continue
            if renewed is None:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class ProgressRecorder:
    """The ``fit`` callback: buffers epoch records, flushes them with the heartbeat, and answers
    ``False`` (stop) as soon as the job was cancelled or taken from this worker."""

    def __init__(self, store, job_id, attempt=None):
        self.store, self.job_id = store, job_id
        self.mine = owned_by(attempt)
        self.pending = []
        self.last_flush = time.monotonic()
        self.stopped_because = None

    def __call__(self, record):
        self.pending.append(dict(record))
        try:
            current = self.store.get(self.job_id)
            if current is None or not self.mine(current) or current["cancel_requested"]:
                taken = current is None or not self.mine(current)
                self.stopped_because = "taken away" if taken else "cancelled"
                return False
            if time.monotonic() - self.last_flush >= PROGRESS_INTERVAL:
                self.flush()
        except Exception:  # a store hiccup must not end hours of training: look again after the next epoch
            logger.warning("job %s: progress not recorded after epoch %s; trying again after the next one",
                           self.job_id, record["epoch"], exc_info=True)
        return True

    def flush(self):
        if not self.pending:
            return
        epoch = self.pending[-1]["epoch"]
        # The record first: only while it is still ours does the history get this run's epochs. The
        # pending epochs are dropped only once written (a store error keeps them for the next flush).
        if self.store.update(self.job_id, expect=self.mine, epoch=epoch, heartbeat_at=time.time()) is not None:
            self.store.append_history(self.job_id, self.pending)
        self.pending = []
        self.last_flush = time.monotonic()


def _fail(store, job_id, attempt, reason):
    store.update(job_id, expect=owned_by(attempt), status=FAILED, error=reason, finished_at=time.time())


def _base_document(backend, base):
    # The version was fixed when the job was accepted, so a model registered meanwhile does not
    # change what this job trains.
    return backend.registry.get(base["name"], base["version"]).document


def run_training_job(backend, job_id: str, payload: dict):
    """Returns the trained model document (Huey stores it as the task result), or None."""
    store = backend.store
    now = time.time()
    attempt = uuid.uuid4().hex
    claimed = store.update(
        job_id,
        expect=lambda r: r["status"] == QUEUED and not r["cancel_requested"],
        status=RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        attempt=attempt,
        result=None,
    )
    if claimed is None:
        # Cancelled while queued (a cancel that raced with a requeue is finished here), or not ours.
        store.update(job_id, expect=lambda r: r["status"] == QUEUED and r["cancel_requested"],
                     status=CANCELLED, finished_at=now)
        return None
    # The heartbeat covers the whole run, not only fit: loading a large starting model and registering
    # a large trained one (seconds to minutes at the size limits) must not look like a dead worker.
    with Heartbeat(store, job_id, backend.settings.heartbeat_interval, attempt):
        return _run_claimed(backend, job_id, attempt, payload)


def _run_claimed(backend, job_id, attempt, payload):
    store = backend.store
    store.clear_history(job_id)
    recorder = ProgressRecorder(store, job_id, attempt)
    try:
        base = payload.get("base")
        spec = TrainingSpec(base_document=_base_document(backend, base) if base else None, **payload["spec"])
        # One BLAS thread per job: training must not take the cores the web workers predict on. Overflow
        # warnings are silenced because fit reports a diverging loss itself, as the job's error.
        with (
            service_metrics().training_seconds.time(),
            threadpool_limits(limits=1),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            model, history = train(spec, callback=recorder)
    except minigrad.TrainingDiverged as exc:
        recorder.flush()
        _fail(store, job_id, attempt, f"training diverged: {exc}")
        return None
    except RegistryError as exc:  # the starting model was deleted after the job was accepted
        _fail(store, job_id, attempt, f"the model to start from is gone: {exc}")
        return None
    except Exception as exc:  # any failure must end as a readable job error
        logger.exception("training job %s failed", job_id)
        recorder.flush()
        _fail(store, job_id, attempt, f"{type(exc).__name__}: {exc}")
        return None
    recorder.flush()
    if recorder.stopped_because == "cancelled":
        store.update(job_id, expect=owned_by(attempt), status=CANCELLED, finished_at=time.time())
        return None
    if recorder.stopped_because is not None:
        return None

    return _hand_back(backend, job_id, attempt, payload, model, history)


def _registered_earlier(registry, name, job_id):
    """The latest version of ``name`` if an earlier run of this job registered it (a consumer stopped
    while registering puts the job back in the queue, and its run may still have finished the put)."""
    try:
        latest = registry.get(name)
    except (ModelNotFound, InvalidModelFile):  # no version yet, or a broken latest one: not this job's
        return None
    return latest if latest.document.get("metadata", {}).get("trained_by_job") == job_id else None


def _hand_back(backend, job_id, attempt, payload, model, history):
    """Register the model if asked (``save_as``), record the result, and return the document for Huey."""
    document = model.to_dict()
    document["metadata"] = {
        **document.get("metadata", {}),
        "trained_by_job": job_id,
        "epochs": len(history),
        "final_loss": history[-1]["loss"],
        "seed": payload["spec"]["seed"],
    }
    result = {"final_loss": history[-1]["loss"], "epochs_run": len(history), "registered": None}
    save_as = payload.get("save_as")
    mine = owned_by(attempt)
    # The cancel check and the mark that ends cancelling are one compare-and-set: a cancel lands before it
    # (nothing is registered) or is refused (a 409). A cancel accepted later would end the job cancelled,
    # by a consumer's shutdown or the reaper, with its model registered all the same.
    if backend.store.update(job_id, expect=lambda r: mine(r) and not r["cancel_requested"], handing_back=True) is None:
        # Cancelled after its last epoch (the client got a 202): register nothing. Or put back in the queue
        # (or reaped) meanwhile, and then not ours to register: the update below expects it ours.
        backend.store.update(job_id, expect=mine, status=CANCELLED, finished_at=time.time())
        return None
    if save_as:
        try:
            loaded = _registered_earlier(backend.registry, save_as, job_id) or backend.registry.put(save_as, document)
        except Exception as exc:  # a rejected save fails the job, said plainly
            _fail(backend.store, job_id, attempt, f"could not register the model as {save_as!r}: {exc}")
            return None
        result["registered"] = {"name": loaded.name, "version": loaded.version}
    if backend.store.update(job_id, expect=mine, result=result, epoch=len(history)) is None:
        return None
    return document
