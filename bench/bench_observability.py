"""What metrics and request logging cost per request, next to the request itself.

In a child process with ``PROMETHEUS_MULTIPROC_DIR`` set (file-backed values, as under gunicorn):

1. The pieces one by one: the request hooks (request id in and out, the metrics clock and the request
   counter + latency histogram), a prediction's two counters, and the JSON access line gunicorn writes.
2. Whole requests through the WSGI app (a prepared environ, no HTTP), with the hooks and without them
   (the same app with its metrics and request-log hooks taken out): ``GET /healthz`` and an XOR
   ``POST /predict``. The difference is the per-request cost in the app; the ratio is what it does to
   a CPU-bound worker's throughput.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

ROUNDS = 7
CALLS = 3000
OURS = ("service.metrics", "service.request_log")


def _median_us(functions: list, rounds: int = ROUNDS, calls: int = CALLS) -> list[float]:
    """Median over alternating rounds (so drift in the machine's load hits all alike) of the time per call."""
    times = [[] for _ in functions]
    for _ in range(rounds):
        for index, function in enumerate(functions):
            started = time.perf_counter()
            for _ in range(calls):
                function()
            times[index].append((time.perf_counter() - started) / calls)
    return [statistics.median(t) * 1e6 for t in times]


def _wsgi_call(app, path: str, body: bytes | None = None):
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method="POST" if body else "GET", data=body,
                             content_type="application/json" if body else None).get_environ()

    def call():
        for _ in app(dict(environ, **{"wsgi.input": io.BytesIO(body or b"")}), lambda *args: None):
            pass

    return call


def _without_our_hooks(app) -> None:
    for table in (app.before_request_funcs, app.after_request_funcs):
        table[None] = [f for f in table.get(None, []) if f.__module__ not in OURS]


def measure(directory: Path) -> None:
    from flask import Response
    from gunicorn.config import Config

    import minigrad
    from minigrad import Linear, Sequential, Sigmoid, Tanh
    from service import create_app
    from service.metrics import record_prediction
    from service.request_log import ENVIRON_KEY, GunicornJsonLogger

    model_dir = directory / "models"
    model_dir.mkdir()
    minigrad.save(Sequential([Linear(2, 3), Tanh(), Linear(3, 1), Sigmoid()]), model_dir / "xor.json")
    config = {"MINIGRAD_MODEL_DIR": str(model_dir), "MINIGRAD_DATA_DIR": str(directory / "var"),
              "MINIGRAD_API_TOKEN": None}
    app, bare = create_app(config), create_app(config)
    _without_our_hooks(bare)
    body = json.dumps({"model": "xor", "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]]}).encode()

    before = [f for f in app.before_request_funcs[None] if f.__module__ in OURS]
    after = [f for f in app.after_request_funcs[None] if f.__module__ in OURS]
    context = app.test_request_context("/predict", method="POST", headers={"X-Request-ID": "bench-1"})
    context.push()
    response = Response(b"{}")

    def hooks():
        for function in before:
            function()
        for function in reversed(after):
            function(response)

    gunicorn_config = Config()
    gunicorn_config.set("accesslog", os.devnull)
    access_logger = GunicornJsonLogger(gunicorn_config)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "REMOTE_ADDR": "127.0.0.1",
               ENVIRON_KEY: {"request_id": "bench-1", "endpoint": "predict.predict", "route": "/predict"}}
    sent = SimpleNamespace(status="200 OK", sent=65, headers=[])
    elapsed = timedelta(microseconds=900)

    pieces = {
        "request hooks (id, clock, counter + histogram)": hooks,
        "a prediction's counters (by model)": lambda: record_prediction("xor", 4),
        "the JSON access line (gunicorn's logger)": lambda: access_logger.access(sent, None, environ, elapsed),
    }
    seconds = _median_us(list(pieces.values()))
    context.pop()
    print(f"prometheus_client multiprocess mode (files in {os.environ['PROMETHEUS_MULTIPROC_DIR']}); medians of "
          f"{ROUNDS} alternating rounds of {CALLS} calls, in-process:")
    for name, value in zip(pieces, seconds):
        print(f"  {name:48s} {value:6.1f} us")
    print(f"  {'total per prediction request':48s} {sum(seconds):6.1f} us")

    whole = {
        "GET /healthz, with metrics and request log": _wsgi_call(app, "/healthz"),
        "GET /healthz, without": _wsgi_call(bare, "/healthz"),
        "POST /predict (XOR, 4 rows), with": _wsgi_call(app, "/predict", body),
        "POST /predict (XOR, 4 rows), without": _wsgi_call(bare, "/predict", body),
    }
    healthz_on, healthz_off, predict_on, predict_off = _median_us(list(whole.values()), calls=CALLS // 3)
    print("whole requests through the WSGI app (no HTTP; gunicorn's access line not included):")
    for name, value in zip(whole, (healthz_on, healthz_off, predict_on, predict_off)):
        print(f"  {name:48s} {value:6.1f} us")
    print(f"  added per request: /healthz {healthz_on - healthz_off:.1f} us, /predict {predict_on - predict_off:.1f} us"
          f" (+ the access line); a CPU-bound worker's /predict throughput with them: "
          f"{predict_off / (predict_on + seconds[2]):.2f}x of without")


def run() -> None:
    # A child process: prometheus_client picks file-backed values only if the directory is set before
    # it is first imported, and earlier benchmarks in this process may have imported it.
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        metrics_dir = Path(tmp) / "metrics"
        metrics_dir.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        code = f"from pathlib import Path; from bench.bench_observability import measure; measure(Path({tmp!r}))"
        subprocess.run([sys.executable, "-c", code], env=env, check=True)


if __name__ == "__main__":
    run()
