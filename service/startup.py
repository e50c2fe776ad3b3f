"""The check of every setting before the service starts anything (``service.serve``, gunicorn's master).

A bad value found by a worker as it boots is a traceback per worker and a master that gives up with
"Worker failed to boot"; found here, it is one line naming the variable, and nothing has started.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from pathlib import Path

from .config import ConfigError, ensure_directory, load_config, server_settings
from .jobs import app_job_settings
from .metrics import MULTIPROC_ENV


def refuse_bad_settings(program: str) -> dict:
    """The service's settings (as ``load_config``), or ``SystemExit`` with ``program: VARIABLE: what is wrong``
    when one of them, gunicorn's (``PORT``, ``WEB_CONCURRENCY``, ``GUNICORN_THREADS``) or the jobs' cannot
    be used, or a directory cannot be made or read."""
    try:
        settings = load_config()
        server_settings()
        jobs = app_job_settings(settings)
        ensure_directory("MINIGRAD_MODEL_DIR", settings["MINIGRAD_MODEL_DIR"], writable=False)
        # It holds the SQLite queue and the metric files; with Redis and a metrics directory of its own
        # the service writes nothing there (a read-only root file system, say).
        if jobs.redis_url is None or not os.environ.get(MULTIPROC_ENV):
            ensure_directory("MINIGRAD_DATA_DIR", settings["MINIGRAD_DATA_DIR"], writable=True)
    except ConfigError as error:
        raise SystemExit(f"{program}: {error}") from None
    return settings


def share_metrics_of_a_running_service(program: str, environ=None) -> None:
    """Keep the metric files of processes still running with this ``MINIGRAD_DATA_DIR``.

    ``prepare_multiprocess_dir`` empties ``$MINIGRAD_DATA_DIR/metrics`` of an earlier run's files. When
    that run is still going (a second ``make serve`` that will fail on the port in use, or a second server
    on another port), its workers' counts would vanish from its ``/metrics``; naming the directory in
    ``PROMETHEUS_MULTIPROC_DIR`` makes it shared, not emptied. A file's process is known by the pid in its
    name (``counter_<pid>.db``); a pid reused since only keeps old counts in the sums.
    """
    environ = os.environ if environ is None else environ
    if environ.get(MULTIPROC_ENV):
        return
    directory = Path(load_config(environ=environ)["MINIGRAD_DATA_DIR"]) / "metrics"
    running = sorted({pid for pid in _metric_file_pids(directory) if _is_running(pid)})
    if running:
        print(f"{program}: {directory} holds the metrics of running processes {running} (another server with "
              "this MINIGRAD_DATA_DIR?); they are kept and shared, not emptied", file=sys.stderr)
        environ[MULTIPROC_ENV] = str(directory)


def _metric_file_pids(directory: Path) -> list[int]:
    return [int(found.group(1)) for path in directory.glob("*.db")
            if (found := re.search(r"_(\d+)\.db$", path.name))]


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def freeze_startup_objects() -> None:
    """Leave the objects a worker holds once the app is loaded (modules, the app, schemas: ~73,000) out of
    every later garbage collection. Under load a worker's full collections walked them all: 28-39 ms
    pauses, twice a minute per worker, each stalling every request in that worker (measured with a
    gc.callbacks probe under wrk); after this, no collection took over 2 ms. Garbage is collected first
    so none of it is kept for good."""
    gc.collect()
    gc.freeze()
