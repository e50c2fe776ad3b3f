"""The registry over HTTP, health probes, token auth and the problem+json contract, via Flask's test client."""

from __future__ import annotations

import errno
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import TOKEN, service_config

import minigrad
from minigrad import Linear, Sequential, Sigmoid, Tanh
from service import create_app
from service.errors import PROBLEM_MIMETYPE
from service.registry import ChangeToken, ModelRegistry

CHANGES = ChangeToken.FILE  # the registries' shared change marker: bookkeeping, not a model


def model_files(model_dir) -> list[str]:
    """The model directory's entries, without the registries' change marker."""
    return sorted(entry for entry in os.listdir(model_dir) if entry != CHANGES)


def xor_like(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return json.loads(minigrad.dumps(Sequential([Linear(2, 3, rng=rng), Tanh(), Linear(3, 1, rng=rng), Sigmoid()])))


def assert_problem(response, status: int, fragment: str = "") -> dict:
    assert response.status_code == status
    assert response.mimetype == PROBLEM_MIMETYPE
    problem = response.get_json()
    assert problem["status"] == status and problem["type"] and problem["title"]
    assert fragment in problem.get("detail", "") + json.dumps(problem.get("errors", {}))
    assert "Traceback" not in response.get_data(as_text=True)
    return problem


def test_list_models(client):
    models = client.get("/models").get_json()["models"]
    assert [m["name"] for m in models] == ["iris", "xor"]
    xor = models[1]
    assert xor == {"name": "xor", "latest_version": 1, "versions": [1], "inputs": 2, "outputs": 1, "dtype": "float64",
                   "layers": ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"]}


def test_show_model_with_metadata_and_versions(client):
    body = client.get("/models/iris").get_json()
    assert body["name"] == "iris" and body["versions"] == [1] and body["latest_version"] == 1
    assert (body["inputs"], body["outputs"]) == (4, 3)
    assert body["metadata"]["outputs"] == ["setosa", "versicolor", "virginica"]


def test_show_version_returns_the_whole_document(client, model_dir):
    body = client.get("/models/xor/versions/1").get_json()
    assert body == json.loads((model_dir / "xor.json").read_text())


def test_put_creates_the_next_version(client, model_dir):
    response = client.put("/models/xor", json=xor_like(1))
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/models/xor/versions/2")
    assert response.get_json() == {"name": "xor", "version": 2, "inputs": 2, "outputs": 1, "dtype": "float64",
                                   "layers": ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"]}
    assert client.get("/models/xor/versions/2").get_json() == xor_like(1)
    assert client.get("/models/xor").get_json()["versions"] == [1, 2]
    assert client.put("/models/brand-new", json=xor_like(2)).get_json()["version"] == 1
    assert (model_dir / "brand-new" / "1.json").is_file()


@pytest.mark.parametrize("query", ["version=1", "version=2", "version=latest"])
def test_put_with_a_version_is_refused_not_silently_a_new_version(client, model_dir, query):
    # PUT /models/xor?version=1 was a 201 that stored version 2: a client meaning to replace 1 never learned.
    problem = assert_problem(client.put(f"/models/xor?{query}", json=xor_like(1)), 422, "Versions are never replaced")
    assert problem["errors"] == {"query": {"version": ["not accepted: an upload becomes the next version"]}}
    assert model_files(model_dir) == ["iris.json", "xor.json"]


def test_delete_removes_the_model(client):
    client.put("/models/xor", json=xor_like(1))
    response = client.delete("/models/xor")
    assert response.status_code == 200
    assert response.get_json() == {"name": "xor", "deleted_versions": [1, 2]}
    assert_problem(client.get("/models/xor"), 404, "no model named 'xor'")
    assert_problem(client.delete("/models/xor"), 404)
    assert_problem(client.post("/predict", json={"model": "xor", "inputs": [0, 1]}), 404)


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready", "models": 2}


def test_not_ready_when_the_model_directory_is_gone(client, model_dir):
    for entry in os.listdir(model_dir):
        os.unlink(model_dir / entry)
    os.rmdir(model_dir)
    assert_problem(client.get("/readyz"), 503, "cannot be read")
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("method, url, fragment", [
    ("get", "/models/nope", "no model named 'nope'"),
    ("get", "/models/xor/versions/5", "has no version 5"),
    ("get", "/models/xor/versions/0", "has no version 0"),
    ("get", "/models/xor/versions/one", "not found"),
    ("get", "/models/xor/versions/%D9%A1", "not found"),  # Arabic-Indic one: it was version 1
    ("get", "/models/xor/versions/%EF%BC%91", "not found"),  # fullwidth one: likewise
    ("get", "/models/xor/versions/01", "not found"),  # was version 1, where /v2 and the dashboard say 400
    ("get", "/no/such/page", "not found"),
    ("delete", "/models/nope", "no model named"),
])
def test_unknown_things_are_404(client, method, url, fragment):
    assert_problem(getattr(client, method)(url), 404, fragment)


@pytest.mark.parametrize("name", ["a..b", ".hidden", "-x", "x" * 65, "%00", "caf%C3%A9", "a%20b", "..%2F..%2Fetc",
                                  "abc%0A"])
def test_bad_model_names_are_400_or_404_and_touch_nothing(client, model_dir, name):
    before = model_files(model_dir)
    for response in (client.get(f"/models/{name}"), client.put(f"/models/{name}", json=xor_like(1)),
                     client.delete(f"/models/{name}")):
        assert response.status_code in (400, 404)  # 404 when the router already refuses the path
        assert response.mimetype == PROBLEM_MIMETYPE
    assert model_files(model_dir) == before


def test_an_invalid_document_is_422_with_its_locations(client, model_dir):
    bad = xor_like(1)
    bad["layers"][2]["weight"] = [[1.0, 2.0]] * 3
    bad["dtype"] = "float16"
    problem = assert_problem(client.put("/models/xor", json=bad), 422)
    assert set(problem["errors"]["json"]) >= {"dtype"}
    assert_problem(client.put("/models/xor", json={"format": "minigrad.sequential"}), 422, "layers")
    assert_problem(client.put("/models/xor", json=[1, 2]), 422)
    assert_problem(client.put("/models/xor", data="{", content_type="application/json"), 400, "not valid JSON")
    assert_problem(client.put("/models/xor", data="x", content_type="text/csv"), 415, "text/csv")
    assert model_files(model_dir) == ["iris.json", "xor.json"]


@pytest.mark.parametrize("code, status", [(errno.ENOSPC, 507), (errno.EROFS, 503), (errno.EACCES, 503)])
@pytest.mark.parametrize("name", ["xor", "new-model"])
def test_a_disk_that_refuses_the_upload_is_a_clean_error(client, model_dir, monkeypatch, code, status, name):
    """Fault injection: the disk fails while the upload is written (full, read-only, permissions)."""
    before = {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file() and path.name != CHANGES}

    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    assert_problem(client.put(f"/models/{name}", json=xor_like(1)), status, os.strerror(code))
    monkeypatch.undo()
    after = {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file() and path.name != CHANGES}
    assert after == before and model_files(model_dir) == ["iris.json", "xor.json"]
    assert client.post("/predict", json={"model": "xor", "inputs": [0, 1]}).status_code == 200


def test_a_name_taken_by_a_hand_placed_file_is_409_not_503(client, model_dir):
    # PUT /models/xor.json beside the hand-placed xor.json (model xor) was a 503 "Model directory not writable".
    problem = assert_problem(client.put("/models/xor.json", json=xor_like(1)), 409, "hand-placed file of model 'xor'")
    assert problem["type"] == "urn:minigrad:problem:model-name-taken"
    assert model_files(model_dir) == ["iris.json", "xor.json"]
    assert client.post("/predict", json={"model": "xor", "inputs": [0, 1]}).status_code == 200


def test_a_delete_takes_only_what_is_the_models(client, model_dir):
    # DELETE /models/x beside a model named "x.json" (its directory x.json/) deleted x, then tried to unlink x.json/
    # as x's hand-placed file: a 503 "Model directory not writable" for a model that was gone; and a file named
    # x, which is no model's, was taken away with the model as if it were x's directory of versions.
    for name in ("x", "x.json"):
        assert client.put(f"/models/{name}", json=xor_like(1)).status_code == 201
    assert client.delete("/models/x").get_json() == {"name": "x", "deleted_versions": [1]}
    assert client.get("/models/x.json").get_json()["versions"] == [1]
    (model_dir / "notes").write_text("not a model")
    assert client.delete("/models/xor").get_json() == {"name": "xor", "deleted_versions": [1]}
    (model_dir / "notes.json").write_text(json.dumps(xor_like(2)))
    assert client.delete("/models/notes").get_json() == {"name": "notes", "deleted_versions": [1]}
    assert model_files(model_dir) == ["iris.json", "notes", "x.json"]


def test_uploads_racing_deletes_of_the_same_name_are_never_5xx(app):
    """Threads stand in for a gunicorn worker's threads: every PUT is a 201 (it was a 503 "not writable"
    whenever a DELETE took the model's directory away mid-upload), every DELETE a 200 or a 404."""
    def request(step):
        client = app.test_client()
        if step % 3 == 0:
            return "delete", client.delete("/models/churn").status_code
        return "put", client.put("/models/churn", json=xor_like(step)).status_code

    with ThreadPoolExecutor(8) as pool:
        answers = set(pool.map(request, range(60)))
    assert answers <= {("put", 201), ("delete", 200), ("delete", 404)}


def test_a_directory_that_refuses_a_delete_is_a_clean_error(client, model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkdtemp", refuse)
    assert_problem(client.delete("/models/xor"), 503, "Read-only file system")
    monkeypatch.undo()
    assert model_files(model_dir) == ["iris.json", "xor.json"]


def test_wrong_methods_are_405(client):
    assert_problem(client.post("/models/xor"), 405)
    assert_problem(client.patch("/models"), 405)
    assert "GET" in client.post("/healthz").headers["Allow"]


def test_a_broken_model_file_is_a_500_problem_naming_it_and_the_listing_still_works(client, model_dir):
    (model_dir / "broken.json").write_text("{")
    assert_problem(client.post("/predict", json={"model": "broken", "inputs": [0]}), 500, "broken.json")
    listing = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert "broken.json" in listing["broken"]["error"]
    assert listing["xor"]["inputs"] == 2


def test_a_version_that_cannot_be_read_is_named_and_the_listing_still_works(client, model_dir):
    # A directory where a version file should be (an OSError, not bad JSON) made GET /models itself a bare 500.
    (model_dir / "odd" / "1.json").mkdir(parents=True)
    assert_problem(client.get("/models/odd"), 500, "odd/1.json is not a valid model document: Is a directory")
    listing = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert "Is a directory" in listing["odd"]["error"] and listing["xor"]["inputs"] == 2


def test_a_dangling_link_placed_by_hand_is_no_model_and_hides_none(client, model_dir):
    # names() listed gone.json, versions() found no file behind it: GET /models was a 404 "no model named 'gone'".
    (model_dir / "gone.json").symlink_to(model_dir / "nowhere.json")
    assert [m["name"] for m in client.get("/models").get_json()["models"]] == ["iris", "xor"]


def test_a_model_deleted_while_the_listing_is_made_is_left_out(client, model_dir, monkeypatch):
    """A DELETE between the listing of names and a model's summary made the whole GET /models a 404."""
    listed = ModelRegistry.names

    def names_then_a_delete_elsewhere(self):
        names = listed(self)
        ModelRegistry(model_dir).delete("iris")  # another worker's DELETE /models/iris, at the worst moment
        return names

    monkeypatch.setattr(ModelRegistry, "names", names_then_a_delete_elsewhere)
    response = client.get("/models")
    assert response.status_code == 200
    assert [m["name"] for m in response.get_json()["models"]] == ["xor"]


def test_an_unexpected_error_is_a_500_problem_without_traceback(model_dir, tmp_path):
    app = create_app(service_config(model_dir, tmp_path))

    @app.route("/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/explode")
    problem = assert_problem(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert problem["title"] == "Internal Server Error"


@pytest.mark.parametrize("status", [400, 401, 404, 405, 409, 413, 415, 422, 500])
def test_every_error_status_is_a_problem(model_dir, tmp_path, status):
    from werkzeug.exceptions import abort

    app = create_app(service_config(model_dir, tmp_path))

    @app.route("/fail")
    def fail():
        abort(status)

    problem = assert_problem(app.test_client().get("/fail"), status)
    assert problem["type"] == "about:blank"


# ---------------------------------------------------------------------- token auth

WRITES = [("put", "/models/xor"), ("delete", "/models/xor")]


@pytest.mark.parametrize("method, url", WRITES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer ", "Basic " + TOKEN, TOKEN, "Bearer " + TOKEN + "x"])
def test_writes_need_the_token(protected_app, model_dir, method, url, header):
    client = protected_app.test_client()
    headers = {"Authorization": header} if header is not None else {}
    response = getattr(client, method)(url, json=xor_like(1), headers=headers)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert model_files(model_dir) == ["iris.json", "xor.json"]


def test_writes_with_the_token_succeed(protected_app):
    client = protected_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.put("/models/xor", json=xor_like(1), headers=auth).status_code == 201
    assert client.delete("/models/xor", headers=auth).status_code == 200


def test_reads_and_predictions_stay_open_with_a_token(protected_app):
    client = protected_app.test_client()
    assert client.get("/models").status_code == 200
    assert client.post("/predict", json={"model": "xor", "inputs": [0, 1]}).status_code == 200


def test_predictions_can_be_protected_too(model_dir, tmp_path):
    app = create_app(service_config(model_dir, tmp_path, MINIGRAD_API_TOKEN=TOKEN, MINIGRAD_PROTECT_PREDICT="1"))
    client = app.test_client()
    body = {"model": "xor", "inputs": [0, 1]}
    assert_problem(client.post("/predict", json=body), 401)
    assert client.post("/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_auth_is_checked_before_the_body(protected_app):
    response = protected_app.test_client().put("/models/xor", data="{not json", content_type="application/json")
    assert_problem(response, 401)
