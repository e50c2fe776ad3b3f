"""flask-smorest wiring: the ``Api`` (OpenAPI document, error responses) and the ``Blueprint`` every
resource uses, whose argument parser reads JSON with the standard library and reports problems.

Resources write ``blp = Blueprint("name", __name__, description=...)`` (from here, not from
flask_smorest) and then ``@blp.arguments(Schema)`` / ``@blp.response(200, Schema)`` as usual.
"""

from __future__ import annotations

import http
import json

import flask_smorest
from flask import Request
from flask_smorest.utils import prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser

from .auth import SECURITY_SCHEME, SECURITY_SCHEME_NAME
from .errors import PROBLEM_MIMETYPE, abort_problem, register_error_handlers, validation_problem
from .schemas import ProblemSchema

__all__ = ["Api", "Blueprint", "parse_json_body", "read_json_body"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def parse_json_body(data: bytes):
    """Parse a request body with the standard library; any defect is a 400 problem saying where."""
    if not data:
        abort_problem(400, "Invalid JSON", "The request body is empty; expected a JSON document.",
                      type="urn:minigrad:problem:invalid-json")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        detail = f"The request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
    except UnicodeDecodeError:
        detail = "The request body is not valid UTF-8 text."
    except RecursionError:
        detail = "The request body is nested too deeply."
    except ValueError as error:  # NaN/Infinity literals, integers with too many digits
        detail = f"The request body is not valid JSON: {error}."
    abort_problem(400, "Invalid JSON", detail, type="urn:minigrad:problem:invalid-json")


def read_json_body(request: Request):
    """The request's JSON body. A missing Content-Type is taken as JSON (curl and several clients send
    none); any other non-JSON type is a 415. Bodies over ``MAX_CONTENT_LENGTH`` are a 413."""
    mimetype = request.mimetype
    if mimetype and not core.is_json(mimetype):
        abort_problem(415, detail=f"Expected a JSON body (Content-Type: application/json), got {mimetype!r}.",
                      type="urn:minigrad:problem:unsupported-media-type")
    return parse_json_body(request.get_data(cache=True))


class ProblemParser(FlaskParser):
    """webargs' Flask parser with our JSON reading and problem+json validation errors."""

    def _raw_load_json(self, req):
        return read_json_body(req)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        problem = validation_problem(error.messages)
        status = error_status_code or self.DEFAULT_VALIDATION_STATUS
        problem["status"] = status
        abort_problem(status, problem.pop("title"), problem.pop("detail"), type=problem.pop("type"),
                      headers=error_headers, errors=problem["errors"])


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ProblemParser()


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
