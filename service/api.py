"""flask-smorest wiring: the ``Api`` (OpenAPI document, error responses) and the ``Blueprint`` every
resource uses, whose argument parser reads JSON with the standard library and reports problems.

Resources write ``blp = Blueprint("name", __name__, description=...)`` (from here, not from
flask_smorest) and then ``@blp.arguments(Schema)`` / ``@blp.response(200, Schema)`` as usual.
"""

from __future__ import annotations

import http
import json
import sys
from copy import deepcopy
from functools import wraps

import flask_smorest
import marshmallow as ma
from flask import Request, current_app, request
from flask_smorest.utils import prepare_response
from gunicorn.http.errors import ChunkMissingTerminator, ParseException
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.sansio.utils import get_content_length

from .auth import SECURITY_SCHEME, SECURITY_SCHEME_NAME
from .errors import MALFORMED_REQUEST, PROBLEM_MIMETYPE, abort_problem, register_error_handlers, validation_problem
from .schemas import ProblemSchema

__all__ = ["Api", "Blueprint", "parse_json_body", "read_body", "read_json_body", "refuse_content_encoding",
           "documents_problems"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


# One decoder for every request: json.loads with a keyword argument builds a new one per call (half
# the cost of parsing a small body).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_body(data: bytes):
    """Parse a request body with the standard library; any defect is a 400 problem saying where."""
    if not data:
        abort_problem(400, "Invalid JSON", "The request body is empty; expected a JSON document.",
                      type="urn:minigrad:problem:invalid-json")
    try:
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))  # as json.loads does
    except json.JSONDecodeError as error:
        detail = f"The request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
    except UnicodeDecodeError:
        detail = "The request body is not valid UTF-8 text."
    except RecursionError:
        detail = "The request body is nested too deeply."
    except ValueError as error:  # NaN/Infinity literals, integers with too many digits
        detail = f"The request body is not valid JSON: {error}."
        if "integer string conversion" in str(error):  # Python's message would tell the client to call sys.*
            detail = f"The request body has an integer of more than {sys.get_int_max_str_digits()} digits."
    abort_problem(400, "Invalid JSON", detail, type="urn:minigrad:problem:invalid-json")


def read_json_body(request: Request):
    """The request's JSON body. A missing Content-Type is taken as JSON (some clients, Triton's among
    them, send none); any other non-JSON type is a 415. Bodies over ``MAX_CONTENT_LENGTH`` are a 413."""
    # The usual header is compared as it came (parsing it costs a JSON prediction 2 us); others are parsed.
    mimetype = "" if request.environ.get("CONTENT_TYPE") == "application/json" else request.mimetype
    if mimetype and not core.is_json(mimetype):
        abort_problem(415, detail=f"Expected a JSON body (Content-Type: application/json), got {mimetype!r}.",
                      type="urn:minigrad:problem:unsupported-media-type")
    body = read_body(request)
    try:
        return parse_json_body(body)
    except HTTPException:
        refuse_content_encoding(request)  # looked at only now: a good body costs nothing more
        raise


def refuse_content_encoding(request: Request) -> None:
    """For a body that could not be read: when it says it is compressed, a 415 naming the coding (RFC 9110)
    rather than the parser's "not valid UTF-8 text": only /v2 inflates request bodies."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding != "identity":
        abort_problem(415, detail=f"Content-Encoding {coding!r} is not supported here; send the body "
                                  "uncompressed (only /v2/.../infer accepts gzip or deflate).",
                      type="urn:minigrad:problem:unsupported-media-type")


_CUT_OFF = "The client closed the connection before it sent the whole request body."


def read_body(request: Request) -> bytes:
    """The whole body, refused with 413 when over ``MAX_CONTENT_LENGTH``, and with 400 when the client
    goes away before sending all of it (gunicorn raises an ``OSError``, which would otherwise be a 500)
    or sends a chunked body gunicorn cannot read (a chunk size that is not hexadecimal, a chunk without
    its CRLF: a ``ParseException``, raised only once the application reads the body).

    With a Content-Length: one read of the WSGI stream (werkzeug's ``get_data`` wraps the stream and
    copies through buffers: 6 us of a 140 us prediction). Without one (chunked), werkzeug's limited
    stream would stop at the limit without a word, so read one byte past it to tell "too big" from
    "exactly the limit" (gunicorn marks such streams terminated; otherwise werkzeug reads nothing).
    """
    environ = request.environ
    # werkzeug's own rule, on the environ: ``request.content_length`` goes through EnvironHeaders (5 us).
    length = get_content_length(environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING"))
    # MAX_CONTENT_LENGTH as Flask's request.max_content_length reads it, without its two proxy look-ups
    # (1 us; see get_registry). Nothing here sets a limit per request.
    limit = current_app._get_current_object().config["MAX_CONTENT_LENGTH"]
    try:
        if length is not None and (limit is None or length <= limit):
            data = environ["wsgi.input"].read(length)
            if len(data) < length:
                raise ClientDisconnected(_CUT_OFF)
            return data
        if length is not None or not environ.get("wsgi.input_terminated"):
            return request.get_data(cache=True)  # 413 for a declared length over the limit
        data = request.input_stream.read(-1 if limit is None else limit + 1)
    except (OSError, ClientDisconnected):  # gunicorn's reader, or werkzeug's, found the body cut off mid-way
        raise ClientDisconnected(_CUT_OFF) from None
    except ParseException as error:
        # gunicorn also says this of a body that ends before a chunk's CRLF (or the final one): the client went away.
        if isinstance(error, ChunkMissingTerminator) and b"\r\n".startswith(error.term):
            raise ClientDisconnected(_CUT_OFF) from None
        abort_problem(400, "Malformed request body", f"The request body's chunked encoding is not valid: {error}.",
                      type=MALFORMED_REQUEST)
    if limit is not None and len(data) > limit:
        raise RequestEntityTooLarge()
    return data


class ProblemParser(FlaskParser):
    """webargs' Flask parser with our JSON reading and problem+json validation errors."""

    def _raw_load_json(self, req):
        return read_json_body(req)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        _abort_validation(error.messages, error_status_code or self.DEFAULT_VALIDATION_STATUS)


