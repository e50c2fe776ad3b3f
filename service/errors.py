"""Errors as ``application/problem+json`` (RFC 9457) for every route outside ``/v2``.

Views raise with ``abort_problem(status, title, detail, **extra)``; anything else that goes wrong
(an ``HTTPException`` from Flask or werkzeug, a marshmallow ``ValidationError``, an unexpected
exception) is turned into the same shape by the handlers ``register_error_handlers`` installs, so a
client never sees an HTML page or a traceback. A resource with a protocol of its own (the Open
Inference Protocol's ``{"error": ...}``) claims its path prefix with ``register_error_renderer``.
"""

from __future__ import annotations

import errno
import json
import logging
from http import HTTPStatus

import marshmallow as ma
from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.exceptions import abort as werkzeug_abort

from minigrad import ModelFormatError

from .registry import (
    InvalidModelFile,
    InvalidModelName,
    ModelNameTaken,
    ModelNotFound,
    ModelStorageError,
    RegistryError,
    VersionNotFound,
)

PROBLEM_MIMETYPE = "application/problem+json"
# A request HTTP itself cannot carry (gunicorn's refusals, a chunked body that does not parse).
MALFORMED_REQUEST = "urn:minigrad:problem:malformed-request"
_RENDERERS = "minigrad.error_renderers"

log = logging.getLogger(__name__)


def counted(number: int, noun: str) -> str:
    """``1 row``, ``2 rows``: a count in an error message, in words a reader would write."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def abort_problem(status: int, title: str | None = None, detail: str | None = None, *, type: str = "about:blank",
                  headers: dict | None = None, **extra):
    """Stop the request with a problem document: ``type``, ``title``, ``status``, ``detail`` + ``extra``.

    ``title`` defaults to the status phrase (as RFC 9457 asks for ``about:blank``); ``extra`` adds
    members such as ``errors`` (field-level validation messages) or ``model``.
    """
    try:
        werkzeug_abort(status)
    except HTTPException as error:
        error.problem = problem_document(status, title, detail, type=type, **extra)
        error.problem_headers = dict(headers or {})
        raise


def problem_document(status: int, title: str | None = None, detail: str | None = None, *,
                     type: str = "about:blank", **extra) -> dict:
    document = {"type": type, "title": title or HTTPStatus(status).phrase, "status": status}
    if detail:
        document["detail"] = detail
    document.update(extra)
    return document


def problem_response(document: dict, headers: dict | None = None) -> Response:
    response = Response(json.dumps(document), status=document["status"], mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# What a webargs location is, in a client's words (messages are keyed by location: {"query": {"page": [...]}}).
_LOCATION_NAMES = {"json": "request body", "form": "request body", "query": "query string", "querystring":
                   "query string", "headers": "request headers", "cookies": "cookies", "view_args": "URL path"}


def _mismatch(parts: list[str]) -> str:
    """The validation problem's detail: which parts of the request did not match their schema."""
    return f"The {' and the '.join(parts)} {'does' if len(parts) == 1 else 'do'} not match its schema; see errors."


BODY_MISMATCH = _mismatch(["request body"])


def validation_problem(messages, detail: str | None = None) -> dict:
    """The problem document for field-level validation messages (marshmallow's nested dict), keyed by location
    (webargs' ``{"query": {...}}``) unless ``detail`` is given: the detail then names the part of the request."""
    if detail is None:
        parts = [_LOCATION_NAMES.get(key) for key in messages] if isinstance(messages, dict) else []
        detail = _mismatch(list(dict.fromkeys(parts))) if parts and all(parts) else BODY_MISMATCH
    return problem_document(422, "Validation failed", detail, type="urn:minigrad:problem:validation", errors=messages)


def register_error_renderer(app: Flask, path_prefix: str, render) -> None:
    """Let errors under ``path_prefix`` be rendered by ``render(status, message, headers) -> Response``."""
    app.extensions.setdefault(_RENDERERS, []).append((path_prefix.rstrip("/"), render))


