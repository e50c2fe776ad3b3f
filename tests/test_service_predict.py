"""POST /predict through Flask's test client: answers equal minigrad's forward pass bit for bit, and
every kind of bad input is a 4xx problem that says what was wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minigrad
from minigrad import Linear, Relu, Sequential, Tensor, no_grad
from service.errors import PROBLEM_MIMETYPE, validation_problem
from service.schemas import PredictRequestSchema, predict_request_loads_as_is


def forward(path, rows, dtype=np.float64) -> np.ndarray:
    """minigrad's own forward pass on the document at ``path``."""
    with no_grad():
        return minigrad.load(path)(Tensor(np.asarray(rows, dtype=dtype))).data


@pytest.mark.parametrize("name, rows", [
    ("xor", [[0, 0], [0, 1], [1, 0], [1, 1]]),
    ("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]),
    ("iris", np.random.default_rng(3).normal(5, 2, size=(64, 4)).tolist()),
])
def test_predictions_equal_minigrads_forward_pass_bit_for_bit(client, model_dir, name, rows):
    response = client.post("/predict", json={"model": name, "inputs": rows})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["model"], body["version"]) == (name, 1)
    outputs = np.array(body["outputs"])
    assert np.array_equal(outputs, forward(model_dir / f"{name}.json", rows))  # JSON floats round-trip exactly


def test_one_flat_row_is_answered_flat(client, model_dir):
    body = client.post("/predict", json={"model": "iris", "inputs": [5.1, 3.5, 1.4, 0.2]}).get_json()
    assert len(body["outputs"]) == 3 and all(isinstance(v, float) for v in body["outputs"])
    assert np.array_equal(body["outputs"], forward(model_dir / "iris.json", [[5.1, 3.5, 1.4, 0.2]])[0])


