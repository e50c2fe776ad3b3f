"""The model registry over HTTP: list, inspect, upload new versions, delete."""

from __future__ import annotations

import json

from flask import Response, request, url_for

from .api import Blueprint, documents_problems
from .auth import require_token
from .errors import abort_problem
from .onnx_files import BINARY_SCHEMA, ONNX_MEDIA_TYPE, ONNX_MEDIA_TYPES, onnx_response, uploaded_document
from .registry import InvalidModelFile, LoadedModel, ModelNotFound, VersionNotFound, get_registry
from .schemas import (
    MODEL_NAME_PARAMETER,
    ModelDeletedSchema,
    ModelDetailSchema,
    ModelListSchema,
    ModelVersionCreatedSchema,
    ModelVersionQuerySchema,
    model_document_schema,
)

blp = Blueprint("models", __name__, description="The model registry: versions of model documents")


def _sizes(loaded: LoadedModel) -> dict:
    return {"inputs": loaded.n_inputs, "outputs": loaded.n_outputs, "dtype": loaded.dtype.name,
            "layers": list(loaded.summary["layers"])}


def _summary(registry, name: str) -> dict | None:
    """The listing's entry for ``name``; None when it was deleted since the directory was listed."""
    try:
        versions = registry.versions(name)
        entry = {"name": name, "latest_version": versions[-1], "versions": versions}
        entry.update(_sizes(registry.get(name, versions[-1])))
    except (ModelNotFound, VersionNotFound):  # a concurrent delete made the whole listing a 404
        return None
    except InvalidModelFile as error:  # one broken file must not hide the other models
        entry["error"] = str(error)
    return entry


@blp.route("/models")
@blp.response(200, ModelListSchema)
def list_models():
    """Every model with its latest version's sizes and layers."""
    registry = get_registry()
    return {"models": [entry for name in registry.names() if (entry := _summary(registry, name)) is not None]}


@blp.route("/models/<name>", parameters=[MODEL_NAME_PARAMETER])
@blp.response(200, ModelDetailSchema)
@documents_problems(400, 404)
def show_model(name):
    """One model: its versions, and the latest version's sizes, layers and metadata."""
    registry = get_registry()
    loaded = registry.get(name)
    return {"name": name, "latest_version": loaded.version, "versions": registry.versions(name), **_sizes(loaded),
            "metadata": loaded.document.get("metadata", {})}


@blp.route("/models/<name>/versions/<int:version>", parameters=[MODEL_NAME_PARAMETER])
@blp.arguments(ModelVersionQuerySchema, location="query")
@blp.doc(responses={200: {"description": "The model document, or with format=onnx the model as an ONNX file",
                          "content": {"application/json": {"schema": model_document_schema()},
                                      ONNX_MEDIA_TYPE: {"schema": BINARY_SCHEMA}}}})
@documents_problems(400, 404, 406, 422)
def show_version(query, name, version):
    """The full model document of one version (``?format=onnx``: the model as ONNX)."""
    loaded = get_registry().get(name, version)
    if query["format"] == "onnx":
        return onnx_response(loaded.model, f"{name}-{version}.onnx")
    # Written straight from the parsed document: dumping every weight through marshmallow fields
    # would cost far more than the JSON encoding itself.
    return Response(json.dumps(loaded.document), mimetype="application/json")


@blp.route("/models/<name>", methods=["PUT"], parameters=[MODEL_NAME_PARAMETER])
@require_token
@blp.doc(requestBody={"required": True, "content": {
    "application/json": {"schema": model_document_schema()},
    **{media_type: {"schema": BINARY_SCHEMA} for media_type in ONNX_MEDIA_TYPES}}})
@blp.response(201, ModelVersionCreatedSchema)
@documents_problems(400, 409, 413, 415, 422, 503, 507)
def upload_model(name):
    """Store a model document (or an ONNX file, stored as its model document) as the next version of ``name``
    (created if new)."""
    if "version" in request.args:  # it was ignored: a client meaning to replace version N got version N+1
        abort_problem(422, "Validation failed", "Versions are never replaced: an upload always becomes the next "
                      "version, so PUT takes no 'version' (send the document to /models/<name> alone).",
                      type="urn:minigrad:problem:validation",
                      errors={"query": {"version": ["not accepted: an upload becomes the next version"]}})
    document = uploaded_document(request)
    loaded = get_registry().put(name, document)
    location = url_for(".show_version", name=name, version=loaded.version)
    return {"name": name, "version": loaded.version, **_sizes(loaded)}, 201, {"Location": location}


@blp.route("/models/<name>", methods=["DELETE"], parameters=[MODEL_NAME_PARAMETER])
@require_token
@blp.response(200, ModelDeletedSchema)
@documents_problems(400, 404, 503)
def delete_model(name):
    """Remove a model with all its versions."""
    return {"name": name, "deleted_versions": get_registry().delete(name)}
