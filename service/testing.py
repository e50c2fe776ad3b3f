"""A real gunicorn serving the app on a free loopback port, for tests and benchmarks.

    with GunicornServer(env={"MINIGRAD_MODEL_DIR": str(model_dir)}, workers=2) as server:
        requests.get(server.url + "/healthz")

Nothing is mocked: it is the same ``gunicorn.conf.py`` that ``make serve`` uses, with the bind
address and worker count overridden. The server is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO_ROOT / "gunicorn.conf.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerFailed(RuntimeError):
    """gunicorn did not come up; the message carries its log."""


class GunicornServer:
    """gunicorn running ``service:create_app()`` with ``env`` added to this process's environment."""

    def __init__(self, env: dict | None = None, workers: int = 2, extra_args=(), startup_timeout: float = 30.0):
        self.env = {key: str(value) for key, value in (env or {}).items()}
        self.workers = workers
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GunicornServer:
        # The port is free when picked but could be taken before gunicorn binds it: try a few.
        for _ in range(3):
            self.port = free_port()
            self._log = tempfile.TemporaryFile(mode="w+b")
            environment = {**os.environ, **self.env, "PORT": str(self.port)}
            command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
                       "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *self.extra_args]
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=self._log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_until_ready():
                return self
            self.stop()
        raise ServerFailed(f"gunicorn did not start on 127.0.0.1:{self.port}:\n{self.log_text()}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200 and len(self.worker_pids()) >= self.workers:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def worker_pids(self) -> list[int]:
        """The pids of the master's current worker processes (Linux)."""
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                return [int(p) for p in children.read().split()]
        except OSError:
            return []

    @contextlib.contextmanager
    def serving_only(self, pid: int):
        """Pause every other worker (SIGSTOP), so the requests made inside can only be served by ``pid``."""
        others = [p for p in self.worker_pids() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)

    def worker_cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the current workers (Linux): a load test's cost per
        request that, unlike requests/s, does not depend on what else the machine is running."""
        total = 0
        for pid in self.worker_pids():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:  # the worker exited in between
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (after the name: fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the session holds only this server's processes
            self.process.wait()

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
