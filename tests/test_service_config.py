"""Configuration: defaults < environment variables < the mapping given to create_app."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service import create_app
from service.config import ConfigError, load_config, server_settings
from service.testing import GUNICORN_CONF, REPO_ROOT, free_port


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
    overridden = load_config({"MINIGRAD_MODEL_DIR": "/elsewhere", "MINIGRAD_API_TOKEN": "",
                              "MINIGRAD_PROTECT_PREDICT": False}, environ=environ)
    assert overridden["MINIGRAD_MODEL_DIR"] == "/elsewhere"
    assert overridden["MINIGRAD_API_TOKEN"] is None  # empty means no token


@pytest.mark.parametrize("name, value, fragment", [
    ("MINIGRAD_PROTECT_PREDICT", "maybe", "MINIGRAD_PROTECT_PREDICT"),
    ("MINIGRAD_MAX_BODY_BYTES", "lots", "MINIGRAD_MAX_BODY_BYTES"),
    ("MINIGRAD_MAX_BODY_BYTES", "0", "positive"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "soon", "MINIGRAD_MODEL_RECHECK_SECONDS: expected a number of seconds"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "-1", "0 or more"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "nan", "0 or more"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "1e300", "at most 3600"),  # hand-placed models would never be seen
])
def test_bad_values_name_the_variable(name, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(environ={name: value})


# Each of these was taken as the token, and no request could present it (the service strips what it is sent;
# curl sends UTF-8 that arrives as Latin-1): every write a 401 for ever. The message never shows the token.
@pytest.mark.parametrize("token, fragment", [
    ("   ", "whitespace at its start or end"),
    ("s3cret-value\n", "whitespace at its start or end"),
    (" s3cret-value", "whitespace at its start or end"),
    ("s3cret-välue", "outside printable ASCII at position 8"),
    ("s3cret\x00value", "outside printable ASCII at position 6"),
])
def test_a_token_no_client_could_send_is_refused(token, fragment):
    with pytest.raises(ConfigError, match=f"MINIGRAD_API_TOKEN: .*{fragment}") as refused:
        load_config(environ={"MINIGRAD_API_TOKEN": token})
    assert "s3cret" not in str(refused.value)
    assert load_config(environ={"MINIGRAD_API_TOKEN": "a token-with.spaces_inside~"})["MINIGRAD_API_TOKEN"]


def test_protected_predictions_without_a_token_are_refused():
    # They were taken as asked, and with no token nothing needed one: predictions stayed open to anyone.
    with pytest.raises(ConfigError, match="MINIGRAD_PROTECT_PREDICT: is set, but MINIGRAD_API_TOKEN is not"):
        load_config(environ={"MINIGRAD_PROTECT_PREDICT": "1"})
    with pytest.raises(ConfigError, match="MINIGRAD_PROTECT_PREDICT"):
        load_config(environ={"MINIGRAD_PROTECT_PREDICT": "yes", "MINIGRAD_API_TOKEN": ""})
    assert load_config(environ={"MINIGRAD_PROTECT_PREDICT": "1", "MINIGRAD_API_TOKEN": "t"})["MINIGRAD_PROTECT_PREDICT"]


def test_a_data_dir_in_the_model_dir_is_refused(tmp_path):
    # The registry took its directories for models: with both at one path, PUT /models/metrics wrote a version
    # among the metric files and DELETE /models/metrics removed them all (then /metrics was a 500); with the data
    # directory inside the model directory, DELETE /models/var removed the job store.
    models = tmp_path / "models"
    (tmp_path / "link").symlink_to(models, target_is_directory=True)
    models.mkdir()
    (models / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for data, fragment in [(models, "is MINIGRAD_MODEL_DIR, .*[(]DELETE /models/metrics "),
                           (models / "var", "is inside MINIGRAD_MODEL_DIR .*[(]DELETE /models/var "),
                           (tmp_path / "link" / "jobs" / "here", "is inside .*[(]DELETE /models/jobs "),
                           # a link in the model directory, though its real path is outside: it was let through
                           (models / "outside" / "var", "is inside .*[(]DELETE /models/outside ")]:
        with pytest.raises(ConfigError, match=f"^MINIGRAD_DATA_DIR: {data} {fragment}"):
            load_config(environ={"MINIGRAD_MODEL_DIR": str(models), "MINIGRAD_DATA_DIR": str(data)})
        with pytest.raises(ConfigError, match="^MINIGRAD_DATA_DIR: "):
            create_app({"MINIGRAD_MODEL_DIR": str(models), "MINIGRAD_DATA_DIR": str(data)})
    # beside it, holding it, or in a directory no model can be named after (the registry passes it by)
    for data in (tmp_path / "var", tmp_path / "models-var", tmp_path, models / ".state", models / "_var" / "x"):
        assert load_config(environ={"MINIGRAD_MODEL_DIR": str(models), "MINIGRAD_DATA_DIR": str(data)})


def test_create_app_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("MINIGRAD_DATA_DIR", str(tmp_path / "v"))
    monkeypatch.setenv("MINIGRAD_MAX_BODY_BYTES", "2048")
    app = create_app({"TESTING": True})
    assert app.config["MINIGRAD_MODEL_DIR"] == str(tmp_path / "m")
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert (tmp_path / "m").is_dir()
    assert app.test_client().get("/models").get_json() == {"models": []}


def test_server_settings_from_the_environment():
    assert server_settings({}) == {"port": 8000, "workers": 2, "threads": 4}
    assert server_settings({"PORT": "9000", "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "1"}) == {
        "port": 9000, "workers": 3, "threads": 1}


# Each of these once started gunicorn anyway: a traceback (port 70000, a file as a directory, a bad MINIGRAD_*
# value raised in the master's hook or in every worker as it booted), 0 workers listening and answering
# nothing, or workers dying at boot on 0 threads. Now gunicorn, and serve, stop with one line naming it.
BAD_START_SETTINGS = [
    ("PORT", "abc", "expected a TCP port number"),
    ("PORT", "70000", "expected a TCP port number (1-65535), got '70000'"),
    ("WEB_CONCURRENCY", "0", "expected a number of worker processes (1 or more)"),
    ("GUNICORN_THREADS", "0", "expected a number of threads per worker (1 or more)"),
    ("GUNICORN_THREADS", "four", "expected a number of threads per worker"),
    ("MINIGRAD_MAX_BODY_BYTES", "abc", "expected a positive integer"),
    ("MINIGRAD_PROTECT_PREDICT", "garbage", "expected one of 1/0"),
    ("MINIGRAD_API_TOKEN", "  ", "has whitespace at its start or end"),
    ("MINIGRAD_MODEL_RECHECK_SECONDS", "-1", "0 or more"),
    ("MINIGRAD_MODEL_DIR", "{file}", "is not a directory and cannot be made one"),
    ("MINIGRAD_DATA_DIR", "{file}/var", "is not a directory and cannot be made one"),
]


@pytest.mark.parametrize("name, value, fragment", BAD_START_SETTINGS)
def test_bad_settings_stop_gunicorn_before_a_worker_boots(name, value, fragment, tmp_path):
    result = _start_with(["-m", "gunicorn", "-c", str(GUNICORN_CONF)], name, value, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(f"gunicorn: {name}: ") and fragment in result.stderr
    assert "Booting worker" not in result.stdout + result.stderr


@pytest.mark.parametrize("name, value, fragment", BAD_START_SETTINGS[1:3] + BAD_START_SETTINGS[-1:])
def test_bad_settings_stop_serve_before_it_starts_anything(name, value, fragment, tmp_path):
    result = _start_with(["-m", "service.serve"], name, value, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith(f"serve: {name}: ") and fragment in result.stderr
    assert not (tmp_path / "var").exists()  # nothing started: no metrics directory, no job store


def test_create_app_names_a_model_dir_that_is_a_file(tmp_path):
    (tmp_path / "models").write_text("not a directory")
    with pytest.raises(ConfigError, match="MINIGRAD_MODEL_DIR: .* is not a directory"):
        create_app({"MINIGRAD_MODEL_DIR": str(tmp_path / "models"), "MINIGRAD_DATA_DIR": str(tmp_path / "var")})


def _start_with(arguments, name, value, tmp_path) -> subprocess.CompletedProcess:
    (tmp_path / "file").write_text("a file, not a directory")
    env = {key: item for key, item in os.environ.items()
           if not key.startswith(("MINIGRAD_", "PROMETHEUS_")) and key not in ("PORT", "WEB_CONCURRENCY")}
    env.update({"MINIGRAD_MODEL_DIR": str(REPO_ROOT / "models"), "MINIGRAD_DATA_DIR": str(tmp_path / "var"),
                "PORT": str(free_port())})
    env[name] = value.format(file=tmp_path / "file")
    return subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_data_dir_the_service_does_not_write_to_is_not_checked(tmp_path):
    # Redis holds the jobs and PROMETHEUS_MULTIPROC_DIR the metrics: a read-only root file system may leave
    # MINIGRAD_DATA_DIR unmakeable, and the service must start anyway.
    (tmp_path / "file").write_text("a file, not a directory")
    env = {key: item for key, item in os.environ.items() if not key.startswith(("MINIGRAD_", "PROMETHEUS_"))}
    env.update({"MINIGRAD_MODEL_DIR": str(REPO_ROOT / "models"), "MINIGRAD_DATA_DIR": str(tmp_path / "file" / "var"),
                "MINIGRAD_REDIS_URL": "redis://127.0.0.1:1/0", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    checked = subprocess.run([sys.executable, "-c", "from service.startup import refuse_bad_settings as r; r('t')"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    del env["MINIGRAD_REDIS_URL"]  # the SQLite queue lives there
    checked = subprocess.run([sys.executable, "-c", "from service.startup import refuse_bad_settings as r; r('t')"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and checked.stderr.startswith("t: MINIGRAD_DATA_DIR: ")


def test_a_worker_leaves_what_it_loaded_out_of_later_garbage_collections():
    import gc

    from service.startup import freeze_startup_objects

    create_app()  # what a worker has loaded when gunicorn calls post_worker_init
    gc.collect()  # the garbage of earlier tests in this process is not what the freeze keeps
    tracked = len(gc.get_objects())
    try:
        freeze_startup_objects()
        # Collections walk the tracked objects: after the freeze, none of those that were there.
        assert gc.get_freeze_count() > 0.9 * tracked and len(gc.get_objects()) < 1000
    finally:
        gc.unfreeze()
