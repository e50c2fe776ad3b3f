"""One regression test per defect the API fuzzer (tests/test_api_fuzz.py) found; docs/reliability.md lists them."""

from __future__ import annotations

import json
import socket

import pytest

from service.jobs.schemas import MAX_PAGE
from service.registry import MODEL_NAME_PATTERN


def test_a_page_past_sqlite_integers_is_a_422_not_a_500(client):
    # Found by schemathesis: GET /jobs?page=24654560706708201472 overflowed SQLite's OFFSET (64-bit) into a 500.
    response = client.get("/jobs?per_page=62&page=24654560706708201472")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert "page" in response.json["errors"]["query"]
    last = client.get(f"/jobs?per_page=100&page={MAX_PAGE}")
    assert last.status_code == 200 and last.json["jobs"] == [] and last.json["next"] is None


@pytest.mark.parametrize("request_head, status, detail", [
    # Found by schemathesis over HTTP: a query string past gunicorn's 4094-byte request line got an HTML page.
    (b"GET /jobs?per_page=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
     "Request Header Fields Too Large"),
    (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    (b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
])
def test_requests_gunicorn_refuses_itself_get_problem_documents_not_html(gunicorn, tmp_path, request_head, status,
                                                                         detail):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": tmp_path / "models", "MINIGRAD_DATA_DIR": tmp_path / "var"},
                      workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] == detail and problem["type"].startswith("urn:minigrad")


def test_path_parameters_are_documented_with_the_forms_the_service_accepts(client):
    # Found by schemathesis: names valid by the document (any string) got 400s; now the document says which.
    paths = client.get("/openapi.json").json["paths"]
    for path, item in paths.items():
        for parameter in item.get("parameters", []):
            if parameter["name"] == "name":
                assert parameter["schema"]["pattern"] == MODEL_NAME_PATTERN, path
            if parameter["name"] == "version" and path.startswith("/v2"):
                assert parameter["schema"]["pattern"] == "^[1-9][0-9]*$", path
    assert client.get("/models/a%20b").status_code == 400  # outside the pattern: refused as documented
    assert client.get("/v2/models/xor/versions/1").status_code == 200  # inside it: served
