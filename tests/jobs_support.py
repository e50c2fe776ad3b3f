"""Real pieces for the job tests: a redis-server of their own, a consumer (in this process or as its own
process), and the small XOR request most tests send."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from service.jobs.testing import RedisUnavailable
from service.jobs.testing import redis_server as service_redis_server
from service.testing import REPO_ROOT as REPO
from service.testing import free_port

XOR_ARCHITECTURE = [
    {"type": "Linear", "in_features": 2, "out_features": 3},
    {"type": "Tanh"},
    {"type": "Linear", "in_features": 3, "out_features": 1},
    {"type": "Sigmoid"},
]
XOR_INPUTS = [[0, 0], [0, 1], [1, 0], [1, 1]]
XOR_TARGETS = [[0], [1], [1], [0]]


def xor_request(**overrides) -> dict:
    """A request that trains XOR to a working model in well under a second."""
    body = {
        "architecture": XOR_ARCHITECTURE,
        "data": {"inputs": XOR_INPUTS, "targets": XOR_TARGETS},
        "loss": "mse",
        "optimizer": {"type": "sgd", "alpha": 4.0},
        "epochs": 1500,
        "seed": 7,
    }
    body.update(overrides)
    return body


def slow_request(**overrides) -> dict:
    """A request that runs for many seconds (many small batches), for cancel and kill tests."""
    return xor_request(data={"inputs": XOR_INPUTS * 64, "targets": XOR_TARGETS * 64}, batch_size=1,
                       epochs=10_000, **overrides)


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def redis_server(directory: Path):
    """A throwaway redis-server's URL; the test is skipped, saying how to enable it, without the binary."""
    try:
        with service_redis_server(directory) as url:
            yield url
    except RedisUnavailable as missing:
        pytest.skip(str(missing))


@contextlib.contextmanager
def consumer_thread(backend):
    """A real Huey consumer for ``backend`` running in this process (its signal handlers restored after)."""
    from service.worker import build_consumer

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = build_consumer(backend, workers=2)
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def job_env(tmp_path: Path, **extra) -> dict:
    """The environment for service processes writing under ``tmp_path``."""
    env = dict(os.environ)
    env.update({
        "MINIGRAD_MODEL_DIR": str(tmp_path / "models"),
        "MINIGRAD_DATA_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("MINIGRAD_REDIS_URL", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    """``python -m service.worker`` as its own process, logging to a file."""

    def __init__(self, env: dict, log: Path, *args: str):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.worker", "-v", *args], cwd=REPO, env=env,
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_serve(env, log):
    """``python -m service.serve`` on a free port; another one if the port was taken meanwhile."""
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "service.serve"], cwd=REPO, env={**env, "PORT": str(port)},
                                   stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        url = f"http://127.0.0.1:{port}"

        def up(process=process, url=url):
            if process.poll() is not None:
                return "exited"
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{url}/healthz", timeout=2).status_code == 200
            return False

        if wait_for(up, 30, what="gunicorn under service.serve") is True:
            return process, url
    raise AssertionError(f"service.serve did not start:\n{log.read_text()}")
