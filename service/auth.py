"""Bearer-token authentication for the endpoints that change state.

With ``MINIGRAD_API_TOKEN`` unset the service is open (a local tool). With it set, every view
decorated with ``require_token`` needs ``Authorization: Bearer <token>``; predictions need it only
when ``MINIGRAD_PROTECT_PREDICT`` is also set (``require_token_for_predictions``).
"""

from __future__ import annotations

import hmac
from copy import deepcopy
from functools import wraps

from flask import current_app, request

from .errors import abort_problem

SECURITY_SCHEME = {"type": "http", "scheme": "bearer", "description": "The service's MINIGRAD_API_TOKEN."}
SECURITY_SCHEME_NAME = "bearerAuth"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="minigrad"'}


def check_token() -> None:
    """Abort with 401 unless the request carries the configured token (no-op when none is configured)."""
    expected = current_app.config["MINIGRAD_API_TOKEN"]
    if expected is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        abort_problem(401, detail="This endpoint needs the header 'Authorization: Bearer <token>'.",
                      type="urn:minigrad:problem:unauthorized", headers=_CHALLENGE)
    # compare_digest takes time independent of where the strings differ, so the token cannot be
    # guessed byte by byte from response times.
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        abort_problem(401, detail="The bearer token is not valid.", type="urn:minigrad:problem:unauthorized",
                      headers=_CHALLENGE)


def _documented(wrapper, optional: bool = False):
    """Mark the operation as taking the token in the OpenAPI document (``{}`` first: optional). Done on
    ``wrapper`` itself, as flask-smorest's ``doc`` would, without the call layer ``doc`` adds."""
    wrapper._apidoc = deepcopy(getattr(wrapper, "_apidoc", {}))
    wrapper._apidoc.setdefault("manual_doc", {})["security"] = [{}] * optional + [{SECURITY_SCHEME_NAME: []}]
    responses = wrapper._apidoc.setdefault("response", {}).setdefault("responses", {})
    responses.setdefault(401, ["UNAUTHORIZED"])  # unless the view documents its own (e.g. /v2's error body)
    return wrapper


def require_token(view):
    """Decorator: the view needs the bearer token whenever one is configured."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        check_token()
        return view(*args, **kwargs)

    return _documented(wrapper)


def require_token_for_predictions(view):
    """Decorator: like ``require_token``, but only when ``MINIGRAD_PROTECT_PREDICT`` is set."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_app._get_current_object().config["MINIGRAD_PROTECT_PREDICT"]:  # see get_registry
            check_token()
        return view(*args, **kwargs)

    return _documented(wrapper, optional=True)
