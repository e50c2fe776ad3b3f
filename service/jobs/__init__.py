"""Training jobs on a Huey queue: settings, the job store, the task, the reaper.

The web app reaches its ``JobBackend`` through ``get_job_backend()``; the consumer builds its own in
``service.worker``. Both read the same ``MINIGRAD_*`` settings, so they meet in the same queue.
"""

from __future__ import annotations

import os
import time
from collections import ChainMap

from flask import current_app

from .backend import JobBackend
from .reaper import housekeeping, reap_stale_jobs
from .settings import JobSettings

__all__ = ["JobBackend", "JobSettings", "app_job_settings", "get_job_backend", "housekeeping_on_read"]

EXTENSION_KEY = "minigrad.jobs"

# Purging expired jobs scans the finished ones; once a minute per web worker is plenty.
PURGE_EVERY_SECONDS = 60.0


def app_job_settings(config) -> JobSettings:
    """An application's job settings: its config first, then the environment. Raises ``ConfigError``;
    ``create_app`` calls it so a bad value stops the service at start, not every job request with a 500."""
    return JobSettings.from_mapping(ChainMap(config, os.environ))


def get_job_backend() -> JobBackend:
    """The current application's backend, built on first use from its config and the environment."""
    extensions = current_app.extensions
    backend = extensions.get(EXTENSION_KEY)
    if backend is None:
        backend = extensions.setdefault(EXTENSION_KEY, JobBackend(app_job_settings(current_app.config)))
    return backend


def housekeeping_on_read() -> None:
    """Reap stale jobs before answering a request about jobs, so a job whose consumer died shows as lost
    (and is treated as finished) even when no consumer is left to run the periodic reaper."""
    backend = get_job_backend()
    now = time.time()
    if now - backend.last_purge >= PURGE_EVERY_SECONDS:
        backend.last_purge = now
        housekeeping(backend, now)
    else:
        reap_stale_jobs(backend.store, backend.settings.heartbeat_timeout, now)
