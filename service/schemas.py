"""The request and response bodies, as marshmallow schemas: the single source of their validation
and of the OpenAPI document. Numbers in batches are documented here but checked with numpy (see
``service.predict``), never one by one through marshmallow fields."""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from minigrad.format import ModelDocumentSchema

from .registry import MODEL_NAME_PATTERN, is_valid_name


def _registry_accepts(name: str) -> None:
    """The registry's own rule: the pattern, and no '..' (which the pattern alone lets through: save_as "a..b"
    was accepted, trained, and refused only when the job registered its model)."""
    if not is_valid_name(name):
        raise ValidationError("expected 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                              "without '..'")


def model_name_field(**kwargs) -> fields.String:
    """A model name in a request body: refused there (422, naming the field) as the registry would refuse it."""
    metadata = {"description": "Model name", "pattern": MODEL_NAME_PATTERN, "example": "xor",
                **kwargs.pop("metadata", {})}
    return fields.String(validate=_registry_accepts, metadata=metadata, **kwargs)

# The path parameters flask-smorest documents as any string, with the forms the service accepts (others: 400).
MODEL_NAME_PARAMETER = {"in": "path", "name": "name", "description": "Model name",
                        "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN, "example": "xor"}}
V2_VERSION_PARAMETER = {"in": "path", "name": "version", "description": "Model version: a positive integer",
                        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$", "example": "1"}}


def version_in_url(text: str) -> int | None:
    """A model version as a URL writes it (the pattern above: "1", "2", ...), or None when ``text`` is not one.
    ASCII digits only: str.isdigit() also takes "²", which int() refuses, and "٣", which it reads as 3; and no
    more digits than int() reads (it refuses over 4300: a version of 5,000 digits was a 500)."""
    if not (text.isascii() and text.isdigit()) or text.startswith("0"):
        return None
    try:
        return int(text)
    except ValueError:
        return None

_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 1}
_BATCH = {"oneOf": [{"type": "array", "items": _ROW, "minItems": 1}, _ROW]}


class ProblemSchema(Schema):
    """An error (RFC 9457 problem details); validation errors add ``errors`` keyed by location and field."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, metadata={"description": "URI identifying the kind of problem"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(metadata={"description": "What was wrong with this request"})
    errors = fields.Dict(metadata={"description": "Field-level messages, e.g. {\"json\": {\"inputs\": [...]}}"})


class PredictRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    model = model_name_field(required=True)
    version = fields.Integer(strict=True, validate=validate.Range(min=1),
                             metadata={"description": "Model version; the latest when absent"})
    inputs = fields.Raw(required=True, metadata={
        **_BATCH,
        "description": "A batch of rows (each with the model's input width), or one row as a flat list "
                       "(answered as a flat list). Finite numbers only.",
        "example": [[0, 1], [1, 1]],
    })


_PREDICT_FIELDS = frozenset(PredictRequestSchema._declared_fields)


def predict_request_loads_as_is(body) -> bool:
    """Whether ``PredictRequestSchema`` would load ``body`` to itself unchanged: an object of its fields
    only, with ``model`` a valid name and ``version``, if any, an integer >= 1 (``inputs`` is checked by
    numpy later). Such a body need not go through the schema; anything else does, and the schema says
    what is wrong. tests/test_service_predict.py checks over generated bodies that this never accepts
    what the schema refuses or would change."""
    if type(body) is not dict or body.get("inputs") is None or not _PREDICT_FIELDS.issuperset(body):
        return False
    model, version = body.get("model"), body.get("version", 1)
    return type(model) is str and is_valid_name(model) and type(version) is int and version >= 1


class PredictResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.Integer(required=True)
    outputs = fields.Raw(required=True, metadata={
        **_BATCH,
        "description": "One row of outputs per input row (flat when the input was flat)",
    })


class ModelSummarySchema(Schema):
    """One model as listed by GET /models (its latest version)."""

    name = fields.String(required=True)
    latest_version = fields.Integer()
    versions = fields.List(fields.Integer())
    inputs = fields.Integer(metadata={"description": "Input width"})
    outputs = fields.Integer(metadata={"description": "Output width"})
    dtype = fields.String(metadata={"enum": ["float32", "float64"]})
    layers = fields.List(fields.String(), metadata={"example": ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"]})
    error = fields.String(metadata={"description": "Set instead of the sizes when the stored file is not valid"})


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSummarySchema), required=True)


class ModelDetailSchema(ModelSummarySchema):
    """GET /models/<name>: the summary of the latest version, all versions, and its metadata."""

    metadata = fields.Dict(metadata={"description": "The latest version's metadata"})


class ModelVersionCreatedSchema(Schema):
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    inputs = fields.Integer()
    outputs = fields.Integer()
    dtype = fields.String()
    layers = fields.List(fields.String())


class ModelVersionQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # other query parameters (a cache buster) are no error

    format = fields.String(load_default="json", validate=validate.OneOf(["json", "onnx"]),
                           metadata={"description": "json: the model document; onnx: the model as an ONNX file "
                                                    "(needs the onnx package on the server)"})


class ModelDeletedSchema(Schema):
    name = fields.String(required=True)
    deleted_versions = fields.List(fields.Integer(), required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ready"})
    models = fields.Integer(metadata={"description": "How many models the directory holds"})



def model_document_schema() -> type[Schema]:
    """minigrad's schema of the whole model document (the body of PUT /models/<name>)."""
    return ModelDocumentSchema
