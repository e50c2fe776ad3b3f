"""End to end: Triton's own Python client (``tritonclient.http``) against real gunicorn on loopback.

The served documents are the shipped models plus a float32 one; every prediction is compared with
minigrad's forward pass on the same file, bit for bit, in JSON mode and in binary mode.
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import minigrad
from minigrad import Linear, Relu, Sequential, Tensor, no_grad
from service.testing import REPO_ROOT, GunicornServer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("triton-models")
    for name in ("xor", "iris"):
        shutil.copy(REPO_ROOT / "models" / f"{name}.json", directory / f"{name}.json")
    rng = np.random.default_rng(11)
    wide = Sequential([Linear(6, 16, rng=rng, dtype=np.float32), Relu(), Linear(16, 4, rng=rng, dtype=np.float32)])
    minigrad.save(wide, directory / "wide32.json")
    return directory


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    env = {
        "MINIGRAD_MODEL_DIR": model_dir,
        "MINIGRAD_DATA_DIR": tmp_path_factory.mktemp("var"),
        "MINIGRAD_API_TOKEN": "",
    }
    with GunicornServer(env=env, workers=2) as running:
        yield running


@pytest.fixture
def client(server):
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as connection:
        yield connection


def expected_output(model_dir, name, x):
    """minigrad's own forward pass on the served document."""
    with no_grad():
        return minigrad.load(model_dir / f"{name}.json")(Tensor(x)).data


def batch_for(name, rows, seed=0):
    width, dtype = {"xor": (2, np.float64), "iris": (4, np.float64), "wide32": (6, np.float32)}[name]
    return np.random.default_rng(seed).uniform(-3, 3, (rows, width)).astype(dtype)


def infer(client, name, x, binary, **options):
    datatype = "FP32" if x.dtype == np.float32 else "FP64"
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return client.infer(name, [tensor], outputs=[triton.InferRequestedOutput("output", binary_data=binary)], **options)


def test_liveness_readiness_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("xor") and client.is_model_ready("xor", "1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("xor", "2")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "minigrad" and "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("name, datatype, n_in, n_out", [("iris", "FP64", 4, 3), ("wide32", "FP32", 6, 4)])
def test_model_metadata(client, name, datatype, n_in, n_out):
    metadata = client.get_model_metadata(name)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": datatype, "shape": [-1, n_in]}]
    assert metadata["outputs"] == [{"name": "output", "datatype": datatype, "shape": [-1, n_out]}]
    assert client.get_model_metadata(name, "1") == metadata


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name, rows", [("xor", 4), ("iris", 30), ("wide32", 257)])
def test_predictions_are_bit_identical_to_minigrad(client, model_dir, name, rows, binary):
    x = batch_for(name, rows)
    result = infer(client, name, x, binary, request_id=f"{name}-{rows}")
    response = result.get_response()
    assert response["model_name"] == name and response["model_version"] == "1"
    assert response["id"] == f"{name}-{rows}"
    (output,) = response["outputs"]
    assert ("parameters" in output) == binary  # binary_data_size only when the data is binary
    got, expected = result.as_numpy("output"), expected_output(model_dir, name, x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


def test_default_request_gets_binary_outputs(client, model_dir):
    # With no outputs named, tritonclient asks for every output as binary data (binary_data_output).
    x = batch_for("iris", 5)
    tensor = triton.InferInput("input", list(x.shape), "FP64").set_data_from_numpy(x)
    result = client.infer("iris", [tensor], model_version="1")
    assert result.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 5 * 3 * 8}
    assert result.as_numpy("output").tobytes() == expected_output(model_dir, "iris", x).tobytes()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client, model_dir, algorithm):
    x = batch_for("wide32", 64, seed=3)
    result = infer(client, "wide32", x, True, request_compression_algorithm=algorithm)
    assert result.as_numpy("output").tobytes() == expected_output(model_dir, "wide32", x).tobytes()


@pytest.mark.parametrize(
    "name, x, version, status, fragment",
    [
        ("nope", np.zeros((1, 2)), "", "404", "no model named 'nope'"),
        ("xor", np.zeros((1, 2)), "9", "404", "has no version 9"),
        ("xor", np.zeros((2, 3)), "", "400", "expected [batch, 2], got [2, 3]"),
        ("xor", np.zeros((0, 2)), "", "400", "the batch is empty"),
        ("xor", np.array([[np.nan, 1.0]]), "", "400", "finite"),
    ],
)
def test_errors_reach_the_client_as_protocol_errors(client, name, x, version, status, fragment):
    with pytest.raises(InferenceServerException) as info:
        infer(client, name, x, True, model_version=version)
    assert info.value.status() == status
    assert fragment in info.value.message()


def doc_blocks(language):
    text = (REPO_ROOT / "docs" / "inference-protocol.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_protocol_docs_examples_work_as_printed(server, model_dir, capsys):
    address = f"127.0.0.1:{server.port}"
    x = np.array([[0, 1], [1, 1]], dtype=np.float64)
    expected = expected_output(model_dir, "xor", x)
    (shell,) = doc_blocks("sh")
    printed = subprocess.run(
        ["sh", "-c", shell.replace("localhost:8000", address)], capture_output=True, text=True, check=True
    ).stdout
    answer = json.loads(printed)
    assert answer["id"] == "q1" and answer["outputs"][0]["data"] == expected.ravel().tolist()
    (python,) = doc_blocks("python")
    exec(python.replace("localhost:8000", address), {})
    assert capsys.readouterr().out == f"{expected}\n"
