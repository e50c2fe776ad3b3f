"""``python -m service.worker`` (or ``minigrad-worker``): a Huey consumer that runs training jobs.

Start one beside the web service (``make serve`` does), or on other machines pointed at the same
Redis (``MINIGRAD_REDIS_URL``) to add training capacity. It reads the same ``MINIGRAD_*`` variables
as the service. Stop it with Ctrl-C (waits for running jobs) or SIGTERM (puts them back in the queue).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3

from huey.constants import WORKER_TYPES

from .config import ConfigError
from .jobs.backend import JobBackend
from .jobs.reaper import ReaperThread
from .jobs.settings import JobSettings
from .metrics import start_metrics_server
from .request_log import log_to_stderr_as_json, log_warnings_as_json

logger = logging.getLogger("minigrad.worker")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:  # 0 threads would start a consumer that runs nothing, for ever
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="minigrad-worker", description=__doc__.splitlines()[0])
    # A string default goes through ``type`` too, so $MINIGRAD_WORKERS is checked like the option.
    parser.add_argument("-w", "--workers", type=_positive_int, default=os.environ.get("MINIGRAD_WORKERS", "1"),
                        help="jobs run at the same time by this consumer (default: $MINIGRAD_WORKERS or 1)")
    parser.add_argument("-k", "--worker-type", choices=WORKER_TYPES, default="thread",
                        help="Huey worker model; 'process' trains several jobs on several cores (default: thread)")
    # A string default, so a bad $MINIGRAD_WORKER_NICE is a usage error, not a traceback at start.
    parser.add_argument("--nice", type=int, default=os.environ.get("MINIGRAD_WORKER_NICE") or "10",
                        help="CPU niceness added to this process, so predictions on the same machine come "
                             "first (default: $MINIGRAD_WORKER_NICE or 10)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every task, not only warnings")
    parser.add_argument("--metrics-port", type=int, default=os.environ.get("MINIGRAD_WORKER_METRICS_PORT") or None,
                        help="serve this consumer's Prometheus metrics (minigrad_training_seconds) on this port, "
                             "for consumers whose training time the web service's /metrics does not include "
                             "(other machines, containers); default: $MINIGRAD_WORKER_METRICS_PORT or none")
    parser.add_argument("--metrics-host", default=os.environ.get("MINIGRAD_WORKER_METRICS_HOST", "127.0.0.1"),
                        help="address for --metrics-port (0.0.0.0 in a container; default: "
                             "$MINIGRAD_WORKER_METRICS_HOST or 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error(f"argument --metrics-port: expected a port number (1-65535), got {args.metrics_port}")
    return args


def build_consumer(backend: JobBackend, workers: int = 1, worker_type: str = "thread"):
    poll = backend.settings.poll_interval
    # Huey backs off to a 10 s poll when idle by default; a constant short poll (SQLite) makes a job
    # start within a second. Periodic tasks are off: housekeeping has its own thread (ReaperThread),
    # so it never waits behind a long training job for a free worker.
    return backend.huey.create_consumer(
        workers=workers,
        worker_type=worker_type,
        initial_delay=poll,
        max_delay=poll,
        backoff=1.0,
        periodic=False,
    )


def nice_own_autogroup(nice: int) -> None:
    """Make the niceness count against other sessions too.

    With Linux's autogroup scheduling (on by default on many kernels), the CPU is first shared fairly
    between sessions and only then by niceness within one: a consumer in a session of its own (as
    ``service.serve`` starts it) would take a full share from gunicorn whatever its niceness. Setting
    the session's autogroup niceness fixes that. Only done when this process leads its session, so a
    worker started from a shell never renices the shell's other programs.
    """
    if os.getsid(0) != os.getpid():
        return
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:  # no autogroup support (other kernels, some containers): niceness alone applies
        pass


def main(argv=None) -> None:
    args = parse_args(argv)
    log_to_stderr_as_json("", logging.INFO if args.verbose else logging.WARNING)  # as the web service logs
    log_warnings_as_json()
    if args.metrics_port is not None:
        try:
            start_metrics_server(args.metrics_host, args.metrics_port)
        except OSError as error:
            raise SystemExit(f"minigrad-worker: --metrics-port {args.metrics_port}: cannot listen on "
                             f"{args.metrics_host}:{args.metrics_port}: {error.strerror or error}") from None
    if args.nice:
        os.nice(args.nice)
        nice_own_autogroup(args.nice)
    try:
        settings = JobSettings.from_env()
    except ConfigError as error:
        raise SystemExit(f"minigrad-worker: {error}") from None
    try:
        backend = JobBackend(settings)
    except sqlite3.OperationalError as error:  # the SQLite queue cannot be created or opened
        raise SystemExit(f"minigrad-worker: the job queue cannot be opened: {error}") from None
    consumer = build_consumer(backend, args.workers, args.worker_type)
    # Huey installs its Ctrl-C/SIGTERM handlers only after it has logged "consumer started" and
    # started its workers; a signal in between would kill the process with a KeyboardInterrupt.
    # Installing the same handlers first makes such a signal a normal (graceful) stop. The line
    # below comes after them, so a supervisor (or a test) that saw it can stop the worker cleanly.
    consumer._set_signal_handlers()
    logger.warning("minigrad worker: %s backend, %d %s worker(s), heartbeat timeout %g s",
                   backend.backend_name, args.workers, args.worker_type, settings.heartbeat_timeout)
    reaper = ReaperThread(backend, interval=max(0.5, min(settings.heartbeat_timeout / 2, 30.0)))
    reaper.start()
    consumer.run()
    reaper.stopped.set()


if __name__ == "__main__":
    main()
