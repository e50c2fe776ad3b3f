"""ONNX files over HTTP: an uploaded ONNX model becomes a model document, a stored version can be sent as ONNX.

The conversion is minigrad.onnx's; this module only gives its outcomes their HTTP meaning. The onnx package is
optional (``minigrad[onnx]``): without it the service still runs, and ONNX requests get a problem saying so.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from flask import Request, Response
from webargs import core
from werkzeug.exceptions import HTTPException

from minigrad import ModelFormatError, Sequential

from .api import read_body, read_json_body, refuse_content_encoding
from .errors import abort_problem

__all__ = ["ONNX_MEDIA_TYPES", "ONNX_MEDIA_TYPE", "BINARY_SCHEMA", "uploaded_document", "document_from_onnx",
           "onnx_response"]

ONNX_MEDIA_TYPE = "application/onnx"
#: The Content-Types of an ONNX upload: its own, and what a client sends for "some file" (curl --data-binary).
ONNX_MEDIA_TYPES = (ONNX_MEDIA_TYPE, "application/octet-stream")
BINARY_SCHEMA = {"type": "string", "format": "binary", "description": "An ONNX model file"}
_INSTALL = "the onnx package is not installed on this server (pip install minigrad[onnx])"


def _onnx_interop(status: int, doing: str) -> ModuleType:
    """minigrad.onnx, or a problem with ``status`` when the onnx package is missing."""
    try:
        # import_module looks in sys.modules and then imports, so a missing package is found out per request.
        return importlib.import_module("minigrad.onnx")
    except ImportError:
        abort_problem(status, detail=f"This server cannot {doing}: {_INSTALL}.",
                      type="urn:minigrad:problem:onnx-unavailable")


def uploaded_document(request: Request) -> dict:
    """The model document a PUT sends: JSON as it is (no Content-Type counts as JSON), or an ONNX file converted;
    any other Content-Type is a 415 naming both."""
    mimetype = request.mimetype
    if mimetype in ONNX_MEDIA_TYPES:
        # read_body, not get_data: werkzeug cuts a chunked body at the limit without a word (a truncated file
        # was a 422 "not an ONNX model" instead of a 413).
        data = read_body(request)
        try:
            return document_from_onnx(data)
        except HTTPException:
            refuse_content_encoding(request)  # a gzipped file was a 422 "not an ONNX model"
            raise
    if mimetype and not core.is_json(mimetype):
        abort_problem(415, detail=f"Expected a model document (Content-Type: application/json) or an ONNX file "
                                  f"({' or '.join(ONNX_MEDIA_TYPES)}), got {mimetype!r}.",
                      type="urn:minigrad:problem:unsupported-media-type")
    return read_json_body(request)


def document_from_onnx(data: bytes) -> dict:
    """The model document of an uploaded ONNX file; 415 without onnx, 400 for no body, 422 for a graph minigrad
    cannot represent (the problem names the node and its op type)."""
    onnx_interop = _onnx_interop(415, "read ONNX uploads")
    if not data:
        abort_problem(400, "Empty body", "The request body is empty; expected an ONNX file.",
                      type="urn:minigrad:problem:invalid-onnx")
    try:
        model = onnx_interop.loads(data)
    except ModelFormatError as error:
        messages = {}
        for location, message in error.errors:
            messages.setdefault(location, []).append(message)
        abort_problem(422, "Unsupported ONNX model", str(error), type="urn:minigrad:problem:invalid-onnx",
                      errors={"body": messages})
    return model.to_dict()


def onnx_response(model: Sequential, filename: str) -> Response:
    """``model`` as an ONNX file download; 406 without onnx."""
    onnx_interop = _onnx_interop(406, "write ONNX")
    return Response(onnx_interop.dumps(model), mimetype=ONNX_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
