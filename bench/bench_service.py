"""The prediction service under load, next to a trivial endpoint of the same app, in the same run.

1. Throughput and latency with wrk (a real HTTP load generator; Debian's ``wrk`` package, installed
   here with apt-get when missing and we are root) against gunicorn with 2 workers on loopback:
   ``POST /predict`` (XOR, batch of 4) vs ``GET /healthz``. Targets: predict >= 0.85x the trivial
   endpoint's requests/s, and p99 <= 2x its p99. Also vs a trivial POST route that parses the same
   body (``bench/trivial_post_app.py``), which separates HTTP POST handling from the prediction, vs
   a bare prediction there (parse, forward pass, rows; no checks), and vs the XOR model's numpy
   operations written inline in a view (no loop over layers), the floor of any JSON prediction here.
2. A large batch end to end: ``POST /predict`` of 1,000 rows x 784 features to a 784-128-10 model,
   against ``json.loads`` of the same body + the forward pass + ``json.dumps`` of the outputs in one
   process. Target <= 2x.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from werkzeug.test import EnvironBuilder

import minigrad
from bench.bench_engine import interleaved_times
from minigrad import Linear, Relu, Sequential, Sigmoid, Tanh, Tensor, no_grad
from service import create_app
from service.predict import input_batch
from service.registry import ModelRegistry
from service.schemas import PredictRequestSchema, predict_request_loads_as_is
from service.testing import REPO_ROOT, GunicornServer

DURATION_S = int(os.environ.get("BENCH_SERVICE_SECONDS", "8"))
# 8 connections: one per thread of the 2 workers x 4 threads. BENCH_SERVICE_CONNECTIONS=2 (one request in
# flight per worker) shows what the threads' interleaving inside a worker costs each endpoint.
CONNECTIONS = int(os.environ.get("BENCH_SERVICE_CONNECTIONS", "8"))
# The load test's rounds are shorter and more: this VM has spells of 10-30 s in which every request costs
# about twice the CPU (seen on all endpoints alike). A ratio taken within one round, whose endpoints ran
# seconds apart in a shuffled order, is disturbed only when a spell starts or ends inside the round;
# medians of whole endpoints' runs were disturbed whenever a spell covered one endpoint's run.
LOAD_ROUNDS = int(os.environ.get("BENCH_SERVICE_ROUNDS", "8"))
LOAD_SECONDS = int(os.environ.get("BENCH_SERVICE_ROUND_SECONDS", "3"))
XOR_BATCH = [[0, 0], [0, 1], [1, 0], [1, 1]]


def medians(series):
    return [statistics.median(values) for values in series]


def ensure_wrk() -> str | None:
    """The path of wrk, installing Debian's package when possible; None (and why) otherwise."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's wrk package with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        print("wrk is not installed and could not be installed (need root and apt-get): "
              "the load test is SKIPPED; install it with `apt-get install wrk`.")
    return found


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(wrk: str, url: str, script: str | None = None, connections: int = CONNECTIONS,
            seconds: int = DURATION_S) -> dict:
    command = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _seconds(re.search(r"\s50%\s+(\S+)", output).group(1)),
        "p99": _seconds(re.search(r"\s99%\s+(\S+)", output).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def _post_script(directory: Path, body: dict) -> str:
    path = directory / "predict.lua"
    path.write_text('wrk.method = "POST"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = {json.dumps(json.dumps(body))}\n")
    return str(path)


def _xor_model() -> Sequential:
    shipped = REPO_ROOT / "models" / "xor.json"
    if shipped.exists():
        return minigrad.load(shipped)
    rng = np.random.default_rng(0)
    return Sequential([Linear(2, 3, rng=rng), Tanh(), Linear(3, 1, rng=rng), Sigmoid()])


def _post(port: int, path: str, body: bytes) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
    return data


def load_test(wrk: str, server: GunicornServer, directory: Path) -> None:
    script = _post_script(directory, {"model": "xor", "inputs": XOR_BATCH})
    targets = {"GET /healthz (trivial)": (server.url + "/healthz", None),
               "POST /bench/echo (trivial POST)": (server.url + "/bench/echo", script),
               "POST /bench/bare-predict (no checks)": (server.url + "/bench/bare-predict", script),
               "POST /bench/inline-xor (numpy only)": (server.url + "/bench/inline-xor", script),
               "POST /predict (XOR, batch 4)": (server.url + "/predict", script)}
    runs = {name: [] for name in targets}
    for url, lua in targets.values():  # warm up every worker's cache and code paths
        subprocess.run([wrk, "-t1", "-c2", "-d1s", *(["-s", lua] if lua else []), url], check=True, capture_output=True)
    order = list(targets)
    shuffle = random.Random(0).shuffle  # the same orders in every run of the bench
    for _ in range(LOAD_ROUNDS):
        shuffle(order)  # no endpoint always runs first or last in a round
        for name in order:
            url, lua = targets[name]
            cpu_before = server.worker_cpu_seconds()
            result = run_wrk(wrk, url, lua, seconds=LOAD_SECONDS)
            result["cpu"] = (server.worker_cpu_seconds() - cpu_before) / result["requests"]
            runs[name].append(result)
    print(f"load generator: wrk, 2 threads, {CONNECTIONS} connections, {LOAD_ROUNDS} rounds of {LOAD_SECONDS} s per "
          f"endpoint in shuffled order, gunicorn {server.workers} workers (gunicorn.conf.py) on loopback; "
          "medians over the rounds")
    for name, results in runs.items():
        rps, p50, p99, cpu = (statistics.median(r[key] for r in results) for key in ("rps", "p50", "p99", "cpu"))
        failures = sum(r["non_2xx"] for r in results)
        sockets = "; ".join(r["socket_errors"] for r in results if r["socket_errors"])
        print(f"  {name:36s} {rps:8.0f} req/s   p50 {p50 * 1e3:6.2f} ms   p99 {p99 * 1e3:6.2f} ms   "
              f"worker CPU {cpu * 1e6:4.0f} us/request   non-2xx {failures}"
              + (f"   socket errors: {sockets}" if sockets else ""))

    def ratio(top: str, bottom: str, key: str, inverse: bool = False) -> str:
        """The median of the rounds' own ratios, and their range."""
        ratios = sorted((b[key] / t[key]) if inverse else (t[key] / b[key]) for t, b in zip(runs[top], runs[bottom]))
        return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"

    trivial, echo = "GET /healthz (trivial)", "POST /bench/echo (trivial POST)"
    bare, predict = "POST /bench/bare-predict (no checks)", "POST /predict (XOR, batch 4)"
    print("  ratios within each round; median (range over the rounds):")
    print(f"  predict / trivial: throughput {ratio(predict, trivial, 'rps')} (target >= 0.85x), "
          f"p99 {ratio(predict, trivial, 'p99')} (target <= 2x), p50 {ratio(predict, trivial, 'p50')}")
    # requests/s moves with whatever else the machine runs; CPU per request much less so.
    print(f"  worker CPU per request, trivial / predict: {ratio(predict, trivial, 'cpu', inverse=True)} "
          "(the throughput ratio of a CPU-bound server)")
    print(f"  predict / trivial POST (same JSON body, parsed and answered, no model): throughput "
          f"{ratio(predict, echo, 'rps')}, worker CPU per request {ratio(predict, echo, 'cpu', inverse=True)} "
          "-- what the prediction itself adds to a bare Flask POST endpoint")
    print(f"  bare prediction (same body, the forward pass and the rows, no checks) / trivial: throughput "
          f"{ratio(bare, trivial, 'rps')}, worker CPU per request {ratio(bare, trivial, 'cpu', inverse=True)} -- the "
          f"most /predict could reach; predict / bare: throughput {ratio(predict, bare, 'rps')}, worker CPU "
          f"{ratio(predict, bare, 'cpu', inverse=True)} -- what the service's checks, registry and metrics cost")
    inline = "POST /bench/inline-xor (numpy only)"
    print(f"  inline XOR (the body read from the stream, the model's nine numpy operations written out, the rows) / "
          f"trivial: throughput {ratio(inline, trivial, 'rps')}, worker CPU per request "
          f"{ratio(inline, trivial, 'cpu', inverse=True)} -- the floor of a JSON prediction of this model here; "
          f"predict / inline: throughput {ratio(predict, inline, 'rps')}, worker CPU "
          f"{ratio(predict, inline, 'cpu', inverse=True)}")


def large_batch(server: GunicornServer, model: Sequential, rounds: int = 7) -> None:
    rng = np.random.default_rng(1)
    rows = rng.random((1000, 784)).tolist()
    body = json.dumps({"model": "mnist", "inputs": rows}).encode()
    _post(server.port, "/predict", body)  # load the model into the worker's cache

    def in_process():
        parsed = json.loads(body)
        with no_grad():
            outputs = model(Tensor(np.asarray(parsed["inputs"], dtype=np.float64))).data
        return json.dumps({"model": "mnist", "version": 1, "outputs": outputs.tolist()})

    # Alternating rounds, so the machine's drift hits both sides alike.
    baseline, service = medians(interleaved_times([in_process, lambda: _post(server.port, "/predict", body)],
                                                  rounds, 1))
    print(f"large batch: 1,000 x 784 to a 784-128-10 model, body {len(body) / 1e6:.1f} MB, median of {rounds} "
          "alternating rounds")
    print(f"  json.loads + forward + json.dumps in one process  {baseline * 1e3:7.1f} ms")
    print(f"  POST /predict end to end over HTTP               {service * 1e3:7.1f} ms")
    print(f"  service / in-process: {service / baseline:.2f}x (target <= 2x)")


def where_the_time_goes(model_dir: Path, directory: Path, repeats: int = 3000) -> None:
    """One /predict in this process, step by step (hot loops, so lower bounds), next to whole requests
    through the WSGI app: what a prediction adds to the trivial endpoint, and where."""
    app = create_app({"MINIGRAD_MODEL_DIR": str(model_dir), "MINIGRAD_DATA_DIR": str(directory / "var"),
                      "MINIGRAD_API_TOKEN": None})
    body = json.dumps({"model": "xor", "inputs": XOR_BATCH}).encode()
    registry = ModelRegistry(model_dir)
    loaded = registry.get("xor")
    parsed = json.loads(body)
    batch, _ = input_batch(parsed["inputs"], loaded.n_inputs, loaded.dtype)
    outputs = loaded.predict(batch)
    envelope = PredictRequestSchema()

    def wsgi_call(path, data=None):
        """The app called as gunicorn calls it, minus the HTTP parsing: a prepared WSGI environ."""
        environ = EnvironBuilder(path=path, method="POST" if data else "GET", data=data,
                                 content_type="application/json" if data else None).get_environ()

        def call():
            request = dict(environ, **{"wsgi.input": io.BytesIO(data or b"")})
            for _ in app(request, lambda *args: None):
                pass

        return call

    steps = {
        "json.loads of the body": lambda: json.loads(body),
        "envelope schema (marshmallow)": lambda: envelope.load(parsed),
        "envelope check the route makes": lambda: predict_request_loads_as_is(parsed),
        "registry.get (a reused lookup)": lambda: registry.get("xor"),
        "inputs checked by numpy": lambda: input_batch(parsed["inputs"], loaded.n_inputs, loaded.dtype),
        "forward pass (Sequential.predict)": lambda: loaded.predict(batch),
        "outputs to JSON": lambda: json.dumps({"model": "xor", "version": 1, "outputs": outputs.tolist()}),
        "whole GET /healthz through the app": wsgi_call("/healthz"),
        "whole POST /predict through the app": wsgi_call("/predict", body),
    }
    seconds = medians(interleaved_times(list(steps.values()), 5, repeats // 5))
    print("where a prediction's time goes, in-process (hot loops; medians of 5 alternating rounds):")
    for name, value in zip(steps, seconds):
        print(f"  {name:36s} {value * 1e6:7.1f} us")


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        directory = Path(tmp)
        model_dir = directory / "models"
        model_dir.mkdir()
        minigrad.save(_xor_model(), model_dir / "xor.json")
        rng = np.random.default_rng(2)
        mnist = Sequential([Linear(784, 128, rng=rng), Relu(), Linear(128, 10, rng=rng)])
        minigrad.save(mnist, model_dir / "mnist.json")
        env = {"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": directory / "var", "MINIGRAD_API_TOKEN": ""}
        where_the_time_goes(model_dir, directory)
        # The service's app, plus the trivial POST route of bench/trivial_post_app.py (same gunicorn.conf.py).
        app_spec = ["bench.trivial_post_app:create_bench_app()"]
        with GunicornServer(env=env, workers=2, extra_args=app_spec) as server:
            wrk = ensure_wrk()
            if wrk:
                load_test(wrk, server, directory)
            large_batch(server, minigrad.load(model_dir / "mnist.json"))


if __name__ == "__main__":
    run()
