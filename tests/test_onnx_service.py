"""ONNX through the service: PUT /models/<name> takes an ONNX file and stores its model document; GET
/models/<name>/versions/<v>?format=onnx sends the model as ONNX; refusals are problems naming the node."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from conftest import TOKEN
from onnx import TensorProto, helper
from test_service_models_api import assert_problem

import minigrad
import minigrad.onnx

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TORCH = json.loads((FIXTURES / "torch_mlp_outputs.json").read_text())["models"][0]
assert TORCH["file"] == "torch_mlp_float32.onnx"


def conv_graph() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "k"], ["y"], name="Conv_0")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])],
    )
    return helper.make_model(graph).SerializeToString()


def test_a_pytorch_onnx_upload_is_stored_as_a_model_document_and_predicts_like_pytorch(client):
    data = (FIXTURES / TORCH["file"]).read_bytes()
    response = client.put("/models/torch", data=data, content_type="application/onnx")
    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {"name": "torch", "version": 1, "inputs": 4, "outputs": 3, "dtype": "float32",
                                   "layers": ["Linear(4->8)", "Relu", "Linear(8->6)", "Tanh", "Linear(6->3)",
                                              "Softmax"]}
    document = client.get("/models/torch/versions/1").get_json()
    assert document["format"] == "minigrad.sequential"
    assert document["metadata"]["onnx"]["producer_name"] == "pytorch"

    outputs = client.post("/predict", json={"model": "torch", "inputs": TORCH["inputs"]}).get_json()["outputs"]
    np.testing.assert_allclose(outputs, TORCH["outputs"], rtol=0, atol=1e-6)


def test_octet_stream_upload_of_an_export_gives_back_the_document_bitwise(client, model_dir):
    original = minigrad.load(model_dir / "iris.json")
    response = client.put("/models/iris", data=minigrad.onnx.dumps(original),
                          content_type="application/octet-stream")
    assert response.status_code == 201, response.get_json()
    assert response.headers["Location"].endswith("/models/iris/versions/2")
    assert client.get("/models/iris/versions/2").get_data(as_text=True) == json.dumps(original.to_dict())


def test_a_version_downloads_as_onnx_that_runs_in_onnxruntime_like_the_service(client):
    response = client.get("/models/iris/versions/1?format=onnx")
    assert response.status_code == 200
    assert response.mimetype == "application/onnx"
    assert response.headers["Content-Disposition"] == 'attachment; filename="iris-1.onnx"'
    inputs = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    session = onnxruntime.InferenceSession(response.get_data(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": np.array(inputs)})[0]
    served = client.post("/predict", json={"model": "iris", "inputs": inputs}).get_json()["outputs"]
    np.testing.assert_allclose(got, served, rtol=0, atol=1e-12)
    # format=json, the default, is the document as before
    as_json = client.get("/models/iris/versions/1?format=json")
    assert as_json.mimetype == "application/json"
    assert as_json.get_json() == client.get("/models/iris/versions/1").get_json()


@pytest.mark.parametrize(("data", "status", "fragment"), [
    (conv_graph(), 422, "node 'Conv_0' (Conv): unsupported op; minigrad imports Gemm, MatMul, Add"),
    (b"\x00\x01 not a protobuf \xff", 422, "document: not an ONNX model"),
    (b"", 400, "The request body is empty; expected an ONNX file"),
])
def test_refused_onnx_uploads_are_problems_and_store_nothing(client, data, status, fragment):
    problem = assert_problem(client.put("/models/fresh", data=data, content_type="application/onnx"), status, fragment)
    if status == 422:
        assert problem["type"] == "urn:minigrad:problem:invalid-onnx"
        assert fragment.split(": ")[0] in problem["errors"]["body"]
    assert client.get("/models/fresh").status_code == 404


def test_other_media_types_are_refused_naming_json_and_onnx(client):
    problem = assert_problem(client.put("/models/xor", data="1,2", content_type="text/csv"), 415, "text/csv")
    assert "application/json" in problem["detail"] and "application/onnx" in problem["detail"]


def test_an_unknown_format_is_a_validation_problem(client):
    problem = assert_problem(client.get("/models/xor/versions/1?format=yaml"), 422)
    assert "format" in problem["errors"]["query"]


def test_an_onnx_upload_needs_the_token_like_any_write(protected_app):
    client = protected_app.test_client()
    data = (FIXTURES / TORCH["file"]).read_bytes()
    assert_problem(client.put("/models/torch", data=data, content_type="application/onnx"), 401)
    assert client.get("/models/torch").status_code == 404
    response = client.put("/models/torch", data=data, content_type="application/onnx",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201


def test_without_the_onnx_package_onnx_requests_are_clear_4xx_problems(client, monkeypatch):
    # None in sys.modules makes `import onnx` fail as it does when the package is not installed; minigrad.onnx is
    # taken out of the module cache so that the service imports it afresh.
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.delitem(sys.modules, "minigrad.onnx")
    monkeypatch.delattr(minigrad, "onnx")
    data = (FIXTURES / TORCH["file"]).read_bytes()
    problem = assert_problem(client.put("/models/torch", data=data, content_type="application/onnx"), 415,
                             "pip install minigrad[onnx]")
    assert problem["type"] == "urn:minigrad:problem:onnx-unavailable"
    assert_problem(client.get("/models/xor/versions/1?format=onnx"), 406, "pip install minigrad[onnx]")
    assert client.get("/models/xor/versions/1").status_code == 200  # JSON is unaffected
    assert client.put("/models/xor", json=client.get("/models/xor/versions/1").get_json()).status_code == 201


def test_the_openapi_document_describes_onnx_bodies(client):
    spec = client.get("/openapi.json").get_json()
    put = spec["paths"]["/models/{name}"]["put"]["requestBody"]["content"]
    assert set(put) == {"application/json", "application/onnx", "application/octet-stream"}
    assert put["application/onnx"]["schema"]["format"] == "binary"
    get = spec["paths"]["/models/{name}/versions/{version}"]["get"]
    assert set(get["responses"]["200"]["content"]) == {"application/json", "application/onnx"}
    (parameter,) = [p for p in get["parameters"] if p["name"] == "format"]
    assert parameter["in"] == "query" and parameter["schema"]["enum"] == ["json", "onnx"]
    assert {"404", "406", "422"} <= set(get["responses"])
