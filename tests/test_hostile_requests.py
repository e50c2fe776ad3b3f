"""A catalogue of hostile and malformed requests, each with the status and message it must get.

Every answer outside /v2 is a problem+json document, every answer under /v2 the protocol's ``{"error": ...}``;
never a 5xx, an HTML page or a traceback. After the whole table has run against one app, the model directory
(file list and bytes) and the job store hold exactly what the few requests meant to change them wrote. The
body limit is also checked over real HTTP: a 413 comes before the body is read whole.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import SHIPPED_MODELS, TOKEN, service_config
from jobs_support import xor_request

from service import create_app
from service.registry import ChangeToken

LIMIT = 16 * 1024 * 1024  # the table's body limit: a 10^6-row batch of two numbers (12 MB) still fits
AUTH = {"Authorization": f"Bearer {TOKEN}"}
XOR = json.loads((SHIPPED_MODELS / "xor.json").read_text())
V2 = "/v2/models/xor/infer"


@dataclass
class Case:
    id: str
    method: str
    path: str
    status: int
    message: str  # must appear in the answer's detail / error / field messages
    json: object = None
    data: bytes | None = None
    headers: dict = field(default_factory=dict)
    content_type: str | None = None


def raw(id, method, path, data, status, message, content_type="application/json", headers=None):
    return Case(id, method, path, status, message, data=data, content_type=content_type, headers=headers or {})


def js(id, method, path, body, status, message, headers=None):
    return Case(id, method, path, status, message, json=body, headers=headers or {})


def predict(id, body, status, message):
    return js(id, "POST", "/predict", body, status, message)


def train(id, status, message, headers=AUTH, **overrides):
    return js(id, "POST", "/train", xor_request(**overrides), status, message, headers)


def put(id, name, body, status, message, headers=AUTH):
    return js(id, "PUT", f"/models/{name}", body, status, message, headers)


def v2(id, body: bytes, status, message, headers=None, path=V2):
    return Case(id, "POST", path, status, message, data=body, headers=headers or {})


def with_layer(index: int, **changes) -> dict:
    document = json.loads(json.dumps(XOR))
    document["layers"][index].update(changes)
    return document


def binary_request(size: int, datatype: str = "FP64") -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": datatype,
                                   "parameters": {"binary_data_size": size}}]}).encode()


BINARY = binary_request(16)
ONE_ROW = b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [0, 1]}]}'
INVALID_NAME = "is not valid: use 1-64 letters"
NOT_MATCHING = "expected 1-64 letters"

CASES = [
    # ---------------------------------------------------------------- broken JSON and wrong media types
    raw("truncated-json", "POST", "/predict", b'{"model": "xor", "inputs": [[0, 1]', 400,
        "not valid JSON: Expecting ',' delimiter at line 1 column 35"),
    raw("empty-body", "POST", "/predict", b"", 400, "The request body is empty"),
    raw("not-utf8", "POST", "/predict", b"\xff\xfe{}", 400, "not valid JSON"),
    raw("json-array", "POST", "/predict", b"[1, 2]", 422, "Invalid input type"),
    raw("json-string", "POST", "/predict", b'"xor"', 422, "Invalid input type"),
    raw("json-null", "POST", "/predict", b"null", 422, "Invalid input type"),
    raw("text-plain", "POST", "/predict", b'{"model": "xor", "inputs": [0, 1]}', 415, "got 'text/plain'",
        content_type="text/plain"),
    raw("form-encoded", "POST", "/predict", b"model=xor", 415, "got 'application/x-www-form-urlencoded'",
        content_type="application/x-www-form-urlencoded"),
    raw("multipart", "POST", "/predict", b"--x--", 415, "got 'multipart/form-data'",
        content_type="multipart/form-data; boundary=x"),
    raw("xml-model", "PUT", "/models/fresh", b"<model/>", 415, "got 'application/xml'", "application/xml", AUTH),
    # a compressed body outside /v2 was a 400 "not valid UTF-8 text"; RFC 9110 says 415 for a coding not accepted
    raw("gzip-predict", "POST", "/predict", gzip.compress(b'{"model": "xor", "inputs": [0, 1]}'), 415,
        "Content-Encoding 'gzip' is not supported here", headers={"Content-Encoding": "gzip"}),
    raw("deflate-upload", "PUT", "/models/fresh", zlib.compress(json.dumps(XOR).encode()), 415,
        "Content-Encoding 'deflate' is not supported here", headers={"Content-Encoding": "deflate", **AUTH}),
    raw("gzip-onnx-upload", "PUT", "/models/fresh", gzip.compress(b"\x08\x08\x12\x08minigrad"), 415,
        "Content-Encoding 'gzip' is not supported here", "application/onnx", {"Content-Encoding": "gzip", **AUTH}),
    raw("onnx-garbage", "PUT", "/models/fresh", b"\x00\x01garbage", 422, "not an ONNX model", "application/onnx",
        AUTH),
    raw("over-the-limit", "POST", "/predict", b"[" + b"0," * (LIMIT // 2) + b"0]", 413,
        f"MINIGRAD_MAX_BODY_BYTES = {LIMIT} bytes"),
    raw("nested-100000-deep", "POST", "/predict", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    raw("nested-model-document", "PUT", "/models/fresh", b'{"metadata": ' + b'{"a": ' * 100_000 + b"1" +
        b"}" * 100_001, 400, "nested too deeply", headers=AUTH),
    # ---------------------------------------------------------------- numbers that are not numbers
    raw("1e400", "POST", "/predict", b'{"model": "xor", "inputs": [[1e400, 0]]}', 422,
        "inputs[0][0]: Infinity is not allowed"),
    raw("NaN-literal", "POST", "/predict", b'{"model": "xor", "inputs": [[NaN, 0]]}', 400, "NaN is not valid JSON"),
    raw("Infinity-literal", "POST", "/predict", b'{"model": "xor", "inputs": [[Infinity, 0]]}', 400,
        "Infinity is not valid JSON"),
    raw("minus-Infinity", "POST", "/predict", b'{"model": "xor", "inputs": [[-Infinity, 0]]}', 400,
        "-Infinity is not valid JSON"),
    raw("5000-digit-integer", "POST", "/predict", b'{"model": "xor", "inputs": [[' + b"9" * 5000 + b", 0]]}", 400,
        "has an integer of more than 4300 digits"),
    raw("float32-overflow", "PUT", "/models/fresh", json.dumps({**XOR, "dtype": "float32"}).encode()
        .replace(b'"bias": [', b'"bias": [1e300, ', 1), 422, "layers[0].bias", headers=AUTH),
    predict("string-for-number", {"model": "xor", "inputs": [["0", 1]]}, 422, "inputs[0][0]: expected a number, "
            "got '0'"),
    predict("bool-for-number", {"model": "xor", "inputs": [[True, 1]]}, 422, "inputs[0][0]: expected a number, got "
            "true"),
    predict("null-for-number", {"model": "xor", "inputs": [[None, 1]]}, 422, "inputs[0][0]: expected a number, got "
            "null"),
    predict("inputs-a-string", {"model": "xor", "inputs": "0,1"}, 422, "inputs: expected an array of numbers"),
    predict("inputs-an-object", {"model": "xor", "inputs": {"a": 1}}, 422, "inputs: expected an array of numbers"),
    # ---------------------------------------------------------------- shapes
    predict("ragged-rows", {"model": "xor", "inputs": [[0, 1], [1]]}, 422, "inputs[1]: expected 2 items"),
    predict("row-and-number", {"model": "xor", "inputs": [[0, 1], 5]}, 422, "inputs[1]: expected an array, got 5"),
    predict("three-dimensions", {"model": "xor", "inputs": [[[0, 1]]]}, 422, "got an array of 3 dimensions"),
    predict("zero-rows", {"model": "xor", "inputs": []}, 422, "inputs: the batch is empty"),
    predict("empty-row", {"model": "xor", "inputs": [[]]}, 422, "inputs[0]: expected 2 values (the model's input "
            "width), got 0"),
    predict("too-wide", {"model": "xor", "inputs": [[0, 1, 2]]}, 422, "inputs[0]: expected 2 values"),
    predict("flat-too-wide", {"model": "xor", "inputs": [0, 1, 2]}, 422, "inputs: expected 2 values"),
    # ---------------------------------------------------------------- fields
    predict("unknown-field", {"model": "xor", "inputs": [0, 1], "temperature": 1}, 422,
            '"temperature": ["Unknown field."]'),
    predict("missing-inputs", {"model": "xor"}, 422, '"inputs": ["Missing data for required field."]'),
    predict("missing-model", {"inputs": [0, 1]}, 422, '"model": ["Missing data for required field."]'),
    predict("model-a-number", {"model": 123, "inputs": [0, 1]}, 422, '"model": ["Not a valid string."]'),
    predict("version-zero", {"model": "xor", "inputs": [0, 1], "version": 0}, 422,
            '"version": ["Must be greater than or equal to 1."]'),
    predict("version-negative", {"model": "xor", "inputs": [0, 1], "version": -1}, 422,
            '"version": ["Must be greater than or equal to 1."]'),
    predict("version-a-string", {"model": "xor", "inputs": [0, 1], "version": "1"}, 422,
            '"version": ["Not a valid integer."]'),
    predict("version-a-fraction", {"model": "xor", "inputs": [0, 1], "version": 1.5}, 422,
            '"version": ["Not a valid integer."]'),
    predict("version-10^30", {"model": "xor", "inputs": [0, 1], "version": 10**30}, 404,
            "model 'xor' has no version 1000000000000000000000000000000; available: 1"),
    predict("unknown-model", {"model": "nope", "inputs": [0, 1]}, 404, "no model named 'nope'"),
    # ---------------------------------------------------------------- model names
    predict("name-dotdot", {"model": "../xor", "inputs": [0, 1]}, 422, NOT_MATCHING),
    predict("name-slash", {"model": "a/b", "inputs": [0, 1]}, 422, NOT_MATCHING),
    predict("name-nul", {"model": "xor\x00", "inputs": [0, 1]}, 422, NOT_MATCHING),
    predict("name-unicode", {"model": "modèle", "inputs": [0, 1]}, 422, NOT_MATCHING),
    predict("name-300-chars", {"model": "x" * 300, "inputs": [0, 1]}, 422, NOT_MATCHING),
    js("path-dotdot", "GET", "/models/..", None, 400, f"model name '..' {INVALID_NAME}"),
    js("path-encoded-slashes", "GET", "/models/..%2F..%2Fetc", None, 404, "The requested URL was not found"),
    js("path-nul", "GET", "/models/%00", None, 400, INVALID_NAME),
    js("path-unicode", "GET", "/models/mod%C3%A8le", None, 400, f"model name 'modèle' {INVALID_NAME}"),
    js("path-300-chars", "GET", "/models/" + "x" * 300, None, 400, INVALID_NAME),
    put("put-dotdot", "..", XOR, 400, f"model name '..' {INVALID_NAME}"),
    put("put-inner-dotdot", "a..b", XOR, 400, f"model name 'a..b' {INVALID_NAME}"),
    put("put-nul", "x%00y", XOR, 400, INVALID_NAME),
    put("put-unicode", "mod%C3%A8le", XOR, 400, INVALID_NAME),
    put("put-300-chars", "x" * 300, XOR, 400, INVALID_NAME),
    train("save-as-traversal", 422, NOT_MATCHING, save_as="../evil"),
    # ---------------------------------------------------------------- model documents
    put("document-unknown-field", "fresh", {**XOR, "surprise": 1}, 422, "surprise: unknown field"),
    put("document-version-2", "fresh", {**XOR, "version": 2}, 422, "version: unsupported version 2"),
    put("document-no-layers", "fresh", {**XOR, "layers": []}, 422, "layers: expected at least one layer"),
    put("document-wrong-weight-shape", "fresh", with_layer(0, weight=[[1.0], [1.0]]), 422, "layers[0].weight"),
    put("document-unknown-layer", "fresh", {**XOR, "layers": [*XOR["layers"], {"type": "Conv2d"}]}, 422,
        "layers[4].type"),
    # ---------------------------------------------------------------- tokens
    put("no-token", "fresh", XOR, 401, "needs the header 'Authorization: Bearer <token>'", headers={}),
    put("wrong-token", "fresh", XOR, 401, "The bearer token is not valid", headers={"Authorization": "Bearer no"}),
    put("basic-auth", "fresh", XOR, 401, "needs the header", headers={"Authorization": "Basic dG9rOg=="}),
    put("empty-bearer", "fresh", XOR, 401, "needs the header", headers={"Authorization": "Bearer "}),
    js("delete-without-token", "DELETE", "/models/xor", None, 401, "needs the header"),
    train("train-without-token", 401, "needs the header", headers={}),
    train("train-wrong-token", 401, "The bearer token is not valid", headers={"Authorization": "Bearer no"}),
    js("cancel-without-token", "DELETE", "/jobs/anything", None, 401, "needs the header"),
    # ---------------------------------------------------------------- training requests
    train("epochs-negative", 422, '"epochs": ["Must be greater than or equal to 1."]', epochs=-1),
    train("epochs-zero", 422, '"epochs": ["Must be greater than or equal to 1."]', epochs=0),
    train("epochs-absurd", 422, "epochs: at most 10000 epochs per job (MINIGRAD_TRAIN_MAX_EPOCHS)", epochs=10**12),
    train("epochs-fraction", 422, '"epochs": ["Not a valid integer."]', epochs=1.5),
    train("epochs-string", 422, '"epochs": ["Not a valid integer."]', epochs="10"),
    train("batch-size-zero", 422, '"batch_size": ["Must be greater than or equal to 1."]', batch_size=0),
    train("batch-size-negative", 422, '"batch_size": ["Must be greater than or equal to 1."]', batch_size=-3),
    train("layer-size-absurd", 422, "architecture.0.out_features: at most 4096",
          architecture=[{"type": "Linear", "in_features": 2, "out_features": 10**9}]),
    train("layer-size-zero", 422, '"out_features": ["Must be greater than or equal to 1."]',
          architecture=[{"type": "Linear", "in_features": 2, "out_features": 0}]),
    train("unknown-layer-type", 422, '"type": ["Must be one of', architecture=[{"type": "Conv2d"}]),
    train("seed-negative", 422, '"seed": ["Must be greater than or equal to 0', seed=-1),
    train("train-unknown-field", 422, '"surprise": ["Unknown field."]', surprise=True),
    train("learning-rate-negative", 422, '"alpha": ["Must be greater than 0."]',
          optimizer={"type": "sgd", "alpha": -1}),
    train("ragged-training-data", 422, "data.inputs[1]: expected 2 items",
          data={"inputs": [[0, 0], [1]], "targets": [[0], [1]]}),
    train("targets-count", 422, "data.targets: expected 1 row (one per input row), got 2",
          data={"inputs": [[0, 0]], "targets": [[0], [1]]}),
    train("no-training-rows", 422, "data.inputs: expected a non-empty list of rows",
          data={"inputs": [], "targets": []}),
    train("rows-absurd", 422, "at most 100000 samples (rows) per job",
          data={"inputs": [[0, 0]] * 100_001, "targets": [[0]] * 100_001}),
    js("wait-negative", "POST", "/train?wait=-1", xor_request(), 422, '"wait": ["Must be greater than or equal to 0."]',
       AUTH),
    js("wait-a-word", "POST", "/train?wait=soon", xor_request(), 422, '"wait": ["Not a valid number."]', AUTH),
    js("page-zero", "GET", "/jobs?page=0", None, 422, '"page": ["Must be greater than or equal to 1'),
    js("per-page-absurd", "GET", "/jobs?per_page=1000", None, 422, '"per_page": ["Must be greater than or equal to 1 '
       'and less than or equal to 100."]'),
    js("unknown-job", "GET", "/jobs/nope", None, 404, "No job with id 'nope'"),
    js("model-of-unknown-job", "GET", "/jobs/nope/model", None, 404, "No job with id 'nope'"),
    # ---------------------------------------------------------------- the inference protocol (v2)
    v2("v2-shape-data-mismatch", ONE_ROW.replace(b"[1, 2]", b"[1, 3]"), 400,
       "inputs[0].data has 2 elements but shape [1, 3] needs 3"),
    v2("v2-int64", ONE_ROW.replace(b"FP64", b"INT64"), 400, "'INT64' is not supported; expected one of FP32, FP64"),
    v2("v2-bytes", b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}', 400,
       "'BYTES' is not supported"),
    v2("v2-wrong-width", ONE_ROW.replace(b"[1, 2]", b"[1, 3]").replace(b"[0, 1]", b"[0, 1, 2]"), 400,
       "inputs[0].shape: expected [batch, 2], got [1, 3]"),
    v2("v2-negative-shape", ONE_ROW.replace(b"[1, 2]", b"[-1, 2]"), 400, "inputs[0].shape[0]"),
    v2("v2-wrong-input-name", ONE_ROW.replace(b'"input"', b'"x"'), 400, "takes one input named 'input'; got 'x'"),
    v2("v2-ragged", ONE_ROW.replace(b"[0, 1]", b"[[0], [1, 2]]"), 400, "inputs[0].data is ragged"),
    v2("v2-NaN", ONE_ROW.replace(b"[0, 1]", b"[NaN, 1]"), 400, "not valid JSON"),
    v2("v2-no-inputs", b'{"inputs": []}', 400, "inputs: Shorter than minimum length 1."),
    v2("v2-broken-json", b'{"inputs":', 400, "request body is not valid JSON"),
    v2("v2-zero-rows", ONE_ROW.replace(b"[1, 2]", b"[0, 2]").replace(b"[0, 1]", b"[]"), 400, "the batch is empty"),
    v2("v2-truncated-binary", BINARY + np.zeros(1).tobytes(), 400, "the request body ends 8 bytes before its data does",
       {"Inference-Header-Content-Length": str(len(BINARY))}),
    v2("v2-binary-trailing-bytes", BINARY + np.zeros(3).tobytes(), 400, "8 bytes after the last input's binary data",
       {"Inference-Header-Content-Length": str(len(BINARY))}),
    v2("v2-header-length-past-body", BINARY + np.zeros(2).tobytes(), 400,
       f"Inference-Header-Content-Length is {len(BINARY) + 100} but the request body has {len(BINARY) + 16} bytes",
       {"Inference-Header-Content-Length": str(len(BINARY) + 100)}),
    v2("v2-header-length-a-word", BINARY + np.zeros(2).tobytes(), 400,
       "Inference-Header-Content-Length must be a non-negative integer (the JSON object's length in bytes), "
       "got 'abc'", {"Inference-Header-Content-Length": "abc"}),
    v2("v2-binary-size-vs-datatype", binary_request(16, "FP32") + np.zeros(2).tobytes(), 400,
       "binary_data_size is 16 but shape [1, 2] needs 8",
       {"Inference-Header-Content-Length": str(len(binary_request(16, "FP32")))}),
    v2("v2-unknown-encoding", ONE_ROW, 415, "Content-Encoding 'br' is not supported", {"Content-Encoding": "br"}),
    v2("v2-corrupt-gzip", b"\x1f\x8b\x08garbage", 400, "request body is not valid gzip data",
       {"Content-Encoding": "gzip"}),
    v2("v2-unknown-model", ONE_ROW, 404, "no model named 'nope'", path="/v2/models/nope/infer"),
    v2("v2-version-zero", ONE_ROW, 400, "model version must be a positive integer without leading zeros, got '0'",
       path="/v2/models/xor/versions/0/infer"),
    v2("v2-version-a-word", ONE_ROW, 400, "got 'abc'", path="/v2/models/xor/versions/abc/infer"),
    v2("v2-over-the-limit", b" " * (LIMIT + 1), 413, "larger than this service accepts"),
    # ---------------------------------------------------------------- routing
    js("unknown-path", "GET", "/nowhere", None, 404, "The requested URL was not found"),
    js("wrong-method", "PATCH", "/predict", None, 405, "The method is not allowed"),
]

# Requests that are meant to change something, interleaved with the rest; the final state is checked.
ACCEPTED = [
    put("valid-upload", "fresh", XOR, 201, '"name":"fresh","outputs":1,"version":1'),
    train("valid-training-job", 202, '"status":"queued"'),
    predict("a-million-rows", {"model": "xor", "inputs": [[0.5, 0.5]] * 1_000_000}, 200, '"model":"xor","version":1'),
    js("valid-delete", "DELETE", "/models/iris", None, 200, '"deleted_versions":[1]', AUTH),
]


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("models")
    for name in ("xor.json", "iris.json"):
        (model_dir / name).write_bytes((SHIPPED_MODELS / name).read_bytes())
    config = service_config(model_dir, tmp_path_factory.mktemp("var"), MINIGRAD_API_TOKEN=TOKEN,
                            MINIGRAD_MAX_BODY_BYTES=LIMIT)
    return create_app(config)


def snapshot(directory: Path) -> dict[str, bytes]:
    # The registries' change marker is bookkeeping that any write may touch, not a model.
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ChangeToken.FILE}


def send(client, case: Case):
    return client.open(case.path, method=case.method, json=case.json, data=case.data, headers=case.headers,
                       content_type=case.content_type)


def answer_text(response) -> str:
    """The part of the answer a client reads to learn what was wrong (or, for a success, the body)."""
    body = response.get_json(force=True, silent=True)
    if not isinstance(body, dict) or response.status_code < 400:
        return response.get_data(as_text=True)
    return " ".join([str(body.get("detail") or body.get("error") or ""), json.dumps(body.get("errors") or {})])


def test_the_catalogue_is_large_and_named_uniquely():
    ids = [case.id for case in CASES + ACCEPTED]
    assert len(CASES) >= 60 and len(ids) == len(set(ids))


def run_order() -> list[Case]:
    """The hostile cases with the accepted ones spread among them."""
    order = []
    for index, case in enumerate(CASES):
        if index % 25 == 0 and index // 25 < len(ACCEPTED):
            order.append(ACCEPTED[index // 25])
        order.append(case)
    return order


def test_every_hostile_request_gets_its_status_and_message_and_changes_nothing_else(hostile_app):
    client = hostile_app.test_client()
    model_dir = Path(hostile_app.config["MINIGRAD_MODEL_DIR"])
    before = snapshot(model_dir)
    misses = []
    for case in run_order():
        response = send(client, case)
        v2 = case.path.startswith("/v2")
        expected_type = "application/json" if v2 or case.status < 400 else "application/problem+json"
        text = answer_text(response)
        if case.status < 400:
            text = text.replace(" ", "")  # success bodies: compact or spaced JSON alike
        if response.status_code != case.status or response.mimetype != expected_type or case.message not in text:
            misses.append(f"{case.id}: {response.status_code} {response.mimetype} {text[:300]}")
        elif not v2 and case.status >= 400:
            assert response.json["status"] == case.status and response.json["title"]
    assert not misses, "\n".join(misses)

    after = snapshot(model_dir)
    expected = dict(before)
    del expected["iris.json"]
    assert sorted(after) == sorted([*expected, "fresh/1.json"])
    assert {k: v for k, v in after.items() if k != "fresh/1.json"} == expected
    jobs = client.get("/jobs").json
    assert jobs["total"] == 1 and jobs["jobs"][0]["status"] == "queued"


class CutOffStream:
    """The body of a client that went away mid-way, as gunicorn's reader reports it: an OSError."""

    def read(self, size=-1):
        raise OSError("No more data after: None")


