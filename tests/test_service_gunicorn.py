"""End to end against real gunicorn (2 workers) on a free loopback port, over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import requests
from conftest import REPO, TOKEN
from readme_support import sh_blocks

import minigrad
from minigrad import Linear, Relu, Sequential, Tensor, no_grad


@pytest.fixture
def server(gunicorn, model_dir, tmp_path):
    return gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var",
                         "MINIGRAD_API_TOKEN": TOKEN, "MINIGRAD_PROTECT_PREDICT": "0"}, workers=2)


def forward(path, rows):
    with no_grad():
        return minigrad.load(path)(Tensor(np.asarray(rows, dtype=np.float64))).data


def predict(server, body):
    return requests.post(server.url + "/predict", json=body, timeout=30)


def test_predictions_over_http_equal_minigrad(server, model_dir):
    rows = np.random.default_rng(5).normal(5, 2, size=(50, 4)).tolist()
    response = predict(server, {"model": "iris", "inputs": rows})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert np.array_equal(response.json()["outputs"], forward(model_dir / "iris.json", rows))


def test_errors_over_http_are_problems(server):
    response = predict(server, {"model": "nope", "inputs": [0, 1]})
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "no model named 'nope'"
    response = requests.put(server.url + "/models/xor", json={}, timeout=30)
    assert response.status_code == 401


def test_new_versions_and_hand_placed_models_reach_every_worker(server, model_dir):
    rng = np.random.default_rng(11)
    model = Sequential([Linear(2, 5, rng=rng), Relu(), Linear(5, 2, rng=rng)])
    # Warm every worker's cache with version 1 first.
    for _ in range(10):
        assert predict(server, {"model": "xor", "inputs": [0, 1]}).json()["version"] == 1
    response = requests.put(server.url + "/models/xor", data=minigrad.dumps(model), timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert response.status_code == 201 and response.json()["version"] == 2
    expected = forward(model_dir / "xor" / "2.json", [[0.5, -1.5]])
    # Each request is a new connection, so the two workers take turns; all must see version 2.
    for _ in range(10):
        body = predict(server, {"model": "xor", "inputs": [[0.5, -1.5]]}).json()
        assert body["version"] == 2
        assert np.array_equal(body["outputs"], expected)
    minigrad.save(model, model_dir / "dropped-in.json")  # by hand, no restart
    for _ in range(4):
        assert predict(server, {"model": "dropped-in", "inputs": [1, 2]}).status_code == 200
    names = [m["name"] for m in requests.get(server.url + "/models", timeout=30).json()["models"]]
    assert names == ["dropped-in", "iris", "xor"]


def test_health_docs_and_a_large_batch(server):
    assert requests.get(server.url + "/healthz", timeout=30).json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz", timeout=30).json()["status"] == "ready"
    assert "/predict" in requests.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    assert requests.get(server.url + "/docs", timeout=30).status_code == 200
    rows = np.random.default_rng(0).normal(size=(2000, 4)).tolist()
    response = predict(server, {"model": "iris", "inputs": rows})
    assert response.status_code == 200 and len(response.json()["outputs"]) == 2000


def test_a_body_over_the_limit_is_refused_over_http(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var",
                           "MINIGRAD_MAX_BODY_BYTES": 100_000}, workers=1)
    body = json.dumps({"model": "xor", "inputs": [[0.125, 0.5]] * 200_000})  # 3 MB
    response = requests.post(server.url + "/predict", data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert predict(server, {"model": "xor", "inputs": [0, 1]}).status_code == 200

    def chunked(rows):  # a generator body: sent with Transfer-Encoding: chunked, no Content-Length
        yield b'{"model": "xor", "inputs": ['
        for i in range(rows):
            yield b", [0.25, 0.5]" if i else b"[0.25, 0.5]"
        yield b"]}"

    headers = {"Content-Type": "application/json"}
    small = requests.post(server.url + "/predict", data=chunked(3), headers=headers, timeout=30)
    assert small.status_code == 200 and len(small.json()["outputs"]) == 3
    large = requests.post(server.url + "/predict", data=chunked(20_000), headers=headers, timeout=30)
    assert large.status_code == 413
    assert large.headers["Content-Type"] == "application/problem+json"


def test_the_server_stops(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=1)
    workers = server.worker_pids()
    assert len(workers) == 1
    server.stop()
    assert server.process.returncode is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=5)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]  # workers went with the master


def readme_curl_examples() -> list[tuple[str, str | None]]:
    """(command, expected output or None) for the curl commands of README's quickstart and service sections."""
    examples = []
    for block in sh_blocks("Quickstart") + sh_blocks("The prediction service"):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("curl ") and "127.0.0.1:8000" in line:
                following = lines[i + 1] if i + 1 < len(lines) else ""
                examples.append((line, following[len("# -> "):] if following.startswith("# -> ") else None))
    return examples


def test_readme_curl_examples_work_as_printed(gunicorn, model_dir, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: README's curl examples cannot be run")
    examples = readme_curl_examples()
    assert len(examples) >= 8
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=2)
    for command, expected in examples:
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        output = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, check=True).stdout
        json.loads(output)  # every example answers JSON
        if expected is not None:  # "..." in README stands for more digits
            assert re.fullmatch(re.escape(expected).replace(r"\.\.\.", r"\d*"), output.strip()), (command, output)
