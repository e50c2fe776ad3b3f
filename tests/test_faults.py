"""Faults against real processes: gunicorn workers killed mid-burst, uploads racing predictions, a disk that
refuses writes, and the whole service killed and restarted in the middle of uploads and jobs.

The consumer killed during a job is tests/test_jobs_e2e.py's
``test_sigkill_of_the_consumer_mid_job_makes_the_job_lost_after_the_heartbeat_timeout`` (the job ends ``lost``,
never stuck); it is not repeated here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from jobs_support import REPO, WorkerProcess, job_env, slow_request, wait_for, xor_request

from service.registry import ChangeToken
from service.testing import GunicornServer

ROWS = [[0.0, 1.0], [1.0, 1.0]]
TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST_HEARTBEAT = {"MINIGRAD_HEARTBEAT_INTERVAL": 0.2, "MINIGRAD_HEARTBEAT_TIMEOUT": 2, "MINIGRAD_POLL_INTERVAL": 0.05}
FINISHED = {"succeeded", "failed", "cancelled", "lost"}


def constant_model(value: float, width: int = 64) -> dict:
    """A model whose every output is ``value`` whatever the input: zero weights, bias ``value``. Large enough
    (64 outputs) that a torn or mixed read of two versions would show as different numbers in one answer."""
    return {"format": "minigrad.sequential", "version": 1, "dtype": "float64",
            "layers": [{"type": "Linear", "in_features": 2, "out_features": width,
                        "weight": [[0.0] * width, [0.0] * width], "bias": [float(value)] * width}],
            "metadata": {}}


@pytest.fixture
def env(tmp_path):
    (tmp_path / "models").mkdir()
    return job_env(tmp_path, MINIGRAD_API_TOKEN=TOKEN, **FAST_HEARTBEAT)


# A server killed mid-answer shows as a broken body (ChunkedEncodingError), not only a refused connection.
CUT_OFF = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def predictions(url: str, stop: threading.Event, outcomes: list, model: str = "constant"):
    """One client: predictions on one keep-alive session until ``stop``; appends (status or error, body)."""
    session = requests.Session()
    while not stop.is_set():
        try:
            response = session.post(f"{url}/predict", json={"model": model, "inputs": ROWS}, timeout=10)
            outcomes.append((response.status_code, response.json() if response.status_code == 200 else response.text))
        # Either cut-off is recorded, or the client thread would die and the burst would thin out unnoticed.
        except CUT_OFF as error:
            outcomes.append((type(error).__name__, str(error)))
            session = requests.Session()


def clients(url: str, count: int, model: str = "constant"):
    stop, outcomes = threading.Event(), []
    threads = [threading.Thread(target=predictions, args=(url, stop, outcomes, model)) for _ in range(count)]
    for thread in threads:
        thread.start()
    return stop, outcomes, threads


def join(stop: threading.Event, threads) -> None:
    stop.set()
    for thread in threads:
        thread.join(30)


def put(url: str, name: str, document: dict) -> requests.Response:
    return requests.put(f"{url}/models/{name}", json=document, headers=AUTH, timeout=30)


def test_a_worker_killed_mid_burst_fails_only_its_requests_in_flight_and_is_replaced(env):
    with GunicornServer(env=env, workers=2) as server:
        assert put(server.url, "constant", constant_model(1)).status_code == 201
        stop, outcomes, threads = clients(server.url, 8)
        wait_for(lambda: len(outcomes) > 200, 30, what="a burst of predictions")
        before = server.worker_pids()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        at_kill = len(outcomes)
        replaced = wait_for(lambda: len(p := server.worker_pids()) == 2 and victim not in p and p, 30,
                            what="the master to replace the worker")
        wait_for(lambda: len(outcomes) > at_kill + 400, 30, what="predictions after the replacement")
        join(stop, threads)

        failed = [o for o in outcomes if o[0] != 200]
        print(f"\nworker SIGKILL: {len(outcomes)} predictions by 8 clients, {len(failed)} failed "
              f"(connection errors of requests in flight), worker {victim} replaced by {set(replaced) - set(before)}")
        # Only a request on a connection to the killed worker can fail, so at most one per client, and only
        # as a broken connection: never an HTTP error.
        assert len(failed) <= 8 and all(o[0] in ("ConnectionError", "ChunkedEncodingError") for o in failed), failed
        assert all(o[1]["outputs"] == [[1.0] * 64] * 2 for o in outcomes if o[0] == 200)
        after = [requests.post(f"{server.url}/predict", json={"model": "constant", "inputs": ROWS}, timeout=10)
                 for _ in range(100)]
        assert all(r.status_code == 200 for r in after)


def test_versions_uploaded_while_8_clients_predict_are_never_torn_or_mixed(env):
    with GunicornServer(env=env, workers=2) as server:
        assert put(server.url, "constant", constant_model(1)).status_code == 201
        stop, outcomes, threads = clients(server.url, 8)
        uploaded = []
        try:
            for version in range(2, 32):
                response = put(server.url, "constant", constant_model(version))
                assert response.status_code == 201, response.text
                uploaded.append(response.json()["version"])
        finally:
            join(stop, threads)

        assert uploaded == list(range(2, 32))
        assert outcomes and all(o[0] == 200 for o in outcomes), Counter(o[0] for o in outcomes)
        seen = Counter()
        for _, answer in outcomes:
            version = answer["version"]
            # The answer names a version, and every number in it is that version's constant: no partial file,
            # no weights of one version with the bias of another, no answer labelled with the wrong version.
            assert answer["outputs"] == [[float(version)] * 64] * 2, answer
            seen[version] += 1
        print(f"\nconcurrent uploads: {len(outcomes)} predictions by 8 clients while 30 versions were uploaded; "
              f"{len(seen)} distinct versions answered, none torn or mixed")
        assert len(seen) >= 3  # the predictions did overlap the uploads


@contextlib.contextmanager
def immutable(*directories: Path):
    """``chattr +i``: no file can be created, renamed or removed in these directories, not even by root
    (which ignores mode bits, so chmod would prove nothing here)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed: a read-only model directory cannot be made for root")
    done = []
    try:
        for directory in directories:
            if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
                pytest.skip(f"chattr +i is refused on {directory} (file system or capability)")
            done.append(directory)
        yield
    finally:
        for directory in done:
            subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_an_upload_to_a_read_only_model_directory_is_a_503_and_the_previous_version_stays(env):
    model_dir = Path(env["MINIGRAD_MODEL_DIR"])
    with GunicornServer(env=env, workers=2) as server:
        assert put(server.url, "constant", constant_model(1)).status_code == 201
        stored = snapshot(model_dir)
        with immutable(model_dir, model_dir / "constant"):
            refused = [put(server.url, "constant", constant_model(2)) for _ in range(4)]  # through both workers
            refused += [put(server.url, f"new-{i}", constant_model(3)) for i in range(2)]
            answer = requests.post(f"{server.url}/predict", json={"model": "constant", "inputs": ROWS}, timeout=10)
        for response in refused:
            assert response.status_code == 503, response.text
            assert response.headers["Content-Type"] == "application/problem+json"
            assert response.json()["type"] == "urn:minigrad:problem:storage-unavailable"
            assert "Operation not permitted" in response.json()["detail"]
        assert snapshot(model_dir) == stored  # no temporary file, no new directory, version 1 as it was
        assert answer.status_code == 200 and answer.json()["version"] == 1
        later = put(server.url, "constant", constant_model(2))  # writable again: the next upload works
        assert later.status_code == 201 and later.json()["version"] == 2


