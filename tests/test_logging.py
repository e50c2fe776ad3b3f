"""Structured logs: every line gunicorn and the app write is a JSON object; one access line per request,
carrying the request id that the response's X-Request-ID also carries; a 500 is logged with its traceback
and answered without it."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import service_config

from service import create_app
from service.request_log import request_id_from


def log_lines(server) -> list[dict]:
    """Every line of the server's output, parsed: one that is not JSON fails the test."""
    return [json.loads(line) for line in server.log_text().splitlines() if line.strip()]


def access_lines(server, request_id: str) -> list[dict]:
    return [line for line in log_lines(server) if line["logger"] == "gunicorn.access"
            and line["request_id"] == request_id]


@pytest.mark.parametrize(("sent", "kept"), [
    ("req-42", True),
    ("0f8fe0a2-6b1d-4a55-9d6e-2c1b1a7d9e3c", True),  # a UUID, as proxies send
    ("a" * 64, True),
    ("a" * 65, False),  # too long
    ("evil id", False),  # a space
    ('x"}{"status": 200', False),  # would break a naive log line
    ("-leading-dash", False),
    ("", False),
])
def test_request_ids_are_kept_only_when_short_and_safe(sent, kept):
    chosen = request_id_from(sent)
    assert (chosen == sent) is kept
    assert len(chosen) <= 64


def test_one_json_access_line_per_request_with_the_id_of_the_response(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=2)
    answers = [
        requests.post(server.url + "/predict?verbose=1", json={"model": "xor", "inputs": [[0, 1]]}, timeout=10,
                      headers={"X-Request-ID": "from-the-client-1"}),
        requests.get(server.url + "/models/iris", timeout=10, headers={"X-Request-ID": "bad id with spaces"}),
        requests.post(server.url + "/predict", json={"model": "nope", "inputs": [[0, 1]]}, timeout=10),
        requests.get(server.url + "/nowhere", timeout=10),
    ]
    # Huge inputs overflow inside the model (numpy warns; the sigmoid still answers): the warning is a log record.
    overflow = requests.post(server.url + "/predict", json={"model": "xor", "inputs": [[1e308, 1e308]]}, timeout=10)
    assert overflow.status_code == 200
    assert answers[0].headers["X-Request-ID"] == "from-the-client-1"
    assert answers[1].headers["X-Request-ID"] != "bad id with spaces"
    server.stop()  # flushes the log

    expected = [("POST", "/predict", "predict.predict", "/predict", 200),
                ("GET", "/models/iris", "models.show_model", "/models/<name>", 200),
                ("POST", "/predict", "predict.predict", "/predict", 404),
                ("GET", "/nowhere", None, None, 404)]
    for answer, (method, path, endpoint, route, status) in zip(answers, expected):
        assert answer.status_code == status
        request_id = answer.headers["X-Request-ID"]
        lines = access_lines(server, request_id)
        assert len(lines) == 1, f"{request_id}: {lines}"  # logged once, by gunicorn
        line = lines[0]
        assert (line["method"], line["path"], line["endpoint"], line["route"], line["status"]) == (
            method, path, endpoint, route, status)
        assert line["bytes"] == len(answer.content)
        assert line["remote_addr"] == "127.0.0.1"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["time"].endswith("Z") and line["level"] == "info"
    warned = [line for line in log_lines(server) if line["logger"] == "py.warnings"]
    assert warned and "overflow encountered" in warned[0]["message"] and warned[0]["level"] == "warning"
    # gunicorn's own messages are JSON too (log_lines parsed them all).
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in log_lines(server))


def test_a_500_is_logged_with_its_traceback_and_answered_without_it(model_dir, tmp_path, capsys):
    app = create_app(service_config(model_dir, tmp_path / "var"))

    @app.route("/explode")
    def explode():  # stands for a bug anywhere in a view
        raise RuntimeError("the secret internals: /srv/key.pem")

    response = app.test_client().get("/explode", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["X-Request-ID"] == "trace-me"
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)

    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in logged if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "trace-me"
    assert errors[0]["message"] == "unhandled error in GET /explode"
    assert "Traceback" in errors[0]["traceback"] and "RuntimeError: the secret internals" in errors[0]["traceback"]
