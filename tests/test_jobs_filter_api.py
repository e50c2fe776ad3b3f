"""GET /jobs?status=: only the jobs with the given status(es), paginated as the full list is, on both
backends (SQLite file, real redis-server)."""

from __future__ import annotations

import time

import pytest
from jobs_support import redis_server

from service import create_app
from service.jobs import get_job_backend
from service.jobs.store import QUEUED, RUNNING, STATUSES, new_record

PROBLEM = "application/problem+json"


@pytest.fixture(params=["sqlite", "redis"])
def app(request, tmp_path):
    config = {"MINIGRAD_MODEL_DIR": str(tmp_path / "models"), "MINIGRAD_DATA_DIR": str(tmp_path / "var"),
              "MINIGRAD_HEARTBEAT_TIMEOUT": 5, "TESTING": True}
    if request.param == "sqlite":
        yield create_app(config)
    else:
        with redis_server(tmp_path) as url:
            yield create_app({**config, "MINIGRAD_REDIS_URL": url})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def jobs(app) -> list[tuple[str, str]]:
    """Three jobs of every status, created in turns; (id, status) newest first."""
    created = []
    with app.app_context():
        store = get_job_backend().store
        start = time.time() - 100
        for turn in range(3):
            for n, status in enumerate(STATUSES):
                job_id = f"{status}-{turn}"
                assert store.create(new_record(job_id, {"epochs": 3}, 3, now=start + 10 * turn + n), max_active=100)
                if status != QUEUED:  # a running job's heartbeat is fresh: the reaper leaves it running
                    store.update(job_id, status=status, heartbeat_at=time.time() + 3600)
                created.insert(0, (job_id, status))
    return created


def listed(client, query: str) -> dict:
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ids(answer: dict) -> list[str]:
    return [job["id"] for job in answer["jobs"]]


@pytest.mark.parametrize("status", STATUSES)
def test_each_status_lists_only_its_jobs(client, jobs, status):
    answer = listed(client, f"status={status}")
    assert ids(answer) == [job_id for job_id, s in jobs if s == status]
    assert {job["status"] for job in answer["jobs"]} == {status}
    assert answer["total"] == 3 and answer["next"] is None


@pytest.mark.parametrize("query", [
    "status=failed&status=lost",
    "status=failed,lost",
    "status=lost,%20failed",  # a space after the comma, as people type it
    "status=lost&status=failed,lost",  # both forms, and a status twice: each job once
])
def test_several_statuses_list_the_jobs_with_any_of_them(client, jobs, query):
    answer = listed(client, query)
    assert ids(answer) == [job_id for job_id, s in jobs if s in ("failed", "lost")]
    assert answer["total"] == 6


def test_without_a_status_every_job_is_listed(client, jobs):
    answer = listed(client, "per_page=100")
    assert ids(answer) == [job_id for job_id, _ in jobs] and answer["total"] == len(jobs) == 18


def test_a_filtered_list_is_paginated_and_next_keeps_the_filter(client, jobs):
    expected = [job_id for job_id, s in jobs if s in ("succeeded", "cancelled")]
    answer = listed(client, "status=succeeded,cancelled&per_page=4")
    seen = ids(answer)
    assert answer["total"] == 6 and "status=succeeded" in answer["next"] and "status=cancelled" in answer["next"]
    answer = client.get(answer["next"]).get_json()
    assert answer["page"] == 2 and answer["total"] == 6 and answer["next"] is None
    assert seen + ids(answer) == expected
    assert listed(client, "status=succeeded,cancelled&per_page=4&page=3") == {
        "jobs": [], "page": 3, "per_page": 4, "total": 6, "next": None}


def test_a_job_whose_consumer_died_is_listed_under_lost_at_the_first_read(app, client, jobs):
    with app.app_context():
        get_job_backend().store.update("running-1", status=RUNNING, heartbeat_at=time.time() - 6, worker="gone:1")
    lost = listed(client, "status=lost")
    assert ids(lost) == [job_id for job_id, s in jobs if s == "lost" or job_id == "running-1"]
    assert lost["total"] == 4 and "gone:1" in lost["jobs"][ids(lost).index("running-1")]["error"]
    assert "running-1" not in ids(listed(client, "status=running"))


@pytest.mark.parametrize("query, unknown", [
    ("status=faild", "'faild'"),
    ("status=failed,bogus", "'bogus'"),
    ("status=failed&status=FAILED", "'FAILED'"),
    ("status=", "''"),
    ("status=failed,", "''"),
])
def test_an_unknown_status_is_a_422_naming_the_field_and_the_allowed_values(client, jobs, query, unknown):
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 422 and response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["type"] == "urn:minigrad:problem:validation"
    assert problem["detail"] == "The query string does not match its schema; see errors."  # not "request body"
    (message,) = problem["errors"]["query"]["status"]
    assert message.startswith(f"{unknown}: not a job status")
    assert message.endswith("queued, running, succeeded, failed, cancelled, lost")


def test_the_openapi_document_describes_the_status_parameter(client):
    parameters = client.get("/openapi.json").get_json()["paths"]["/jobs"]["get"]["parameters"]
    (status,) = [p for p in parameters if p["name"] == "status"]
    assert status["in"] == "query" and status["explode"] is True
    assert status["schema"]["items"]["enum"] == list(STATUSES)
    assert "?status=failed&status=lost" in status["description"] and "?status=failed,lost" in status["description"]
