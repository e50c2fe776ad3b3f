"""Service configuration: defaults, overridden by environment variables, overridden by a mapping.

The keys are the environment variables' names, so ``create_app({"MINIGRAD_MODEL_DIR": ...})`` and
``MINIGRAD_MODEL_DIR=... gunicorn ...`` say the same thing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from .registry import is_valid_name

DEFAULTS = {
    "MINIGRAD_MODEL_DIR": "./models",
    "MINIGRAD_DATA_DIR": "./var",
    # None: no authentication at all (a local tool); set it wherever the port is reachable by others.
    "MINIGRAD_API_TOKEN": None,
    "MINIGRAD_PROTECT_PREDICT": False,
    # A 1,000 x 784 batch of full-precision floats is about 16 MB of JSON; 64 MiB leaves room.
    "MINIGRAD_MAX_BODY_BYTES": 64 * 1024 * 1024,
    # How long a model lookup is reused before the disk is looked at again (files changed by hand show
    # up within this; changes through the service at once): see service/registry.py. 0: every request.
    "MINIGRAD_MODEL_RECHECK_SECONDS": 1.0,
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


def _as_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected one of 1/0, true/false, yes/no, on/off; got {value!r}")


def _as_number(name: str, value, convert, low, high, expected: str):
    """``convert(value)`` (int or float) when it lies in [low, high] (NaN does not), else a ``ConfigError``."""
    try:
        number = convert(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}: expected {expected}, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")
    return number


def _as_int(name: str, value, low: int, high: int | None, expected: str) -> int:
    return _as_number(name, value, int, low, math.inf if high is None else high, expected)


def _as_positive_int(name: str, value) -> int:
    return _as_int(name, value, 1, None, "a positive integer (bytes)")


# A registry lookup reused for longer than this would leave models placed by hand unseen for as long.
MAX_RECHECK_SECONDS = 3600


def _as_seconds(name: str, value) -> float:
    return _as_number(name, value, float, 0, MAX_RECHECK_SECONDS,
                      f"a number of seconds (0 or more, at most {MAX_RECHECK_SECONDS})")


def _as_token(name: str, value) -> str | None:
    if not value:
        return None
    # The token goes in a header: whitespace around it is dropped on the way (the service strips what it
    # is sent), and non-ASCII reaches the app as each client encodes it (curl: UTF-8, read as Latin-1);
    # either made every write a 401 for ever. The message never repeats the token itself.
    advice = ("expected printable ASCII, e.g. from python -c 'import secrets; print(secrets.token_urlsafe(32))', "
              "or unset it for no authentication")
    if value.strip() != value:
        raise ConfigError(f"{name}: has whitespace at its start or end; {advice}")
    for position, character in enumerate(value):
        if not " " <= character <= "~":
            raise ConfigError(f"{name}: has a character outside printable ASCII at position {position}; {advice}")
    return value


def _refuse_data_among_models(model_dir: str, data_dir: str) -> None:
    """The registry takes every directory of the model directory for a model's versions: a data directory that
    is the model directory, or inside it, had its job store or metric files taken for a model, and
    ``DELETE /models/var`` (or ``/models/metrics``) removed them."""
    # As written and with symlinks resolved: a data directory reached through a symlink in the model directory
    # (models/var -> /srv/var) is one of its directories too (DELETE /models/var took the link away).
    for models, data in ((model_dir, data_dir), (os.path.realpath(model_dir), os.path.realpath(data_dir))):
        if os.path.commonpath([models, data]) == models:
            break
    else:
        return
    if data == models:
        where, model = "is MINIGRAD_MODEL_DIR", "metrics"
    else:
        where, model = f"is inside MINIGRAD_MODEL_DIR ({model_dir})", os.path.relpath(data, models).split(os.sep)[0]
        if not is_valid_name(model):  # models/.state, say: no model is named so, and the registry passes it by
            return
    raise ConfigError(f"MINIGRAD_DATA_DIR: {data_dir} {where}, where every directory is taken for a model's "
                      f"versions (DELETE /models/{model} would remove the job store or the metrics); use a "
                      "directory outside it")


def load_config(overrides: Mapping | None = None, environ: Mapping | None = None) -> dict:
    """The effective settings: ``DEFAULTS`` < environment variables < ``overrides``.

    Values are normalized (paths absolute, flags bool, sizes int); an empty token means no token.
    Keys of ``overrides`` that are not ours (Flask's own, ``TESTING``...) pass through unchanged.
    """
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for name in DEFAULTS:
        if name in environ:
            settings[name] = environ[name]
    settings.update(overrides or {})

    settings["MINIGRAD_MODEL_DIR"] = os.path.abspath(os.fspath(settings["MINIGRAD_MODEL_DIR"]))
    settings["MINIGRAD_DATA_DIR"] = os.path.abspath(os.fspath(settings["MINIGRAD_DATA_DIR"]))
    _refuse_data_among_models(settings["MINIGRAD_MODEL_DIR"], settings["MINIGRAD_DATA_DIR"])
    for name, normalize in (("MINIGRAD_API_TOKEN", _as_token), ("MINIGRAD_PROTECT_PREDICT", _as_bool),
                            ("MINIGRAD_MAX_BODY_BYTES", _as_positive_int),
                            ("MINIGRAD_MODEL_RECHECK_SECONDS", _as_seconds)):
        settings[name] = normalize(name, settings[name])
    if settings["MINIGRAD_PROTECT_PREDICT"] and settings["MINIGRAD_API_TOKEN"] is None:
        # Asked for protected predictions, it would open them (and every write) to anyone without a word.
        raise ConfigError("MINIGRAD_PROTECT_PREDICT: is set, but MINIGRAD_API_TOKEN is not, so nothing would need "
                          "a token; set MINIGRAD_API_TOKEN, or MINIGRAD_PROTECT_PREDICT=0")
    return settings


def server_settings(environ: Mapping | None = None) -> dict:
    """gunicorn's settings from the environment (read by ``service/gunicorn_config.py``): ``port`` from
    ``PORT`` (8000), ``workers`` from ``WEB_CONCURRENCY`` (2), ``threads`` from ``GUNICORN_THREADS`` (4).

    Raises ``ConfigError``: gunicorn itself would take 0 workers and serve nothing, boot workers that die on
    0 threads, or fail on a port out of range with a traceback.
    """
    environ = os.environ if environ is None else environ
    return {
        "port": _as_int("PORT", environ.get("PORT", "8000"), 1, 65535, "a TCP port number (1-65535)"),
        "workers": _as_int("WEB_CONCURRENCY", environ.get("WEB_CONCURRENCY", "2"), 1, None,
                           "a number of worker processes (1 or more)"),
        "threads": _as_int("GUNICORN_THREADS", environ.get("GUNICORN_THREADS", "4"), 1, None,
                           "a number of threads per worker (1 or more)"),
    }


def ensure_directory(name: str, path: str, writable: bool) -> None:
    """Create ``path`` (the value of the variable ``name``) if missing; raises ``ConfigError`` when it is not a
    directory this process can read (and, when ``writable``, write)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{name}: {path} is not a directory and cannot be made one ({error.strerror})") from None
    wanted = os.R_OK | os.X_OK | (os.W_OK if writable else 0)
    if not os.access(path, wanted):
        raise ConfigError(f"{name}: {path} is not {'writable' if writable else 'readable'} by this process")
