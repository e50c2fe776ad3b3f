"""The Open Inference Protocol v2 endpoints through Flask's test client."""

import gzip
import json

import numpy as np
import pytest

import minigrad
from minigrad import Linear, Relu, Sequential, Sigmoid, Tensor, no_grad
from service.v2_codec import HEADER_LENGTH

XOR_ROWS = [[0, 0], [0, 1], [1, 0], [1, 1]]


def forward(model: Sequential, x: np.ndarray) -> np.ndarray:
    with no_grad():
        return model(Tensor(x)).data


@pytest.fixture
def models(model_dir):
    """The served models by name, loaded from the files the app serves: the shipped xor and iris
    (float64) and, placed beside them by hand, a float32 model."""
    rng = np.random.default_rng(4)
    wide = Sequential([Linear(5, 8, rng=rng, dtype=np.float32), Relu(), Linear(8, 3, rng=rng, dtype=np.float32)])
    minigrad.save(wide, model_dir / "wide32.json")
    return {name: minigrad.load(model_dir / f"{name}.json") for name in ("xor", "iris", "wide32")}


def infer_body(data, shape=None, datatype="FP64", **extra) -> bytes:
    shape = list(np.shape(data)) if shape is None else shape
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}], **extra})


def binary_body(x: np.ndarray, datatype="FP64", **extra) -> tuple[bytes, dict]:
    spec = {"name": "input", "shape": list(x.shape), "datatype": datatype, "parameters": {"binary_data_size": x.nbytes}}
    header = json.dumps({"inputs": [spec], **extra}).encode()
    return header + x.tobytes(), {HEADER_LENGTH: str(len(header))}


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response.headers[HEADER_LENGTH])
    data = response.get_data()
    return json.loads(data[:length]), data[length:]


def assert_error(response, status, fragment):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"] and fragment in body["error"], body


# ---------------------------------------------------------------------- server and model metadata


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        ("/v2", {"name": "minigrad", "version": minigrad.__version__, "extensions": ["binary_tensor_data"]}),
        ("/v2/models/xor/ready", {"name": "xor", "version": "1", "ready": True}),
        ("/v2/models/xor/versions/1/ready", {"name": "xor", "version": "1", "ready": True}),
    ],
)
def test_health_and_server_metadata_answer_json(client, path, expected):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == expected


@pytest.mark.parametrize(
    "name, datatype, n_in, n_out", [("xor", "FP64", 2, 1), ("iris", "FP64", 4, 3), ("wide32", "FP32", 5, 3)]
)
@pytest.mark.parametrize("suffix", ["", "/versions/1"])
def test_model_metadata_describes_the_tensors_in_the_models_datatype(
    client, models, name, datatype, n_in, n_out, suffix
):
    assert client.get(f"/v2/models/{name}{suffix}").get_json() == {
        "name": name,
        "versions": ["1"],
        "platform": "minigrad",
        "inputs": [{"name": "input", "datatype": datatype, "shape": [-1, n_in]}],
        "outputs": [{"name": "output", "datatype": datatype, "shape": [-1, n_out]}],
    }


def test_new_versions_show_in_metadata_and_are_served_by_version(app, client, models):
    other = Sequential([Linear(2, 1, rng=np.random.default_rng(9)), Sigmoid()])
    registry = app.extensions["minigrad.registry"]
    registry.put("xor", other.to_dict())  # the hand-placed xor.json is version 1; this is version 2
    assert client.get("/v2/models/xor").get_json()["versions"] == ["1", "2"]
    x = np.array(XOR_ROWS, dtype=np.float64)
    for suffix, model, version in [("", other, "2"), ("/versions/2", other, "2"), ("/versions/1", models["xor"], "1")]:
        answer = client.post(f"/v2/models/xor{suffix}/infer", data=infer_body(XOR_ROWS)).get_json()
        assert answer["model_version"] == version
        assert answer["outputs"][0]["data"] == forward(model, x).ravel().tolist()


