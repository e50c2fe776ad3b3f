"""The job store contract, run against both backends (SQLite file, real redis-server)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import replace

import pytest
from jobs_support import redis_server, wait_for

from service.jobs.backend import JobBackend
from service.jobs.reaper import ReaperThread, purge_expired_jobs, reap_orphaned_jobs, reap_stale_jobs
from service.jobs.settings import JobSettings
from service.jobs.store import (
    CANCELLED,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    RedisJobStore,
    SqliteJobStore,
    new_record,
)


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


def add_two_of_each_status(store) -> dict[str, list[str]]:
    """Two jobs of every status, created in turns (so each status's jobs are spread over the list);
    returns each status's ids, newest first."""
    ids = {status: [] for status in STATUSES}
    for turn in range(2):
        for n, status in enumerate(STATUSES):
            job_id = f"{status}-{turn}"
            add(store, job_id, float(10 * turn + n), status=status)
            ids[status].insert(0, job_id)
    return ids


@pytest.mark.parametrize("status", STATUSES)
def test_a_page_of_one_status_holds_only_its_jobs_newest_first(store, status):
    ids = add_two_of_each_status(store)
    records, total = store.page(0, 10, [status])
    assert [r["id"] for r in records] == ids[status] and total == 2
    assert {r["status"] for r in records} == {status}


def test_a_page_of_several_statuses_is_their_jobs_newest_first_a_page_at_a_time(store):
    add_two_of_each_status(store)
    wanted = ["lost", "failed", "queued"]  # in no particular order
    expected = [r["id"] for r in store.page(0, 100)[0] if r["status"] in wanted]
    assert len(expected) == 6
    pages = [store.page(offset, 4, wanted) for offset in (0, 4, 8)]
    assert [r["id"] for records, _ in pages for r in records] == expected
    assert [total for _, total in pages] == [6, 6, 6] and pages[2][0] == []
    assert store.page(0, 10, [])[0] == [] and store.page(0, 10, [])[1] == 0
    assert store.page(0, 100)[1] == 12


def test_a_job_is_listed_under_its_current_status_only(store):
    add(store, "a", 1.0, status=RUNNING, heartbeat_at=1.0)
    add(store, "b", 2.0)
    assert reap_stale_jobs(store, timeout=30, now=100.0) == ["a"]  # running -> lost
    assert [r["id"] for r in store.page(0, 10, [LOST])[0]] == ["a"]
    assert store.page(0, 10, [RUNNING]) == ([], 0)
    store.update("b", status=FAILED, finished_at=3.0)
    assert store.page(0, 10, [QUEUED]) == ([], 0)
    store.delete("a")
    assert store.page(0, 10, [LOST]) == ([], 0) and store.page(0, 10, [FAILED])[1] == 1


def test_count_by_status_counts_each_status(store):
    add_two_of_each_status(store)
    store.delete("lost-0")
    assert store.count_by_status() == {**{status: 2 for status in STATUSES}, LOST: 1}


def test_redis_records_written_before_the_status_index_are_indexed_on_first_use(tmp_path):
    with redis_server(tmp_path) as url:
        settings = JobSettings(data_dir=tmp_path / "var", model_dir=tmp_path / "models", redis_url=url)
        store = JobBackend(settings).store
        add_two_of_each_status(store)
        store.conn.delete(store.status_indexed, *store.by_status.values())  # the layout before the index
        upgraded = RedisJobStore(store.conn, settings.queue_name)
        assert [r["id"] for r in upgraded.page(0, 10, [FAILED])[0]] == ["failed-1", "failed-0"]
        assert upgraded.count_by_status() == {status: 2 for status in STATUSES}
        assert upgraded.queued_ids() == ["queued-0", "queued-1"]
        assert store.conn.exists(store.status_indexed)


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


def test_a_stale_job_whose_cancel_was_requested_is_reaped_as_cancelled(store):
    # Its consumer died before the next epoch looked at the cancel: it was called lost, "Submit the job again".
    add(store, "stopping", 1.0, status=RUNNING, heartbeat_at=100.0, worker="host:1", cancel_requested=True)
    assert reap_stale_jobs(store, timeout=30, now=200.0) == ["stopping"]
    cancelled = store.get("stopping")
    assert cancelled["status"] == CANCELLED and cancelled["finished_at"] == 200.0 and cancelled["error"] is None


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


def test_queued_ids_are_the_jobs_waiting_for_a_consumer(store):
    add(store, "waiting", 1.0)
    add(store, "running", 2.0, status=RUNNING, heartbeat_at=2.0)
    add(store, "done", 3.0, status=SUCCEEDED, finished_at=4.0)
    assert store.queued_ids() == ["waiting"]


def test_a_job_whose_task_was_taken_but_never_started_is_reaped_as_lost(backend):
    # A consumer takes the task from the queue (Huey's own dequeue) and dies before claiming the job.
    taken = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    assert backend.huey.dequeue().id == taken
    claimed = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    assert backend.huey.dequeue().id == claimed
    waiting = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]  # still in the queue: never reaped
    timeout, start = 30.0, time.time()

    assert reap_orphaned_jobs(backend, timeout, now=start) == []  # first look: noted, not judged
    backend.store.update(claimed, expect={QUEUED}, status=RUNNING, heartbeat_at=start)  # its consumer claims it
    assert reap_orphaned_jobs(backend, timeout, now=start + timeout - 1) == []
    assert reap_orphaned_jobs(backend, timeout, now=start + timeout) == [taken]
    lost = backend.store.get(taken)
    assert lost["status"] == LOST and "no consumer started it" in lost["error"] and lost["finished_at"] > start
    assert backend.store.get(waiting)["status"] == QUEUED and backend.store.get(claimed)["status"] == RUNNING
    assert reap_orphaned_jobs(backend, timeout, now=start + 10 * timeout) == []
    assert backend.unqueued_since == {}


