"""Model documents for the format's tests: random models, a hand-written document, and broken
documents with one defect each (shared by the loader's tests and the JSON Schema's)."""

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minigrad import Linear, Relu, Sequential, Sigmoid, Softmax, Tanh

ACTIVATIONS = (Tanh, Sigmoid, Relu, Softmax)


def valid_document():
    return {
        "format": "minigrad.sequential",
        "version": 1,
        "dtype": "float64",
        "layers": [
            {
                "type": "Linear",
                "in_features": 2,
                "out_features": 3,
                "weight": [[1, 2, 3], [4, 5, 6]],
                "bias": [0, 0, 0],
            },
            {"type": "Tanh"},
            {"type": "Linear", "in_features": 3, "out_features": 1, "weight": [[1], [2], [3]], "bias": [0.5]},
            {"type": "Sigmoid"},
        ],
        "metadata": {"name": "xor", "training": {"loss": 0.01}},
    }


def broken(change):
    def make():
        document = valid_document()
        change(document)
        return document

    return make


def put(path, value):
    """A change that sets ``document[path...] = value``."""

    def change(document):
        *parents, last = path
        for key in parents:
            document = document[key]
        document[last] = value

    return change


def delete(*path):
    def change(document):
        *parents, last = path
        for key in parents:
            document = document[key]
        del document[last]

    return change


def nested(levels):
    value = 1
    for _ in range(levels):
        value = {"a": value}
    return value


