"""POST /train and /jobs through Flask's test client, with a real Huey consumer (SQLite) in this process."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from huey import signals as huey_signals
from jobs_support import (
    REPO,
    XOR_ARCHITECTURE,
    XOR_INPUTS,
    XOR_TARGETS,
    consumer_thread,
    job_env,
    slow_request,
    wait_for,
    xor_request,
)

import minigrad
from minigrad import Linear, Sequential, Sigmoid
from service import create_app
from service.config import ConfigError
from service.jobs import get_job_backend
from service.jobs.runner import Heartbeat, ProgressRecorder, _hand_back
from service.jobs.store import RUNNING
from service.testing import free_port

TOKEN = "s3cret-token"


def make_app(tmp_path, **config):
    settings = {"MINIGRAD_MODEL_DIR": str(tmp_path / "models"), "MINIGRAD_DATA_DIR": str(tmp_path / "var"),
                "MINIGRAD_POLL_INTERVAL": 0.02, "TESTING": True}
    settings.update(config)
    return create_app(settings)


def backend_of(app):
    with app.app_context():
        return get_job_backend()


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def consumer(app):
    with consumer_thread(backend_of(app)) as running:
        yield running


def finished(client, job_id, timeout=30):
    def done():
        job = client.get(f"/jobs/{job_id}").get_json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_for(done, timeout, what=f"job {job_id} to finish")


def predict_with(document, inputs):
    model = minigrad.Sequential.from_dict(document)
    with minigrad.no_grad():
        return model(minigrad.Tensor(np.asarray(inputs, dtype=float))).data


def register_xor(app):
    """Version 1 of 'xor': fresh (untrained) weights of the XOR architecture."""
    rng = np.random.default_rng(0)
    model = minigrad.Sequential([minigrad.Linear(2, 3, rng=rng), minigrad.Tanh(), minigrad.Linear(3, 1, rng=rng),
                                 minigrad.Sigmoid()])
    with app.app_context():
        from service.registry import get_registry

        return get_registry().put("xor", model.to_dict())


# ---------------------------------------------------------------------------------------------- training


def test_xor_from_an_architecture_with_wait(client, consumer):
    response = client.post("/train?wait=20", json=xor_request())
    assert response.status_code == 200, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert job["status"] == "succeeded" and job["progress"] == {"epoch": 1500, "epochs": 1500}
    assert len(job["history"]) == 1500 and job["history"][-1]["loss"] < job["history"][0]["loss"]
    assert job["result"]["final_loss"] == job["history"][-1]["loss"] < 0.01
    assert job["timings"]["queued_seconds"] >= 0 and job["timings"]["running_seconds"] > 0
    model = client.get(job["result"]["model_url"])
    assert model.status_code == 200
    outputs = predict_with(model.get_json(), XOR_INPUTS)
    assert (outputs.ravel() > 0.5).tolist() == [False, True, True, False]


def test_without_wait_the_answer_is_202_and_the_job_can_be_followed(client, consumer):
    response = client.post("/train", json=xor_request())
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] in ("queued", "running") and job["request"]["seed"] == 7
    assert "data" not in job["request"] and job["request"]["samples"] == 4
    assert finished(client, job["id"])["status"] == "succeeded"


def test_the_trained_model_is_read_with_peek_so_every_reader_gets_it(app, client, consumer):
    job = client.post("/train?wait=20", json=xor_request()).get_json()
    first = client.get(f"/jobs/{job['id']}/model").get_json()
    second = client.get(f"/jobs/{job['id']}/model").get_json()
    assert first == second and first["format"] == "minigrad.sequential"
    # Huey's own result store still holds it after both reads.
    assert backend_of(app).huey.result(job["id"], preserve=True) == first


def test_fine_tuning_a_registered_model_with_save_as_creates_the_next_version(app, client, consumer):
    base = register_xor(app)
    body = {k: v for k, v in xor_request(model="xor", save_as="xor").items() if k != "architecture"}
    job = client.post("/train?wait=20", json=body).get_json()
    assert job["status"] == "succeeded", job
    assert job["request"]["version"] == base.version == 1
    assert job["result"]["registered"] == {"name": "xor", "version": 2}
    stored = client.get("/models/xor/versions/2").get_json()
    assert stored["layers"] == client.get(f"/jobs/{job['id']}/model").get_json()["layers"]
    prediction = client.post("/predict", json={"model": "xor", "inputs": XOR_INPUTS}).get_json()
    assert prediction["version"] == 2
    assert [round(o[0]) for o in prediction["outputs"]] == [0, 1, 1, 0]


def test_classification_with_a_validation_split_reports_validation_accuracy(client, consumer):
    rng = np.random.default_rng(3)
    centers = np.array([[0.0, 3.0], [3.0, 0.0], [-3.0, -3.0]])
    labels = rng.integers(0, 3, 120)
    inputs = centers[labels] + rng.normal(0, 0.5, (120, 2))
    body = xor_request(architecture=[{"type": "Linear", "in_features": 2, "out_features": 8}, {"type": "Relu"},
                                     {"type": "Linear", "in_features": 8, "out_features": 3}],
                       data={"inputs": inputs.tolist(), "targets": labels.tolist()}, loss="cross_entropy",
                       optimizer={"type": "adam", "alpha": 0.05}, epochs=60, batch_size=16, validation_split=0.25,
                       dtype="float32")
    job = client.post("/train?wait=20", json=body).get_json()
    assert job["status"] == "succeeded", job
    assert job["request"]["dtype"] == "float32" and job["request"]["samples"] == 120
    last = job["history"][-1]
    assert set(last) == {"epoch", "loss", "val_loss", "val_accuracy", "seconds"} and last["val_accuracy"] >= 0.9
    assert client.get(f"/jobs/{job['id']}/model").get_json()["dtype"] == "float32"


def strict_json(response):
    """The body parsed as JSON proper: Python's json would read NaN and Infinity, which JSON has not."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


