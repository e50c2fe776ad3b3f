"""The Open Inference Protocol v2 (KServe / Triton REST) over the model registry.

Every model has one input, ``input`` (shape ``[-1, n_inputs]``), and one output, ``output``, in the
model's datatype (FP64 or FP32). Inputs may be sent as FP32 or FP64 whatever the model's datatype: they
are converted to it, so a prediction equals ``model(Tensor(x.astype(model dtype)))``.

Requests are read from the raw body -- Triton's Python client sends no ``Content-Type`` -- and every
error under ``/v2`` is ``{"error": "..."}`` with a 4xx status, as the protocol says.
"""

from __future__ import annotations

import numpy as np
from flask import Response, current_app, jsonify, request
from marshmallow import Schema, fields

import minigrad

from .api import Blueprint, read_body
from .auth import require_token_for_predictions
from .errors import register_error_renderer
from .metrics import record_prediction
from .registry import LoadedModel, get_registry
from .schemas import MODEL_NAME_PARAMETER, V2_VERSION_PARAMETER, version_in_url
from .v2_codec import (
    BINARY_CONTENT_TYPE,
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    InferRequestSchema,
    InferResponseSchema,
    V2ProtocolError,
    datatype_of,
    decode_body,
    encode_infer_response,
    parse_infer_request,
)

INPUT_NAME = "input"
OUTPUT_NAME = "output"

blp = Blueprint(
    "inference_v2",
    __name__,
    url_prefix="/v2",
    description="Open Inference Protocol v2 (KServe / Triton), with the binary tensor data extension.",
)


# ---------------------------------------------------------------------- schemas (documentation and output)


class V2ServerMetadataSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    extensions = fields.List(fields.String(), required=True)


class V2LiveSchema(Schema):
    live = fields.Boolean(required=True)


class V2ReadySchema(Schema):
    ready = fields.Boolean(required=True)


class V2ModelReadySchema(V2ReadySchema):
    name = fields.String(required=True)
    version = fields.String(required=True)


class V2TensorMetadataSchema(Schema):
    name = fields.String(required=True)
    datatype = fields.String(required=True, metadata={"enum": list(DATATYPES)})
    shape = fields.List(fields.Integer(), required=True, metadata={"description": "-1: any batch size"})


class V2ModelMetadataSchema(Schema):
    name = fields.String(required=True)
    versions = fields.List(fields.String(), required=True)
    platform = fields.String(required=True)
    inputs = fields.List(fields.Nested(V2TensorMetadataSchema), required=True)
    outputs = fields.List(fields.Nested(V2TensorMetadataSchema), required=True)


class V2ErrorSchema(Schema):
    error = fields.String(required=True)


# ---------------------------------------------------------------------- errors


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


# flask-smorest documents every operation's default error as a problem document; under /v2 it is this.
_protocol_errors = blp.doc(
    responses={
        "default": {
            "description": "An error, in the protocol's shape",
            "content": {"application/json": {"schema": V2ErrorSchema}},
        }
    }
)


@blp.record_once
def _claim_error_format(state):
    # The app's handlers (registry errors, 401/413, and routing errors such as an unknown path under
    # /v2 that no view of this blueprint sees) render in the protocol's format under our prefix.
    register_error_renderer(state.app, blp.url_prefix, error_response)


@blp.errorhandler(V2ProtocolError)
def _protocol_error(error: V2ProtocolError):
    return error_response(error.status, str(error))


def _lookup(name: str, version: str | None) -> LoadedModel:
    """The model a URL names; the version is a string in the protocol, a positive integer here."""
    if version is None:
        return get_registry().get(name)
    # The versions are named "1", "2", ...: "01" would name version 1 by another name (as the OpenAPI
    # document's pattern for the parameter says, ^[1-9][0-9]*$).
    number = version_in_url(version)
    if number is None:
        raise V2ProtocolError(f"model version must be a positive integer without leading zeros, got {version!r:.40}")
    return get_registry().get(name, number)


# ---------------------------------------------------------------------- server


@blp.route("", methods=["GET"])
@_protocol_errors
@blp.response(200, V2ServerMetadataSchema)
def server_metadata():
    """Server metadata: name, version and the protocol extensions supported."""
    return {"name": "minigrad", "version": minigrad.__version__, "extensions": ["binary_tensor_data"]}


@blp.route("/health/live", methods=["GET"])
@_protocol_errors
@blp.response(200, V2LiveSchema)
def server_live():
    """Liveness: the process answers."""
    return {"live": True}


@blp.route("/health/ready", methods=["GET"])
@_protocol_errors
@blp.response(200, V2ReadySchema)
@blp.alt_response(503, schema=V2ReadySchema, description="The model directory cannot be read.")
def server_ready():
    """Readiness: the model directory can be listed."""
    try:
        get_registry().names()
    except OSError:
        return {"ready": False}, 503
    return {"ready": True}


# ---------------------------------------------------------------------- models


@blp.route("/models/<name>", methods=["GET"], parameters=[MODEL_NAME_PARAMETER])
@blp.route("/models/<name>/versions/<version>", methods=["GET"],
           parameters=[MODEL_NAME_PARAMETER, V2_VERSION_PARAMETER])
