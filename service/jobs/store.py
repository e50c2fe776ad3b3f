"""Job records, kept in the same backend as the queue so every web worker and consumer sees the same jobs.

A record is a flat JSON object (``id``, ``status``, ``created_at``, ``progress``...). Every change goes
through ``update(job_id, expect=..., **fields)``, a compare-and-set on ``status`` done inside one
backend transaction, so a cancel, a finishing task and the reaper can race without losing a write.
The per-epoch history is kept apart (append-only) so a long run does not rewrite it every epoch.

``SqliteJobStore`` adds two tables to the SqliteHuey file; ``RedisJobStore`` uses keys beside
RedisHuey's, through the same connection pool. Both list a page of the records with a given status
from an index, without reading the others.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager

DEFAULT_QUEUE = "minigrad"  # MINIGRAD_QUEUE_NAME's default
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST = "queued", "running", "succeeded", "failed", "cancelled", "lost"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST)
ACTIVE = frozenset({QUEUED, RUNNING})
FINISHED = frozenset(STATUSES) - ACTIVE


class JobStore(ABC):
    """The operations the API, the task and the reaper need; both backends implement exactly these."""

    @abstractmethod
    def create(self, record: dict, max_active: int) -> bool:
        """Insert a new ``queued`` record unless ``max_active`` jobs are already queued or running."""

    @abstractmethod
    def get(self, job_id: str) -> dict | None: ...

    @abstractmethod
    def update(self, job_id: str, expect=None, **changes) -> dict | None:
        """Merge ``changes`` into the record if it matches ``expect``: a set of statuses, a predicate
        on the record, or None for any.

        Returns the updated record, or None when the job does not exist or its status did not match.
        """

    @abstractmethod
    def page(self, offset: int, limit: int, statuses=None) -> tuple[list[dict], int]:
        """Records newest first, and how many there are; with ``statuses`` (a collection of them), only
        the records with one of those."""

    @abstractmethod
    def count_active(self) -> int: ...

    @abstractmethod
    def count_by_status(self) -> dict[str, int]:
        """How many records each status has now (statuses without any may be missing)."""

    @abstractmethod
    def running_with_heartbeat_before(self, cutoff: float) -> list[str]: ...

    @abstractmethod
    def finished_before(self, cutoff: float) -> list[str]: ...

    @abstractmethod
    def queued_ids(self) -> list[str]:
        """The ids of the jobs waiting for a consumer (status ``queued``)."""

    @abstractmethod
    def append_history(self, job_id: str, records: list[dict]) -> None: ...

    @abstractmethod
    def history(self, job_id: str) -> list[dict]: ...

    @abstractmethod
    def clear_history(self, job_id: str) -> None:
        """Forget the epochs of an earlier attempt (a job put back in the queue starts over)."""

    @abstractmethod
    def delete(self, job_id: str) -> None: ...


def _merge(record: dict | None, expect, changes: dict) -> dict | None:
    """``expect``: None (any record), a collection of statuses, or a predicate on the current record."""
    if record is None:
        return None
    if expect is not None and not (expect(record) if callable(expect) else record["status"] in expect):
        return None
    return {**record, **changes}


class SqliteJobStore(JobStore):
    _ddl = (
        "create table if not exists minigrad_job ("
        " id text primary key, created_at real not null, status text not null,"
        " heartbeat_at real, finished_at real, record text not null)",
        "create table if not exists minigrad_job_epoch ("
        " job_id text not null, epoch integer not null, record text not null, primary key (job_id, epoch))",
    )
    # Every query names its queue first, so each index leads with it: an index without it made a page, a count
    # or the reaper of one queue read the rows of every queue sharing the file. Created once the column exists.
    _indexes = (
        "create index if not exists minigrad_job_queue_created on minigrad_job (queue, created_at)",
        "create index if not exists minigrad_job_queue_status on minigrad_job (queue, status, heartbeat_at)",
        "create index if not exists minigrad_job_queue_status_created on minigrad_job (queue, status, created_at)",
        "create index if not exists minigrad_job_queue_finished on minigrad_job (queue, finished_at)",
    )
    # An earlier version's indexes, which no query of this one uses: dropped, so no write keeps them up.
    _earlier_indexes = ("minigrad_job_created", "minigrad_job_status", "minigrad_job_status_created")

    def __init__(self, filename, queue: str = DEFAULT_QUEUE):
        self.filename = str(filename)
        # The jobs of this queue only: every MINIGRAD_QUEUE_NAME shares the one file, as Huey's tasks do,
        # and a consumer of one queue must neither list nor reap (as orphans) the jobs of another.
        self.queue = queue
        # One connection per thread and process: sqlite3 connections must not cross a fork.
        self._local = threading.local()
        with self._transaction() as db:
            for statement in self._ddl:
                db.execute(statement)
            if "queue" not in {column[1] for column in db.execute("pragma table_info(minigrad_job)")}:
                # A file of an earlier version, whose jobs were all listed together: they go to the default queue.
                db.execute(f"alter table minigrad_job add column queue text not null default '{DEFAULT_QUEUE}'")
            for statement in self._indexes:
                db.execute(statement)
            for name in self._earlier_indexes:
                db.execute(f"drop index if exists {name}")

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.filename, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("pragma journal_mode=wal")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _transaction(self):
        # "begin immediate" takes the write lock up front, so read-check-write is atomic across processes.
        db = self._connection()
        db.execute("begin immediate")
        try:
            yield db
        except BaseException:
            db.execute("rollback")
            raise
        db.execute("commit")

    @staticmethod
    def _row(record: dict) -> tuple:
        return (
            record["created_at"],
            record["status"],
            record.get("heartbeat_at"),
            record.get("finished_at"),
            json.dumps(record),
            record["id"],
        )

    def create(self, record, max_active):
        with self._transaction() as db:
            if self._count_active(db) >= max_active:
                return False
            db.execute(
                "insert into minigrad_job (created_at, status, heartbeat_at, finished_at, record, id, queue)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                (*self._row(record), self.queue),
            )
        return True

    def get(self, job_id):
        return self._stored(self._connection(), job_id)

    def _stored(self, db, job_id) -> dict | None:
        """The record of ``job_id`` in this queue, or None."""
        row = db.execute("select record from minigrad_job where id = ? and queue = ?", (job_id, self.queue)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, job_id, expect=None, **changes):
        with self._transaction() as db:
            record = _merge(self._stored(db, job_id), expect, changes)
            if record is not None:
                db.execute(
                    "update minigrad_job set created_at = ?, status = ?, heartbeat_at = ?, finished_at = ?,"
                    " record = ? where id = ?",
                    self._row(record),
                )
        return record

    def page(self, offset, limit, statuses=None):
        where, chosen = " where queue = ?", (self.queue,)
        if statuses is not None:
            chosen += tuple(statuses)
            # placeholders only: values are bound. The index is named as, with several statuses, SQLite otherwise
            # walks the queue's every job newest first to spare a sort, where the sort is of the matching jobs only.
            where = (" indexed by minigrad_job_queue_status_created" + where
                     + f" and status in ({', '.join('?' * len(statuses))})")
        db = self._connection()
        rows = db.execute(
            f"select record from minigrad_job{where} order by created_at desc, id desc limit ? offset ?",
            (*chosen, limit, offset),
        ).fetchall()
        (total,) = db.execute(f"select count(*) from minigrad_job{where}", chosen).fetchone()
        return [json.loads(r) for (r,) in rows], total

    def count_active(self):
        return self._count_active(self._connection())

    def _count_active(self, db) -> int:
        query = "select count(*) from minigrad_job where queue = ? and status in (?, ?)"
        return db.execute(query, (self.queue, QUEUED, RUNNING)).fetchone()[0]

    def count_by_status(self):
        query = "select status, count(*) from minigrad_job where queue = ? group by status"
        return dict(self._connection().execute(query, (self.queue,)).fetchall())

    def running_with_heartbeat_before(self, cutoff):
        query = "select id from minigrad_job where queue = ? and status = ? and heartbeat_at < ?"
        return [i for (i,) in self._connection().execute(query, (self.queue, RUNNING, cutoff))]

    def finished_before(self, cutoff):
        query = "select id from minigrad_job where queue = ? and finished_at is not null and finished_at < ?"
        return [i for (i,) in self._connection().execute(query, (self.queue, cutoff))]

    def queued_ids(self):
        query = "select id from minigrad_job where queue = ? and status = ?"
        return [i for (i,) in self._connection().execute(query, (self.queue, QUEUED))]

    def append_history(self, job_id, records):
        with self._transaction() as db:
            db.executemany(
                "insert or replace into minigrad_job_epoch (job_id, epoch, record) values (?, ?, ?)",
                [(job_id, r["epoch"], json.dumps(r)) for r in records],
            )

    def history(self, job_id):
        query = "select record from minigrad_job_epoch where job_id = ? order by epoch"
        return [json.loads(r) for (r,) in self._connection().execute(query, (job_id,))]

    def clear_history(self, job_id):
        with self._transaction() as db:
            db.execute("delete from minigrad_job_epoch where job_id = ?", (job_id,))

    def delete(self, job_id):
        with self._transaction() as db:
            db.execute("delete from minigrad_job_epoch where job_id = ?", (job_id,))
            db.execute("delete from minigrad_job where id = ?", (job_id,))


class RedisJobStore(JobStore):
    """Records as JSON strings; sorted sets index them by creation, status, heartbeat and finish time.

    Each status has a sorted set of its ids scored by ``created_at`` (as ``index`` holds them all), kept
    in the same MULTI as the record, so a record is in exactly one of them: a page of, say, the failed
    jobs is one ZREVRANGE, and counting them one ZCARD, whatever the other jobs.
    """

    def __init__(self, conn, name: str):
        self.conn = conn
        self.prefix = f"minigrad.jobs.{name}"
        self.index = f"{self.prefix}.index"  # id -> created_at
        self.active = f"{self.prefix}.active"  # set of queued/running ids
        self.heartbeats = f"{self.prefix}.heartbeats"  # running id -> heartbeat_at
        self.finished = f"{self.prefix}.finished"  # finished id -> finished_at
        self.by_status = {status: f"{self.prefix}.status.{status}" for status in STATUSES}  # id -> created_at
        # Set once every record is in its status set: records of a version without these sets get
        # indexed the first time this store needs them (``_status_index``).
        self.status_indexed = f"{self.prefix}.status-indexed"
        self._status_index_checked = False

    def _key(self, job_id):
        return f"{self.prefix}.job.{job_id}"

    def _history_key(self, job_id):
        return f"{self.prefix}.history.{job_id}"

    def _index_status(self, pipe, job_id, record):
        for status, key in self.by_status.items():
            if status == record["status"]:
                pipe.zadd(key, {job_id: record["created_at"]})
            else:
                pipe.zrem(key, job_id)

    def _write(self, pipe, record):
        job_id = record["id"]
        pipe.set(self._key(job_id), json.dumps(record))
        pipe.zadd(self.index, {job_id: record["created_at"]})
        self._index_status(pipe, job_id, record)
        if record["status"] in ACTIVE:
            pipe.sadd(self.active, job_id)
        else:
            pipe.srem(self.active, job_id)
        if record["status"] == RUNNING and record.get("heartbeat_at") is not None:
            pipe.zadd(self.heartbeats, {job_id: record["heartbeat_at"]})
        else:
            pipe.zrem(self.heartbeats, job_id)
        if record.get("finished_at") is not None:
            pipe.zadd(self.finished, {job_id: record["finished_at"]})

    def _optimistic(self, watched, body):
        """Run ``body(pipe)`` under WATCH of ``watched`` keys, retrying when another client wrote them."""
        from redis.exceptions import WatchError

        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    return body(pipe)
                except WatchError:
                    continue

    def _status_index(self) -> dict[str, str]:
        """The status sets, after putting every record of an older version (none of them) into its own.

        Runs once per store object, and indexes only while the marker is missing; each record is indexed
        under WATCH of the record, so processes doing it at once, or writing meanwhile, agree. (A consumer
        of the older version still running beside this one would write records without them: upgrade
        every process of a queue together, as for any change of the record's layout.)
        """
        if not self._status_index_checked:
            if not self.conn.exists(self.status_indexed):
                for raw_id in self.conn.zrange(self.index, 0, -1):
                    self._reindex_status(raw_id.decode())
                self.conn.set(self.status_indexed, 1)
            self._status_index_checked = True
        return self.by_status

    def _reindex_status(self, job_id):
        key = self._key(job_id)

        def body(pipe):
            raw = pipe.get(key)
            if raw is None:  # deleted meanwhile, and delete clears every index
                pipe.unwatch()
                return
            pipe.multi()
            self._index_status(pipe, job_id, json.loads(raw))
            pipe.execute()

        self._optimistic([key], body)

    def create(self, record, max_active):
        def body(pipe):
            if pipe.scard(self.active) >= max_active:
                pipe.unwatch()
                return False
            pipe.multi()
            self._write(pipe, record)
            pipe.execute()
            return True

        return self._optimistic([self.active], body)

    def get(self, job_id):
        raw = self.conn.get(self._key(job_id))
        return json.loads(raw) if raw is not None else None

    def update(self, job_id, expect=None, **changes):
        key = self._key(job_id)

        def body(pipe):
            raw = pipe.get(key)
            record = _merge(json.loads(raw) if raw is not None else None, expect, changes)
            if record is None:
                pipe.unwatch()
                return None
            pipe.multi()
            self._write(pipe, record)
            pipe.execute()
            return record

        return self._optimistic([key], body)

    def page(self, offset, limit, statuses=None):
        last = offset + limit - 1
        if statuses is None:
            ids, total = self.conn.zrevrange(self.index, offset, last), self.conn.zcard(self.index)
        else:
            keys = sorted({self._status_index()[status] for status in statuses})
            if not keys:
                return [], 0
            if len(keys) == 1:
                ids, total = self.conn.zrevrange(keys[0], offset, last), self.conn.zcard(keys[0])
            else:
                # Several statuses: their union (disjoint sets, so its size is the total) into a key of
                # this request's own, read and dropped in the same MULTI. It costs the server O(matching
                # jobs), which the retention period bounds, and sends only the page; merging the sets'
                # tops here instead would fetch offset + limit ids from each set.
                union = f"{self.prefix}.filter.{uuid.uuid4().hex}"
                with self.conn.pipeline() as pipe:
                    pipe.zunionstore(union, keys, aggregate="MAX")
                    pipe.zrevrange(union, offset, last)
                    pipe.delete(union)
                    total, ids, _ = pipe.execute()
        raws = self.conn.mget([self._key(i.decode()) for i in ids]) if ids else []
        return [json.loads(r) for r in raws if r is not None], total

    def count_active(self):
        return self.conn.scard(self.active)

    def count_by_status(self):
        by_status = self._status_index()
        with self.conn.pipeline(transaction=False) as pipe:
            for key in by_status.values():
                pipe.zcard(key)
            counts = pipe.execute()
        return {status: count for status, count in zip(by_status, counts) if count}

    def running_with_heartbeat_before(self, cutoff):
        return [i.decode() for i in self.conn.zrangebyscore(self.heartbeats, "-inf", f"({cutoff!r}")]

    def finished_before(self, cutoff):
        return [i.decode() for i in self.conn.zrangebyscore(self.finished, "-inf", f"({cutoff!r}")]

    def queued_ids(self):
        return [i.decode() for i in self.conn.zrange(self._status_index()[QUEUED], 0, -1)]

    def append_history(self, job_id, records):
        if records:
            self.conn.rpush(self._history_key(job_id), *[json.dumps(r) for r in records])

    def history(self, job_id):
        return [json.loads(r) for r in self.conn.lrange(self._history_key(job_id), 0, -1)]

    def clear_history(self, job_id):
        self.conn.delete(self._history_key(job_id))

    def delete(self, job_id):
        with self.conn.pipeline() as pipe:
            pipe.delete(self._key(job_id), self._history_key(job_id))
            for index in (self.index, self.heartbeats, self.finished, *self.by_status.values()):
                pipe.zrem(index, job_id)
            pipe.srem(self.active, job_id)
            pipe.execute()


def new_record(job_id: str, request: dict, epochs: int, now: float | None = None) -> dict:
    """The record of a job that was just accepted."""
    return {
        "id": job_id,
        "status": QUEUED,
        "created_at": time.time() if now is None else now,
        "started_at": None,
        "finished_at": None,
        "heartbeat_at": None,
        "worker": None,
        "attempt": None,  # the run that claimed it (service.jobs.runner.owned_by)
        "epoch": 0,
        "epochs": epochs,
        "cancel_requested": False,
        # Set once the run has trained and hands its model back (registers it): a cancel is too late then.
        "handing_back": False,
        "request": request,
        "error": None,
        "result": None,
    }