def test_a_validation_loss_that_overflows_fails_the_job_in_valid_json(client, consumer):
    # Far-out validation rows overflow a sane model's val_loss; the history once held it and GET /jobs/<id>
    # answered "val_loss": Infinity, which is not JSON. fit now calls that divergence, naming it.
    body = xor_request(architecture=[{"type": "Linear", "in_features": 2, "out_features": 1}], epochs=3,
                       optimizer={"type": "sgd", "alpha": 0.1},
                       validation={"inputs": [[1e300, 1e300]], "targets": [[0]]})
    job = strict_json(client.post("/train?wait=20", json=body))
    assert job["status"] == "failed" and "val_loss became inf" in job["error"], job
    assert strict_json(client.get(f"/jobs/{job['id']}")) == job | {"history": job["history"]}


def test_a_job_whose_starting_model_was_deleted_fails_saying_so(app, client):
    register_xor(app)
    body = {k: v for k, v in xor_request(model="xor").items() if k != "architecture"}
    job = client.post("/train", json=body).get_json()
    assert client.delete("/models/xor").status_code == 200
    with consumer_thread(backend_of(app)):
        failed = finished(client, job["id"])
    assert failed["status"] == "failed" and failed["error"] == "the model to start from is gone: no model named 'xor'"


def test_the_same_request_and_seed_give_a_bit_identical_model(client, consumer):
    body = xor_request(epochs=300, batch_size=2, validation_split=0.25)
    documents = []
    for _ in range(2):
        job = client.post("/train?wait=20", json=body).get_json()
        documents.append(client.get(f"/jobs/{job['id']}/model").get_json())
    first, second = (minigrad.Sequential.from_dict(d) for d in documents)
    for a, b in zip(first.get_parameters(), second.get_parameters()):
        assert a.data.tobytes() == b.data.tobytes()
    other = client.post("/train?wait=20", json=body | {"seed": 8}).get_json()
    assert client.get(f"/jobs/{other['id']}/model").get_json()["layers"] != documents[0]["layers"]


def test_a_diverging_job_fails_with_a_reason_and_registers_nothing(app, client, consumer):
    body = xor_request(architecture=[{"type": "Linear", "in_features": 2, "out_features": 1}],
                       data={"inputs": [[1e3, 1e3], [-1e3, 2e3]], "targets": [[1e6], [-1e6]]},
                       optimizer={"type": "sgd", "alpha": 10.0}, epochs=200, save_as="boom")
    job = client.post("/train?wait=20", json=body).get_json()
    assert job["status"] == "failed"
    assert job["error"].startswith("training diverged:") and "smaller learning rate" in job["error"]
    assert client.get("/models/boom").status_code == 404
    problem = client.get(f"/jobs/{job['id']}/model")
    assert problem.status_code == 409 and "failed" in problem.get_json()["detail"]


def test_a_running_job_is_cancelled_at_the_end_of_an_epoch(client, consumer):
    job = client.post("/train", json=slow_request()).get_json()
    wait_for(lambda: client.get(f"/jobs/{job['id']}").get_json()["progress"]["epoch"] >= 1, 20,
             what="the job to finish an epoch")
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 202 and response.get_json()["cancel_requested"] is True
    done = finished(client, job["id"])
    assert done["status"] == "cancelled" and done["progress"]["epoch"] < 10_000
    assert len(done["history"]) == done["progress"]["epoch"]
    assert client.get(f"/jobs/{job['id']}/model").status_code == 409
    assert client.delete(f"/jobs/{job['id']}").status_code == 409  # already finished


def test_the_fit_callback_stops_at_the_first_epoch_after_a_cancel(app):
    backend = backend_of(app)
    record = backend.submit({}, {}, epochs=10)
    backend.store.update(record["id"], status=RUNNING)
    recorder = ProgressRecorder(backend.store, record["id"])
    assert recorder({"epoch": 1, "loss": 1.0, "seconds": 0.1}) is True
    backend.store.update(record["id"], cancel_requested=True)
    assert recorder({"epoch": 2, "loss": 0.5, "seconds": 0.1}) is False
    assert recorder.stopped_because == "cancelled"


def test_the_heartbeat_is_renewed_during_a_long_epoch_and_stops_with_the_job(app):
    backend = backend_of(app)
    record = backend.submit({}, {}, epochs=1)
    backend.store.update(record["id"], status=RUNNING, heartbeat_at=0.0)
    with Heartbeat(backend.store, record["id"], interval=0.02):
        first = wait_for(lambda: backend.store.get(record["id"])["heartbeat_at"], 5, what="a heartbeat")
        wait_for(lambda: backend.store.get(record["id"])["heartbeat_at"] > first, 5, what="a second heartbeat")
    last = backend.store.get(record["id"])["heartbeat_at"]
    time.sleep(0.1)
    assert backend.store.get(record["id"])["heartbeat_at"] == last


def test_a_store_error_between_epochs_does_not_fail_the_job(app, client):
    # The fit callback's per-epoch look at the record raised on a store hiccup (SQLite busy past its
    # timeout, Redis restarting): fit stopped and the job failed with "OperationalError".
    backend = backend_of(app)
    job = client.post("/train", json=xor_request(epochs=3)).get_json()
    backend.store.update(job["id"], status=RUNNING, attempt="run")

    class FlakyStore(type(backend.store)):
        failures = 1

        def get(self, job_id):
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().get(job_id)

    recorder = ProgressRecorder(FlakyStore(backend.settings.sqlite_path), job["id"], "run")
    assert [recorder({"epoch": epoch, "loss": 1.0 / epoch}) for epoch in (1, 2, 3)] == [True, True, True]
    recorder.flush()
    assert [r["epoch"] for r in client.get(f"/jobs/{job['id']}").get_json()["history"]] == [1, 2, 3]


