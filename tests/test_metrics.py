"""GET /metrics: counted by every gunicorn worker and summed by whichever answers; jobs read from the
store; a consumer sharing the directory adds its training time. Real gunicorn, real consumer processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from jobs_support import WorkerProcess, job_env, redis_server, wait_for, xor_request
from prometheus_client.parser import text_string_to_metric_families

from service.jobs import get_job_backend
from service.jobs.store import RUNNING
from service.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from service.startup import share_metrics_of_a_running_service
from service.testing import GUNICORN_CONF, REPO_ROOT, GunicornServer, free_port


def samples(server) -> dict:
    """{(sample name, sorted labels): value} from one scrape."""
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return parsed(response.text)


def parsed(exposition: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def predict(server, model, rows):
    response = requests.post(server.url + "/predict", json={"model": model, "inputs": rows}, timeout=10)
    assert response.status_code == 200, response.text


def infer(server, model, rows):
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]}
    response = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_requests_and_predictions_are_summed_over_both_gunicorn_workers(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=2)
    first, second = server.worker_pids()
    # Each worker alone serves its share, so both must be counted for the totals to come out right.
    for pid, times in ((first, 3), (second, 5)):
        with server.serving_only(pid):
            for _ in range(times):
                predict(server, "xor", [[0, 1], [1, 1]])
            infer(server, "iris", [[5.1, 3.5, 1.4, 0.2]])
            assert requests.get(server.url + "/no/such/page/17", timeout=10).status_code == 404
    files = os.listdir(tmp_path / "var" / "metrics")  # the directory the master chose under MINIGRAD_DATA_DIR
    assert {f"counter_{first}.db", f"counter_{second}.db"} <= set(files)

    for pid in (first, second):  # whichever worker answers /metrics gives the same sums
        with server.serving_only(pid):
            scrape = samples(server)
        predict_200 = {"route": "/predict", "method": "POST", "status": "200"}
        assert value(scrape, "minigrad_http_requests_total", **predict_200) == 8
        assert value(scrape, "minigrad_http_request_duration_seconds_count", **predict_200) == 8
        assert value(scrape, "minigrad_http_request_duration_seconds_sum", **predict_200) > 0
        assert value(scrape, "minigrad_http_requests_total", route="/v2/models/<name>/infer", method="POST",
                     status="200") == 2
        assert value(scrape, "minigrad_predictions_total", model="xor") == 8
        assert value(scrape, "minigrad_predicted_rows_total", model="xor") == 16
        assert value(scrape, "minigrad_predictions_total", model="iris") == 2
        # A path no route matches is counted under one label value, never under its own path.
        assert value(scrape, "minigrad_http_requests_total", route="unmatched", method="GET", status="404") == 2
        assert not any("/no/such" in str(labels) for _, labels in scrape)


def test_a_failed_prediction_is_a_request_but_not_a_prediction(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=1)
    response = requests.post(server.url + "/predict", json={"model": "xor", "inputs": [[0, 1, 2]]}, timeout=10)
    assert response.status_code == 422
    response = requests.request("BREW", server.url + "/predict", timeout=10)
    assert response.status_code == 405
    scrape = samples(server)
    assert value(scrape, "minigrad_http_requests_total", route="/predict", method="POST", status="422") == 1
    assert value(scrape, "minigrad_http_requests_total", route="unmatched", method="other", status="405") == 1
    assert value(scrape, "minigrad_predictions_total", model="xor") == 0


@pytest.fixture(params=["sqlite", "redis"])
def backend_env(request, tmp_path):
    # The consumer is told the directory the service uses (as service.serve does), so its training
    # time reaches /metrics; a directory named by the environment is not wiped by gunicorn.
    extra = {"MINIGRAD_POLL_INTERVAL": 0.05, MULTIPROC_ENV: tmp_path / "shared-metrics"}
    if request.param == "sqlite":
        yield job_env(tmp_path, **extra)
    else:
        with redis_server(tmp_path) as url:
            yield job_env(tmp_path, MINIGRAD_REDIS_URL=url, **extra)


def test_jobs_by_status_come_from_the_store_and_training_time_from_the_consumer(backend_env, tmp_path):
    (tmp_path / "shared-metrics").mkdir()
    with GunicornServer(env=backend_env, workers=2) as server:
        submitted = [requests.post(f"{server.url}/train", json=xor_request(seed=seed), timeout=10).json()["id"]
                     for seed in (1, 2)]
        scrape = samples(server)
        assert value(scrape, "minigrad_job_store_up") == 1
        assert value(scrape, "minigrad_jobs", status="queued") == 2
        assert value(scrape, "minigrad_jobs", status="succeeded") == 0
        assert value(scrape, "minigrad_training_seconds_count") == 0

        worker = WorkerProcess(backend_env, tmp_path / "worker.log")
        try:
            for job_id in submitted:
                wait_for(lambda job_id=job_id: requests.get(f"{server.url}/jobs/{job_id}", timeout=10)
                         .json()["status"] == "succeeded", 60, what=f"job {job_id}")
        finally:
            worker.stop()
        scrape = samples(server)
        assert value(scrape, "minigrad_jobs", status="queued") == 0
        assert value(scrape, "minigrad_jobs", status="succeeded") == 2
        assert value(scrape, "minigrad_training_seconds_count") == 2
        assert value(scrape, "minigrad_training_seconds_sum") > 0


def test_the_metrics_directory_is_chosen_and_emptied_only_when_unset(tmp_path):
    stale = tmp_path / "var" / "metrics" / "counter_1234.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    environ = {"MINIGRAD_DATA_DIR": str(tmp_path / "var")}
    assert prepare_multiprocess_dir(environ) == stale.parent
    assert environ[MULTIPROC_ENV] == str(stale.parent) and not stale.exists()

    stale.write_bytes(b"someone else's")
    assert prepare_multiprocess_dir(environ) == stale.parent  # now set: created if missing, never emptied
    assert stale.exists()
    given = {MULTIPROC_ENV: str(tmp_path / "elsewhere" / "metrics")}
    assert prepare_multiprocess_dir(given).is_dir()


def test_a_consumer_elsewhere_serves_its_training_time_itself(model_dir, tmp_path):
    env = job_env(tmp_path, MINIGRAD_POLL_INTERVAL=0.05)
    env.pop(MULTIPROC_ENV, None)  # as on another machine: no directory shared with the web service
    port = free_port()
    with GunicornServer(env=env, workers=2) as server:
        worker = WorkerProcess(env, tmp_path / "worker.log", "--metrics-port", str(port))
        try:
            trained = requests.post(f"{server.url}/train?wait=30", json=xor_request(), timeout=60).json()
            assert trained["status"] == "succeeded"
            consumer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()
        finally:
            worker.stop()
        assert "minigrad_training_seconds_count 1.0" in consumer
        web = samples(server)  # the web service still counts the job, from the store
        assert value(web, "minigrad_jobs", status="succeeded") == 1
        assert value(web, "minigrad_training_seconds_count") == 0


def test_a_metrics_port_in_use_is_refused_plainly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = WorkerProcess(job_env(tmp_path), tmp_path / "worker.log", "--metrics-port", str(port))
        assert worker.process.wait(timeout=30) == 1
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in worker.output()


def test_an_unreachable_job_store_leaves_the_other_metrics_answering(model_dir, tmp_path):
    server = None
    try:
        with redis_server(tmp_path) as url:
            env = job_env(tmp_path, MINIGRAD_REDIS_URL=url)
            env.pop(MULTIPROC_ENV, None)
            server = GunicornServer(env=env, workers=1).start()
            assert value(samples(server), "minigrad_job_store_up") == 1
        predict(server, "xor", [[0, 1]])  # redis-server is stopped now; gunicorn is not
        scrape = samples(server)
    finally:
        if server is not None:
            server.stop()
    assert value(scrape, "minigrad_job_store_up") == 0
    assert ("minigrad_jobs", (("status", "queued"),)) not in scrape  # unknown, so not reported as 0
    assert value(scrape, "minigrad_predictions_total", model="xor") == 1


def test_the_metrics_of_a_running_server_are_shared_not_emptied(tmp_path):
    directory = tmp_path / "var" / "metrics"
    directory.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (directory / f"counter_{dead.pid}.db").write_bytes(b"an earlier run's")
    environ = {"MINIGRAD_DATA_DIR": str(tmp_path / "var")}
    share_metrics_of_a_running_service("test", environ)
    assert MULTIPROC_ENV not in environ  # only dead processes' files: prepare_multiprocess_dir empties them

    (directory / f"histogram_{os.getpid()}.db").write_bytes(b"a running process's")
    share_metrics_of_a_running_service("test", environ)
    assert environ[MULTIPROC_ENV] == str(directory)
    prepare_multiprocess_dir(environ)
    assert (directory / f"histogram_{os.getpid()}.db").exists()


def test_a_second_server_refused_the_port_leaves_the_first_ones_counts(gunicorn, model_dir, tmp_path):
    # It used to empty the metrics directory at start, before failing on the port in use: the first server's
    # /metrics then said it had answered nothing.
    env = {"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}
    server = gunicorn(env=env, workers=1)
    predict(server, "xor", [[0, 1]])
    counted = value(samples(server), "minigrad_predictions_total", model="xor")
    assert counted == 1
    environment = {**os.environ, **{key: str(item) for key, item in env.items()}, "PORT": str(server.port)}
    environment.pop(MULTIPROC_ENV, None)
    second = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--workers", "1"],
                            cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "Address already in use" in second.stdout + second.stderr
    assert value(samples(server), "minigrad_predictions_total", model="xor") == counted
    assert "holds the metrics of running processes" in second.stderr


def test_a_vanished_metrics_directory_is_a_503_problem_not_a_500(client, tmp_path, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "removed-by-a-cleaner"))
    response = client.get("/metrics")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == "urn:minigrad:problem:metrics-unavailable"
    assert "restart the service" in response.get_json()["detail"]


def test_a_metric_file_removed_during_a_scrape_is_a_503_problem_not_a_500(client, tmp_path, monkeypatch):
    # A file listed by the collector and gone when it opened it (rm -r of the directory, a cleaner of old files,
    # during the scrape): as a dangling link, which is listed and cannot be opened.
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_99999.db").symlink_to(directory / "removed")
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    response = client.get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["type"] == "urn:minigrad:problem:metrics-unavailable"


def test_a_job_whose_consumer_died_is_counted_as_lost_not_running(app, client):
    # The scrape counted the store as it was: with every consumer dead (their reapers with them), the job
    # stayed in minigrad_jobs{status="running"} for as long as nobody read the jobs, and an alert on lost
    # jobs never fired.
    job = client.post("/train", json=xor_request()).get_json()
    with app.app_context():
        get_job_backend().store.update(job["id"], status=RUNNING, heartbeat_at=time.time() - 3600, worker="gone:1")
    scrape = parsed(client.get("/metrics").get_data(as_text=True))
    assert value(scrape, "minigrad_jobs", status="lost") == 1 and value(scrape, "minigrad_jobs", status="running") == 0
