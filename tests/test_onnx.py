"""ONNX interop (minigrad.onnx): exports run in ONNX Runtime like minigrad, PyTorch and scikit-learn MLPs import and
predict like their originals, JSON -> ONNX -> JSON is bitwise, and other graphs are refused naming the node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from format_cases import models
from hypothesis import given, settings
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier, MLPRegressor

import minigrad
import minigrad.onnx
from minigrad import ModelFormatError, Tensor, no_grad
from minigrad.onnx import OnnxImportError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = sorted((REPO / "models").glob("*.json"))
# The acceptance tolerances: what one rounding per operation can leave between two correct implementations.
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}


def as_dtype(model: minigrad.Sequential, dtype: str) -> minigrad.Sequential:
    document = model.to_dict()
    document["dtype"] = dtype
    return minigrad.Sequential.from_dict(document)


def predict(model: minigrad.Sequential, inputs: np.ndarray) -> np.ndarray:
    with no_grad():
        return model(Tensor(inputs)).data


def run_onnxruntime(data: bytes, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def assert_close(got: np.ndarray, expected: np.ndarray, dtype: str):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[dtype])


# ---------------------------------------------------------------------- export


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_model_runs_in_onnxruntime_like_minigrad(example, dtype, tmp_path):
    model = as_dtype(minigrad.load(example), dtype)
    path = tmp_path / "model.onnx"
    minigrad.onnx.export(model, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    n_inputs = model.layers[0].in_features
    for batch in (1, 7, 64):  # the batch dimension is dynamic
        inputs = np.random.default_rng(batch).uniform(-3, 3, (batch, n_inputs)).astype(dtype)
        got = run_onnxruntime(path.read_bytes(), inputs)
        assert got.dtype == np.dtype(dtype)
        assert_close(got, predict(model, inputs), dtype)


def test_export_writes_a_standard_graph_with_a_dynamic_batch():
    proto = onnx.load_model_from_string(minigrad.onnx.dumps(minigrad.load(REPO / "models" / "xor.json")))
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Tanh", "Gemm", "Sigmoid"]
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    dims = [(d.dim_param or d.dim_value) for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 2]
    assert [(d.dim_param or d.dim_value) for d in graph_output.type.tensor_type.shape.dim] == ["batch", 1]
    assert graph_input.type.tensor_type.elem_type == TensorProto.DOUBLE
    assert {o.domain: o.version for o in proto.opset_import} == {"": minigrad.onnx.OPSET}


def test_softmax_is_exported_over_the_last_axis():
    model = minigrad.Sequential([minigrad.Linear(3, 4, rng=np.random.default_rng(0)), minigrad.Softmax()])
    proto = onnx.load_model_from_string(minigrad.onnx.dumps(model))
    softmax = proto.graph.node[-1]
    assert softmax.op_type == "Softmax" and helper.get_attribute_value(softmax.attribute[0]) == -1
    inputs = np.random.default_rng(1).standard_normal((5, 3))
    assert_close(run_onnxruntime(proto.SerializeToString(), inputs), predict(model, inputs), "float64")


def test_metadata_becomes_metadata_props_with_json_for_non_strings():
    model = minigrad.load(REPO / "models" / "iris.json")
    props = {p.key: p.value for p in onnx.load_model_from_string(minigrad.onnx.dumps(model)).metadata_props}
    assert props["name"] == model.metadata["name"]
    assert json.loads(props["outputs"]) == model.metadata["outputs"]
    assert json.loads(props["training"]) == model.metadata["training"]


def test_export_of_a_model_the_document_refuses_writes_nothing(tmp_path):
    model = minigrad.Sequential([minigrad.Linear(2, 1, rng=np.random.default_rng(0))])
    model.layers[0].weight.data[0, 0] = np.nan
    path = tmp_path / "model.onnx"
    with pytest.raises(ModelFormatError, match=r"layers\[0\]\.weight\[0\]\[0\]: NaN is not allowed"):
        minigrad.onnx.export(model, path)
    assert list(tmp_path.iterdir()) == []


class Swish(minigrad.nn.Layer):
    """A layer a program registers; ONNX has no op of that name."""

    def forward(self, x):
        return x * x.sigmoid()


def test_export_of_a_registered_layer_without_an_onnx_op_is_refused(tmp_path, monkeypatch):
    # It was written as an op 'Swish' that no ONNX runtime has: an invalid file, exit 0.
    monkeypatch.setattr(minigrad.format, "LAYER_TYPES", dict(minigrad.format.LAYER_TYPES))
    minigrad.format.register_layer(Swish)
    model = minigrad.Sequential([minigrad.Linear(2, 2, rng=np.random.default_rng(0)), Swish()])
    with pytest.raises(OnnxImportError, match=r"^layers\[1\]\.type: Swish has no ONNX export; minigrad exports "
                                              "Linear, Relu, Tanh, Sigmoid, Softmax"):
        minigrad.onnx.export(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- round trip


def awkward_model(dtype: str) -> minigrad.Sequential:
    """Weights that a lossy path would change: -0.0, subnormals, extremes of the dtype, thirds."""
    info = np.finfo(dtype)
    rng = np.random.default_rng(3)
    first = minigrad.Linear(3, 4, rng=rng, dtype=np.dtype(dtype))
    first.weight.data[0] = [-0.0, info.smallest_subnormal, info.max, -info.tiny]
    first.weight.data[1] = np.array([1, 2, 4, 5], dtype=dtype) / np.array(3, dtype=dtype)
    first.bias.data[:] = rng.standard_normal(4).astype(dtype)
    model = minigrad.Sequential([first, minigrad.Relu(), minigrad.Linear(4, 2, rng=rng, dtype=np.dtype(dtype)),
                                 minigrad.Softmax()])
    model.metadata = {"name": "awkward", "count": "3", "epochs": 3, "ratio": 0.1, "nested": {"a": [1, None, True]},
                      "empty": {}, "unicode": "Grüße ✓"}
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_json_to_onnx_to_json_is_bitwise(dtype, tmp_path):
    model = awkward_model(dtype)
    text = minigrad.dumps(model)
    minigrad.onnx.export(minigrad.loads(text), tmp_path / "model.onnx")
    back = minigrad.onnx.load(tmp_path / "model.onnx")
    assert minigrad.dumps(back) == text
    for original, loaded in zip(model.get_parameters(), back.get_parameters()):
        assert loaded.data.dtype == original.data.dtype
        assert loaded.data.tobytes() == original.data.tobytes()
    assert back.metadata == model.metadata
    assert back.metadata["count"] == "3"  # a string that looks like JSON stays a string


@settings(max_examples=100, deadline=None)
@given(models())
def test_any_model_survives_onnx_and_back_bit_for_bit(model):
    assert minigrad.dumps(minigrad.onnx.loads(minigrad.onnx.dumps(model))) == minigrad.dumps(model)


def test_metadata_nested_too_deeply_to_read_is_refused():
    # json.loads' RecursionError escaped loads() (and minigrad import) as a traceback.
    proto = onnx.load_model_from_string(minigrad.onnx.dumps(minigrad.load(REPO / "models" / "xor.json")))
    training = next(prop for prop in proto.metadata_props if prop.key == "training")
    training.value = "[" * 100_000 + "]" * 100_000
    with pytest.raises(OnnxImportError, match=r"^metadata_props\.minigrad\.json_values: lists a value nested too"):
        minigrad.onnx.loads(proto.SerializeToString())


def test_reserved_metadata_key_is_refused():
    model = minigrad.load(REPO / "models" / "xor.json")
    model.metadata = {minigrad.onnx.JSON_VALUES_KEY: "x"}
    with pytest.raises(OnnxImportError, match="reserved for the ONNX export"):
        minigrad.onnx.dumps(model)


# ---------------------------------------------------------------------- PyTorch


TORCH_RECORDS = json.loads((FIXTURES / "torch_mlp_outputs.json").read_text())["models"]


@pytest.mark.parametrize("record", TORCH_RECORDS, ids=lambda record: record["file"])
def test_pytorch_export_imports_and_predicts_like_pytorch(record):
    model = minigrad.onnx.load(FIXTURES / record["file"])
    dtype = record["dtype"]
    assert model.get_parameters()[0].data.dtype == np.dtype(dtype)
    assert model.metadata["onnx"]["producer_name"] == "pytorch"
    inputs = np.array(record["inputs"], dtype=dtype)
    assert_close(predict(model, inputs), np.array(record["outputs"], dtype=dtype), dtype)


def test_pytorch_layers_become_minigrad_layers():
    model = minigrad.onnx.load(FIXTURES / "torch_mlp_float32.onnx")
    assert repr(model) == "Sequential([Linear(4, 8), Relu(), Linear(8, 6), Tanh(), Linear(6, 3), Softmax()])"


# ---------------------------------------------------------------------- scikit-learn


def sklearn_onnx(estimator, inputs: np.ndarray, **options) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the weights need not be good, only the same
        return to_onnx(estimator, inputs[:1], **options).SerializeToString()


IRIS_X, IRIS_Y = load_iris(return_X_y=True)


# (activation, labels): three classes end in Softmax; two classes in Sigmoid and [1 - p, p].
CLASSIFIERS = {"relu": ("relu", IRIS_Y), "tanh": ("tanh", IRIS_Y), "logistic": ("logistic", IRIS_Y),
               "binary": ("relu", (IRIS_Y == 2).astype(int)), "binary logistic": ("logistic", (IRIS_Y == 0) * 1)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CLASSIFIERS)
def test_sklearn_classifier_imports_and_predicts_probabilities_like_predict_proba(case, dtype):
    activation, labels = CLASSIFIERS[case]
    inputs = IRIS_X.astype(dtype)
    classifier = MLPClassifier(hidden_layer_sizes=(8, 5), activation=activation, max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier.fit(inputs, labels)
    model = minigrad.onnx.loads(sklearn_onnx(classifier, inputs))
    assert model.get_parameters()[0].data.dtype == np.dtype(dtype)
    assert_close(predict(model, inputs), classifier.predict_proba(inputs), dtype)
    assert model.metadata["outputs"] == [str(label) for label in classifier.classes_]


def test_sklearn_classifier_without_zipmap_imports_its_probabilities():
    classifier = MLPClassifier(hidden_layer_sizes=(6,), max_iter=100, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier.fit(IRIS_X, IRIS_Y)
    model = minigrad.onnx.loads(sklearn_onnx(classifier, IRIS_X, options={"zipmap": False}))
    assert_close(predict(model, IRIS_X), classifier.predict_proba(IRIS_X), "float64")
    assert model.metadata["outputs"] == ["0", "1", "2"]


def test_sklearn_regressor_imports_and_predicts_like_predict():
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((40, 3))
    regressor = MLPRegressor(hidden_layer_sizes=(7,), max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regressor.fit(inputs, inputs.sum(axis=1))
    model = minigrad.onnx.loads(sklearn_onnx(regressor, inputs))  # ends in Reshape to [-1, 1]
    assert_close(predict(model, inputs)[:, 0], regressor.predict(inputs), "float64")


# ---------------------------------------------------------------------- refusals


def graph_bytes(nodes, initializers=(), inputs=None, outputs=None, opset=17) -> bytes:
    """A float graph from (op, inputs, outputs, name, attributes) tuples; input 'x' [N, 4], output 'y'."""
    made = [helper.make_node(op, ins, outs, name=name, **attrs) for op, ins, outs, name, attrs in nodes]
    graph = helper.make_graph(
        made, "test",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


W = ("W", np.ones((4, 3), np.float32))
B = ("b", np.zeros(3, np.float32))
SUPPORTED = "minigrad imports Gemm, MatMul, Add, Relu, Tanh, Sigmoid, Softmax, Flatten, Identity"

REFUSED = {
    "conv": (
        graph_bytes([("Conv", ["x", "k"], ["y"], "Conv_0", {})], [("k", np.ones((1, 1, 1, 1), np.float32))]),
        f"node 'Conv_0' (Conv): unsupported op; {SUPPORTED}",
    ),
    "residual add": (
        graph_bytes([("MatMul", ["x", "S"], ["h"], "MatMul_0", {}), ("Relu", ["h"], ["r"], "Relu_1", {}),
                     ("Add", ["r", "x"], ["y"], "Add_2", {})], [("S", np.eye(4, dtype=np.float32))]),
        "node 'Add_2' (Add): takes 2 computed tensors ('r', 'x'); minigrad imports a chain of layers",
    ),
    "unsupported activation": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["h"], "fc", {}), ("LeakyRelu", ["h"], ["y"], "act", {})], [W, B]),
        "node 'act' (LeakyRelu): unsupported op",
    ),
    "Gemm alpha": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {"alpha": 2.0})], [W, B]),
        "node 'fc' (Gemm): alpha=2.0; minigrad imports Gemm with alpha=1",
    ),
    "Softmax over the batch": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["h"], "fc", {}), ("Softmax", ["h"], ["y"], "sm", {"axis": 0})],
                    [W, B]),
        "node 'sm' (Softmax): axis=0",
    ),
    "Add without MatMul": (
        graph_bytes([("Add", ["x", "c"], ["y"], "shift", {})], [("c", np.ones(4, np.float32))]),
        "node 'shift' (Add): adds a constant that is not the bias of a MatMul",
    ),
    "weights of another dtype": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {})], [("W", np.ones((4, 3))), B]),
        "initializer 'W': is float64 but the graph's input is float32",
    ),
    "weights that do not fit": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {"transB": 1})], [W, B]),
        "node 'fc' (Gemm): weight 'W' takes 3 features, but 4 arrive",
    ),
    "images": (
        graph_bytes([("Flatten", ["x"], ["y"], "flat", {})],
                    inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 2])]),
        "input 'x': expected shape [batch, features], got 4 dimensions",
    ),
    "integer input": (
        graph_bytes([("Identity", ["x"], ["y"], "id", {})],
                    inputs=[helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4])]),
        "input 'x': expected a float or double tensor, got INT64",
    ),
    "cast to another type": (
        graph_bytes([("Cast", ["x"], ["c"], "cast", {"to": TensorProto.DOUBLE}),
                     ("Gemm", ["c", "W", "b"], ["y"], "fc", {})], [W, B]),
        "node 'cast' (Cast): casts to DOUBLE",
    ),
    "reshape that moves rows": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["h"], "fc", {}), ("Reshape", ["h", "s"], ["y"], "reshape", {})],
                    [W, B, ("s", np.array([-1, 1]))]),
        "node 'reshape' (Reshape): reshapes to [-1, 1]; only [-1, 3] (rows stay rows) is harmless",
    ),
    "two outputs": (
        graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {}), ("Relu", ["y"], ["z"], "r", {})], [W, B],
                    outputs=[helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "yz"]),
        "graph: 2 outputs ('y', 'z')",
    ),
    "no weights": (
        graph_bytes([("Relu", ["x"], ["y"], "r", {})]),
        "layers: expected at least one layer with weights",
    ),
    "not ONNX": (b"\x00\x01 this is not a protobuf \xff", "document: not an ONNX model"),
    # Malformed nodes (fewer inputs or outputs than their op has) once escaped as IndexError / StopIteration.
    "Gemm without weights": (
        graph_bytes([("Gemm", ["x"], ["y"], "fc", {})]),
        "node 'fc' (Gemm): has 1 inputs; Gemm takes 2 to 3",
    ),
    "MatMul without weights": (
        graph_bytes([("MatMul", ["x"], ["y"], "mm", {})]),
        "node 'mm' (MatMul): has 1 inputs; MatMul takes 2",
    ),
    "Add of one operand": (
        graph_bytes([("MatMul", ["x", "W"], ["h"], "mm", {}), ("Add", ["h"], ["y"], "add", {})], [W]),
        "node 'add' (Add): has 1 inputs; Add takes 2",
    ),
    "Add of an omitted operand": (
        graph_bytes([("MatMul", ["x", "W"], ["h"], "mm", {}), ("Add", ["h", ""], ["y"], "add", {})], [W]),
        "node 'add' (Add): adds nothing to the MatMul before it",
    ),
    "Constant without an output": (
        graph_bytes([("Constant", [], [], "", {"value": numpy_helper.from_array(np.ones(3, np.float32))}),
                     ("Gemm", ["x", "W", "b"], ["y"], "fc", {})], [W, B]),
        "node '' (Constant): only Constant nodes with a tensor 'value' and one output are read",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_graphs_outside_the_dense_subset_are_refused_naming_where(case):
    data, message = REFUSED[case]
    with pytest.raises(ModelFormatError) as raised:
        minigrad.onnx.loads(data)
    assert str(raised.value).startswith(message)


def test_a_refusal_is_an_onnx_import_error_with_its_location():
    with pytest.raises(OnnxImportError) as raised:
        minigrad.onnx.loads(REFUSED["conv"][0])
    assert raised.value.location == "node 'Conv_0' (Conv)"


def test_harmless_nodes_are_skipped():
    nodes = [("Identity", ["x"], ["i"], "id", {}), ("Flatten", ["i"], ["f"], "flat", {"axis": 1}),
             ("Cast", ["f"], ["c"], "cast", {"to": TensorProto.FLOAT}), ("MatMul", ["c", "W"], ["m"], "mm", {}),
             ("Add", ["b", "m"], ["y"], "bias", {})]
    model = minigrad.onnx.loads(graph_bytes(nodes, [W, ("b", np.full((1, 3), 0.5, np.float32))]))
    assert repr(model) == "Sequential([Linear(4, 3)])"
    np.testing.assert_array_equal(model.layers[0].bias.data, [0.5, 0.5, 0.5])


def test_a_missing_file_raises_the_usual_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        minigrad.onnx.load(tmp_path / "absent.onnx")


# ---------------------------------------------------------------------- the optional dependency


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_importing_minigrad_does_not_import_onnx():
    result = run_python("import sys, minigrad, minigrad.cli; print('onnx' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_onnx_the_import_error_says_how_to_install_it():
    # None in sys.modules makes `import onnx` fail exactly as it does when the package is not installed.
    result = run_python("import sys; sys.modules['onnx'] = None\nimport minigrad.onnx")
    assert result.returncode != 0
    assert "ImportError: minigrad.onnx needs the onnx package" in result.stderr
    assert "pip install minigrad[onnx]" in result.stderr


def test_weights_in_an_external_data_file_are_read_from_a_path_only(tmp_path):
    proto = onnx.load(FIXTURES / "torch_mlp_float64.onnx")
    onnx.save_model(proto, tmp_path / "split.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="split.onnx.data", size_threshold=0)
    expected = minigrad.onnx.load(FIXTURES / "torch_mlp_float64.onnx")
    assert minigrad.dumps(minigrad.onnx.load(tmp_path / "split.onnx")) == minigrad.dumps(expected)
    with pytest.raises(OnnxImportError, match="initializer '.*': stored in an external data file"):
        minigrad.onnx.loads((tmp_path / "split.onnx").read_bytes())


def test_a_classifier_whose_only_output_is_a_zipmap_imports_its_probabilities():
    probabilities = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    nodes = [("Gemm", ["x", "W", "b"], ["h"], "fc", {}), ("Softmax", ["h"], ["p"], "sm", {}),
             ("ZipMap", ["p"], ["y"], "zip", {"classlabels_strings": ["cat", "dog", "eel"], "domain": "ai.onnx.ml"})]
    model = minigrad.onnx.loads(graph_bytes(nodes, [W, B], outputs=[helper.make_value_info("y", probabilities)]))
    assert repr(model) == "Sequential([Linear(4, 3), Softmax()])"
    assert model.metadata["outputs"] == ["cat", "dog", "eel"]


def external_tensor(name: str, location: str, size: int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[size], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=location)
    return tensor


def test_bytes_never_read_a_file_next_to_the_process(tmp_path, monkeypatch):
    # An unused ArrayFeatureExtractor whose label constant lives "externally" in ./secret: loads() read the file
    # and copied its bytes into the model's metadata as class labels (['97', '98', '99']).
    (tmp_path / "secret").write_bytes(b"abc")
    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc"),
         helper.make_node("ArrayFeatureExtractor", ["labels", "y"], ["z"], name="afe", domain="ai.onnx.ml")],
        "leak", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W[1], "W"), numpy_helper.from_array(B[1], "b"),
         external_tensor("labels", "secret", 3)],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("ai.onnx.ml", 3)]).SerializeToString()
    with pytest.raises(OnnxImportError, match="initializer 'labels': stored in an external data file"):
        minigrad.onnx.loads(data)


def test_type_numbers_outside_the_onnx_enum_are_refused_not_crashed_on():
    # A corrupt or future file: numpy_helper's KeyError and protobuf's ValueError escaped loads() as themselves.
    model = onnx.load_model_from_string(graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {})], [W, B]))
    next(t for t in model.graph.initializer if t.name == "W").data_type = 67
    with pytest.raises(OnnxImportError, match=r"^initializer 'W': has data type 67, which has no numpy type"):
        minigrad.onnx.loads(model.SerializeToString())
    cast = graph_bytes([("Cast", ["x"], ["c"], "cast", {"to": 111}), ("Gemm", ["c", "W", "b"], ["y"], "fc", {})],
                       [W, B])
    with pytest.raises(OnnxImportError, match=r"^node 'cast' \(Cast\): casts to 111; only a cast to the graph's"):
        minigrad.onnx.loads(cast)
    model = onnx.load_model_from_string(graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {})], [W, B]))
    model.graph.input[0].type.tensor_type.elem_type = 99
    with pytest.raises(OnnxImportError, match=r"^input 'x': expected a float or double tensor, got 99"):
        minigrad.onnx.loads(model.SerializeToString())


@pytest.mark.parametrize(("attribute", "value", "message"), [
    ("to", [1, 2], "node 'cast' (Cast): attribute 'to' is INTS; expected INT"),
    ("transB", 1.5, "node 'fc' (Gemm): attribute 'transB' is FLOAT; expected INT"),
])
def test_attributes_of_the_wrong_type_are_refused_naming_the_node(attribute, value, message):
    # A list for Cast's 'to' escaped loads() as TypeError("unhashable type: 'list'"); a float transB was truthy.
    nodes = [("Cast", ["x"], ["c"], "cast", {"to": TensorProto.FLOAT}), ("Gemm", ["c", "W", "b"], ["y"], "fc", {})]
    node = nodes[0] if attribute == "to" else nodes[1]
    node[4][attribute] = value
    with pytest.raises(OnnxImportError, match=f"^{re.escape(message)}"):
        minigrad.onnx.loads(graph_bytes(nodes, [W, B]))


def test_class_labels_of_the_wrong_type_are_refused_naming_the_zipmap():
    # An int where ZipMap's classlabels_int64s list belongs escaped as TypeError("'int' object is not iterable").
    zipmap = ("ZipMap", ["y"], ["z"], "zip", {"classlabels_int64s": 3, "domain": "ai.onnx.ml"})
    data = ml_graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {}), zipmap],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])])
    with pytest.raises(OnnxImportError, match=r"^node 'zip' \(ZipMap\): attribute 'classlabels_int64s' is INT; "
                                              "expected INTS"):
        minigrad.onnx.loads(data)


def test_a_declared_shape_larger_than_its_data_is_refused_naming_the_initializer():
    model = onnx.load_model_from_string(graph_bytes([("Gemm", ["x", "W", "b"], ["y"], "fc", {})], [W, B]))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    weight.dims[:] = [10**9, 10**9]  # twelve numbers claiming 10^18: refused, nothing allocated
    with pytest.raises(OnnxImportError, match=r"initializer 'W': its data do not fill its declared shape "
                                              r"\[1000000000, 1000000000\]"):  # was numpy's bare "cannot reshape"
        minigrad.onnx.loads(model.SerializeToString())


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin", "missing.bin"])
def test_external_data_outside_the_model_directory_is_an_import_error(tmp_path, location):
    # onnx's checker.ValidationError (not a ValueError) escaped load() as itself.
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc")], "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [external_tensor("W", location, 12), numpy_helper.from_array(B[1], "b")],
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(OnnxImportError, match="^external data: .*external data files must sit in the model's own"):
        minigrad.onnx.load(path)


def test_an_external_data_file_shorter_than_its_tensor_is_an_import_error(tmp_path):
    # onnx's ValueError ("External data length (48) exceeds available data") escaped load() as itself.
    proto = onnx.load(FIXTURES / "torch_mlp_float64.onnx")
    onnx.save_model(proto, tmp_path / "split.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="split.onnx.data", size_threshold=0)
    data = tmp_path / "split.onnx.data"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(OnnxImportError, match="^external data: External data length .* exceeds available data"):
        minigrad.onnx.load(tmp_path / "split.onnx")


def ml_graph_bytes(nodes, outputs=None) -> bytes:
    """graph_bytes with the ai.onnx.ml domain (ZipMap, ArrayFeatureExtractor) imported too."""
    proto = onnx.load_model_from_string(graph_bytes(nodes, [W, B], outputs=outputs))
    proto.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return proto.SerializeToString()


def test_classifier_tails_without_inputs_or_with_stray_label_bytes_are_no_crash():
    # Each escaped loads() (and minigrad import) as IndexError or UnicodeDecodeError.
    probabilities = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])]
    gemm = ("Gemm", ["x", "W", "b"], ["y"], "fc", {})
    with pytest.raises(OnnxImportError, match=r"^node 'zip' \(ZipMap\): has 0 inputs; ZipMap takes 1"):
        minigrad.onnx.loads(ml_graph_bytes([gemm, ("ZipMap", [], ["z"], "zip", {"domain": "ai.onnx.ml"})],
                                           probabilities))
    # An ArrayFeatureExtractor off the chain without inputs gives no labels; the model still imports.
    model = minigrad.onnx.loads(ml_graph_bytes([gemm, ("ArrayFeatureExtractor", [], ["z"], "afe",
                                                       {"domain": "ai.onnx.ml"})]))
    assert repr(model) == "Sequential([Linear(4, 3)])" and "outputs" not in model.metadata
    labels = {"classlabels_strings": [b"\xffcat", b"dog", b"eel"], "domain": "ai.onnx.ml"}
    model = minigrad.onnx.loads(ml_graph_bytes([gemm, ("ZipMap", ["y"], ["z"], "zip", labels)], probabilities))
    assert model.metadata["outputs"] == ["\\xffcat", "dog", "eel"]