def test_the_heartbeat_outlives_a_store_error(app):
    # A store hiccup (SQLite busy past its timeout, Redis restarting) raised in the heartbeat thread and
    # ended it for good: a job with epochs longer than the timeout was then reaped as lost while it trained.
    backend = backend_of(app)
    record = backend.submit({}, {}, epochs=1)
    backend.store.update(record["id"], status=RUNNING, heartbeat_at=0.0)

    class FlakyStore(type(backend.store)):
        failures = 1

        def update(self, job_id, expect=None, **changes):
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().update(job_id, expect, **changes)

    store = FlakyStore(backend.settings.sqlite_path)
    with Heartbeat(store, record["id"], interval=0.02):
        wait_for(lambda: backend.store.get(record["id"])["heartbeat_at"], 5, what="a heartbeat after the error")
    assert store.failures == 0


def test_a_cancel_after_the_last_epoch_registers_nothing(app, client):
    # DELETE between the last epoch and the hand-back answered 202 "cancel requested", and the job then
    # ended succeeded with its model registered under save_as.
    backend = backend_of(app)
    job = client.post("/train", json=xor_request(epochs=1, save_as="late")).get_json()
    backend.store.update(job["id"], status=RUNNING, attempt="this-run", started_at=time.time(),
                         heartbeat_at=time.time())
    assert client.delete(f"/jobs/{job['id']}").status_code == 202  # the run has trained its last epoch
    rng = np.random.default_rng(0)
    model = minigrad.Sequential([minigrad.Linear(2, 1, rng=rng)])
    payload = {"spec": {"seed": 7}, "save_as": "late"}
    assert _hand_back(backend, job["id"], "this-run", payload, model, [{"epoch": 1, "loss": 0.5}]) is None
    done = client.get(f"/jobs/{job['id']}").get_json()
    assert done["status"] == "cancelled" and done["result"] is None
    assert client.get("/models/late").status_code == 404


def test_a_queued_job_is_cancelled_at_once_and_never_runs(app, client):
    job = client.post("/train", json=xor_request()).get_json()
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    with consumer_thread(backend_of(app)):
        later = client.post("/train?wait=20", json=xor_request()).get_json()  # runs after the cancelled one
    assert later["status"] == "succeeded"
    assert backend_of(app).huey.pending_count() == 0  # the consumer took the cancelled job's task too...
    cancelled = client.get(f"/jobs/{job['id']}").get_json()  # ...and did not run it
    assert cancelled["status"] == "cancelled" and cancelled["timings"]["started_at"] is None


def test_a_job_starts_within_a_second_after_the_consumer_sat_idle(client, consumer):
    time.sleep(3)  # Huey's default back-off would have stretched the poll to seconds by now
    job = client.post("/train?wait=20", json=xor_request(epochs=10)).get_json()
    assert job["timings"]["queued_seconds"] < 1.0


def test_a_job_interrupted_by_a_consumer_shutdown_goes_back_to_the_queue(app, client):
    backend = backend_of(app)
    job = client.post("/train", json=xor_request()).get_json()
    task = backend.huey.dequeue()  # as a consumer would, before it was stopped mid-run
    backend.store.update(job["id"], status=RUNNING, started_at=time.time(), heartbeat_at=time.time())
    backend.store.append_history(job["id"], [{"epoch": 1, "loss": 1.0, "seconds": 0.1}])
    backend.huey._emit(huey_signals.SIGNAL_INTERRUPTED, task)
    requeued = client.get(f"/jobs/{job['id']}").get_json()
    assert requeued["status"] == "queued" and requeued["history"] == []
    with consumer_thread(backend):
        assert finished(client, job["id"])["status"] == "succeeded"


def test_a_running_job_with_a_cancel_requested_is_cancelled_by_a_consumer_shutdown(app, client):
    # It was put back in the queue, cancel_requested and all: listed as queued, holding an active-jobs
    # slot, until a consumer came back to claim it and only then found the cancel the client got a 202 for.
    backend = backend_of(app)
    job = client.post("/train", json=xor_request()).get_json()
    task = backend.huey.dequeue()
    backend.store.update(job["id"], status=RUNNING, started_at=time.time(), heartbeat_at=time.time())
    assert client.delete(f"/jobs/{job['id']}").status_code == 202
    backend.huey._emit(huey_signals.SIGNAL_INTERRUPTED, task)
    cancelled = client.get(f"/jobs/{job['id']}").get_json()
    assert cancelled["status"] == "cancelled" and cancelled["timings"]["finished_at"] is not None
    assert backend.huey.pending_count() == 0 and backend.store.count_active() == 0


def test_a_job_handing_back_its_model_cannot_be_cancelled_and_a_shutdown_puts_it_back(app, client):
    # Once trained, the run registers its model (save_as): a cancel accepted then (a 202) ended the job cancelled
    # at a consumer's shutdown (9d4ee85) or by the reaper (4da5665) with its model registered all the same.
    # The run marks the job handing back in the compare-and-set that checks for a cancel; a cancel is a 409 after.
    backend = backend_of(app)
    job = client.post("/train", json=xor_request()).get_json()
    task = backend.huey.dequeue()
    backend.store.update(job["id"], status=RUNNING, started_at=time.time(), heartbeat_at=time.time(),
                         handing_back=True)
    refused = client.delete(f"/jobs/{job['id']}")
    assert refused.status_code == 409 and "too late to cancel" in refused.get_json()["detail"]
    assert backend.store.get(job["id"])["cancel_requested"] is False
    # Put back, so the next run finds the model its interrupted run may have registered (_registered_earlier).
    backend.huey._emit(huey_signals.SIGNAL_INTERRUPTED, task)
    assert client.get(f"/jobs/{job['id']}").get_json()["status"] == "queued" and backend.huey.pending_count() == 1
    assert backend.store.get(job["id"])["handing_back"] is False


def test_a_job_stopped_between_dequeue_and_claim_goes_back_to_the_queue(app, client):
    # SIGTERM after a consumer took the task but before it claimed the job: only running jobs were put
    # back, so this one stayed queued with no task, to be reaped as lost a heartbeat timeout later.
    backend = backend_of(app)
    job = client.post("/train", json=xor_request()).get_json()
    task = backend.huey.dequeue()
    backend.huey._emit(huey_signals.SIGNAL_INTERRUPTED, task)  # the stop came before run_training_job
    assert backend.huey.pending_count() == 1
    with consumer_thread(backend):
        assert finished(client, job["id"])["status"] == "succeeded"


