"""The job store contract, run against both backends (SQLite file, real redis-server)."""

from __future__ import annotations

import threading
import time

import pytest
from jobs_support import redis_server, wait_for

from service.jobs.backend import JobBackend
from service.jobs.reaper import ReaperThread, purge_expired_jobs, reap_stale_jobs
from service.jobs.settings import JobSettings
from service.jobs.store import CANCELLED, LOST, QUEUED, RUNNING, SUCCEEDED, new_record


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        yield JobBackend(JobSettings(data_dir=tmp_path / "var", model_dir=tmp_path / "models"))
    else:
        with redis_server(tmp_path) as url:
            yield JobBackend(JobSettings(data_dir=tmp_path / "var", model_dir=tmp_path / "models", redis_url=url))


@pytest.fixture
def store(backend):
    return backend.store


def add(store, job_id, created_at, status=QUEUED, **fields):
    assert store.create(new_record(job_id, {"epochs": 3}, 3, now=created_at), max_active=100)
    if status != QUEUED or fields:
        store.update(job_id, status=status, **fields)


def test_a_created_record_reads_back(store):
    add(store, "a", 100.0)
    record = store.get("a")
    assert record["status"] == QUEUED and record["created_at"] == 100.0 and record["request"] == {"epochs": 3}
    assert store.get("missing") is None


def test_update_is_a_compare_and_set_on_status(store):
    add(store, "a", 1.0)
    assert store.update("a", expect={RUNNING}, status=SUCCEEDED) is None
    assert store.get("a")["status"] == QUEUED
    assert store.update("a", expect={QUEUED}, status=RUNNING, heartbeat_at=5.0)["status"] == RUNNING
    assert store.update("a", expect=lambda r: r["heartbeat_at"] == 4.0, status=LOST) is None
    assert store.update("a", expect=lambda r: r["heartbeat_at"] == 5.0, status=LOST)["status"] == LOST
    assert store.update("missing", status=RUNNING) is None


def test_concurrent_claims_let_exactly_one_win(store):
    add(store, "a", 1.0)
    wins = []

    def claim(worker):
        if store.update("a", expect={QUEUED}, status=RUNNING, worker=worker) is not None:
            wins.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.get("a")["worker"] == wins[0]


def test_create_refuses_beyond_the_active_limit(store):
    for i in range(3):
        assert store.create(new_record(f"j{i}", {}, 1, now=float(i)), max_active=3)
    assert not store.create(new_record("j3", {}, 1, now=3.0), max_active=3)
    assert store.count_active() == 3
    store.update("j0", status=CANCELLED, finished_at=4.0)  # a finished job frees its slot
    assert store.create(new_record("j3", {}, 1, now=5.0), max_active=3)
    assert store.get("j3") is not None


def test_pages_are_newest_first(store):
    for i in range(5):
        add(store, f"j{i}", float(i))
    first, total = store.page(0, 2)
    second, _ = store.page(2, 2)
    last, _ = store.page(4, 2)
    assert total == 5
    assert [r["id"] for r in first + second + last] == ["j4", "j3", "j2", "j1", "j0"]


def test_history_appends_in_order_and_clears(store):
    add(store, "a", 1.0)
    store.append_history("a", [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
    store.append_history("a", [{"epoch": 3, "loss": 0.125}])
    assert [h["loss"] for h in store.history("a")] == [0.5, 0.25, 0.125]
    store.clear_history("a")
    assert store.history("a") == []


def test_reaper_marks_only_stale_running_jobs_lost(store):
    add(store, "stale", 1.0, status=RUNNING, heartbeat_at=100.0, worker="host:1")
    add(store, "fresh", 2.0, status=RUNNING, heartbeat_at=195.0, worker="host:2")
    add(store, "queued", 3.0)
    assert reap_stale_jobs(store, timeout=30, now=200.0) == ["stale"]
    lost = store.get("stale")
    assert lost["status"] == LOST and lost["finished_at"] == 200.0
    assert "host:1" in lost["error"] and "100.0 s" in lost["error"] and "at most once" in lost["error"]
    assert store.get("fresh")["status"] == RUNNING and store.get("queued")["status"] == QUEUED
    assert reap_stale_jobs(store, timeout=30, now=200.0) == []  # already lost: nothing to do twice


def test_retention_deletes_old_finished_jobs_with_their_model(backend):
    store = backend.store
    add(store, "old", 1.0, status=SUCCEEDED, finished_at=10.0)
    add(store, "recent", 2.0, status=SUCCEEDED, finished_at=1000.0)
    add(store, "running", 3.0, status=RUNNING, heartbeat_at=5.0)
    store.append_history("old", [{"epoch": 1, "loss": 1.0}])
    backend.huey.put_result("old", {"layers": []})
    backend.huey.put_result("recent", {"layers": []})
    retention = backend.settings.retention_seconds
    assert purge_expired_jobs(backend, now=10.0 + retention + 1) == ["old"]
    assert store.get("old") is None and store.history("old") == []
    assert backend.trained_document("old") is None
    assert store.get("recent") is not None and backend.trained_document("recent") == {"layers": []}
    assert store.get("running") is not None


def test_the_consumers_reaper_thread_reaps_with_nobody_reading(backend):
    add(backend.store, "stale", 1.0, status=RUNNING, heartbeat_at=time.time() - 100, worker="host:1")
    reaper = ReaperThread(backend, interval=0.05)
    reaper.start()
    try:
        wait_for(lambda: backend.store.get("stale")["status"] == LOST, 10, what="the reaper thread")
    finally:
        reaper.stopped.set()
        reaper.join()
