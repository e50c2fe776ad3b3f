"""POST /train and /jobs: training runs on the job queue, never in a request thread."""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime

from flask import url_for
from redis.exceptions import RedisError

from .api import Blueprint, documents_problems
from .auth import require_token
from .errors import abort_problem, problem_document, problem_response
from .jobs import get_job_backend, housekeeping_on_read
from .jobs.requests import TrainingRequestError, prepare_training
from .jobs.schemas import JobListArgsSchema, JobListSchema, JobSchema, TrainRequestSchema, WaitArgsSchema
from .jobs.store import ACTIVE, CANCELLED, FINISHED, QUEUED, SUCCEEDED
from .registry import get_registry
from .schemas import model_document_schema
from .stopping import STOPPING

blp = Blueprint("jobs", __name__, description="Training jobs: submit, follow, cancel, fetch the trained model")
log = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.05


def _time(value):
    return None if value is None else datetime.fromtimestamp(value, UTC)


def job_view(record: dict, history: list | None = None) -> dict:
    """The JSON shape of a job record (``JobSchema``)."""
    now = time.time()
    started, finished = record["started_at"], record["finished_at"]
    view = {
        "id": record["id"],
        "status": record["status"],
        "progress": {"epoch": record["epoch"], "epochs": record["epochs"]},
        "cancel_requested": record["cancel_requested"],
        "timings": {
            "created_at": _time(record["created_at"]),
            "started_at": _time(started),
            "finished_at": _time(finished),
            "heartbeat_at": _time(record["heartbeat_at"]),
            "queued_seconds": None if started is None else started - record["created_at"],
            "running_seconds": None if started is None else (finished or now) - started,
        },
        "worker": record["worker"],
        "request": record["request"],
        "error": record["error"],
        "result": None,
        "url": url_for("jobs.show_job", job_id=record["id"]),
    }
    if record["status"] == SUCCEEDED and record["result"] is not None:
        view["result"] = {**record["result"], "model_url": url_for("jobs.job_model", job_id=record["id"])}
    if history is not None:
        view["history"] = history
    return view


def _job_or_404(job_id: str) -> dict:
    record = get_job_backend().store.get(job_id)
    if record is None:
        abort_problem(404, "Job not found", f"No job with id {job_id!r} (finished jobs are kept for "
                      "MINIGRAD_JOB_RETENTION_SECONDS).", type="urn:minigrad:problem:job-not-found")
    return record


def _wait_until_finished(job_id: str, seconds: float) -> dict:
    """The job's record once it finished, or after ``seconds`` (capped); at once, without waiting, when
    ``max_waiting_requests`` requests of this process are already waiting (the client then polls)."""
    backend = get_job_backend()
    store = backend.store
    if not backend.waiting_requests.enter():
        return _job_or_404(job_id)
    try:
        deadline = time.monotonic() + min(seconds, backend.settings.max_wait_seconds)
        record = store.get(job_id)
        while record is not None and record["status"] in ACTIVE and time.monotonic() < deadline:
            if STOPPING.wait(WAIT_POLL_SECONDS):  # this worker stops: answer now, while the answer can reach
                break
            record = store.get(job_id)
    finally:
        backend.waiting_requests.leave()
    if record is not None and record["status"] in ACTIVE:
        housekeeping_on_read()  # its consumer may have died during the wait: say lost, as GET /jobs/<id> would
        record = store.get(job_id)
    # Gone while waiting: finished and purged at once (MINIGRAD_JOB_RETENTION_SECONDS=0), or deleted.
    return record if record is not None else _job_or_404(job_id)


@blp.route("/train", methods=["POST"])
@require_token
@blp.arguments(TrainRequestSchema)
@blp.arguments(WaitArgsSchema, location="query", as_kwargs=True)
@blp.response(202, JobSchema, description="Accepted: the job is queued (or still running after ?wait=)")
@blp.alt_response(200, schema=JobSchema, description="With ?wait=: the job finished within the wait")
@blp.alt_problem(429, "Too many jobs queued or running")
# 404: the model to fine-tune (or its version) does not exist; 409: save_as names a place a hand-placed
# model file holds; 503: the queue cannot be reached (queue_unavailable, as for every route below)
@documents_problems(400, 404, 409, 413, 415, 503)
def submit_training(body, wait=None):
    """Queue a training job; ``Location`` points at it. ``?wait=S`` answers 200 once it finished within S s."""
    backend = get_job_backend()
    try:
        summary, payload = prepare_training(body, backend.settings.limits, get_registry())
    except TrainingRequestError as error:
        abort_problem(422, "Invalid training request", str(error), type="urn:minigrad:problem:invalid-training",
                      errors={"json": error.messages})
    housekeeping_on_read()  # a dead consumer's jobs, once lost, no longer hold active-jobs slots
    record = backend.submit(summary, payload, body["epochs"])
    if record is None:
        limit = backend.settings.limits.max_active_jobs
        abort_problem(429, "Too many jobs", f"{limit} jobs are already queued or running "
                      "(MINIGRAD_TRAIN_MAX_ACTIVE_JOBS); retry when one has finished.",
                      type="urn:minigrad:problem:too-many-jobs", headers={"Retry-After": "5"})
    status = 202
    if wait:
        record = _wait_until_finished(record["id"], wait)
        status = 200 if record["status"] in FINISHED else 202
    history = backend.store.history(record["id"]) if status == 200 else None
    return job_view(record, history), status, {"Location": url_for("jobs.show_job", job_id=record["id"])}