def test_a_run_put_back_in_the_queue_and_claimed_again_stops_and_registers_nothing(app, client):
    # SIGTERM: the consumer puts its running job back in the queue (SIGNAL_INTERRUPTED) while its worker
    # thread still trains until the process exits. Another consumer claimed the job meanwhile, and the
    # old run took that claim for its own: it went on, registered the model, marked the job succeeded
    # while the new run trained, and the new run then registered the same model a second time.
    rng = np.random.default_rng(0)
    inputs = rng.random((4096, 2)).round(3).tolist()  # epochs of about a second: the claim comes mid-epoch
    architecture = [{"type": "Linear", "in_features": 2, "out_features": 1024}, {"type": "Tanh"},
                    {"type": "Linear", "in_features": 1024, "out_features": 1024}, {"type": "Tanh"},
                    {"type": "Linear", "in_features": 1024, "out_features": 1}]
    body = xor_request(architecture=architecture, data={"inputs": inputs, "targets": [[sum(r)] for r in inputs]},
                       optimizer={"type": "sgd", "alpha": 0.01}, epochs=2, save_as="once")
    backend = backend_of(app)
    job = client.post("/train", json=body).get_json()
    task = backend.huey.dequeue()
    first_run = threading.Thread(target=backend.huey.execute, args=(task,))  # as a consumer's worker thread
    first_run.start()
    wait_for(lambda: backend.store.get(job["id"])["status"] == RUNNING, 10, what="the first run's claim")
    backend.huey._emit(huey_signals.SIGNAL_INTERRUPTED, task)  # what the consumer's SIGTERM does
    with consumer_thread(backend):  # the next consumer claims it while the first run is still in its epoch
        wait_for(lambda: backend.store.get(job["id"])["status"] == RUNNING, 10, what="the second claim")
        first_run.join(30)
        assert backend.store.get(job["id"])["status"] == RUNNING  # the first run did not mark it succeeded
        done = finished(client, job["id"])
    assert done["status"] == "succeeded" and done["result"]["registered"] == {"name": "once", "version": 1}
    assert [r["epoch"] for r in done["history"]] == [1, 2]
    with app.app_context():
        from service.registry import get_registry

        assert get_registry().versions("once") == [1]


def test_a_rerun_finds_the_model_its_interrupted_run_registered(app, client):
    # A consumer stopped while registering: the put finished before the process exited, and the job,
    # put back in the queue, ran again and registered the same model as a second version.
    backend = backend_of(app)
    job = client.post("/train", json=xor_request(epochs=20, save_as="once")).get_json()
    task = backend.huey.dequeue()
    backend.huey.execute(task)  # the first run: trained and registered version 1
    assert backend.store.get(job["id"])["status"] == "succeeded"
    backend.store.update(job["id"], status="queued", started_at=None, heartbeat_at=None, attempt=None, result=None,
                         finished_at=None)  # as if put back in the queue before Huey could mark it succeeded
    with consumer_thread(backend):
        backend.huey.enqueue(task)
        done = finished(client, job["id"])
    assert done["status"] == "succeeded" and done["result"]["registered"] == {"name": "once", "version": 1}
    with app.app_context():
        from service.registry import get_registry

        assert get_registry().versions("once") == [1]


def test_registering_a_large_model_keeps_the_heartbeat(tmp_path):
    # The heartbeat ran during fit only: registering the trained model (about a second for this one
    # million parameters, minutes at the size limits) renewed none, so a job whose registration took
    # longer than the heartbeat timeout was reaped as lost, its model registered all the same.
    app = make_app(tmp_path, MINIGRAD_HEARTBEAT_INTERVAL=0.05)
    client = app.test_client()
    architecture = [{"type": "Linear", "in_features": 2, "out_features": 1024}, {"type": "Tanh"},
                    {"type": "Linear", "in_features": 1024, "out_features": 1024}, {"type": "Tanh"},
                    {"type": "Linear", "in_features": 1024, "out_features": 1}]
    body = xor_request(architecture=architecture, optimizer={"type": "sgd", "alpha": 0.01}, epochs=1, save_as="big")
    backend = backend_of(app)
    job = client.post("/train", json=body).get_json()
    run = threading.Thread(target=backend.huey.execute, args=(backend.huey.dequeue(),))
    run.start()
    beats_after_training = set()  # heartbeats seen once the epoch was recorded, while it registers
    while run.is_alive():
        record = backend.store.get(job["id"])
        if record["status"] == RUNNING and record["epoch"] == 1:
            beats_after_training.add(record["heartbeat_at"])
        time.sleep(0.01)
    run.join()
    done = client.get(f"/jobs/{job['id']}").get_json()
    assert done["status"] == "succeeded" and done["result"]["registered"] == {"name": "big", "version": 1}
    assert len(beats_after_training) >= 2


def test_a_save_as_whose_latest_version_is_broken_still_registers(app, client, consumer, tmp_path):
    # Looking for a version an interrupted run registered must not trip over a broken file placed by hand.
    register_xor(app)
    (tmp_path / "models" / "xor" / "2.json").write_text("{not json")
    done = client.post("/train?wait=20", json=xor_request(epochs=20, save_as="xor")).get_json()
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["registered"] == {"name": "xor", "version": 3}


def test_a_running_job_without_heartbeat_is_reported_lost_when_read(tmp_path):
    app = make_app(tmp_path, MINIGRAD_HEARTBEAT_TIMEOUT=5)
    client = app.test_client()
    backend = backend_of(app)
    job = client.post("/train", json=xor_request()).get_json()
    backend.store.update(job["id"], status=RUNNING, heartbeat_at=time.time() - 6, worker="gone:123")
    lost = client.get(f"/jobs/{job['id']}").get_json()
    assert lost["status"] == "lost" and "gone:123" in lost["error"]
    assert client.get("/jobs").get_json()["jobs"][0]["status"] == "lost"