def test_xor_model_predicts_xor(client):
    body = client.post("/predict", json={"model": "xor", "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]]}).get_json()
    assert [round(row[0]) for row in body["outputs"]] == [0, 1, 1, 0]


def test_a_version_can_be_chosen(client, model_dir):
    rng = np.random.default_rng(0)
    model = Sequential([Linear(2, 4, rng=rng), Relu(), Linear(4, 1, rng=rng)])
    assert client.put("/models/xor", json=json.loads(minigrad.dumps(model))).status_code == 201
    rows = [[0.25, 0.75]]
    latest = client.post("/predict", json={"model": "xor", "inputs": rows}).get_json()
    first = client.post("/predict", json={"model": "xor", "version": 1, "inputs": rows}).get_json()
    assert latest["version"] == 2 and first["version"] == 1
    assert np.array_equal(latest["outputs"], forward(model_dir / "xor" / "2.json", rows))
    assert np.array_equal(first["outputs"], forward(model_dir / "xor.json", rows))


def test_float32_models_compute_in_float32(client, model_dir):
    model = Sequential([Linear(3, 2, rng=np.random.default_rng(1), dtype=np.float32)])
    minigrad.save(model, model_dir / "small32.json")
    rows = [[0.1, 0.2, 0.3], [1e3, -2.5, 7]]
    body = client.post("/predict", json={"model": "small32", "inputs": rows}).get_json()
    expected = forward(model_dir / "small32.json", rows, dtype=np.float32)
    assert expected.dtype == np.float32
    assert np.array_equal(np.array(body["outputs"], dtype=np.float32), expected)


def test_a_one_input_model_asks_for_one_value(client, model_dir):
    minigrad.save(Sequential([Linear(1, 1)]), model_dir / "one.json")
    response = client.post("/predict", json={"model": "one", "inputs": [[1, 2]]})
    assert response.status_code == 422
    assert response.get_json()["detail"] == "inputs[0]: expected 1 value (the model's input width), got 2"
    # the depth message too: it said "rows of 1 numbers"
    response = client.post("/predict", json={"model": "one", "inputs": [[[1]]]})
    assert response.get_json()["detail"] == ("inputs: expected a list of rows (or one row) of 1 number, got an array "
                                             "of 3 dimensions")


def test_large_integers_are_numbers_too(client):
    response = client.post("/predict", json={"model": "xor", "inputs": [[2**70, 0]]})
    assert response.status_code == 200


# status, body (or raw text), fragment expected in the problem's detail or errors
BAD_REQUESTS = [
    (404, {"model": "nope", "inputs": [[0, 1]]}, "no model named 'nope'"),
    (404, {"model": "xor", "version": 9, "inputs": [[0, 1]]}, "has no version 9; available: 1"),
    (422, {"model": "a..b", "inputs": [[0, 1]]}, "without '..'"),
    (422, {"model": "xor", "inputs": [[0, 1, 2]]}, "inputs[0]: expected 2 values (the model's input width), got 3"),
    (422, {"model": "xor", "inputs": [0, 1, 2]}, "inputs: expected 2 values"),
    (422, {"model": "xor", "inputs": [[0, 1], [1]]}, "inputs[1]: expected 2 items like [0], got 1"),
    (422, {"model": "xor", "inputs": [[0, "1"]]}, "inputs[0][1]: expected a number, got '1'"),
    (422, {"model": "xor", "inputs": [[0, None]]}, "inputs[0][1]: expected a number, got null"),
    (422, {"model": "xor", "inputs": [[True, False]]}, "inputs[0][0]: expected a number, got true"),
    (422, {"model": "xor", "inputs": [[0.5, 1], [1, False]]}, "inputs[1][1]: expected a number, got false"),
    (422, {"model": "xor", "inputs": [[0, [1]]]}, "inputs[0][1]: expected a number, got an array"),
    (422, {"model": "xor", "inputs": [[[0, 1]]]}, "inputs: expected a list of rows (or one row) of 2 numbers"),
    (422, {"model": "xor", "inputs": [{"a": 1}]}, "inputs[0]: expected a number, got an object"),
    (422, {"model": "xor", "inputs": [[0, 1], 5]}, "inputs[1]: expected an array, got 5"),
    (422, {"model": "xor", "inputs": []}, "the batch is empty"),
    (422, {"model": "xor", "inputs": [[]]}, "inputs[0]: expected 2 values"),
    (422, {"model": "xor", "inputs": 5}, "inputs: expected an array of numbers, got 5"),
    (422, {"model": "xor", "inputs": "0,1"}, "inputs: expected an array of numbers, got '0,1'"),
    (422, {"model": "xor", "inputs": [[0, 10**400]]}, "inputs[0][1]: number 1000"),
    (422, {"model": "xor"}, "Missing data for required field"),
    (422, {"inputs": [[0, 1]]}, "Missing data for required field"),
    (422, {"model": "xor", "inputs": [[0, 1]], "extra": 1}, "Unknown field"),
    (422, {"model": "xor", "version": "1", "inputs": [[0, 1]]}, "Not a valid integer"),
    (422, {"model": "xor", "version": 0, "inputs": [[0, 1]]}, "greater than or equal to 1"),
    (422, {"model": 7, "inputs": [[0, 1]]}, "Not a valid string"),
    (422, [1, 2], "Invalid input type"),
    (400, '{"model": "xor", "inputs": [[0, NaN]]}', "NaN is not valid JSON"),
    (400, '{"model": "xor", "inputs": [[0, Infinity]]}', "Infinity is not valid JSON"),
    (422, '{"model": "xor", "inputs": [[0, 1e999]]}', "inputs[0][1]: Infinity is not allowed (numbers must be finite)"),
    (400, '{"model": "xor", "inputs": [[0, 1]]', "not valid JSON"),
    (400, "", "body is empty"),
    (400, "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (400, b'{"model": "\xff"}', "UTF-8"),
]


@pytest.mark.parametrize("status, body, fragment", BAD_REQUESTS)
def test_bad_requests_get_a_problem_saying_what_was_wrong(client, status, body, fragment):
    if isinstance(body, str | bytes):
        response = client.post("/predict", data=body, content_type="application/json")
    else:
        response = client.post("/predict", json=body)
    assert response.status_code == status
    assert response.mimetype == PROBLEM_MIMETYPE
    problem = response.get_json()
    assert problem["status"] == status and problem["type"] and problem["title"]
    assert fragment in problem.get("detail", "") + json.dumps(problem.get("errors", {}))


def test_validation_problems_carry_field_level_messages(client):
    problem = client.post("/predict", json={"model": "xor", "inputs": [[0, "x"]]}).get_json()
    assert problem["errors"] == {"json": {"inputs": ["inputs[0][1]: expected a number, got 'x'"]}}
    problem = client.post("/predict", json={"inputs": [[0, 1]], "modle": "xor"}).get_json()
    assert problem["errors"] == {"json": {"model": ["Missing data for required field."], "modle": ["Unknown field."]}}


def test_non_finite_results_of_huge_inputs_are_rejected_for_float32(client, model_dir):
    minigrad.save(Sequential([Linear(2, 1, rng=np.random.default_rng(0), dtype=np.float32)]), model_dir / "f32.json")
    response = client.post("/predict", json={"model": "f32", "inputs": [[1e300, 0]]})
    assert response.status_code == 422
    assert response.get_json()["detail"] == "inputs[0][0]: 1e+300 is out of the range of float32"


@pytest.mark.parametrize("inputs, where", [([[1.0], [1e10]], "outputs[1][0]"), ([1e10], "outputs[0]")])
def test_outputs_that_overflow_are_a_problem_not_invalid_json(client, model_dir, inputs, where):
    # Finite weights and finite inputs can still overflow; json.dumps would write Infinity, which is not JSON.
    model = Sequential([Linear(1, 1)])
    model.layers[0].weight.data[:] = 1e300
    minigrad.save(model, model_dir / "huge.json")
    with np.errstate(over="ignore"):
        response = client.post("/predict", json={"model": "huge", "inputs": inputs})
    assert response.status_code == 422
    assert response.mimetype == PROBLEM_MIMETYPE
    problem = json.loads(response.data)  # strict JSON all the same
    assert problem["detail"].startswith(f"{where}: the model computed inf from these inputs")


def test_a_name_ending_in_a_newline_is_refused_even_when_its_file_is_there(client, model_dir):
    # "xor\n.json" placed by hand: the name was taken as valid, and the answer (which writes the name as
    # it is) was not JSON.
    (model_dir / "xor\n.json").write_bytes((model_dir / "xor.json").read_bytes())
    response = client.post("/predict", json={"model": "xor\n", "inputs": [[0, 1]]})
    assert response.status_code == 422
    assert "model" in response.get_json()["errors"]["json"]


def test_an_output_that_is_nan_is_a_problem_too(client, model_dir):
    model = Sequential([Linear(1, 1), Linear(1, 1)])
    model.layers[0].weight.data[:] = 1e300
    model.layers[1].weight.data[:] = 0.0
    minigrad.save(model, model_dir / "nan.json")
    with np.errstate(over="ignore", invalid="ignore"):  # 1e310 * 0: inf * 0
        response = client.post("/predict", json={"model": "nan", "inputs": [[1e10]]})
    assert response.status_code == 422
    assert json.loads(response.data)["detail"].startswith("outputs[0][0]: the model computed nan from these inputs")


@pytest.mark.parametrize("inputs", [[[1e-300], [-3.5], [1e16], [123456789.125], [2.5e-8], [0.1]], [7.0]])
def test_the_answer_is_the_text_json_dumps_writes(client, model_dir, inputs):
    # The view writes the answer itself (not through json.dumps): the bytes must be the same all the same.
    model = Sequential([Linear(1, 1)])
    model.layers[0].weight.data[:] = 1.0
    model.layers[0].bias.data[:] = 0.0
    minigrad.save(model, model_dir / "identity.json")
    response = client.post("/predict", json={"model": "identity", "inputs": inputs})
    assert response.status_code == 200
    outputs = forward(model_dir / "identity.json", np.reshape(inputs, (-1, 1)))
    outputs = outputs.tolist() if isinstance(inputs[0], list) else outputs[0].tolist()
    assert response.data == json.dumps({"model": "identity", "version": 1, "outputs": outputs}).encode()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_non_json_bodies_are_415(client, content_type):
    response = client.post("/predict", data='{"model": "xor", "inputs": [[0, 1]]}', content_type=content_type)
    assert response.status_code == 415
    assert response.mimetype == PROBLEM_MIMETYPE
    assert content_type in response.get_json()["detail"]


def test_a_body_without_content_type_is_read_as_json(client):
    response = client.post("/predict", data='{"model": "xor", "inputs": [[0, 1]]}')
    assert response.status_code == 200


def test_a_body_over_the_limit_is_413(model_dir, tmp_path):
    from conftest import service_config

    from service import create_app

    client = create_app(service_config(model_dir, tmp_path, MINIGRAD_MAX_BODY_BYTES=1000)).test_client()
    response = client.post("/predict", json={"model": "xor", "inputs": [[0.123456789, 1]] * 100})
    assert response.status_code == 413
    assert response.mimetype == PROBLEM_MIMETYPE
    assert "MINIGRAD_MAX_BODY_BYTES = 1000 bytes" in response.get_json()["detail"]
    assert client.post("/predict", json={"model": "xor", "inputs": [[0, 1]]}).status_code == 200


def test_options_answers_allow_with_an_empty_body_and_no_html_type(client):
    response = client.options("/predict")
    assert response.status_code == 200
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert response.data == b"" and "Content-Type" not in response.headers


def test_wrong_method_is_405_with_allow(client):
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.mimetype == PROBLEM_MIMETYPE
    assert "POST" in response.headers["Allow"]


_names = st.one_of(st.sampled_from(["xor", "iris", "a", "x" * 64, "x" * 65, "xor\n", "-x", "a..b", ""]),
                   st.text(max_size=8), st.integers(), st.none())
_versions = st.one_of(st.integers(-3, 2**70), st.booleans(), st.none(), st.floats(), st.text(max_size=3))
_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"model": st.one_of(st.just("xor"), _names), "version": _versions,
                                        "extra": st.integers(),
                                        "inputs": st.sampled_from([[[0, 1]], [0, 1], None, "x", 3])}),
    st.lists(st.integers(), max_size=2), st.none(), st.text(max_size=4),
)


@given(_bodies)
@example({"model": "xor", "inputs": None})
@example({"model": "xor", "version": True, "inputs": [0, 1]})
@settings(max_examples=400, deadline=None)
def test_bodies_passed_without_loading_are_what_the_schema_loads_unchanged(body):
    if predict_request_loads_as_is(body):
        assert PredictRequestSchema().load(body) == body


@pytest.mark.parametrize("messages, detail", [
    ({"json": {"model": ["Missing."]}}, "The request body does not match its schema; see errors."),
    ({"query": {"page": ["Not a valid integer."]}}, "The query string does not match its schema; see errors."),
    ({"query": {"page": ["x"]}, "json": {"model": ["y"]}},
     "The query string and the request body do not match its schema; see errors."),
    ({"model": ["Missing data for required field."]}, "The request body does not match its schema; see errors."),
])
def test_a_validation_problem_names_the_part_of_the_request_that_is_wrong(messages, detail):
    problem = validation_problem(messages)
    assert problem["detail"] == detail and problem["errors"] == messages and problem["status"] == 422
