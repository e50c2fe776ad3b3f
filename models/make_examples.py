"""Train and save the example models in this folder: ``make models`` (or ``python models/make_examples.py``).

- ``xor.json``: the course notes' 2-3-1 network (tanh, then sigmoid; MSE, SGD alpha=1) trained on XOR.
- ``iris.json``: a 4-16-3 ReLU classifier of scikit-learn's bundled iris data, with a final Softmax
  so it outputs class probabilities, taking the raw measurements in centimetres.

Deterministic: fixed seeds, a fixed split and a fixed ``created_at``, so rerunning reproduces the
files byte for byte on the same machine. scikit-learn is a development dependency used only here
(for the data set); minigrad never imports it.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import minigrad
from minigrad import SGD, Adam, CrossEntropyLoss, Linear, MSELoss, Relu, Sequential, Sigmoid, Softmax, Tanh, Tensor

SEED = 7
# Fixed rather than the clock's time, so `make models` reproduces the committed files exactly.
CREATED_AT = "2026-11-27T00:00:00Z"
HERE = os.path.dirname(os.path.abspath(__file__))


def predict(model, inputs) -> np.ndarray:
    with minigrad.no_grad():
        return model(Tensor(inputs)).data


def xor_model() -> Sequential:
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    targets = np.array([[0], [1], [1], [0]], dtype=np.float64)
    rng = np.random.default_rng(SEED)
    model = Sequential([Linear(2, 3, rng=rng), Tanh(), Linear(3, 1, rng=rng), Sigmoid()])
    epochs = 500
    history = minigrad.fit(
        model, inputs, targets, MSELoss(), SGD(model.get_parameters(), alpha=1), epochs=epochs, shuffle=False
    )
    outputs = predict(model, inputs)
    if history[-1]["loss"] >= 0.01 or not np.array_equal(outputs > 0.5, targets > 0.5):
        sys.exit(f"xor: training did not converge (loss {history[-1]['loss']:.4g}); refusing to save it")
    model.metadata = {
        "name": "xor",
        "description": "The course notes' 2-3-1 network (tanh, then sigmoid) trained on XOR; "
        "outputs the probability that exactly one input is 1.",
        "created_at": CREATED_AT,
        "inputs": ["a", "b"],
        "outputs": ["xor"],
        "training": {
            "data": "the four XOR cases",
            "loss": "MSELoss (summed over the batch)",
            "optimizer": "SGD(alpha=1)",
            "epochs": epochs,
            "batch_size": 4,
            "seed": SEED,
            "final_loss": history[-1]["loss"],
        },
    }
    return model


def fold_standardization(linear: Linear, mean: np.ndarray, std: np.ndarray) -> None:
    """Make ``linear`` take raw inputs: ((x - mean) / std) @ W + b == x @ (W / std) + (b - (mean / std) @ W)."""
    weight = linear.weight.data
    linear.bias.data -= (mean / std) @ weight
    weight /= std[:, None]


def iris_model() -> Sequential:
    from sklearn.datasets import load_iris  # development dependency: only this script needs it

    iris = load_iris()
    x, y = iris.data.astype(np.float64), iris.target
    order = np.random.default_rng(SEED).permutation(len(x))
    test, train = order[:30], order[30:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    scaled = (x - mean) / std

    rng = np.random.default_rng(SEED)
    model = Sequential([Linear(4, 16, rng=rng), Relu(), Linear(16, 3, rng=rng)])
    epochs = 200
    history = minigrad.fit(
        model,
        scaled[train],
        y[train],
        CrossEntropyLoss(),
        Adam(model.get_parameters(), alpha=0.01),
        epochs=epochs,
        batch_size=16,
        seed=SEED,
        validation=(scaled[test], y[test]),
    )
    fold_standardization(model.layers[0], mean, std)
    model.add(Softmax())  # trained on logits; saved to output probabilities
    test_accuracy = float((predict(model, x[test]).argmax(axis=1) == y[test]).mean())
    if test_accuracy < 0.9:
        sys.exit(f"iris: test accuracy {test_accuracy:.3f} is too low; refusing to save it")
    model.metadata = {
        "name": "iris",
        "description": "Iris species from four flower measurements (scikit-learn's bundled iris data); "
        "outputs one probability per species.",
        "created_at": CREATED_AT,
        "inputs": list(iris.feature_names),
        "outputs": [str(name) for name in iris.target_names],
        "training": {
            "data": "scikit-learn load_iris(): 120 training and 30 held-out test samples",
            "preprocessing": "standardized with the training set's mean and std, folded into the first layer",
            "loss": "CrossEntropyLoss (on logits, before the final Softmax)",
            "optimizer": "Adam(alpha=0.01)",
            "epochs": epochs,
            "batch_size": 16,
            "seed": SEED,
            "final_loss": history[-1]["loss"],
            "test_accuracy": test_accuracy,
        },
    }
    return model


def main(directory: str = HERE) -> None:
    for name, make in (("xor", xor_model), ("iris", iris_model)):
        model = make()
        path = os.path.join(directory, f"{name}.json")
        minigrad.save(model, path)
        figures = {k: v for k, v in model.metadata["training"].items() if k in ("final_loss", "test_accuracy")}
        print(f"{path}: {' '.join(minigrad.format.document_summary(model)['layers'])} {figures}")


if __name__ == "__main__":
    main(*sys.argv[1:])