@pytest.mark.parametrize("method, path, status, said", [
    ("DELETE", "/jobs/{id}", 409, "lost"),  # was a 202 promising a stop at the end of an epoch that never came
    ("GET", "/jobs/{id}/model", 409, "lost"),  # was a 409 saying the job is running
    ("POST", "/train", 202, None),  # was a 429: the dead job held the only active-jobs slot until a read
])
def test_a_job_whose_consumer_died_is_lost_to_every_request(tmp_path, method, path, status, said):
    app = make_app(tmp_path, MINIGRAD_HEARTBEAT_TIMEOUT=5, MINIGRAD_TRAIN_MAX_ACTIVE_JOBS=1)
    client = app.test_client()
    job = client.post("/train", json=xor_request()).get_json()
    backend_of(app).store.update(job["id"], status=RUNNING, heartbeat_at=time.time() - 6, worker="gone:123")
    response = client.open(path.format(id=job["id"]), method=method, json=xor_request() if method == "POST" else None)
    assert response.status_code == status
    assert said is None or response.get_json()["status_of_job"] == said
    assert client.get(f"/jobs/{job['id']}").get_json()["status"] == "lost"


# ---------------------------------------------------------------------------------------------- reading


def test_jobs_are_listed_newest_first_a_page_at_a_time(client):
    ids = [client.post("/train", json=xor_request(seed=i)).get_json()["id"] for i in range(5)]
    first = client.get("/jobs?per_page=2").get_json()
    assert first["total"] == 5 and [j["id"] for j in first["jobs"]] == ids[:-3:-1]
    assert "history" not in first["jobs"][0]
    third = client.get(first["next"]).get_json()
    third = client.get(third["next"]).get_json()
    assert [j["id"] for j in third["jobs"]] == ids[:1] and third["next"] is None


