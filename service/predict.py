"""POST /predict: run a registered model on a batch of rows."""

from __future__ import annotations

import json
import math

import numpy as np
from flask import Response

from .api import Blueprint
from .auth import require_token_for_predictions
from .errors import abort_problem
from .registry import get_registry
from .schemas import PredictRequestSchema, PredictResponseSchema

blp = Blueprint("predict", __name__, description="Predictions with registered models")


class InputError(ValueError):
    """A defect in ``inputs``; the message starts with where (``inputs[3][1]: ...``)."""


def input_batch(inputs, width: int, dtype) -> tuple[np.ndarray, bool]:
    """``inputs`` (a list of rows, or one flat row) as a [batch, width] array of ``dtype``, and whether it
    was flat. Valid input goes through numpy in one pass; only a defect is located element by element."""
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError):  # ragged rows, and the like
        array = None
    if array is None or array.dtype.kind not in "iuf":  # strings, booleans, null, ragged, or just huge integers
        _raise_defect(inputs, width, dtype)
        array = np.asarray(inputs, dtype=np.float64)
    flat = array.ndim == 1
    if flat:
        array = array[np.newaxis, :]
    if array.dtype != dtype:
        if np.can_cast(array.dtype, dtype, "safe"):
            array = array.astype(dtype)
        else:
            with np.errstate(over="ignore"):  # out of the dtype's range becomes inf, refused just below
                array = array.astype(dtype)
    if array.ndim != 2 or array.shape[1] != width or array.shape[0] == 0 or not np.isfinite(array).all():
        _raise_defect(inputs, width, dtype)
        raise InputError(f"inputs: expected a list of rows (or one row) of {width} numbers")
    return array, flat


def _raise_defect(inputs, width, dtype) -> None:
    defect = _locate_defect(inputs, width, dtype)
    if defect:
        raise InputError(defect)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _number_defect(value, dtype) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_json_type(value)}"
    try:
        with np.errstate(over="ignore"):
            converted = np.asarray(float(value), dtype=dtype)
    except OverflowError:
        converted = np.asarray(math.inf)
    if not np.isfinite(converted):
        return f"expected a finite number within the range of {np.dtype(dtype).name}, got {value!r:.40}"
    return None


def _locate_defect(inputs, width: int, dtype) -> str | None:
    """The first defect in ``inputs``, said with its place (None if there is none): the slow path, taken
    only when the fast one failed."""
    if not isinstance(inputs, list):
        return f"inputs: expected a list of rows (or one row) of {width} numbers, got {_json_type(inputs)}"
    if not inputs:
        return "inputs: the batch is empty; send at least one row"
    if isinstance(inputs[0], list):
        rows = [(f"inputs[{i}]", row) for i, row in enumerate(inputs)]
    else:
        rows = [("inputs", inputs)]
    for where, row in rows:
        if not isinstance(row, list):
            return f"{where}: expected a row (a list of {width} numbers), got {_json_type(row)}"
        for j, value in enumerate(row):
            defect = _number_defect(value, dtype)
            if defect:
                return f"{where}[{j}]: {defect}"
        if len(row) != width:
            return f"{where}: expected {width} values (the model's input width), got {len(row)}"
    return None


@blp.route("/predict", methods=["POST"])
@require_token_for_predictions
@blp.arguments(PredictRequestSchema)
@blp.response(200, PredictResponseSchema)
@blp.alt_response(404, description="Unknown model or version")
def predict(body):
    """Run a model on a batch of rows, or on one flat row (answered as one flat row)."""
    loaded = get_registry().get(body["model"], body.get("version"))
    try:
        batch, flat = input_batch(body["inputs"], loaded.n_inputs, loaded.dtype)
    except InputError as error:
        abort_problem(422, "Invalid inputs", str(error), type="urn:minigrad:problem:invalid-inputs",
                      errors={"json": {"inputs": [str(error)]}})
    outputs = loaded.predict(batch)
    answer = {"model": loaded.name, "version": loaded.version, "outputs": (outputs[0] if flat else outputs).tolist()}
    # Encoded here rather than dumped through the response schema (which documents it): for small
    # models the dump and Flask's sorted-keys encoder would cost more than the forward pass.
    return Response(json.dumps(answer), mimetype="application/json")