def snapshot(directory: Path) -> dict[str, bytes]:
    # The registries' change marker is bookkeeping that any write may touch, not a model.
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*")) if p.name != ChangeToken.FILE}


# A full disk, for root, without mount rights: RLIMIT_FSIZE makes every write past the limit fail with EFBIG
# (Python ignores SIGXFSZ). It applies to every file of the process (logs, metrics files), so it is set in a
# process of its own that runs the application and answers through a pipe, which the limit does not cover.
# Its metrics are file-backed as under gunicorn, and their files are first written under the limit: a
# metric the disk cannot hold must not fail the request (it did: a 500 instead of the 507).
def test_an_upload_to_a_full_disk_is_a_507_and_the_previous_version_stays(tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "constant").mkdir()
    (model_dir / "constant" / "1.json").write_text(json.dumps(constant_model(1)))
    stored = snapshot(model_dir)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    script = (
        "import json, resource, sys\n"
        "from service import create_app\n"
        "app = create_app({'MINIGRAD_MODEL_DIR': sys.argv[1], 'MINIGRAD_DATA_DIR': sys.argv[2],"
        " 'MINIGRAD_API_TOKEN': None})\n"
        "client = app.test_client()\n"
        "document = sys.stdin.read()\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))\n"
        "answers = [client.put(f'/models/{name}', data=document, content_type='application/json')"
        " for name in ('constant', 'constant', 'new')]\n"
        "answers.append(client.post('/predict', json={'model': 'constant', 'inputs': [[0, 1]]}))\n"
        "print(json.dumps([[a.status_code, a.mimetype, a.get_json()] for a in answers]))\n"
    )
    finished = subprocess.run([sys.executable, "-c", script, str(model_dir), str(tmp_path / "var")],
                              input=json.dumps(constant_model(2)), capture_output=True, text=True, timeout=120,
                              cwd=REPO, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    assert finished.returncode == 0, finished.stderr[-3000:]
    *uploads_answered, prediction = json.loads(finished.stdout.strip().splitlines()[-1])
    for status, mimetype, problem in uploads_answered:
        assert (status, mimetype) == (507, "application/problem+json"), problem
        assert problem["type"] == "urn:minigrad:problem:storage-full" and "File too large" in problem["detail"]
    assert prediction[0] == 200 and prediction[2]["version"] == 1
    assert snapshot(model_dir) == stored  # no temporary file, no new directory, version 1 as it was


def uploads(url: str, stop: threading.Event, acknowledged: list):
    """Upload versions of several models until ``stop``; records (name, version, document) of every 201."""
    index = 0
    while not stop.is_set():
        name, document = f"model-{index % 3}", constant_model(index, width=4)
        try:
            response = put(url, name, document)
        except CUT_OFF:  # the kill: this upload was never acknowledged
            return
        if response.status_code == 201:
            acknowledged.append((name, response.json()["version"], document))
        index += 1


def submissions(url: str, stop: threading.Event, acknowledged: list):
    """Submit short training jobs until ``stop``; records the id of every 202."""
    seed = 0
    while not stop.is_set():
        try:
            response = requests.post(f"{url}/train", json=xor_request(epochs=300, seed=seed), headers=AUTH, timeout=10)
        except CUT_OFF:  # the kill: this job was never acknowledged
            return
        if response.status_code == 202:
            acknowledged.append(response.json()["id"])
        elif response.status_code == 429:  # the active-jobs limit: wait for the consumer
            time.sleep(0.2)
        seed += 1


def test_a_kill_and_restart_of_the_whole_service_loses_nothing_it_acknowledged(env, tmp_path):
    server = GunicornServer(env=env, workers=2).start()
    consumer = WorkerProcess(env, tmp_path / "worker.log")
    try:
        assert put(server.url, "constant", constant_model(1)).status_code == 201
        # A long job keeps the consumer busy, so the kill finds one job running and the others queued.
        running = requests.post(f"{server.url}/train", json=slow_request(), headers=AUTH, timeout=10).json()["id"]
        wait_for(lambda: requests.get(f"{server.url}/jobs/{running}", timeout=10).json()["status"] == "running", 30,
                 what="the long job to start")
        versions, jobs, stop = [], [running], threading.Event()
        writers = [threading.Thread(target=uploads, args=(server.url, stop, versions)),
                   threading.Thread(target=submissions, args=(server.url, stop, jobs))]
        predict_stop, outcomes, readers = clients(server.url, 4)
        for thread in writers:
            thread.start()
        wait_for(lambda: len(versions) >= 20 and len(jobs) >= 6, 60, what="uploads and jobs under way")
        assert requests.get(f"{server.url}/jobs/{running}", timeout=10).json()["status"] == "running"
        # Everything dies at once, in the middle of writes: gunicorn's master and workers, and the consumer.
        os.killpg(server.process.pid, signal.SIGKILL)
        consumer.process.send_signal(signal.SIGKILL)
        server.process.wait()
        consumer.process.wait()
        stop.set()
        join(predict_stop, [*readers, *writers])
    finally:
        server.stop()
        consumer.stop()

    server = GunicornServer(env=env, workers=2).start()
    consumer = WorkerProcess(env, tmp_path / "worker-after.log")
    try:
        for name, version, document in versions:
            stored = requests.get(f"{server.url}/models/{name}/versions/{version}", timeout=10)
            assert stored.status_code == 200 and stored.json() == document, (name, version)
        ends = {job_id: wait_for(lambda job_id=job_id: (r := requests.get(f"{server.url}/jobs/{job_id}", timeout=10))
                                 .json()["status"] in FINISHED and r.json()["status"], 60, what=f"job {job_id}")
                for job_id in jobs}
        print(f"\nkill -9 of gunicorn and the consumer mid-traffic: {len(versions)} acknowledged uploads all "
              f"stored intact after the restart; {len(jobs)} acknowledged jobs all present and finished: "
              f"{dict(Counter(ends.values()))}")
        # The job that was running when the consumer died is lost (its heartbeat stopped), never stuck; every
        # queued one ran on the new consumer.
        assert ends.pop(running) == "lost" and set(ends.values()) == {"succeeded"}
    finally:
        consumer.stop()
        server.stop()
