"""A gunicorn worker's SIGTERM, as an event the application's waits can see.

After SIGTERM gunicorn lets the requests in flight finish within ``graceful_timeout`` (10 s), then kills
the worker. A request that chose to wait (``POST /train?wait=``, up to 25 s) would be cut off without an
answer, its client never learning the id of the job it queued; a wait ends, answering as it would at its
deadline, once ``STOPPING`` is set.
"""

from __future__ import annotations

import signal
import threading

STOPPING = threading.Event()


def set_stopping_on_sigterm() -> None:
    """Chain onto this process's SIGTERM handler (a gunicorn worker's, which stops accepting connections):
    it also sets ``STOPPING``. gunicorn's ``post_worker_init`` calls it, after the worker set its own."""
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum, frame):
        STOPPING.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handle)
