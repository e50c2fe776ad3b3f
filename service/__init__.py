"""The minigrad service: a Flask application serving, registering and training minigrad models.

``create_app(config=None)`` builds it; gunicorn runs ``service:create_app()`` (see gunicorn.conf.py).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from . import dashboard, docs, health, inference_v2, metrics, models, predict, request_log, train_api
from .api import Api
from .config import ensure_directory, load_config
from .docs import ASSETS_URL
from .jobs import app_job_settings
from .registry import EXTENSION_KEY, ModelRegistry

__all__ = ["create_app"]

_OPENAPI = {
    "API_TITLE": "minigrad",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": ASSETS_URL,
}


class _App(Flask):
    def make_default_options_response(self):
        # The automatic answer to OPTIONS: an empty body with Allow. Flask labels it text/html; an empty
        # body has no media type to announce, and this service answers nothing as HTML.
        response = super().make_default_options_response()
        del response.headers["Content-Type"]
        return response


class _AsciiIntegerConverter(IntegerConverter):
    """werkzeug's ``int`` (documented as such), of ASCII digits: its ``\\d+`` matches every script's digits, and
    /models/xor/versions/١ (Arabic-Indic one) or /versions/１ (fullwidth) was version 1. Without leading zeros
    too, as /v2 and the dashboard read a version: /versions/01 was version 1 here and a 400 there."""

    regex = r"0|[1-9][0-9]*"


def create_app(config=None) -> Flask:
    """The application, configured from the environment (``MINIGRAD_*``) overridden by ``config``."""
    app = _App(__name__)
    app.url_map.converters["int"] = _AsciiIntegerConverter  # before any route is added
    app.config.update(_OPENAPI)
    app.config.update(load_config(config))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MINIGRAD_MAX_BODY_BYTES"]
    app_job_settings(app.config)  # a bad MINIGRAD_* job setting stops the start, saying which
    ensure_directory("MINIGRAD_MODEL_DIR", app.config["MINIGRAD_MODEL_DIR"], writable=False)
    app.extensions[EXTENSION_KEY] = ModelRegistry(app.config["MINIGRAD_MODEL_DIR"],
                                                  recheck_seconds=app.config["MINIGRAD_MODEL_RECHECK_SECONDS"])

    request_log.init_app(app)
    metrics.init_app(app)
    api = Api(app)
    app.register_blueprint(docs.blp)
    app.register_blueprint(dashboard.blp)
    for resource in (health, predict, models, train_api, inference_v2):
        api.register_blueprint(resource.blp)
    return app