def documents_problems(*statuses: int):
    """Decorator: list these error statuses (problem+json) in the view's OpenAPI responses. Unlike
    flask-smorest's ``alt_response`` it adds no call layer to every request."""

    def decorator(view):
        view._apidoc = deepcopy(getattr(view, "_apidoc", {}))
        responses = view._apidoc.setdefault("response", {}).setdefault("responses", {})
        for status in statuses:
            responses.setdefault(status, []).append(http.HTTPStatus(status).name)
        return view

    return decorator


# Keyword arguments of ``arguments`` that only shape the OpenAPI text.
_DOC_ONLY = {"content_type", "required", "description", "example", "examples"}


def _abort_validation(messages, status: int = 422):
    problem = validation_problem(messages)
    abort_problem(status, problem["title"], problem["detail"], type=problem["type"], errors=messages)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ProblemParser()

    def arguments(self, schema, *, location="json", loads_as_is=None, **kwargs):
        """As flask-smorest's, but a JSON body is read and loaded here, with one schema instance: webargs'
        per-request machinery costs as much as a small prediction. Other locations go through webargs.

        ``loads_as_is(body) -> bool``, given next to a schema, names bodies the schema would load to
        themselves unchanged; those skip the load (marshmallow's is ~10 us even for three fields), and
        every other body goes through the schema, which says what is wrong."""
        documented = super().arguments(schema, location=location, **kwargs)
        if location != "json" or set(kwargs) - _DOC_ONLY:
            if loads_as_is is not None:
                raise TypeError("loads_as_is is for JSON bodies read here")
            return documented
        instance = schema() if isinstance(schema, type) else schema

        def decorator(view):
            @wraps(view)
            def parse_then_call(*args, **view_kwargs):
                try:
                    # The request itself, not the proxy: read_json_body looks at it several times.
                    body = read_json_body(request._get_current_object())
                    if loads_as_is is None or not loads_as_is(body):
                        body = instance.load(body)
                except ma.ValidationError as error:
                    _abort_validation({"json": error.messages})
                return view(*args, body, **view_kwargs)  # appended as webargs does

            # The OpenAPI description flask-smorest would attach, without its webargs wrapper.
            parse_then_call._apidoc = documented(view)._apidoc
            return parse_then_call

        return decorator

    def answered_by_view(self, status_code, schema, **kwargs):
        """As ``response``, for a view that encodes and returns its own ``Response``: the schema documents
        the body in the OpenAPI text, and no wrapper runs per request (there is nothing left to dump)."""
        return _description_only(super().response(status_code, schema, **kwargs))

    def alt_response(self, *args, **kwargs):
        """As flask-smorest's: documents another response, without its call layer."""
        return _description_only(super().alt_response(*args, **kwargs))

    def alt_problem(self, status_code: int, description: str):
        """Documents an error status answered with a problem document, with a description of its own (as
        ``documents_problems`` does with the status phrase): ``alt_response`` given only a description documents
        the status without any body."""
        return self.alt_response(status_code, schema=ProblemSchema, content_type=PROBLEM_MIMETYPE,
                                 description=description)

    @staticmethod
    def doc(**kwargs):
        """As flask-smorest's: adds to the operation's OpenAPI description, without its call layer."""
        return _description_only(flask_smorest.Blueprint.doc(**kwargs))


def _description_only(documenting):
    """The OpenAPI description a flask-smorest decorator attaches, on the view itself. Its wrappers of
    ``doc`` and ``alt_response`` only call the view, each after a look-up of ``current_app`` and a check
    for a coroutine: a /v2 infer went through five of them (~7 us a request)."""

    def decorator(view):
        view._apidoc = documenting(view)._apidoc
        return view

    return decorator


class Api(flask_smorest.Api):
    """flask-smorest's Api whose error responses are documented and rendered as problem+json."""

    def _register_error_handlers(self):
        register_error_handlers(self._app)

    def _register_responses(self):
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["schema"] = ProblemSchema
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": ProblemSchema}
        prepare_response(response, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)
        self.spec.components.security_scheme(SECURITY_SCHEME_NAME, SECURITY_SCHEME)
