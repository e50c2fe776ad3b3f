"""The check of every setting before the service starts anything (``service.serve``, gunicorn's master).

A bad value found by a worker as it boots is a traceback per worker and a master that gives up with
"Worker failed to boot"; found here, it is one line naming the variable, and nothing has started.
"""

from __future__ import annotations

from .config import ConfigError, ensure_directory, load_config, server_settings
from .jobs import app_job_settings


def refuse_bad_settings(program: str) -> dict:
    """The service's settings (as ``load_config``), or ``SystemExit`` with ``program: VARIABLE: what is wrong``
    when one of them, gunicorn's (``PORT``, ``WEB_CONCURRENCY``, ``GUNICORN_THREADS``) or the jobs' cannot
    be used, or a directory cannot be made or read."""
    try:
        settings = load_config()
        server_settings()
        app_job_settings(settings)
        ensure_directory("MINIGRAD_MODEL_DIR", settings["MINIGRAD_MODEL_DIR"], writable=False)
        ensure_directory("MINIGRAD_DATA_DIR", settings["MINIGRAD_DATA_DIR"], writable=True)
    except ConfigError as error:
        raise SystemExit(f"{program}: {error}") from None
    return settings