@pytest.mark.parametrize("method, path, status", [
    ("get", "/jobs/nope", 404),
    ("get", "/jobs/nope/model", 404),
    ("delete", "/jobs/nope", 404),
    ("get", "/jobs?per_page=0", 422),
    ("get", "/jobs?page=x", 422),
])
def test_reading_errors_are_problems(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json" and response.get_json()["status"] == status


def test_the_model_of_a_queued_job_is_a_conflict(client):
    job = client.post("/train", json=xor_request()).get_json()
    response = client.get(f"/jobs/{job['id']}/model")
    assert response.status_code == 409 and "queued" in response.get_json()["detail"]


# ---------------------------------------------------------------------------------------------- bad requests


def without(key):
    return {k: v for k, v in xor_request().items() if k != key}


BAD_REQUESTS = [
    # (body, the field the errors must name)
    (without("data"), ["data"]),
    (without("architecture"), ["model"]),
    (xor_request(model="xor"), ["model"]),
    (xor_request(architecture=[]), ["architecture"]),
    (xor_request(architecture=[{"type": "Conv2d"}]), ["architecture", "0", "type"]),
    (xor_request(architecture=[{"type": "Linear", "in_features": 2}]), ["architecture", "0", "out_features"]),
    (xor_request(architecture=[{"type": "Tanh", "in_features": 2}]), ["architecture", "0", "in_features"]),
    (xor_request(architecture=[{"type": "Linear", "in_features": 2, "out_features": 3},
                               {"type": "Linear", "in_features": 4, "out_features": 1}]),
     ["architecture", "1", "in_features"]),
    (xor_request(architecture=[{"type": "Tanh"}]), ["architecture"]),
    (xor_request(data={"inputs": [[0, 1, 2]], "targets": [[1]]}), ["data", "inputs"]),
    (xor_request(data={"inputs": [[0, 1], [1]], "targets": [[1], [0]]}), ["data", "inputs"]),
    (xor_request(data={"inputs": [[0, "a"]], "targets": [[1]]}), ["data", "inputs"]),
    (xor_request(data={"inputs": [[0, True]], "targets": [[1]]}), ["data", "inputs"]),
    (xor_request(data={"inputs": [], "targets": []}), ["data", "inputs"]),
    (xor_request(dtype="float32", data={"inputs": [[0, 1e39]], "targets": [[1]]}), ["data", "inputs"]),
    (xor_request(data={"inputs": [[0, 1]], "targets": [[1, 0]]}), ["data", "targets"]),
    (xor_request(data={"inputs": [[0, 1], [1, 1]], "targets": [[1]]}), ["data", "targets"]),
    (xor_request(data={"inputs": [[0, 1]], "targets": [[1]], "weights": [1]}), ["data", "weights"]),
    (xor_request(validation={"inputs": [[0, 1, 1]], "targets": [[1]]}), ["validation", "inputs"]),
    (xor_request(validation={"inputs": [[0, 1]], "targets": [[1]]}, validation_split=0.5), ["validation_split"]),
    (xor_request(validation_split=1.0), ["validation_split"]),
    (xor_request(data={"inputs": [[0, 1]], "targets": [[1]]}, validation_split=0.9), ["validation_split"]),
    # one row and a small split: the check rounded to 0 held out, the job held out 1 and failed with no rows left
    (xor_request(data={"inputs": [[0, 1]], "targets": [[1]]}, validation_split=0.001), ["validation_split"]),
    (xor_request(loss="hinge"), ["loss"]),
    (xor_request(loss="cross_entropy", data={"inputs": [[0, 1]], "targets": [3]}), ["data", "targets"]),
    # bce targets outside [0, 1] were accepted and trained to a negative, meaningless loss
    (xor_request(loss="bce", data={"inputs": [[0, 0], [1, 1]], "targets": [[1], [5]]}), ["data", "targets"]),
    (xor_request(loss="bce", data={"inputs": [[0, 1]], "targets": [-0.5]}), ["data", "targets"]),
    (xor_request(loss="bce", validation={"inputs": [[0, 1]], "targets": [[2]]}), ["validation", "targets"]),
    # bce on outputs that can leave [0, 1] was queued, and the job failed once BCELoss met one
    (xor_request(loss="bce", architecture=XOR_ARCHITECTURE[:3]), ["architecture", "2", "type"]),
    (xor_request(loss="bce", architecture=[*XOR_ARCHITECTURE[:3], {"type": "Relu"}]), ["architecture", "3", "type"]),
    (xor_request(optimizer={"type": "rmsprop"}), ["optimizer", "type"]),
    (xor_request(optimizer={"type": "sgd", "alpha": -1}), ["optimizer", "alpha"]),
    (xor_request(optimizer={"type": "adam", "momentum": 0.9}), ["optimizer", "momentum"]),
    (xor_request(epochs=0), ["epochs"]),
    (xor_request(epochs=2.5), ["epochs"]),
    (xor_request(batch_size=0), ["batch_size"]),
    (xor_request(seed=-1), ["seed"]),
    (xor_request(save_as="../etc"), ["save_as"]),
    (xor_request(save_as="a..b"), ["save_as"]),  # was accepted, trained, and refused only when registering
    (xor_request(dtype="float16"), ["dtype"]),
    (xor_request(version=2), ["version"]),
    (xor_request(learning_rate=0.1), ["learning_rate"]),
]


@pytest.mark.parametrize("body, path", BAD_REQUESTS)
def test_a_bad_request_is_a_422_naming_the_field(client, body, path):
    response = client.post("/train", json=body)
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert response.mimetype == "application/problem+json"
    errors = problem["errors"]["json"]
    for key in path:
        assert key in errors, (path, problem)
        errors = errors[key]
    assert client.get("/jobs").get_json()["total"] == 0  # nothing was queued


def test_bce_targets_outside_0_and_1_are_refused_saying_where(client):
    body = xor_request(loss="bce", data={"inputs": [[0, 0], [1, 1], [0, 1]], "targets": [[1], [0.5], [5]]})
    problem = client.post("/train", json=body).get_json()
    assert problem["detail"] == "data.targets: the bce loss needs targets between 0 and 1 (labels or probabilities); " \
                                "row 2 has 5"
    assert client.post("/train", json=xor_request(loss="bce", epochs=1)).status_code == 202  # 0/1 labels are fine


def test_bce_on_a_stored_model_that_does_not_end_in_probabilities_is_refused(client, tmp_path):
    minigrad.save(Sequential([Linear(2, 1)]), tmp_path / "models" / "linear.json")
    minigrad.save(Sequential([Linear(2, 1), Sigmoid()]), tmp_path / "models" / "logistic.json")
    body = xor_request(loss="bce", model="linear")
    del body["architecture"]
    problem = client.post("/train", json=body).get_json()
    assert problem["status"] == 422
    assert problem["errors"]["json"]["loss"] == ["the bce loss takes probabilities, but model 'linear' version 1 ends "
                                                 "with Linear, whose outputs can leave [0, 1]; end with Sigmoid (or "
                                                 "Softmax), or use the mse loss"]
    body["model"] = "logistic"
    assert client.post("/train", json=body).status_code == 202


@pytest.mark.parametrize("tail", [["Sigmoid", "Relu"], ["Softmax", "Tanh"], ["Relu", "Tanh"], ["Tanh", "Relu"]])
def test_bce_takes_every_architecture_whose_outputs_stay_in_0_and_1(client, tail):
    # Not only a Sigmoid or Softmax last: these end elsewhere, yet BCELoss never meets a value outside [0, 1]
    # (Relu of [0, 1], Tanh of what is not negative, Relu of [-1, 1]); they were refused.
    architecture = [*XOR_ARCHITECTURE[:3], *({"type": kind} for kind in tail)]
    model = Sequential([Linear(3, 1, rng=np.random.default_rng(0)), *(getattr(minigrad, kind)() for kind in tail)])
    outputs = model.predict(np.random.default_rng(0).normal(scale=50, size=(1000, 3)))
    assert outputs.min() >= 0 and outputs.max() <= 1
    assert client.post("/train", json=xor_request(loss="bce", architecture=architecture, epochs=1)).status_code == 202


def test_a_save_as_whose_place_a_hand_placed_file_holds_is_a_409_before_training(app, client, tmp_path):
    # save_as "taken.json" beside a hand-placed taken.json (model "taken") was queued, trained, then failed.
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "taken.json").write_text("{}")
    response = client.post("/train", json=xor_request(save_as="taken.json"))
    assert response.status_code == 409, response.get_json()
    assert "hand-placed file of model 'taken'" in response.get_json()["detail"]
    assert client.get("/jobs").get_json()["total"] == 0


def test_an_unknown_model_is_a_404(client):
    body = {k: v for k, v in xor_request(model="nope").items() if k != "architecture"}
    response = client.post("/train", json=body)
    assert response.status_code == 404 and "nope" in response.get_json()["detail"]


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post("/train", data="{", content_type="application/json")
    assert response.status_code == 400


