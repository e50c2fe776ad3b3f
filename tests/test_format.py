"""The model document: exact round trips, hand-written documents, and what happens to bad ones."""

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from format_cases import BROKEN, HAND_WRITTEN, broken, models, put, valid_document
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

import minigrad
from minigrad import Linear, ModelFormatError, Relu, Sequential, Sigmoid, Softmax, Tanh, Tensor, no_grad
from minigrad.format import (
    LAYER_TYPES,
    LayerSpecSchema,
    ModelDocumentSchema,
    document_summary,
    finite_array,
    register_layer,
)

ACTIVATIONS = (Tanh, Sigmoid, Relu, Softmax)


def predict(model, inputs):
    with no_grad():
        return model(Tensor(inputs)).data


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------- round trips


def assert_same_model(original, loaded):
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in original.layers]
    for a, b in zip(original.get_parameters(), loaded.get_parameters(), strict=True):
        assert same_bits(a.data, b.data)
    assert loaded.metadata == original.metadata


@settings(max_examples=150, deadline=None)
@given(models())
def test_text_round_trip_keeps_every_bit(model):
    assert_same_model(model, minigrad.loads(minigrad.dumps(model)))


@settings(max_examples=50, deadline=None)
@given(models())
def test_dict_round_trip_keeps_every_bit(model):
    document = model.to_dict()
    assert json.loads(json.dumps(document, allow_nan=False)) == document  # plain JSON data
    assert_same_model(model, Sequential.from_dict(document))


def test_file_round_trips(tmp_path):
    model = Sequential([Linear(3, 4), Relu(), Linear(4, 2), Softmax()])
    model.metadata = {"name": "demo", "inputs": ["a", "b", "c"]}
    minigrad.save(model, tmp_path / "m.json")
    assert_same_model(model, minigrad.load(tmp_path / "m.json"))
    assert_same_model(model, minigrad.load(str(tmp_path / "m.json")))
    with open(tmp_path / "m.json", "rb") as f:
        assert_same_model(model, minigrad.load(f))
    text, binary = io.StringIO(), io.BytesIO()
    minigrad.save(model, text)
    minigrad.save(model, binary)
    assert binary.getvalue().decode() == text.getvalue() == minigrad.dumps(model)
    assert_same_model(model, minigrad.load(io.StringIO(text.getvalue())))
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left behind


def test_float32_document_loads_as_the_float32_values_it_names():
    text = json.dumps(
        {
            "format": "minigrad.sequential",
            "version": 1,
            "dtype": "float32",
            "layers": [
                {
                    "type": "Linear",
                    "in_features": 1,
                    "out_features": 3,
                    "weight": [[0.1, 1e-40, 3]],
                    "bias": [-0.0, 1, 2.5],
                }
            ],
        }
    )
    model = minigrad.loads(text)
    assert model.layers[0].weight.data.dtype == np.float32
    assert same_bits(model.layers[0].weight.data, np.array([[0.1, 1e-40, 3]], dtype=np.float32))
    assert same_bits(model.layers[0].bias.data, np.array([-0.0, 1, 2.5], dtype=np.float32))
    assert same_bits(minigrad.loads(minigrad.dumps(model)).layers[0].weight.data, model.layers[0].weight.data)


def test_loading_does_not_disturb_numpy_global_random_state():
    text = minigrad.dumps(Sequential([Linear(5, 5)]))
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    minigrad.loads(text)
    assert np.random.rand() == expected


# ---------------------------------------------------------------------- a hand-written document


def test_hand_written_document_predicts_what_numpy_computes():
    model = minigrad.loads(HAND_WRITTEN)
    x = np.array([[0.0, 0.0], [1.0, -2.0], [0.3, 0.9], [-1.5, 2.5]])
    h = np.tanh(x @ np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]) + np.array([0.1, 0, -0.2]))
    h = np.maximum(h @ np.array([[1, -1], [0.5, 0.5], [-2, 3]]) + np.array([0.0, 1e-3]), 0)
    expected = 1 / (1 + np.exp(-(h @ np.array([[0.7], [-0.3]]) + 0.05)))
    np.testing.assert_allclose(predict(model, x), expected, rtol=1e-13, atol=0)
    assert model.metadata["notes"] == {"anything": [1, "two", None]}
    assert document_summary(model) == {
        "inputs": 2,
        "outputs": 1,
        "dtype": "float64",
        "layers": ["Linear(2->3)", "Tanh", "Linear(3->2)", "Relu", "Linear(2->1)", "Sigmoid"],
    }


