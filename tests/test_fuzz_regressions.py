"""One regression test per defect the API fuzzer (tests/test_api_fuzz.py) found; docs/reliability.md lists them."""

from __future__ import annotations

from service.jobs.schemas import MAX_PAGE


def test_a_page_past_sqlite_integers_is_a_422_not_a_500(client):
    # Found by schemathesis: GET /jobs?page=24654560706708201472 overflowed SQLite's OFFSET (64-bit) into a 500.
    response = client.get("/jobs?per_page=62&page=24654560706708201472")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert "page" in response.json["errors"]["query"]
    last = client.get(f"/jobs?per_page=100&page={MAX_PAGE}")
    assert last.status_code == 200 and last.json["jobs"] == [] and last.json["next"] is None
