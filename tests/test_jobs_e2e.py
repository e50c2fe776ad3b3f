"""Training jobs end to end with real processes: gunicorn (2 workers), ``python -m service.worker``,
the SQLite file or a real redis-server, and ``python -m service.serve`` (what ``make serve`` runs)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import requests
from jobs_support import (
    REPO,
    XOR_INPUTS,
    XOR_TARGETS,
    WorkerProcess,
    job_env,
    redis_server,
    slow_request,
    start_serve,
    wait_for,
    xor_request,
)
from readme_support import sh_blocks

from service.testing import GunicornServer

FAST_HEARTBEAT = {"MINIGRAD_HEARTBEAT_INTERVAL": 0.2, "MINIGRAD_HEARTBEAT_TIMEOUT": 2, "MINIGRAD_POLL_INTERVAL": 0.05}


@pytest.fixture(params=["sqlite", "redis"])
def env(request, tmp_path):
    if request.param == "sqlite":
        yield job_env(tmp_path, **FAST_HEARTBEAT)
    else:
        with redis_server(tmp_path) as url:
            yield job_env(tmp_path, MINIGRAD_REDIS_URL=url, **FAST_HEARTBEAT)


@pytest.fixture
def sqlite_env(tmp_path):
    return job_env(tmp_path, **FAST_HEARTBEAT)


@contextlib.contextmanager
def service(env, log_dir, consumer=True):
    """gunicorn with 2 workers, and (unless told not to) one consumer process."""
    server = GunicornServer(env=env, workers=2).start()
    worker = WorkerProcess(env, log_dir / "worker.log") if consumer else None
    try:
        yield server, worker
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def job(server, job_id):
    response = requests.get(f"{server.url}/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def finished(server, job_id, timeout=60):
    return wait_for(lambda: (j := job(server, job_id))["status"] not in ("queued", "running") and j, timeout,
                    what=f"job {job_id} to finish")


def test_xor_end_to_end_and_the_job_is_the_same_through_every_gunicorn_worker(env, tmp_path):
    with service(env, tmp_path) as (server, worker):
        response = requests.post(f"{server.url}/train?wait=30", json=xor_request(save_as="xor"), timeout=60)
        assert response.status_code == 200, response.text
        trained = response.json()
        assert trained["status"] == "succeeded" and trained["result"]["registered"] == {"name": "xor", "version": 1}
        model = requests.get(f"{server.url}/jobs/{trained['id']}/model", timeout=10).json()

        pids = server.worker_pids()
        assert len(pids) == 2
        for pid in pids:
            with server.serving_only(pid):
                seen = job(server, trained["id"])
                assert seen["status"] == "succeeded" and seen["history"] == trained["history"]
                assert requests.get(f"{server.url}/jobs/{trained['id']}/model", timeout=10).json() == model
                assert trained["id"] in [j["id"] for j in requests.get(f"{server.url}/jobs", timeout=10).json()["jobs"]]
                prediction = requests.post(f"{server.url}/predict", json={"model": "xor", "inputs": XOR_INPUTS},
                                           timeout=10).json()
                assert [round(o[0]) for o in prediction["outputs"]] == [t[0] for t in XOR_TARGETS]


def test_a_job_cancelled_through_one_worker_stops_in_the_consumer(env, tmp_path):
    with service(env, tmp_path) as (server, worker):
        submitted = requests.post(f"{server.url}/train", json=slow_request(), timeout=10).json()
        wait_for(lambda: job(server, submitted["id"])["progress"]["epoch"] >= 1, 30, what="a first epoch")
        assert requests.delete(f"{server.url}/jobs/{submitted['id']}", timeout=10).status_code == 202
        done = finished(server, submitted["id"], timeout=20)
        assert done["status"] == "cancelled" and done["progress"]["epoch"] < 10_000


def test_sigkill_of_the_consumer_mid_job_makes_the_job_lost_after_the_heartbeat_timeout(env, tmp_path):
    with service(env, tmp_path) as (server, worker):
        submitted = requests.post(f"{server.url}/train", json=slow_request(), timeout=10).json()
        wait_for(lambda: job(server, submitted["id"])["progress"]["epoch"] >= 1, 30, what="a first epoch")
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        lost = wait_for(lambda: (j := job(server, submitted["id"]))["status"] == "lost" and j, 15,
                        what="the reaper to mark the job lost")
        assert "no heartbeat" in lost["error"] and lost["worker"].endswith(f":{worker.process.pid}")
        # A new consumer does not resurrect it (Huey delivered the task once, to the dead consumer).
        replacement = WorkerProcess(env, tmp_path / "worker2.log")
        try:
            later = requests.post(f"{server.url}/train?wait=30", json=xor_request(), timeout=60).json()
            assert later["status"] == "succeeded"
            assert job(server, submitted["id"])["status"] == "lost"
        finally:
            replacement.stop()


def test_a_restart_of_the_whole_service_keeps_finished_jobs_and_runs_queued_ones(sqlite_env, tmp_path):
    medium = xor_request(data={"inputs": XOR_INPUTS * 64, "targets": XOR_TARGETS * 64}, batch_size=1, epochs=150)
    with service(sqlite_env, tmp_path) as (server, worker):
        done = requests.post(f"{server.url}/train?wait=30", json=xor_request(), timeout=60).json()
        assert done["status"] == "succeeded"
        model = requests.get(f"{server.url}/jobs/{done['id']}/model", timeout=10).json()
        interrupted = requests.post(f"{server.url}/train", json=medium, timeout=10).json()
        wait_for(lambda: job(server, interrupted["id"])["progress"]["epoch"] >= 1, 30, what="a first epoch")
        worker.stop(signal.SIGTERM)  # stopped mid-job: the job goes back to the queue
        assert job(server, interrupted["id"])["status"] == "queued"
        queued = [requests.post(f"{server.url}/train", json=xor_request(seed=s), timeout=10).json()["id"]
                  for s in (1, 2)]
    with service(sqlite_env, tmp_path) as (server, worker):
        again = job(server, done["id"])
        assert again["status"] == "succeeded" and again["history"] == done["history"]
        assert requests.get(f"{server.url}/jobs/{done['id']}/model", timeout=10).json() == model
        for job_id in [interrupted["id"], *queued]:
            assert finished(server, job_id)["status"] == "succeeded"
        assert len(job(server, interrupted["id"])["history"]) == 150


def test_the_same_request_and_seed_give_the_same_bits_through_the_service(sqlite_env, tmp_path):
    with service(sqlite_env, tmp_path) as (server, worker):
        documents = []
        for _ in range(2):
            trained = requests.post(f"{server.url}/train?wait=30", json=xor_request(batch_size=1), timeout=60).json()
            documents.append(requests.get(f"{server.url}/jobs/{trained['id']}/model", timeout=10).json())
        # JSON floats round-trip exactly (repr), so equal documents mean bit-identical weights.
        assert documents[0]["layers"] == documents[1]["layers"]


def test_serve_starts_gunicorn_and_the_consumer_and_ctrl_c_stops_both(sqlite_env, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(sqlite_env, log)
    try:
        trained = requests.post(f"{url}/train?wait=30", json=xor_request(), timeout=60).json()
        assert trained["status"] == "succeeded"  # so the consumer runs too
        children = [int(p) for p in open(f"/proc/{process.pid}/task/{process.pid}/children").read().split()]
        assert len(children) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
        for child in children:
            assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("command", [["minigrad-worker"], [sys.executable, "-m", "service.worker"]])
def test_the_worker_command_starts_a_consumer_alone(command, sqlite_env, tmp_path):
    executable = os.path.join(os.path.dirname(sys.executable), command[0]) if len(command) == 1 else command[0]
    shown = subprocess.run([executable, *command[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--workers" in shown.stdout and "--worker-type" in shown.stdout
    log = tmp_path / "worker.log"
    process = subprocess.Popen([executable, *command[1:], "-v"], cwd=REPO, env=sqlite_env,
                               stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_for(lambda: "Huey consumer started" in log.read_text(), 30, what="the consumer to start")
        assert (tmp_path / "var" / "jobs.sqlite3").exists()
        process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
        assert process.wait(timeout=30) == 0
        assert "Consumer exiting" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_the_readme_training_example_works_as_printed(sqlite_env, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: README's curl example cannot be run")
    script = sh_blocks("Training jobs")[0]
    with service(sqlite_env, tmp_path) as (server, worker):
        output = subprocess.run(["bash", "-c", script.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")],
                                capture_output=True, text=True, check=True, timeout=60).stdout
    decoder = json.JSONDecoder()
    trained, end = decoder.raw_decode(output)
    prediction, _ = decoder.raw_decode(output[end:].lstrip())
    assert trained["status"] == "succeeded"
    assert trained["result"]["registered"] == {"name": "xor-trained", "version": 1}
    assert prediction["model"] == "xor-trained" and [round(o[0]) for o in prediction["outputs"]] == [1, 0]