@pytest.mark.parametrize("path", ["/predict", V2])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_cut_off_by_the_client_is_a_400_not_a_500(hostile_app, path, chunked):
    # Found by the chunked-body test below: gunicorn's NoMoreData escaped as an unhandled error (a 500).
    environ = {"wsgi.input": CutOffStream(), "wsgi.input_terminated": chunked}
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = "1000"
    response = hostile_app.test_client().post(path, content_type="application/json", environ_overrides=environ)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "before it sent the whole request body" in answer_text(response)


# ---------------------------------------------------------------------------- the limit over real HTTP


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The status and body of the first HTTP response on ``sock``."""
    sock.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < length(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory):
    from service.testing import GunicornServer

    model_dir = tmp_path_factory.mktemp("limit-models")
    (model_dir / "xor.json").write_bytes((SHIPPED_MODELS / "xor.json").read_bytes())
    env = {"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path_factory.mktemp("limit-var"),
           "MINIGRAD_MAX_BODY_BYTES": 1 << 20}
    with GunicornServer(env=env, workers=1) as server:
        yield server


@pytest.mark.parametrize("path", ["/predict", V2])
def test_a_declared_length_over_the_limit_is_refused_before_any_body_byte_is_sent(small_limit_server, path):
    with socket.create_connection(("127.0.0.1", small_limit_server.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {100 << 20}\r\n\r\n".encode())
        started = time.monotonic()
        status, received = read_answer(sock, timeout=10)
    assert status == 413, received
    assert b"MINIGRAD_MAX_BODY_BYTES = 1048576 bytes" in received
    assert time.monotonic() - started < 5  # answered at once: it did not wait for 100 MB that never come


@pytest.mark.parametrize("method, path, content_type", [
    ("POST", "/predict", "application/json"),
    ("POST", V2, "application/json"),
    # an ONNX upload was read with get_data, which stops at the limit silently: a 422 "not an ONNX model"
    ("PUT", "/models/big", "application/onnx"),
])
def test_a_chunked_body_over_the_limit_is_refused_without_reading_to_its_end(small_limit_server, method, path,
                                                                             content_type):
    """The chunked body never ends (no terminating chunk): only a server that stops at the limit answers."""
    with socket.create_connection(("127.0.0.1", small_limit_server.port)) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b" " * 65536
        try:
            for _ in range((1 << 20) // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close as soon as it has answered
        status, received = read_answer(sock, timeout=10)
    assert status == 413, received
    assert b"larger than this service accepts (MINIGRAD_MAX_BODY_BYTES = 1048576 bytes)" in received


@pytest.mark.parametrize("method, path, content_type", [
    ("POST", "/predict", "application/json"),
    ("POST", V2, "application/json"),
    ("PUT", "/models/fresh", "application/onnx"),
])
@pytest.mark.parametrize("chunks, defect", [
    (b"zz\r\n{}\r\n0\r\n\r\n", "Invalid chunk size: b'zz'"),
    (b"2\r\n{}XY0\r\n\r\n", "Invalid chunk terminator is not '\\r\\n': b'XY'"),
], ids=["size-not-hex", "no-crlf-after-chunk"])
def test_a_chunked_body_that_does_not_parse_is_a_400_naming_the_defect(small_limit_server, method, path,
                                                                       content_type, chunks, defect):
    # gunicorn finds these only when the application reads the body; its ParseException was a 500.
    with socket.create_connection(("127.0.0.1", small_limit_server.port)) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + chunks)
        status, received = read_answer(sock, timeout=10)
    assert status == 400, received
    answer = json.loads(received)
    message = answer["error"] if path.startswith("/v2") else answer["detail"]
    assert message == f"The request body's chunked encoding is not valid: {defect}.", answer
    if not path.startswith("/v2"):
        assert answer["type"] == "urn:minigrad:problem:malformed-request"


@pytest.mark.parametrize("path", ["/predict", V2])
@pytest.mark.parametrize("chunks", [b'5\r\n{"a":', b'5\r\n{"a":\r', b"2\r\n{}\r\n0\r\n"],
                         ids=["before-the-crlf", "within-the-crlf", "before-the-final-crlf"])
def test_a_chunked_body_whose_client_hangs_up_at_a_crlf_is_said_to_be_cut_off(small_limit_server, path, chunks):
    # gunicorn reports a missing CRLF for these too; they were answered as a chunked encoding that is not valid.
    with socket.create_connection(("127.0.0.1", small_limit_server.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + chunks)
        sock.shutdown(socket.SHUT_WR)
        status, received = read_answer(sock, timeout=10)
    assert status == 400, received
    assert b"The client closed the connection before it sent the whole request body." in received