@_protocol_errors
@blp.response(200, V2ModelMetadataSchema)
@blp.alt_response(404, schema=V2ErrorSchema, description="Unknown model or version.")
def model_metadata(name, version=None):
    """Model metadata: versions, and the input and output tensors with their datatype and shape."""
    model = _lookup(name, version)
    datatype = datatype_of(model.dtype)
    return {
        "name": model.name,
        "versions": [str(v) for v in get_registry().versions(model.name)],
        "platform": "minigrad",
        "inputs": [{"name": INPUT_NAME, "datatype": datatype, "shape": [-1, model.n_inputs]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": datatype, "shape": [-1, model.n_outputs]}],
    }


@blp.route("/models/<name>/ready", methods=["GET"], parameters=[MODEL_NAME_PARAMETER])
@blp.route("/models/<name>/versions/<version>/ready", methods=["GET"],
           parameters=[MODEL_NAME_PARAMETER, V2_VERSION_PARAMETER])
@_protocol_errors
@blp.response(200, V2ModelReadySchema)
@blp.alt_response(404, schema=V2ErrorSchema, description="Unknown model or version.")
def model_ready(name, version=None):
    """Model readiness: the model's document loads (models are loaded on first use and cached)."""
    model = _lookup(name, version)
    return {"name": model.name, "version": str(model.version), "ready": True}


# ---------------------------------------------------------------------- inference

_INFER_BODY = {
    "description": "An inference request; with the binary tensor data extension, the JSON object is followed by "
    f"the inputs' bytes and its length is given in the {HEADER_LENGTH} header. No Content-Type is required.",
    "content": {"application/json": {"schema": InferRequestSchema}, BINARY_CONTENT_TYPE: {"schema": {}}},
}
# Outputs asked for as binary data follow the JSON object: the answer is then application/octet-stream.
_BINARY_ANSWER = {200: {"content": {BINARY_CONTENT_TYPE: {"schema": {
    "type": "string", "format": "binary",
    "description": f"The JSON object ({HEADER_LENGTH} bytes, an InferResponse), then the outputs' bytes"}}}}}


@blp.route("/models/<name>/infer", methods=["POST"], parameters=[MODEL_NAME_PARAMETER])
@blp.route("/models/<name>/versions/<version>/infer", methods=["POST"],
           parameters=[MODEL_NAME_PARAMETER, V2_VERSION_PARAMETER])
@_protocol_errors
@blp.doc(requestBody=_INFER_BODY, responses=_BINARY_ANSWER)
@blp.alt_response(200, schema=InferResponseSchema, success=True, description="Outputs (JSON, or JSON + binary).")
@blp.alt_response(400, schema=V2ErrorSchema, description="The request does not fit the protocol or the model.")
@blp.alt_response(404, schema=V2ErrorSchema, description="Unknown model or version.")
@require_token_for_predictions
@blp.alt_response(401, schema=V2ErrorSchema, description="MINIGRAD_PROTECT_PREDICT is set and the token is missing "
                  "or wrong.")  # below the token's decorator, which documents a problem document unless told
def infer(name, version=None):
    """Run the model on a batch: JSON data (flat or nested, row-major) or binary tensor data."""
    model = _lookup(name, version)
    limit = current_app._get_current_object().config.get("MAX_CONTENT_LENGTH")  # see get_registry
    current = request._get_current_object()
    environ = current.environ  # the two headers from the environ: request.headers costs ~1 us per look-up
    body = decode_body(read_body(current), environ.get("HTTP_CONTENT_ENCODING"), limit)
    parsed = parse_infer_request(body, environ.get(_HEADER_LENGTH_KEY))
    outputs = model.predict(_model_input(parsed, model))
    payload, headers = encode_infer_response(model.name, model.version, parsed.id, _selected_outputs(parsed, outputs))
    record_prediction(model.name, len(outputs))
    return Response(payload, status=200, headers=headers)


# The WSGI environ's key of the Inference-Header-Content-Length header.
_HEADER_LENGTH_KEY = "HTTP_" + HEADER_LENGTH.upper().replace("-", "_")


def _model_input(parsed: InferRequest, model: LoadedModel):
    names = list(parsed.inputs)
    if names != [INPUT_NAME]:
        raise V2ProtocolError(
            f"inputs: model {model.name!r} takes one input named {INPUT_NAME!r}; got {', '.join(map(repr, names))}"
        )
    array = parsed.inputs[INPUT_NAME]
    if array.ndim != 2 or array.shape[1] != model.n_inputs:
        raise V2ProtocolError(f"inputs[0].shape: expected [batch, {model.n_inputs}], got {list(array.shape)}")
    if array.shape[0] == 0:
        raise V2ProtocolError("inputs[0].shape: the batch is empty; send at least one row")
    if array.dtype == model.dtype:
        return array
    # FP64 data for an FP32 model: a value beyond float32's range would silently become infinity.
    with np.errstate(over="raise"):
        try:
            return array.astype(model.dtype)
        except FloatingPointError:
            row, column = np.argwhere(np.abs(array) > np.finfo(model.dtype).max)[0]
            raise V2ProtocolError(
                f"inputs[0]: the value {float(array[row, column])!r} at [{row}, {column}] is out of the range of "
                f"{datatype_of(model.dtype)}, the model's datatype"
            ) from None


def _selected_outputs(parsed: InferRequest, output):
    if parsed.outputs is None:
        return [(OUTPUT_NAME, output, parsed.wants_binary(None))]
    selected = []
    for index, requested in enumerate(parsed.outputs):
        if requested.name != OUTPUT_NAME:
            raise V2ProtocolError(
                f"outputs[{index}].name: the model has no output {requested.name!r}; its output is {OUTPUT_NAME!r}"
            )
        selected.append((OUTPUT_NAME, output, parsed.wants_binary(requested)))
    return selected