def _custom_renderer():
    path = request.path
    for prefix, render in current_app.extensions.get(_RENDERERS, ()):
        if path == prefix or path.startswith(prefix + "/"):
            return render
    return None


def handle_http_exception(error: HTTPException) -> Response:
    """Render any ``HTTPException`` (``abort_problem``'s, Flask's, werkzeug's) as a problem."""
    document = getattr(error, "problem", None)
    headers = dict(getattr(error, "problem_headers", None) or {})
    if document is None:
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        if "messages" in data:  # webargs' abort: validation messages keyed by location and field
            document = validation_problem(data["messages"])
            document["status"] = status
        else:
            document = problem_document(status, error.name, error.description)
        headers.update(data.get("headers") or {})
    if isinstance(error, RequestEntityTooLarge) and "detail" not in getattr(error, "problem", {}):
        document["detail"] = (f"The request body is larger than this service accepts "
                              f"(MINIGRAD_MAX_BODY_BYTES = {current_app.config['MAX_CONTENT_LENGTH']} bytes).")
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    render = _custom_renderer()
    if render is not None:
        return render(document["status"], document.get("detail") or document["title"], headers)
    return problem_response(document, headers)


def handle_validation_error(error: ma.ValidationError) -> Response:
    render = _custom_renderer()
    if render is not None:
        return render(422, json.dumps(error.messages), {})
    # Raised by a view's own schema: keyed by field, not by location (a field could be named "query").
    return problem_response(validation_problem(error.messages, BODY_MISMATCH))


# Registry errors carry messages meant for the client; this is their HTTP meaning.
_REGISTRY_PROBLEMS = (
    (InvalidModelName, 400, "Invalid model name", "invalid-model-name"),
    (ModelNotFound, 404, "Model not found", "model-not-found"),
    (VersionNotFound, 404, "Version not found", "version-not-found"),
    (ModelNameTaken, 409, "Model name taken", "model-name-taken"),
    (InvalidModelFile, 500, "Invalid model file", "invalid-model-file"),
)


def _registry_problem(error: RegistryError) -> tuple[int, str, str]:
    """(status, title, type slug) of a registry error."""
    if isinstance(error, ModelStorageError):  # the request was fine; the disk said no
        # EFBIG: the file may not grow (RLIMIT_FSIZE, or the file system's largest file); as full as a full disk.
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return 507, "Insufficient Storage", "storage-full"
        return 503, "Model directory not writable", "storage-unavailable"
    for kind, status, title, slug in _REGISTRY_PROBLEMS:
        if isinstance(error, kind):
            return status, title, slug
    return 500, "Registry error", "registry"


def handle_registry_error(error: RegistryError) -> Response:
    status, title, slug = _registry_problem(error)
    if status >= 500:
        log.error("%s", error)
    render = _custom_renderer()
    if render is not None:
        return render(status, str(error), {})
    return problem_response(problem_document(status, title, str(error), type=f"urn:minigrad:problem:{slug}"))


def handle_model_format_error(error: ModelFormatError) -> Response:
    """A model document sent by the client (an upload, a training request) has defects."""
    render = _custom_renderer()
    if render is not None:
        return render(422, str(error), {})
    messages = {}
    for location, message in error.errors:
        messages.setdefault(location, []).append(message)
    return problem_response(problem_document(422, "Invalid model document", str(error),
                                             type="urn:minigrad:problem:invalid-model-document",
                                             errors={"json": messages}))


def handle_unexpected_exception(error: Exception) -> Response:
    """A bug or an environment failure: logged with its traceback, answered without it."""
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled error in %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError(
        "The server failed to complete the request; the error has been logged."))


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; call after flask-smorest's ``Api.init_app`` so ours win."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ma.ValidationError, handle_validation_error)
    app.register_error_handler(RegistryError, handle_registry_error)
    app.register_error_handler(ModelFormatError, handle_model_format_error)
    app.register_error_handler(Exception, handle_unexpected_exception)