def test_a_job_missing_from_the_queue_for_a_moment_is_not_reaped(backend):
    # Submitting records the job before enqueueing its task, and a shutdown puts a task back the same
    # way: a look in between sees a queued job with no task, which must not count on its own.
    job = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    task = backend.huey.dequeue()
    start = time.time()
    assert reap_orphaned_jobs(backend, 30.0, now=start) == []
    backend.huey.enqueue(task)  # back in the queue
    assert reap_orphaned_jobs(backend, 30.0, now=start + 31) == []
    assert backend.store.get(job)["status"] == QUEUED and backend.unqueued_since == {}


def test_queued_jobs_are_not_judged_while_a_task_cannot_be_read_back(backend):
    # Huey skips a task it cannot unpickle (after a code change, say): its job is unknown, not missing.
    first = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    second = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    backend.huey.dequeue()
    backend.huey.dequeue()
    backend.huey.storage.enqueue(b"not a pickled task")
    start = time.time()
    for later in (0, 31, 62):
        assert reap_orphaned_jobs(backend, 30.0, now=start + later) == []
    assert {backend.store.get(job)["status"] for job in (first, second)} == {QUEUED}


def test_a_queue_lists_and_reaps_only_its_own_jobs(backend):
    # SQLite: every MINIGRAD_QUEUE_NAME shares the one file, and the job table was not told apart by queue: a
    # consumer of one queue listed the other's jobs and, finding their tasks missing from its own queue,
    # reaped the other's queued jobs as lost (Redis keeps each queue's keys apart).
    other = JobBackend(replace(backend.settings, queue_name="other"))
    mine = backend.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    theirs = other.submit({"epochs": 1}, {"spec": {}}, 1)["id"]
    assert backend.store.page(0, 10) == ([backend.store.get(mine)], 1) and backend.store.get(theirs) is None
    assert backend.store.queued_ids() == [mine] and backend.store.count_by_status() == {QUEUED: 1}
    start = time.time()
    for later in (0, 31):
        assert reap_orphaned_jobs(backend, 30.0, now=start + later) == []
    assert other.store.get(theirs)["status"] == QUEUED


def test_the_jobs_of_an_earlier_versions_file_are_the_default_queues(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.execute(SqliteJobStore._ddl[0])  # the table as it was, without a queue column
    record = new_record("old", {"epochs": 1}, 1, now=1.0)
    old.execute("insert into minigrad_job (id, created_at, status, record) values (?, ?, ?, ?)",
                ("old", 1.0, QUEUED, json.dumps(record)))
    old.commit()
    old.close()
    assert SqliteJobStore(path).get("old") == record and SqliteJobStore(path, "other").get("old") is None


def test_every_sqlite_query_of_a_queue_searches_an_index_by_queue(tmp_path):
    # The queues share the file: a query whose index does not lead with the queue (or a table scan) reads the
    # rows of every queue; fb95e1a's queries kept the indexes of one queue, and a page scanned them all.
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", "mine")
    statements = []
    store._connection().set_trace_callback(statements.append)
    store.page(0, 10), store.page(0, 10, [LOST]), store.page(0, 10, [FAILED, LOST])
    store.count_active(), store.count_by_status(), store.queued_ids()
    store.running_with_heartbeat_before(1.0), store.finished_before(1.0)
    selects = [s for s in statements if s.startswith("select") and "from minigrad_job " in s]
    assert len(selects) == 11  # the three pages and their counts, and one query each
    for select in selects:
        plan = [row[3] for row in store._connection().execute(f"explain query plan {select}")]
        assert plan[0].startswith("SEARCH minigrad_job USING ") and "(queue=?" in plan[0], (select, plan)
        # A page of some statuses reads their jobs only (it was a walk of the queue's every job with two or more).
        assert " status in (" not in select or "(queue=? AND status=?)" in plan[0], (select, plan)
