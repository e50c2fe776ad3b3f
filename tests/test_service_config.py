"""Configuration: defaults < environment variables < the mapping given to create_app."""

from __future__ import annotations

import os

import pytest

from service import create_app
from service.config import ConfigError, load_config


def test_defaults():
    settings = load_config(environ={})
    assert settings["MINIGRAD_MODEL_DIR"] == os.path.abspath("./models")
    assert settings["MINIGRAD_DATA_DIR"] == os.path.abspath("./var")
    assert settings["MINIGRAD_API_TOKEN"] is None
    assert settings["MINIGRAD_PROTECT_PREDICT"] is False
    assert settings["MINIGRAD_MAX_BODY_BYTES"] == 64 * 1024 * 1024
    assert settings["MINIGRAD_MODEL_RECHECK_SECONDS"] == 1.0
    assert load_config(environ={"MINIGRAD_MODEL_RECHECK_SECONDS": "0.25"})["MINIGRAD_MODEL_RECHECK_SECONDS"] == 0.25


def test_environment_then_mapping():
    environ = {"MINIGRAD_MODEL_DIR": "/srv/models", "MINIGRAD_API_TOKEN": "t", "MINIGRAD_PROTECT_PREDICT": "yes",
               "MINIGRAD_MAX_BODY_BYTES": "1024"}
    settings = load_config(environ=environ)
    assert settings["MINIGRAD_MODEL_DIR"] == "/srv/models"
    assert (settings["MINIGRAD_API_TOKEN"], settings["MINIGRAD_PROTECT_PREDICT"]) == ("t", True)
    assert settings["MINIGRAD_MAX_BODY_BYTES"] == 1024
    overridden = load_config({"MINIGRAD_MODEL_DIR": "/elsewhere", "MINIGRAD_API_TOKEN": ""}, environ=environ)
    assert overridden["MINIGRAD_MODEL_DIR"] == "/elsewhere"
    assert overridden["MINIGRAD_API_TOKEN"] is None  # empty means no token


@pytest.mark.parametrize("name, value, fragment", [
    ("MINIGRAD_PROTECT_PREDICT", "maybe", "MINIGRAD_PROTECT_PREDICT"),
    ("MINIGRAD_MAX_BODY_BYTES", "lots", "MINIGRAD_MAX_BODY_BYTES"),
    ("MINIGRAD_MAX_BODY_BYTES", "0", "positive"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "soon", "MINIGRAD_MODEL_RECHECK_SECONDS: expected a number of seconds"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "-1", "0 or more"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "nan", "0 or more"),
])
def test_bad_values_name_the_variable(name, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(environ={name: value})


def test_create_app_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("MINIGRAD_DATA_DIR", str(tmp_path / "v"))
    monkeypatch.setenv("MINIGRAD_MAX_BODY_BYTES", "2048")
    app = create_app({"TESTING": True})
    assert app.config["MINIGRAD_MODEL_DIR"] == str(tmp_path / "m")
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert (tmp_path / "m").is_dir()
    assert app.test_client().get("/models").get_json() == {"models": []}