def test_documents_in_the_format_page_load():
    with open(Path(__file__).parent.parent / "docs" / "model-format.md", encoding="utf-8") as f:
        page = f.read()
    blocks = [b.split("```", 1)[0] for b in page.split("```json\n")[1:]]
    documents = [json.loads(b) for b in blocks if '"format": "minigrad.sequential"' in b]
    assert documents, "docs/model-format.md shows no complete document"
    for document in documents:
        Sequential.from_dict(document)


# ---------------------------------------------------------------------- broken documents


@pytest.mark.parametrize("make, location, fragment", [case[1:4] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_each_defect_is_reported_where_it_is(make, location, fragment):
    with pytest.raises(ModelFormatError) as caught:
        Sequential.from_dict(make())
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.errors == [(location, error.errors[0][1])], str(error)  # exactly one defect, at that place
    assert str(error).startswith(f"{location}: ")
    assert fragment in str(error)


def test_the_valid_document_of_the_table_loads():
    Sequential.from_dict(valid_document())


def test_a_foreign_document_is_not_told_its_version_is_unsupported():
    document = {**valid_document(), "format": "keras", "version": 3}
    with pytest.raises(ModelFormatError) as caught:
        Sequential.from_dict(document)
    assert caught.value.errors == [
        ("format", "expected 'minigrad.sequential', got 'keras'"),
        ("version", "unsupported version 3 (this minigrad reads 1)"),
    ]


def test_saved_file_is_readable_by_others_and_keeps_its_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        minigrad.save(small_model(), tmp_path / "new.json")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.json").chmod(0o640)
        minigrad.save(small_model(), tmp_path / "new.json")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640
        # A new file gets the mode open() would give it: the umask says who may read it (it got 0644 whatever
        # the umask, so a user's private umask 077 was ignored).
        os.umask(0o077)
        minigrad.save(small_model(), tmp_path / "private.json")
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "private.json"]  # no temporary file left


def test_a_private_model_file_replaced_is_never_readable_by_others_on_the_way(tmp_path, monkeypatch):
    # The temporary file was created 0644 (the umask's mode) and narrowed to the old file's 0600 only after:
    # another user who opened it in between could read the model once written.
    (tmp_path / "private.json").write_text("{}")
    (tmp_path / "private.json").chmod(0o600)
    created_modes, real_open = [], os.open

    def open_and_note_the_mode(path, flags, mode=0o777, **kwargs):
        fd = real_open(path, flags, mode, **kwargs)
        created_modes.append(os.fstat(fd).st_mode & 0o777)
        return fd

    monkeypatch.setattr(os, "open", open_and_note_the_mode)
    previous = os.umask(0o022)
    try:
        minigrad.save(small_model(), tmp_path / "private.json")
    finally:
        os.umask(previous)
    assert created_modes == [0o600]
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    assert minigrad.load(tmp_path / "private.json").layers[0].in_features == small_model().layers[0].in_features


def test_a_full_disk_is_reported_naming_the_model_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "model.json"
    target.write_text("previous version")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        minigrad.save(small_model(), target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)  # it named no file at all
    assert target.read_text() == "previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_several_defects_are_all_reported():
    document = valid_document()
    document["dtype"] = "int8"
    document["layers"][1]["type"] = "Conv2d"
    with pytest.raises(ModelFormatError) as caught:
        Sequential.from_dict(document)
    assert [where for where, _ in caught.value.errors] == ["dtype", "layers[1].type"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "not valid JSON"),
        ('{"format": ', "not valid JSON"),
        (b"\xff\xfe\xfa", "document: "),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("42", "expected a JSON object, got 42"),
        ('"minigrad.sequential"', "expected a JSON object, got 'minigrad.sequential'"),
        ("null", "expected a JSON object, got null"),
        (json.dumps(valid_document()).replace("0.5", "NaN"), "layers[2].bias[0]: NaN is not allowed"),
        (json.dumps(valid_document()).replace("0.01", "Infinity"), "metadata.training.loss: Infinity is not allowed"),
        ('{"format": "minigrad.sequential", "format": "keras"}', "document: the key 'format' appears twice"),
    ],
    ids=["empty", "truncated", "not UTF-8", "too deep", "number", "string", "null", "NaN", "Infinity", "repeated key"],
)
def test_text_that_is_not_a_document(text, fragment):
    with pytest.raises(ModelFormatError, match="^document: |: ") as caught:
        minigrad.loads(text)
    assert fragment in str(caught.value)


