"""The bench's reference routes (bench/trivial_post_app.py) answer what they claim, so the ratios that
`make bench BENCH=service` prints compare like with like."""

from __future__ import annotations

import pytest

from bench.trivial_post_app import create_bench_app


@pytest.fixture
def bench_client(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGRAD_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MINIGRAD_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MINIGRAD_API_TOKEN", raising=False)
    monkeypatch.delenv("MINIGRAD_PROTECT_PREDICT", raising=False)
    return create_bench_app().test_client()


@pytest.mark.parametrize("name, inputs", [("xor", [[0, 0], [0, 1], [1, 0], [1, 1]]),
                                          ("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])])
def test_the_bare_prediction_answers_the_bytes_predict_answers(bench_client, name, inputs):
    body = {"model": name, "inputs": inputs}
    bare, served = bench_client.post("/bench/bare-predict", json=body), bench_client.post("/predict", json=body)
    assert (bare.status_code, served.status_code) == (200, 200)
    assert bare.data == served.data


def test_the_inline_xor_route_answers_the_bytes_predict_answers(bench_client):
    body = {"model": "xor", "inputs": [[0, 0], [0, 1], [1, 0], [1, 1], [0.25, -3.5]]}
    inline, served = bench_client.post("/bench/inline-xor", json=body), bench_client.post("/predict", json=body)
    assert (inline.status_code, served.status_code) == (200, 200)
    assert inline.data == served.data


def test_the_echo_route_parses_the_body(bench_client):
    assert bench_client.post("/bench/echo", json={"a": 1, "b": 2}).get_json() == {"keys": 2}