LIMITS = [
    # (setting, value, request, field, words in the message)
    ("MINIGRAD_TRAIN_MAX_SAMPLES", 3, xor_request(), "data", "at most 3 samples"),
    ("MINIGRAD_TRAIN_MAX_FEATURES", 1, xor_request(), "data", "at most 1 features"),
    ("MINIGRAD_TRAIN_MAX_VALUES", 7, xor_request(), "data", "at most 7 values"),
    ("MINIGRAD_TRAIN_MAX_EPOCHS", 99, xor_request(epochs=100), "epochs", "at most 99 epochs"),
    ("MINIGRAD_TRAIN_MAX_SAMPLE_EPOCHS", 399, xor_request(epochs=100), "epochs", "at most 399 sample-epochs"),
    ("MINIGRAD_TRAIN_MAX_LAYER_SIZE", 2, xor_request(), "architecture", "at most 2"),
    ("MINIGRAD_TRAIN_MAX_LAYERS", 3, xor_request(), "architecture", "at most 3 layers"),
    # The validation rows travel in the same queue message: they were held to the samples limit only (its
    # message naming no setting), so 4 rows of data came with any number of validation values.
    ("MINIGRAD_TRAIN_MAX_SAMPLES", 4, xor_request(validation={"inputs": XOR_INPUTS * 2, "targets": XOR_TARGETS * 2}),
     "validation", "at most 4 samples"),
    ("MINIGRAD_TRAIN_MAX_VALUES", 8, xor_request(validation={"inputs": XOR_INPUTS + [[0, 0]], "targets": XOR_TARGETS
                                                             + [[0]]}), "validation", "at most 8 values"),
    # Each epoch runs the validation rows too: 100 epochs of 4 + 4 rows are 800 sample-epochs, not 400.
    ("MINIGRAD_TRAIN_MAX_SAMPLE_EPOCHS", 799, xor_request(epochs=100, validation={"inputs": XOR_INPUTS,
                                                                                  "targets": XOR_TARGETS}),
     "epochs", "at most 799 sample-epochs"),
]


@pytest.mark.parametrize("setting, value, body, field, words", LIMITS)
def test_limits_are_422s_that_name_the_field_and_the_setting(tmp_path, setting, value, body, field, words):
    client = make_app(tmp_path, **{setting: value}).test_client()
    response = client.post("/train", json=body)
    assert response.status_code == 422
    problem = response.get_json()
    assert field in problem["errors"]["json"] and words in problem["detail"] and setting in problem["detail"]


@pytest.mark.parametrize("setting, value, words", [
    ("MINIGRAD_TRAIN_MAX_LAYERS", 3, "at most 3 layers in model 'xor' version 1"),
    ("MINIGRAD_TRAIN_MAX_LAYER_SIZE", 2, "at most 2 features per layer in model 'xor' version 1"),
])
def test_a_registered_model_to_fine_tune_is_held_to_the_architecture_limits(tmp_path, setting, value, words):
    # Only an architecture was checked: fine-tuning a registered model of any depth and width was queued.
    app = make_app(tmp_path, **{setting: value})
    register_xor(app)  # 4 layers, 3 features at the widest
    body = {"model": "xor", "data": {"inputs": XOR_INPUTS, "targets": XOR_TARGETS}}
    response = app.test_client().post("/train", json=body)
    assert response.status_code == 422
    problem = response.get_json()
    assert "model" in problem["errors"]["json"] and words in problem["detail"] and setting in problem["detail"]


def test_too_many_active_jobs_is_a_429(tmp_path):
    client = make_app(tmp_path, MINIGRAD_TRAIN_MAX_ACTIVE_JOBS=2).test_client()
    assert [client.post("/train", json=xor_request()).status_code for _ in range(2)] == [202, 202]
    response = client.post("/train", json=xor_request())
    assert response.status_code == 429 and "MINIGRAD_TRAIN_MAX_ACTIVE_JOBS" in response.get_json()["detail"]
    assert response.headers["Retry-After"]
    client.delete(f"/jobs/{client.get('/jobs').get_json()['jobs'][0]['id']}")  # a cancelled job frees a slot
    assert client.post("/train", json=xor_request()).status_code == 202