def test_a_byte_order_mark_is_skipped_in_text_as_in_bytes(tmp_path):
    text = minigrad.dumps(small_model())
    (tmp_path / "bom.json").write_text("\ufeff" + text, encoding="utf-8")
    expected = minigrad.loads(text)
    with open(tmp_path / "bom.json", encoding="utf-8") as f:  # text mode keeps the mark: it was refused
        assert_same_model(expected, minigrad.load(f))
    assert_same_model(expected, minigrad.load(tmp_path / "bom.json"))


def test_huge_numbers_are_shortened_in_messages():
    document = valid_document()
    document["version"] = 10**400
    with pytest.raises(ModelFormatError, match=r"^version: unsupported version 1000.*\(401 digits\) \(this minigrad"):
        minigrad.Sequential.from_dict(document)
    document = valid_document()
    document["layers"][0]["in_features"] = 10**400
    with pytest.raises(ModelFormatError) as caught:
        minigrad.Sequential.from_dict(document)
    assert caught.value.location == "layers[0].weight" and len(str(caught.value)) < 300


def test_loads_refuses_what_is_not_text():
    with pytest.raises(ModelFormatError, match="expected JSON text"):
        minigrad.loads({"format": "minigrad.sequential"})


# ---------------------------------------------------------------------- saving refuses what it could not load


def small_model():
    return Sequential([Linear(2, 3), Tanh(), Linear(3, 1)])


@pytest.mark.parametrize(
    "spoil, location, fragment",
    [
        (lambda m: m.layers[2].weight.data.__setitem__((1, 0), np.nan), "layers[2].weight[1][0]", "NaN"),
        (lambda m: m.layers[0].bias.data.__setitem__(2, np.inf), "layers[0].bias[2]", "Infinity"),
        (lambda m: setattr(m, "metadata", {"loss": float("nan")}), "metadata.loss", "NaN"),
        (lambda m: setattr(m, "metadata", {"when": object()}), "metadata.when", "expected JSON"),
        (lambda m: setattr(m, "metadata", {1: "one"}), "metadata.1", "keys must be strings"),
        (lambda m: m.layers.insert(1, Sequential()), "layers[1]", "cannot save a Sequential"),
        (lambda m: m.layers.__setitem__(2, Linear(4, 1)), "layers[2].in_features", "expected 3"),
        (lambda m: m.layers.__setitem__(2, Linear(3, 1, dtype=np.float32)), "dtype", "mix float32 and float64"),
        (lambda m: m.layers.__setitem__(slice(None), [Linear(2, 2, dtype=np.float16)]), "dtype", "float16"),
        (lambda m: m.layers.clear(), "layers", "at least one layer with weights"),
        # These two raised IndexError / AttributeError from inside the saver.
        (lambda m: setattr(m.layers[0].weight, "data", np.ones(6)), "layers[0].weight",
         "expected a Tensor of shape [in_features, out_features], got shape [6]"),
        (lambda m: setattr(m.layers[2], "bias", None), "layers[2].bias",
         "expected a Tensor of shape [out_features], got null"),
    ],
    ids=[
        "NaN weight",
        "infinite bias",
        "NaN metadata",
        "object metadata",
        "int key",
        "nested",
        "chain",
        "mixed",
        "f16",
        "empty",
        "1-d weight",
        "no bias",
    ],
)
def test_saving_refuses_a_model_it_could_not_load(tmp_path, spoil, location, fragment):
    model = small_model()
    spoil(model)
    target = tmp_path / "model.json"
    target.write_text("previous version")
    with pytest.raises(ModelFormatError) as caught:
        minigrad.save(model, target)
    assert caught.value.location == location
    assert fragment in str(caught.value)
    assert target.read_text() == "previous version"  # nothing lost
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_metadata_is_copied_as_plain_json():
    model = small_model()
    model.metadata = {"accuracy": np.float64(0.97), "epochs": np.int64(30), "classes": ("a", "b")}
    loaded = Sequential.from_dict(model.to_dict())
    assert loaded.metadata == {"accuracy": 0.97, "epochs": 30, "classes": ["a", "b"]}
    assert type(loaded.metadata["epochs"]) is int


