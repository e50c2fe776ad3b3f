"""The example models in models/: they load, do their job, say what their inputs and outputs are,
and `make models` (models/make_examples.py) reproduces them."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

import minigrad
from minigrad.format import document_summary

MODELS = Path(__file__).parent.parent / "models"


def predict(model, inputs):
    with minigrad.no_grad():
        return model(minigrad.Tensor(inputs)).data


def test_xor_model_computes_xor():
    model = minigrad.load(MODELS / "xor.json")
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    outputs = predict(model, inputs)
    assert np.array_equal(outputs[:, 0] > 0.5, [False, True, True, False])
    assert document_summary(model)["layers"] == ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"]


def test_iris_model_classifies_raw_measurements():
    model = minigrad.load(MODELS / "iris.json")
    iris = load_iris()
    probabilities = predict(model, iris.data)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert (probabilities.argmax(axis=1) == iris.target).mean() >= 0.9
    assert model.metadata["outputs"] == list(iris.target_names)
    assert model.metadata["inputs"] == list(iris.feature_names)


@pytest.mark.parametrize("name", ["xor", "iris"])
def test_metadata_describes_inputs_and_outputs(name):
    with open(MODELS / f"{name}.json", encoding="utf-8") as f:
        document = json.load(f)
    summary = document_summary(document)
    metadata = document["metadata"]
    assert metadata["name"] == name
    assert len(metadata["inputs"]) == summary["inputs"]
    assert len(metadata["outputs"]) == summary["outputs"]
    assert {"description", "created_at", "training"} <= set(metadata)


def test_make_examples_reproduces_the_committed_models(tmp_path):
    spec = importlib.util.spec_from_file_location("make_examples", MODELS / "make_examples.py")
    make_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_examples)
    make_examples.main(str(tmp_path))
    for name in ("xor", "iris"):
        committed, fresh = minigrad.load(MODELS / f"{name}.json"), minigrad.load(tmp_path / f"{name}.json")
        # Same machine, same bits; another CPU's BLAS may round the tiny matrix products differently.
        for a, b in zip(committed.get_parameters(), fresh.get_parameters(), strict=True):
            np.testing.assert_allclose(a.data, b.data, rtol=1e-9, atol=1e-12)
        assert fresh.metadata["inputs"] == committed.metadata["inputs"]
