"""Prometheus metrics: ``GET /metrics`` and what the app, the predictions and the training jobs count.

Under gunicorn every worker is its own process, so the values live in files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and ``/metrics``, whichever worker
answers it, sums the files of all of them. ``prepare_multiprocess_dir`` sets that directory up: gunicorn's
``on_starting`` hook and ``service.serve`` call it before any worker or consumer starts, and a consumer
started with the same directory (``make serve``, ``minigrad serve``) adds its training time to the same
sums. Jobs by status are read from the job store at scrape time, so they count every consumer on every
machine.

prometheus_client chooses in-memory or file-backed values when it is first imported, so it is imported
here only once a process builds its metrics (``service_metrics()``), never at import of this module: the
gunicorn master imports the service before it has set the directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from flask import Flask, Response, request

from .config import load_config
from .errors import abort_problem

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405)
# Any token is a valid HTTP method; others are counted as "other" so a client cannot add label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = logging.getLogger(__name__)


def prepare_multiprocess_dir(environ=None) -> Path:
    """The directory of the metric files, set in ``environ`` (``os.environ``) for the processes to come.

    When ``PROMETHEUS_MULTIPROC_DIR`` is unset it becomes ``$MINIGRAD_DATA_DIR/metrics``, emptied of an
    earlier run's files (their counts would be summed in again). A directory set by someone else is only
    created: its owner decides when it is wiped (a consumer may already be writing there).
    """
    environ = os.environ if environ is None else environ
    given = environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(load_config(environ=environ)["MINIGRAD_DATA_DIR"]) / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    environ[MULTIPROC_ENV] = str(path)
    return path


def mark_process_dead(pid: int) -> None:
    """gunicorn's ``child_exit``: drop the live gauges of a worker that exited (its counts stay)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# Seconds; predictions take about a millisecond, large batches and waits for jobs up to tens of seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TRAINING_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


class ServiceMetrics:
    """The metric objects of one process (built once, by ``service_metrics()``)."""

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.requests = Counter("minigrad_http_requests", "HTTP requests answered, by route (the URL rule, "
                                "such as /models/<name>), method and status.", ["route", "method", "status"])
        self.latency = Histogram("minigrad_http_request_duration_seconds", "Time in the application per "
                                 "request, by route, method and status.",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS)
        self.predictions = Counter("minigrad_predictions", "Prediction requests answered (POST /predict and "
                                   "/v2 infer), by model.", ["model"])
        self.predicted_rows = Counter("minigrad_predicted_rows", "Rows predicted, by model.", ["model"])
        self.training_seconds = Histogram("minigrad_training_seconds", "Wall time of training runs in the "
                                          "consumers, whatever their outcome.", buckets=TRAINING_BUCKETS)
        # One (counter, histogram) pair per label combination: .labels() on every request costs more
        # than the counting itself. Bounded: the route is the URL rule (/models/<name>), never the path.
        self._per_route = {}
        self._per_model = {}  # model -> its (predictions, predicted_rows) children, likewise

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        pair = self._per_route.get(key)
        with metrics_best_effort:
            if pair is None:
                labels = (route, method, str(status))
                pair = self._per_route.setdefault(key, (self.requests.labels(*labels), self.latency.labels(*labels)))
            pair[0].inc()
            pair[1].observe(seconds)

    def observe_prediction(self, model: str, rows: int) -> None:
        pair = self._per_model.get(model)
        if pair is None:
            children = (self.predictions.labels(model), self.predicted_rows.labels(model))
            pair = self._per_model.setdefault(model, children)
        pair[0].inc()
        pair[1].inc(rows)


class _BestEffort:
    """``with metrics_best_effort:`` a metric the disk cannot hold (multiprocess mode grows its files) is
    lost, not the request: found by tests/test_faults.py, where a file-size limit turned uploads into 500s
    through the first new label. A class rather than a generator: it runs twice per prediction, and
    contextlib's generator machinery would cost more than the counting."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None and issubclass(kind, OSError):
            log.warning("metric not recorded: %s", error)
            return True
        return False


metrics_best_effort = _BestEffort()


_built: ServiceMetrics | None = None
_building = threading.Lock()


def service_metrics() -> ServiceMetrics:
    """This process's metrics, built on first use (after ``PROMETHEUS_MULTIPROC_DIR`` is in place)."""
    global _built
    if _built is None:
        with _building:
            if _built is None:
                _built = ServiceMetrics()
    return _built


