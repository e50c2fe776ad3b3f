"""A throwaway redis-server for tests and benchmarks of the Redis backend (like ``service.testing``'s
gunicorn): Debian's ``redis-server`` binary on a free loopback port, no persistence, stopped on exit."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from service.testing import free_port

REDIS_MISSING = (
    "redis-server is not installed, so the Redis backend is not exercised; enable it with "
    "`sudo apt-get install -y redis-server` (Debian/Ubuntu) -- .ci/run installs it"
)


class RedisUnavailable(RuntimeError):
    """No redis-server binary on this machine; the message says how to get one."""


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def redis_server(directory: Path, startup_timeout: float = 10.0):
    """Yields the URL of a fresh redis-server; raises ``RedisUnavailable`` when there is no binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(REDIS_MISSING)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _accepting(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