def test_an_unreachable_queue_is_a_503_to_retry(tmp_path):
    client = make_app(tmp_path, MINIGRAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    for response in (client.post("/train", json=xor_request()), client.get("/jobs")):
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "cannot be reached" in response.get_json()["detail"]


def test_a_data_directory_that_cannot_be_created_is_a_503_naming_it_not_a_500(tmp_path):
    # A MINIGRAD_DATA_DIR under a file (or where the service's user may not write): the mkdir's OSError was a
    # 500 on every job request, the dashboard's index (whose models must show with the queue down) and /metrics,
    # and a traceback at the consumer's start.
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "var"
    client = make_app(tmp_path, MINIGRAD_DATA_DIR=str(data_dir)).test_client()
    for method, path in [("POST", "/train"), ("GET", "/jobs"), ("GET", "/jobs/abc"), ("DELETE", "/jobs/abc"),
                         ("GET", "/ui/jobs/abc")]:
        response = client.open(path, method=method, json=xor_request() if method == "POST" else None)
        assert response.status_code == 503, (method, path)
        assert "MINIGRAD_DATA_DIR" in response.get_json()["detail"] and response.headers["Retry-After"]
    index = client.get("/")
    assert index.status_code == 200 and "MINIGRAD_DATA_DIR" in index.get_data(as_text=True)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "minigrad_job_store_up 0.0" in metrics.get_data(as_text=True)
    worker = subprocess.run([sys.executable, "-m", "service.worker"], env=job_env(tmp_path, MINIGRAD_DATA_DIR=data_dir),
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and "Traceback" not in worker.stderr
    assert worker.stderr.strip().startswith("minigrad-worker: the job queue cannot be opened: MINIGRAD_DATA_DIR")


def test_a_job_whose_task_cannot_be_queued_leaves_no_record(app, client):
    # The record was written, then the queue refused the task: the client got a 503 to retry, yet a
    # queued job nothing would run stayed in GET /jobs (and held an active-jobs slot) until reaped as lost.
    backend = backend_of(app)
    db = sqlite3.connect(backend.settings.sqlite_path)
    db.execute("create trigger refuse_tasks before insert on task begin insert into no_such_table values (1); end")
    db.commit()
    response = client.post("/train", json=xor_request())
    assert response.status_code == 503 and "no_such_table" in response.get_json()["detail"]
    assert client.get("/jobs").get_json()["total"] == 0 and backend.store.count_active() == 0


@pytest.mark.parametrize("setting, value", [
    ("MINIGRAD_HEARTBEAT_TIMEOUT", "abc"),  # was a 500 on every job request, the service running
    ("MINIGRAD_HEARTBEAT_TIMEOUT", "-5"),  # every running job reaped as lost at once
    ("MINIGRAD_HEARTBEAT_TIMEOUT", "nan"),  # no job ever reaped: a killed consumer's job running for ever
    ("MINIGRAD_HEARTBEAT_TIMEOUT", "1"),  # not longer than the 2 s heartbeat interval
    ("MINIGRAD_POLL_INTERVAL", "0"),
    ("MINIGRAD_JOB_RETENTION_SECONDS", "-1"),
    ("MINIGRAD_TRAIN_MAX_EPOCHS", "0"),
    ("MINIGRAD_MAX_WAITING_REQUESTS", "-1"),
])
def test_a_bad_job_setting_stops_the_service_and_the_worker_at_start_naming_it(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=f"{setting}: expected .*got '{value}'"):
        make_app(tmp_path, **{setting: value})
    worker = subprocess.run([sys.executable, "-m", "service.worker"], env=job_env(tmp_path, **{setting: value}),
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and worker.stderr.strip().startswith(f"minigrad-worker: {setting}: expected")
    assert "Traceback" not in worker.stderr


@pytest.mark.parametrize("url, secret", [
    ("localhost:6379", "localhost"),  # no scheme, a usual slip
    ("redis://:s3cret@127.0.0.1:notaport/0", "notaport"),
    # urllib reads the netloc up to the first / ? or #, so the "port" it could not read, and quoted in its
    # message, was the start of the password (21aaf63 echoed the parser's message)
    ("redis://:s3c/ret@127.0.0.1:6379/0", "s3c"),
    ("redis://:s3c?ret@127.0.0.1:6379/0", "s3c"),
])
def test_a_malformed_redis_url_stops_the_service_and_the_worker_at_start(tmp_path, url, secret):
    # It was read as any string: every job request was then a 500 (and the dashboard's index), the worker a
    # traceback. No part of the URL is echoed, as it may hold a password.
    with pytest.raises(ConfigError, match="MINIGRAD_REDIS_URL: expected a Redis URL.*port that is a number") as refused:
        make_app(tmp_path, MINIGRAD_REDIS_URL=url)
    assert secret not in str(refused.value)
    worker = subprocess.run([sys.executable, "-m", "service.worker"], env=job_env(tmp_path, MINIGRAD_REDIS_URL=url),
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and worker.stderr.strip().startswith("minigrad-worker: MINIGRAD_REDIS_URL: expected")
    assert "Traceback" not in worker.stderr and secret not in worker.stderr


def test_submitting_and_cancelling_need_the_token_when_one_is_set(tmp_path):
    client = make_app(tmp_path, MINIGRAD_API_TOKEN=TOKEN).test_client()
    assert client.post("/train", json=xor_request()).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    job = client.post("/train", json=xor_request(), headers=auth).get_json()
    assert client.get(f"/jobs/{job['id']}").status_code == 200  # reading stays open
    assert client.delete(f"/jobs/{job['id']}").status_code == 401
    assert client.delete(f"/jobs/{job['id']}", headers=auth).status_code == 200


def answer_after_a_change_during_the_wait(app, wait, change):
    """The answer to ``POST /train?wait=`` when ``change(store, job_id)`` happens while it waits."""
    backend = backend_of(app)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(app.test_client().post(f"/train?wait={wait}",
                                                                                      json=xor_request())))
    waiting.start()
    wait_for(lambda: backend.waiting_requests.count == 1, 5, what="the request to wait")
    (job,) = backend.store.page(0, 1)[0]
    change(backend.store, job["id"])
    waiting.join()
    (response,) = answers
    return response


def test_a_job_purged_during_a_wait_is_a_404_not_a_500(tmp_path):
    # With MINIGRAD_JOB_RETENTION_SECONDS=0 a consumer's reaper purges a job the moment it finished: a
    # POST /train?wait= polling it then read None and answered a 500 (TypeError).
    app = make_app(tmp_path, MINIGRAD_JOB_RETENTION_SECONDS=0)
    # store.delete is what purge_expired_jobs does to it
    response = answer_after_a_change_during_the_wait(app, 10, lambda store, job_id: store.delete(job_id))
    assert response.status_code == 404 and response.get_json()["type"] == "urn:minigrad:problem:job-not-found"


def test_a_wait_that_outlived_the_jobs_consumer_answers_lost_not_running(tmp_path):
    # With MINIGRAD_MAX_WAIT_SECONDS above the heartbeat timeout, a consumer killed during the wait left the
    # answer at 202 "running" while GET /jobs/<id> said lost.
    app = make_app(tmp_path, MINIGRAD_HEARTBEAT_TIMEOUT=5)

    def consumer_dies(store, job_id):
        store.update(job_id, status=RUNNING, heartbeat_at=time.time() - 6, worker="gone:123")

    response = answer_after_a_change_during_the_wait(app, 0.5, consumer_dies)
    assert response.status_code == 200 and response.get_json()["status"] == "lost"


def test_waits_beyond_the_per_worker_limit_answer_at_once(tmp_path):
    # No consumer runs, so every job stays queued and a waiting request waits its whole ?wait=.
    app = make_app(tmp_path, MINIGRAD_MAX_WAITING_REQUESTS=1)
    answers = {}

    def submit(name, wait):
        started = time.monotonic()
        response = app.test_client().post(f"/train?wait={wait}", json=xor_request())
        answers[name] = (response.status_code, response.get_json()["status"], time.monotonic() - started)

    first = threading.Thread(target=submit, args=("first", 3))
    first.start()
    wait_for(lambda: backend_of(app).waiting_requests.count == 1, 5, what="the first request to wait")
    submit("second", 3)  # the one place is taken: answered at once, the job still queued
    first.join()
    assert answers["first"][:2] == (202, "queued") and answers["first"][2] >= 3
    assert answers["second"][:2] == (202, "queued") and answers["second"][2] < 1.5
    submit("third", 1)  # the place is free again once the first answered
    assert answers["third"][:2] == (202, "queued") and answers["third"][2] >= 1