def start_metrics_server(host: str, port: int) -> None:
    """Serve this process's metrics over HTTP from a thread (a consumer's, ``minigrad worker --metrics-port``);
    with ``PROMETHEUS_MULTIPROC_DIR`` set, the sums of that directory's processes."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    service_metrics()  # built now, so the metrics are there (at 0) before the first job
    start_http_server(port, addr=host, registry=registry)


def record_prediction(model: str, rows: int) -> None:
    """Count one answered prediction request of ``rows`` rows for ``model``."""
    with metrics_best_effort:
        service_metrics().observe_prediction(model, rows)


class JobStatusCollector:
    """``minigrad_jobs{status}``: the jobs in the store now, read when scraped (so every consumer's jobs
    count, on any machine), and ``minigrad_job_store_up``. ``reap`` runs first, as before any read of the
    jobs, so a job whose consumer died is counted as lost, not running, with no consumer left to reap it."""

    def __init__(self, store, reap):
        # ``store``: a callable giving the store, called inside the scrape's guard (opening it can fail too).
        self.store, self.reap = store, reap

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from .jobs.store import STATUSES

        up = GaugeMetricFamily("minigrad_job_store_up", "1 when the job store answered this scrape.")
        try:
            self.reap()
            counts = self.store().count_by_status()
        except Exception:  # an unreachable store (Redis down) must not take the other metrics with it
            log.warning("metrics: the job store did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("minigrad_jobs", "Jobs in the job store, by status.", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs


def _exposition() -> bytes:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from .jobs import get_job_backend, housekeeping_on_read

    if os.environ.get(MULTIPROC_ENV):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
    else:  # one process (flask run, the test client): its own values
        processes = REGISTRY
    jobs = CollectorRegistry()
    jobs.register(JobStatusCollector(lambda: get_job_backend().store, reap=housekeeping_on_read))
    return generate_latest(processes) + generate_latest(jobs)


def metrics_view():
    try:
        return Response(_exposition(), content_type=CONTENT_TYPE)
    except (ValueError, FileNotFoundError) as error:
        # The directory, or a file prometheus_client had just listed in it, was removed under the running
        # server (by hand, or by a cleaner of old files): counts went with it. Asked after the failure, not
        # before the scrape: a removal during the scrape was a 500 all the same.
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory or not _removed_from(directory, error):
            raise
    log.error("metrics: the multiprocess directory %s or a file in it was removed; restart the service", directory)
    abort_problem(503, "Metrics unavailable", f"The metrics directory ({MULTIPROC_ENV}) or a file in it was removed, "
                  "so counts are lost; restart the service to count again.",
                  type="urn:minigrad:problem:metrics-unavailable")


def _removed_from(directory: str, error: Exception) -> bool:
    """Whether ``error`` (from the multiprocess collector) says ``directory`` or one of its files is gone."""
    if isinstance(error, FileNotFoundError):
        return error.filename is not None and Path(os.fsdecode(error.filename)).parent == Path(directory)
    return not os.path.isdir(directory)  # MultiProcessCollector's ValueError: "... not a directory"


def init_app(app: Flask) -> None:
    """Count every request (URL rule, method, status, time) and serve ``GET /metrics``."""
    metrics = service_metrics()
    started_key = "minigrad.started"

    @app.before_request
    def start_clock():
        request.environ[started_key] = time.perf_counter()

    @app.after_request
    def count_request(response):
        current = request._get_current_object()  # one look-up of the proxy, not one per attribute
        started = current.environ.get(started_key)
        if started is not None:
            rule, method = current.url_rule, current.method
            metrics.observe_request(rule.rule if rule is not None else UNMATCHED,
                                    method if method in METHODS else "other", response.status_code,
                                    time.perf_counter() - started)
        return response

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
