"""Fixtures for the service tests, in the style of Flask's tutorial: ``app``, ``client``, ``runner``,
plus ``model_dir`` (a private copy of the shipped models) and ``gunicorn`` (start a real server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service import create_app
from service.testing import GunicornServer

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = REPO / "models"
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A model directory holding the shipped ``xor.json`` and ``iris.json``, placed by hand."""
    directory = tmp_path / "models"
    directory.mkdir()
    for name in ("xor.json", "iris.json"):
        shutil.copy(SHIPPED_MODELS / name, directory / name)
    return directory


def service_config(model_dir: Path, data_dir: Path, **overrides) -> dict:
    """A test configuration that ignores any MINIGRAD_* variables of the surrounding environment."""
    return {"TESTING": True, "MINIGRAD_MODEL_DIR": str(model_dir), "MINIGRAD_DATA_DIR": str(data_dir),
            "MINIGRAD_API_TOKEN": None, "MINIGRAD_PROTECT_PREDICT": False, **overrides}


@pytest.fixture
def app(model_dir, tmp_path):
    return create_app(service_config(model_dir, tmp_path / "var"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def protected_app(model_dir, tmp_path):
    """The app with ``MINIGRAD_API_TOKEN`` set to ``TOKEN``."""
    return create_app(service_config(model_dir, tmp_path / "var", MINIGRAD_API_TOKEN=TOKEN))


@pytest.fixture
def gunicorn():
    """``gunicorn(env=..., workers=2)`` starts a real server on a free loopback port; all are stopped after."""
    servers = []

    def start(env=None, workers=2, **options) -> GunicornServer:
        server = GunicornServer(env=env, workers=workers, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
