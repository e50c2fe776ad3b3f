"""The model document as a JSON Schema, derived from ``minigrad.format``'s marshmallow schemas.

``minigrad/model.schema.json`` is this module's output (``python -m minigrad.format_jsonschema``
rewrites it; a test checks it is current), so the file and the loader cannot drift apart. JSON
Schema can only state the structure: shapes that depend on other fields (a weight's shape vs its
layer's ``in_features``, one Linear's inputs vs the previous one's outputs) and float32 range are
checked by the loader alone.
"""

from __future__ import annotations

import json
import os
import sys

from marshmallow import fields, validate

from .format import FORMAT, LAYER_TYPES, VERSION, JSONObject, LayerSpecField, LayerSpecSchema, ModelDocumentSchema

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "model.schema.json")


def _field_schema(field: fields.Field) -> dict:
    if isinstance(field, LayerSpecField):
        return {"oneOf": [{"$ref": f"#/$defs/{name}"} for name in sorted(LAYER_TYPES)]}
    if isinstance(field, JSONObject):
        return {"type": "object"}
    if isinstance(field, fields.List):
        return {"type": "array", "items": _field_schema(field.inner)}
    if isinstance(field, fields.Integer):
        schema = {"type": "integer"}
    elif isinstance(field, fields.String):
        schema = {"type": "string"}
    else:  # custom fields (NumberArray) carry their JSON Schema in their metadata
        schema = {k: v for k, v in field.metadata.items() if k in ("type", "items")}
    for validator in field.validators:
        if isinstance(validator, validate.Equal):
            schema["const"] = validator.comparable
        elif isinstance(validator, validate.OneOf):
            schema["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Range) and validator.min is not None:
            schema["minimum"] = validator.min
    return schema


def _object_schema(schema) -> dict:
    return {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in schema.fields.items()},
        "required": sorted(name for name, field in schema.fields.items() if field.required),
        "additionalProperties": False,
    }


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the documents ``minigrad.load`` accepts, structurally."""
    document = _object_schema(ModelDocumentSchema())
    # A model needs at least one layer that sets its number of features (a Linear).
    with_weights = [name for name, t in LAYER_TYPES.items() if type(t.schema).features is not LayerSpecSchema.features]
    document["properties"]["layers"]["contains"] = {"anyOf": [{"$ref": f"#/$defs/{n}"} for n in sorted(with_weights)]}
    layer_defs = {}
    for name, layer_type in sorted(LAYER_TYPES.items()):
        spec = _object_schema(layer_type.schema)
        spec["properties"]["type"]["const"] = name
        layer_defs[name] = spec
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://minigrad.invalid/model.schema.json",
        "title": f"minigrad model document ({FORMAT}, version {VERSION})",
        "description": "Structure only; see docs/model-format.md for the checks that span fields.",
        **document,
        "$defs": layer_defs,
    }


def render() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else SCHEMA_PATH, "w", encoding="utf-8") as out:
        out.write(render())