@pytest.mark.parametrize(
    "path, status, fragment",
    [
        ("/v2/models/nope", 404, "no model named 'nope'"),
        ("/v2/models/nope/ready", 404, "no model named 'nope'"),
        ("/v2/models/xor/versions/3", 404, "has no version 3"),
        ("/v2/models/xor/versions/3/ready", 404, "has no version 3"),
        ("/v2/models/xor/versions/latest", 400, "without leading zeros, got 'latest'"),
        ("/v2/models/xor/versions/0/ready", 400, "a positive integer without leading zeros, got '0'"),
        ("/v2/models/xor/versions/01", 400, "without leading zeros, got '01'"),  # was served as version 1
        ("/v2/models/xor/versions/\u00b2", 400, "must be a positive integer without leading zeros, got '\u00b2'"),
        # int() refuses over 4300 digits: a ValueError, answered as a 500
        ("/v2/models/xor/versions/" + "9" * 5000, 400, "without leading zeros, got '99999"),
        ("/v2/models/xor/versions/" + "9" * 5000 + "/ready", 400, "without leading zeros, got '99999"),
        ("/v2/models/bad..name", 400, "is not valid"),
        ("/v2/no/such/endpoint", 404, "not found"),
    ],
)
def test_lookup_errors_are_protocol_errors(client, path, status, fragment):
    assert_error(client.get(path), status, fragment)


def test_an_infer_naming_a_version_with_a_leading_zero_is_refused(client):
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [0, 1]}]}
    assert_error(client.post("/v2/models/xor/versions/01/infer", json=body), 400, "without leading zeros, got '01'")
    assert client.post("/v2/models/xor/versions/1/infer", json=body).status_code == 200


def test_wrong_method_is_a_protocol_error_with_allow(client):
    response = client.post("/v2/health/live")
    assert_error(response, 405, "not allowed")
    assert "GET" in response.headers["Allow"]


# ---------------------------------------------------------------------- inference, JSON


@pytest.mark.parametrize("data", [XOR_ROWS, sum(XOR_ROWS, [])], ids=["nested", "flat"])
def test_json_infer_equals_minigrads_forward_bit_for_bit(client, models, data):
    response = client.post("/v2/models/xor/infer", data=infer_body(data, shape=[4, 2], id="req-42"))
    assert response.status_code == 200 and response.mimetype == "application/json"
    expected = forward(models["xor"], np.array(XOR_ROWS, dtype=np.float64))
    assert response.get_json() == {
        "model_name": "xor",
        "model_version": "1",
        "id": "req-42",
        "outputs": [{"name": "output", "datatype": "FP64", "shape": [4, 1], "data": expected.ravel().tolist()}],
    }


def test_requests_without_content_type_are_read(client, models):
    # Triton's Python client sends no Content-Type at all.
    response = client.post("/v2/models/xor/infer", data=infer_body(XOR_ROWS))
    assert response.request.headers.get("Content-Type") is None
    assert response.status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream", "text/plain"])
def test_any_content_type_is_read_as_the_protocol_body(client, content_type):
    response = client.post("/v2/models/xor/infer", data=infer_body(XOR_ROWS), content_type=content_type)
    assert response.status_code == 200


def test_fp32_input_to_an_fp64_model_is_widened(client, models):
    x = np.array([[0.1, 0.7]], dtype=np.float32)
    answer = client.post("/v2/models/xor/infer", data=infer_body(x.tolist(), datatype="FP32")).get_json()
    assert answer["outputs"][0]["data"] == forward(models["xor"], x.astype(np.float64)).ravel().tolist()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_fp64_input_beyond_float32s_range_is_refused_by_an_fp32_model(client, models, binary):
    # The narrowing cast once turned 1e300 into infinity and answered 200 with a finite, meaningless output.
    x = np.zeros((2, 5))
    x[1, 3] = 1e300
    if binary:
        body, headers = binary_body(x)
        response = client.post("/v2/models/wide32/infer", data=body, headers=headers)
    else:
        response = client.post("/v2/models/wide32/infer", data=infer_body(x.tolist()))
    assert_error(response, 400, "inputs[0]: the value 1e+300 at [1, 3] is out of the range of FP32")