# ---------------------------------------------------------------------- the schema as a library piece


def test_schema_load_returns_plain_json_and_arrays_on_request():
    document = valid_document()
    loaded = ModelDocumentSchema().load(document)
    assert loaded["layers"][0]["weight"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert json.loads(json.dumps(loaded)) == loaded
    document["dtype"] = "float32"
    as_arrays = ModelDocumentSchema(arrays=True).load(document)
    assert as_arrays["layers"][2]["weight"].dtype == np.float32
    assert ModelDocumentSchema().dump(as_arrays)["layers"][2]["weight"] == [[1.0], [2.0], [3.0]]
    del document["metadata"]
    assert ModelDocumentSchema().load(document)["metadata"] == {}


def test_document_summary_of_a_document_and_of_a_model():
    summary = {
        "inputs": 2,
        "outputs": 1,
        "dtype": "float64",
        "layers": ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"],
    }
    assert document_summary(valid_document()) == summary
    assert document_summary(Sequential.from_dict(valid_document())) == summary
    with pytest.raises(ModelFormatError, match=r"^layers\[1\]\.type: "):
        document_summary(broken(put(["layers", 1, "type"], "Conv2d"))())


class Scale(minigrad.Layer):
    """A layer the format does not ship: multiplies its input by a constant."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, input):
        return input * self.factor


def test_a_new_layer_type_is_one_class_and_one_registration():
    from marshmallow import fields

    class ScaleSpec(LayerSpecSchema):
        factor = fields.Float(required=True)

        def build(self, spec, dtype):
            return Scale(spec["factor"])

        def describe(self, layer):
            return {"factor": layer.factor}

    register_layer(Scale, ScaleSpec)
    try:
        model = Sequential([Linear(2, 2), Scale(3.0)])
        loaded = minigrad.loads(minigrad.dumps(model))
        assert isinstance(loaded.layers[1], Scale) and loaded.layers[1].factor == 3.0
        np.testing.assert_array_equal(predict(loaded, np.ones((1, 2))), predict(model, np.ones((1, 2))))
        with pytest.raises(ModelFormatError, match=r"^layers\[1\]\.factor: "):
            Sequential.from_dict({**model.to_dict(), "layers": [model.to_dict()["layers"][0], {"type": "Scale"}]})
    finally:
        del LAYER_TYPES["Scale"]


def test_saving_into_a_missing_directory_names_the_path_given(tmp_path):
    target = tmp_path / "no-such-directory" / "model.json"
    with pytest.raises(FileNotFoundError) as caught:
        minigrad.save(small_model(), target)
    assert caught.value.filename == str(target)  # was the random temporary file's name, .tmp-xxxxxxxx.json


# ---------------------------------------------------------------------- finite_array, the check of every number


@settings(max_examples=300, deadline=None)
@example([[1e200, 1e200, 1.0]])  # finite, though its sum of squares overflows
@example([[1e300, -np.inf, 0.0], [np.nan, 1.0, 2.0]])
@example([[5e-324, -0.0, 1.7976931348623157e308]])
@given(st.lists(st.lists(st.floats(), min_size=3, max_size=3), min_size=1, max_size=5))
def test_finite_array_refuses_exactly_the_non_finite_numbers(rows):
    expected = np.asarray(rows, dtype=np.float64)
    non_finite = np.argwhere(~np.isfinite(expected))
    if len(non_finite) == 0:
        assert np.array_equal(finite_array(rows, 2), expected)
        return
    with pytest.raises(ValidationError) as caught:
        finite_array(rows, 2)
    row, column = non_finite[0]  # the first one, in reading order, is the one named
    assert list(caught.value.messages) == [row]
    assert list(caught.value.messages[row]) == [column]