# (name, document maker, location, message fragment, JSON Schema can tell).
BROKEN = [
    ("not an object", lambda: [valid_document()], "document", "expected a JSON object, got an array", True),
    ("wrong format", broken(put(["format"], "keras")), "format", "expected 'minigrad.sequential', got 'keras'", True),
    ("no format", broken(delete("format")), "format", "required field is missing", True),
    ("future version", broken(put(["version"], 7)), "version", "unsupported version 7 (this minigrad reads 1)", True),
    ("version as text", broken(put(["version"], "1")), "version", "expected an integer, got '1'", True),
    ("no version", broken(delete("version")), "version", "required field is missing", True),
    ("float16", broken(put(["dtype"], "float16")), "dtype", "expected one of float64, float32, got 'float16'", True),
    ("unknown top-level key", broken(put(["weights"], [])), "weights", "unknown field", True),
    ("no layers", broken(delete("layers")), "layers", "required field is missing", True),
    ("layers as object", broken(put(["layers"], {"0": {"type": "Tanh"}})), "layers", "expected an array", True),
    ("empty layers", broken(put(["layers"], [])), "layers", "at least one layer with weights", True),
    (
        "only activations",
        broken(put(["layers"], [{"type": "Tanh"}])),
        "layers",
        "at least one layer with weights",
        True,
    ),
    ("layer as string", broken(put(["layers", 1], "Tanh")), "layers[1]", "expected a layer object", True),
    ("layer without type", broken(put(["layers", 1], {})), "layers[1].type", "required field is missing", True),
    (
        "unknown layer type",
        broken(put(["layers", 1, "type"], "Conv2d")),
        "layers[1].type",
        "unknown layer type 'Conv2d'; expected one of Linear, Relu, Sigmoid, Softmax, Tanh",
        True,
    ),
    ("type not a string", broken(put(["layers", 3, "type"], 5)), "layers[3].type", "unknown layer type 5", True),
    ("unknown layer key", broken(put(["layers", 1, "alpha"], 1)), "layers[1].alpha", "unknown field", True),
    ("no in_features", broken(delete("layers", 0, "in_features")), "layers[0].in_features", "required field", True),
    ("zero features", broken(put(["layers", 2, "out_features"], 0)), "layers[2].out_features", "got 0", True),
    ("features as bool", broken(put(["layers", 0, "in_features"], True)), "layers[0].in_features", "got true", True),
    # JSON Schema counts 2.0 as an integer; the loader wants the integer written as one.
    ("features as float", broken(put(["layers", 0, "in_features"], 2.0)), "layers[0].in_features", "got 2.0", False),
    ("no weight", broken(delete("layers", 2, "weight")), "layers[2].weight", "required field is missing", True),
    ("weight as text", broken(put(["layers", 0, "weight"], "abc")), "layers[0].weight", "got 'abc'", True),
    ("weight 1-D", broken(put(["layers", 0, "weight"], [1, 2, 3])), "layers[0].weight", "got [3]", True),
    (
        "weight shape",
        broken(put(["layers", 2, "weight"], [[1, 2], [3, 4], [5, 6]])),
        "layers[2].weight",
        "expected shape [3, 1], got [3, 2]",
        False,
    ),
    ("bias shape", broken(put(["layers", 0, "bias"], [0, 0])), "layers[0].bias", "expected shape [3], got [2]", False),
    (
        "ragged weight",
        broken(put(["layers", 0, "weight", 1], [4, 5])),
        "layers[0].weight[1]",
        "expected 3 items",
        False,
    ),
    ("row not an array", broken(put(["layers", 0, "weight", 1], 4)), "layers[0].weight[1]", "expected an array", True),
    ("string number", broken(put(["layers", 0, "weight", 1, 2], "6")), "layers[0].weight[1][2]", "got '6'", True),
    ("boolean weight", broken(put(["layers", 0, "weight", 0, 1], True)), "layers[0].weight[0][1]", "got true", True),
    (
        "null bias",
        broken(put(["layers", 2, "bias", 0], None)),
        "layers[2].bias[0]",
        "expected a number, got null",
        True,
    ),
    ("NaN weight", broken(put(["layers", 2, "weight", 1, 0], math.nan)), "layers[2].weight[1][0]", "NaN", False),
    ("infinite bias", broken(put(["layers", 0, "bias", 2], -math.inf)), "layers[0].bias[2]", "-Infinity", False),
    (
        "Linear chain broken",
        broken(
            put(
                ["layers", 2], {"type": "Linear", "in_features": 4, "out_features": 1, "weight": [[1]] * 4, "bias": [0]}
            )
        ),
        "layers[2].in_features",
        "expected 3 (the outputs of layers[0]), got 4",
        False,
    ),
    (
        "beyond float32",
        broken(lambda d: d.update(dtype="float32") or d["layers"][0]["weight"][1].__setitem__(0, 1e39)),
        "layers[0].weight[1][0]",
        "1e+39 is out of float32 range",
        False,
    ),
    ("metadata not an object", broken(put(["metadata"], "xor")), "metadata", "expected an object, got 'xor'", True),
    (
        "NaN in metadata",
        broken(put(["metadata", "training", "loss"], math.nan)),
        "metadata.training.loss",
        "NaN",
        False,
    ),
    (
        "metadata too deep",
        broken(put(["metadata"], nested(40))),
        "metadata" + ".a" * 32,
        "nested deeper than 32",
        False,
    ),
]


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def models(draw):
    """Random architectures (1-4 Linear layers, activations in between) with arbitrary finite weights."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    floats = st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8)
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        linear = Linear(n_in, n_out, rng=np.random.default_rng(0), dtype=dtype)
        linear.weight.data[...] = draw(arrays(dtype, (n_in, n_out), elements=floats))
        linear.bias.data[...] = draw(arrays(dtype, (n_out,), elements=floats))
        layers.append(linear)
        layers += [cls() for cls in draw(st.lists(st.sampled_from(ACTIVATIONS), max_size=2))]
    model = Sequential(layers)
    model.metadata = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    return model


HAND_WRITTEN = """
{
  "format": "minigrad.sequential",
  "version": 1,
  "dtype": "float64",
  "layers": [
    {"type": "Linear", "in_features": 2, "out_features": 3,
     "weight": [[0.5, -1.0, 2.0],
                [1.5, 0.25, -0.75]],
     "bias": [0.1, 0, -0.2]},
    {"type": "Tanh"},
    {"type": "Linear", "in_features": 3, "out_features": 2,
     "weight": [[1, -1], [0.5, 0.5], [-2, 3]],
     "bias": [0.0, 1e-3]},
    {"type": "Relu"},
    {"type": "Linear", "in_features": 2, "out_features": 1, "weight": [[0.7], [-0.3]], "bias": [0.05]},
    {"type": "Sigmoid"}
  ],
  "metadata": {"name": "by hand", "inputs": ["a", "b"], "outputs": ["p"], "notes": {"anything": [1, "two", null]}}
}
"""