@blp.route("/jobs")
@blp.arguments(JobListArgsSchema, location="query", as_kwargs=True)
@blp.response(200, JobListSchema)
@documents_problems(503)
def list_jobs(page, per_page, status=None):
    """Jobs, newest first, a page at a time (without their per-epoch history); ``?status=`` keeps only
    the jobs with that status (or any of several), and ``total`` counts those."""
    housekeeping_on_read()  # first, so jobs whose consumer died are listed as lost
    records, total = get_job_backend().store.page((page - 1) * per_page, per_page, status)
    more = page * per_page < total
    return {
        "jobs": [job_view(r) for r in records],
        "page": page,
        "per_page": per_page,
        "total": total,
        "next": url_for("jobs.list_jobs", page=page + 1, per_page=per_page, status=status) if more else None,
    }


@blp.route("/jobs/<job_id>")
@blp.response(200, JobSchema)
@blp.alt_problem(404, "No such job")
@documents_problems(503)
def show_job(job_id):
    """One job with its status, progress, per-epoch history, timings and error."""
    housekeeping_on_read()
    record = _job_or_404(job_id)
    return job_view(record, get_job_backend().store.history(job_id))


@blp.route("/jobs/<job_id>/model")
@blp.response(200, model_document_schema())
@blp.alt_problem(404, "No such job")
@blp.alt_problem(409, "The job has not succeeded (yet)")
@documents_problems(503)
def job_model(job_id):
    """The trained model document the job handed back (also registered when it had ``save_as``)."""
    housekeeping_on_read()  # so the 409 of a job whose consumer died says lost, not running
    record = _job_or_404(job_id)
    if record["status"] != SUCCEEDED:
        abort_problem(409, "No trained model", f"Job {job_id} is {record['status']}; a model is handed back "
                      "only by a succeeded job.", type="urn:minigrad:problem:job-not-succeeded",
                      status_of_job=record["status"])
    document = get_job_backend().trained_document(job_id)
    if document is None:
        abort_problem(404, "Trained model gone", f"Job {job_id} succeeded but its model is no longer stored.",
                      type="urn:minigrad:problem:job-model-gone")
    return document


@blp.route("/jobs/<job_id>", methods=["DELETE"])
@require_token
@blp.response(200, JobSchema, description="Cancelled (it was still queued)")
@blp.alt_response(202, schema=JobSchema, description="Cancel requested: the running job stops after its epoch")
@blp.alt_problem(404, "No such job")
@blp.alt_problem(409, "The job already finished")
@documents_problems(503)
def cancel_job(job_id):
    """Cancel a job: a queued one at once, a running one at the end of its current epoch."""
    store = get_job_backend().store
    housekeeping_on_read()  # a job whose consumer died is lost: a 409, not a 202 promising a stop
    _job_or_404(job_id)
    record = store.update(job_id, expect={QUEUED}, status=CANCELLED, cancel_requested=True,
                          finished_at=time.time())
    if record is not None:
        return job_view(record, store.history(job_id))
    record = store.update(job_id, expect=lambda r: r["status"] in ACTIVE and not r.get("handing_back"),
                          cancel_requested=True)
    if record is not None:
        return job_view(record, store.history(job_id)), 202
    record = _job_or_404(job_id)
    if record["status"] in ACTIVE:  # handing back: it has trained, and may have registered its model already
        abort_problem(409, "Job already finished", f"Job {job_id} has finished training and is handing back its "
                      "model (registering it, with save_as): too late to cancel.",
                      type="urn:minigrad:problem:job-finished", status_of_job=record["status"])
    abort_problem(409, "Job already finished", f"Job {job_id} is {record['status']}; only a queued or running "
                  "job can be cancelled.", type="urn:minigrad:problem:job-finished", status_of_job=record["status"])


def queue_unavailable(error: Exception):
    """Redis down, or the SQLite file locked or unwritable: a 503 the client can retry, not a 500."""
    log.error("job queue unavailable: %s", error)
    detail = f"The job queue cannot be reached ({type(error).__name__}: {error}); retry shortly."
    document = problem_document(503, "Job queue unavailable", detail, type="urn:minigrad:problem:queue-unavailable")
    return problem_response(document, {"Retry-After": "5"})


blp.register_error_handler(RedisError, queue_unavailable)
blp.register_error_handler(sqlite3.OperationalError, queue_unavailable)
