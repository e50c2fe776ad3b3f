"""Swagger UI's files, served by the app itself so ``/docs`` works without a network (no CDN).

flask-smorest renders the ``/docs`` page (``OPENAPI_SWAGGER_UI_PATH``) and points its scripts at
``OPENAPI_SWAGGER_UI_URL``, which is this blueprint's route; the files come from the
``swagger-ui-bundle`` package.
"""

from __future__ import annotations

from flask import Blueprint, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/static/"

blp = Blueprint("docs_assets", __name__)


@blp.route(ASSETS_URL + "<path:filename>")
def swagger_ui_asset(filename):
    # send_from_directory refuses paths that leave the directory.
    return send_from_directory(swagger_ui_path, filename, max_age=24 * 3600)
