"""POST /predict: run a registered model on a batch of rows."""

from __future__ import annotations

import numpy as np
from flask import Response
from marshmallow import ValidationError

from minigrad.format import finite_array

from .api import Blueprint, documents_problems
from .auth import require_token_for_predictions
from .errors import abort_problem, counted
from .metrics import record_prediction
from .registry import get_registry
from .schemas import PredictRequestSchema, PredictResponseSchema, predict_request_loads_as_is

blp = Blueprint("predict", __name__, description="Predictions with registered models")


class InputError(ValueError):
    """A defect in ``inputs``; the message starts with where (``inputs[3][1]: ...``)."""


def input_batch(inputs, width: int, dtype) -> tuple[np.ndarray, bool]:
    """``inputs`` (a list of rows, or one flat row) as a [batch, width] array of ``dtype``, and whether it
    was flat. The numbers are checked by minigrad's ``finite_array`` (numpy, one pass; only a defect is
    walked to say where), as the model document's weights and the training data are."""
    flat = isinstance(inputs, list) and bool(inputs) and not isinstance(inputs[0], list)
    try:
        array = finite_array(inputs, 1 if flat else 2)
    except ValidationError as error:
        raise InputError(_first_message(error.messages, "inputs")) from None
    if array.size == 0 and array.shape[0] == 0:
        raise InputError("inputs: the batch is empty; send at least one row")
    if flat:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise InputError(f"inputs: expected a list of rows (or one row) of {counted(width, 'number')}, "
                         f"got an array of {array.ndim} dimensions")
    if array.shape[1] != width:
        where = "inputs" if flat else "inputs[0]"
        raise InputError(f"{where}: expected {counted(width, 'value')} (the model's input width), got {array.shape[1]}")
    if array.dtype != dtype:  # float32 models: values beyond float32's range would become inf
        with np.errstate(over="ignore"):
            array = array.astype(dtype)
        finite = np.isfinite(array)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            where = f"inputs[{column}]" if flat else f"inputs[{row}][{column}]"
            raise InputError(f"{where}: {inputs[column] if flat else inputs[row][column]!r:.40} is out of the "
                             f"range of {np.dtype(dtype).name}")
    return array, flat


def _first_message(messages, where: str) -> str:
    """marshmallow's nested messages ({1: {0: ["..."]}}) as one line: ``inputs[1][0]: ...``."""
    while isinstance(messages, dict):
        key, messages = next(iter(messages.items()))
        where += f"[{key}]"
    text = messages[0] if isinstance(messages, list) else messages
    return f"{where}: {text}"


@blp.route("/predict", methods=["POST"])
@require_token_for_predictions
@blp.arguments(PredictRequestSchema, loads_as_is=predict_request_loads_as_is)
@blp.answered_by_view(200, PredictResponseSchema)
@documents_problems(400, 404, 413, 415)
def predict(body):
    """Run a model on a batch of rows, or on one flat row (answered as one flat row)."""
    loaded = get_registry().get(body["model"], body.get("version"))
    try:
        batch, flat = input_batch(body["inputs"], loaded.n_inputs, loaded.dtype)
    except InputError as error:
        abort_problem(422, "Invalid inputs", str(error), type="urn:minigrad:problem:invalid-inputs",
                      errors={"json": {"inputs": [str(error)]}})
    outputs = loaded.predict(batch)
    record_prediction(loaded.name, len(batch))
    # Encoded here rather than dumped through the response schema (which documents it): for small
    # models the dump and Flask's sorted-keys encoder would cost more than the forward pass.
    rows = repr((outputs[0] if flat else outputs).tolist())
    if "n" in rows:  # "nan" or "inf": JSON cannot carry them (digits, ".", "e", "+" and "-" are all finite floats have)
        abort_problem(422, "Outputs out of range", _non_finite_output(outputs, flat),
                      type="urn:minigrad:problem:non-finite-outputs")
    # The name needs no escaping (registry names are letters, digits, "_", "." and "-"), and the repr of a
    # list of floats is json.dumps's text of it: both write floats with float.__repr__, separated by ", ".
    return Response(f'{{"model": "{loaded.name}", "version": {loaded.version}, "outputs": {rows}}}',
                    mimetype="application/json")


def _non_finite_output(outputs: np.ndarray, flat: bool) -> str:
    row, column = np.argwhere(~np.isfinite(outputs))[0]
    where = f"outputs[{column}]" if flat else f"outputs[{row}][{column}]"
    return (f"{where}: the model computed {outputs[row, column]} from these inputs (an overflow), which JSON "
            "cannot carry; scale the inputs, or use /v2/models/<name>/infer with binary outputs")