def test_fp64_input_within_float32s_range_is_narrowed(client, models):
    x = np.array([[1e30, -1e-50, 0.1, 2.0, -7.5]])
    answer = client.post("/v2/models/wide32/infer", data=infer_body(x.tolist())).get_json()
    assert answer["outputs"][0]["data"] == forward(models["wide32"], x.astype(np.float32)).ravel().tolist()


def test_gzip_request_body_is_inflated(client, models):
    response = client.post(
        "/v2/models/xor/infer", data=gzip.compress(infer_body(XOR_ROWS).encode()), headers={"Content-Encoding": "gzip"}
    )
    expected = forward(models["xor"], np.array(XOR_ROWS, dtype=np.float64))
    assert response.get_json()["outputs"][0]["data"] == expected.ravel().tolist()


# ---------------------------------------------------------------------- inference, binary


@pytest.mark.parametrize(
    "name, dtype, datatype", [("xor", np.float64, "FP64"), ("iris", np.float64, "FP64"), ("wide32", np.float32, "FP32")]
)
def test_binary_in_binary_out_is_bit_identical(client, models, name, dtype, datatype):
    n_inputs = models[name].layers[0].in_features
    x = np.random.default_rng(5).standard_normal((7, n_inputs)).astype(dtype)
    body, headers = binary_body(x, datatype, id="b-1", parameters={"binary_data_output": True})
    response = client.post(f"/v2/models/{name}/infer", data=body, headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    header, tail = split_binary(response)
    expected = forward(models[name], x)
    assert header["id"] == "b-1" and header["model_name"] == name
    assert header["outputs"] == [
        {
            "name": "output",
            "datatype": datatype,
            "shape": list(expected.shape),
            "parameters": {"binary_data_size": expected.nbytes},
        }
    ]
    assert tail == expected.astype(dtype).tobytes()


def test_outputs_that_overflow_are_refused_as_json_and_sent_as_binary(client, model_dir):
    model = Sequential([Linear(1, 1)])
    model.layers[0].weight.data[:] = 1e300
    minigrad.save(model, model_dir / "huge.json")
    with np.errstate(over="ignore"):
        refused = client.post("/v2/models/huge/infer", data=infer_body([[1.0], [1e10]]))
        body, headers = binary_body(np.array([[1.0], [1e10]]), parameters={"binary_data_output": True})
        sent = client.post("/v2/models/huge/infer", data=body, headers=headers)
    assert refused.status_code == 422
    assert json.loads(refused.data) == {  # strict JSON all the same
        "error": "output 'output' holds NaN or infinity, which JSON cannot carry; request it as binary data"}
    assert sent.status_code == 200
    assert np.array_equal(np.frombuffer(split_binary(sent)[1]), [1e300, np.inf])


@pytest.mark.parametrize(
    "outputs, request_parameters, binary",
    [
        (None, None, False),
        (None, {"binary_data_output": True}, True),
        ([], None, False),  # no output named: every output (it was answered with "outputs": [])
        ([], {"binary_data_output": True}, True),
        ([{"name": "output"}], {"binary_data_output": True}, True),
        ([{"name": "output", "parameters": {"binary_data": False}}], {"binary_data_output": True}, False),
        ([{"name": "output", "parameters": {"binary_data": True}}], None, True),
    ],
)
def test_outputs_come_back_as_asked(client, models, outputs, request_parameters, binary):
    x = np.array(XOR_ROWS, dtype=np.float64)
    extra = {}
    if outputs is not None:
        extra["outputs"] = outputs
    if request_parameters is not None:
        extra["parameters"] = request_parameters
    body, headers = binary_body(x, **extra)
    response = client.post("/v2/models/xor/infer", data=body, headers=headers)
    expected = forward(models["xor"], x)
    if binary:
        header, tail = split_binary(response)
        assert header["outputs"][0]["parameters"] == {"binary_data_size": 32}
        assert np.array_equal(np.frombuffer(tail, "<f8").reshape(4, 1), expected)
    else:
        assert HEADER_LENGTH not in response.headers
        assert response.get_json()["outputs"][0]["data"] == expected.ravel().tolist()


# ---------------------------------------------------------------------- inference errors


def infer_case(**changes) -> bytes:
    spec = {"name": "input", "shape": [4, 2], "datatype": "FP64", "data": XOR_ROWS}
    extra = changes.pop("extra", {})
    spec.update(changes)
    return json.dumps({"inputs": [spec], **extra})


@pytest.mark.parametrize(
    "body, fragment",
    [
        (infer_case(name="x"), "takes one input named 'input'; got 'x'"),
        (infer_case(shape=[2, 4], data=[[0, 0, 1, 1], [0, 1, 0, 1]]), "expected [batch, 2], got [2, 4]"),
        (infer_case(shape=[8], data=sum(XOR_ROWS, [])), "expected [batch, 2], got [8]"),
        (infer_case(shape=[2, 2, 2]), "expected [batch, 2], got [2, 2, 2]"),
        (infer_case(shape=[0, 2], data=[]), "the batch is empty"),
        (infer_case(datatype="INT64"), "'INT64' is not supported"),
        (infer_case(data=[[0, 0], [0, 1], [1, 0], [1, "x"]]), "must contain only numbers"),
        (infer_case(data=[[0, 0], [0, 1], [1, 0]]), "has 6 elements but shape [4, 2] needs 8"),
        (infer_case(extra={"outputs": [{"name": "probabilities"}]}), "no output 'probabilities'"),
        (infer_case(extra={"outputs": [{"name": "output"}] * 2}), "outputs[1].name: output 'output' is requested "),
        ('{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, NaN]}]}', "NaN"),
        ('{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 1e400]}]}', "finite"),
        ('{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 1e39]}]}',
         "within the range of FP32"),
        ("{", "not valid JSON"),
        ("", "request body is empty"),
    ],
)
def test_bad_infer_requests_are_400_naming_the_problem(client, body, fragment):
    assert_error(client.post("/v2/models/xor/infer", data=body), 400, fragment)


def test_truncated_binary_data_is_a_400(client):
    body, headers = binary_body(np.zeros((4, 2)))
    assert_error(client.post("/v2/models/xor/infer", data=body[:-8], headers=headers), 400, "ends 8 bytes before")


def test_infer_on_unknown_model_is_404(client):
    assert_error(client.post("/v2/models/nope/infer", data=infer_body(XOR_ROWS)), 404, "no model named 'nope'")


def test_oversized_body_is_413_in_the_protocols_format(app):
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = app.test_client().post("/v2/models/xor/infer", data=infer_body([[0.5, 0.5]] * 50))
    assert_error(response, 413, "")


def test_unsupported_content_encoding_is_415(client):
    response = client.post("/v2/models/xor/infer", data=b"x", headers={"Content-Encoding": "br"})
    assert_error(response, 415, "'br' is not supported")


TOKEN = "v2-s3cret"


@pytest.fixture
def protected_client(app):
    app.config.update(MINIGRAD_API_TOKEN=TOKEN, MINIGRAD_PROTECT_PREDICT=True)
    return app.test_client()


def test_protected_predictions_need_the_token_on_infer(protected_client):
    response = protected_client.post("/v2/models/xor/infer", data=infer_body(XOR_ROWS))
    assert_error(response, 401, "Authorization: Bearer")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(
        protected_client.post(
            "/v2/models/xor/infer", data=infer_body(XOR_ROWS), headers={"Authorization": "Bearer wrong"}
        ),
        401,
        "not valid",
    )
    ok = protected_client.post(
        "/v2/models/xor/infer", data=infer_body(XOR_ROWS), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200
    assert protected_client.get("/v2/models/xor").status_code == 200  # metadata stays open


def test_v2_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]:
        assert path in paths
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferRequest"
    }
    # Errors under /v2 are the protocol's {"error": ...}, not the problem documents of the other routes.
    for path in paths:
        if path.startswith("/v2"):
            for operation in (v for k, v in paths[path].items() if k != "parameters"):
                error = operation["responses"]["default"]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/V2Error"}
