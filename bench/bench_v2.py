"""The Open Inference Protocol v2 endpoint against gunicorn (2 workers) on loopback, peers in the same run.

1. A large batch end to end: 1,000 rows x 784 features to a 784-128-10 model, through
   ``POST /v2/models/mnist/infer`` with the binary tensor data extension (input and output as raw
   little-endian float64) against the same batch as JSON through ``POST /predict``. Both are sent
   with one ``http.client`` connection per request, the bodies prepared beforehand; also shown:
   Triton's own client (``tritonclient.http``, binary mode), whose figure includes its encoding.
   Target: binary v2 >= 3x faster than JSON /predict.
2. Requests/s and p50/p99 latency with wrk (the harness of ``bench_service``) of v2 infer for the XOR
   model at batch 4, in JSON and in binary, next to ``GET /healthz``, the app's trivial endpoint, and
   ``POST /predict`` of the same batch. Also the workers' CPU time per request (from ``/proc``), which
   a busy shared machine disturbs much less than requests/s.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.http as triton

import minigrad
from bench.bench_engine import interleaved_times
from bench.bench_service import CONNECTIONS, DURATION_S, ensure_wrk, medians, run_wrk
from minigrad import Linear, Relu, Sequential
from service.testing import REPO_ROOT, GunicornServer
from service.v2_codec import HEADER_LENGTH

ROUNDS = 3
XOR_BATCH = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)


def v2_binary_body(x: np.ndarray, **extra) -> tuple[bytes, dict]:
    """An infer request as tritonclient sends it in binary mode: no Content-Type, JSON header + bytes."""
    spec = {"name": "input", "shape": list(x.shape), "datatype": "FP64", "parameters": {"binary_data_size": x.nbytes}}
    header = json.dumps({"inputs": [spec], **extra}).encode()
    return header + x.astype("<f8").tobytes(), {HEADER_LENGTH: str(len(header))}


def v2_json_body(x: np.ndarray) -> bytes:
    spec = {"name": "input", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [spec]}).encode()


def post(port: int, path: str, body: bytes, headers: dict) -> tuple[bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
        return data, dict(response.getheaders())
    finally:
        connection.close()


def binary_output(data: bytes, headers: dict) -> np.ndarray:
    length = int(headers[HEADER_LENGTH])
    (output,) = json.loads(data[:length])["outputs"]
    return np.frombuffer(data[length:], dtype="<f8").reshape(output["shape"])


def large_batch(server: GunicornServer, rounds: int = 7) -> None:
    x = np.random.default_rng(1).random((1000, 784))
    json_body = json.dumps({"model": "mnist", "inputs": x.tolist()}).encode()
    binary_body, binary_headers = v2_binary_body(x, parameters={"binary_data_output": True})
    json_headers = {"Content-Type": "application/json"}

    # Same answer both ways, bit for bit, before anything is timed (this also loads the model).
    from_json = np.array(json.loads(post(server.port, "/predict", json_body, json_headers)[0])["outputs"])
    from_binary = binary_output(*post(server.port, "/v2/models/mnist/infer", binary_body, binary_headers))
    assert from_binary.tobytes() == from_json.tobytes(), "binary v2 and JSON /predict disagree"

    def json_predict():
        post(server.port, "/predict", json_body, json_headers)

    def binary_infer():
        post(server.port, "/v2/models/mnist/infer", binary_body, binary_headers)

    with triton.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=120) as client:

        def triton_infer():
            tensor = triton.InferInput("input", list(x.shape), "FP64").set_data_from_numpy(x, binary_data=True)
            return client.infer("mnist", [tensor]).as_numpy("output")

        assert triton_infer().tobytes() == from_json.tobytes(), "tritonclient and JSON /predict disagree"
        json_time, binary_time, triton_time = medians(interleaved_times(
            [json_predict, binary_infer, triton_infer], rounds, per_round=2
        ))

    print(f"large batch: 1,000 x 784 float64 to a 784-128-10 model, median of {rounds} interleaved rounds")
    print(f"  POST /predict, JSON body {len(json_body) / 1e6:.1f} MB                {json_time * 1e3:8.1f} ms")
    print(f"  POST /v2/.../infer, binary body {len(binary_body) / 1e6:.1f} MB          {binary_time * 1e3:8.1f} ms")
    print(f"  tritonclient.http infer (binary, incl. client encode)  {triton_time * 1e3:8.1f} ms")
    print(f"  binary v2 is {json_time / binary_time:.1f}x faster than JSON /predict (target >= 3x)")


def _lua_string(data: bytes) -> str:
    # Every byte as a 3-digit decimal escape: safe for binary bodies, unambiguous before digits.
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


def _post_script(directory: Path, name: str, body: bytes, headers: dict) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items()]
    path = directory / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def server_cpu_seconds(server: GunicornServer) -> float:
    """CPU time (user + system) used so far by the server's worker processes (Linux ``/proc``)."""
    total = 0
    for pid in server.worker_pids():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


def measured_run(wrk: str, server: GunicornServer, url: str, script: str | None) -> dict:
    """``run_wrk``'s figures plus the server's CPU time per request, which -- unlike requests/s --
    does not depend on what else the (shared) machine is running."""
    before = server_cpu_seconds(server)
    result = run_wrk(wrk, url, script)
    result["cpu_per_request"] = (server_cpu_seconds(server) - before) / (result["rps"] * DURATION_S)
    return result


def load_test(wrk: str, server: GunicornServer, directory: Path) -> None:
    infer_url = server.url + "/v2/models/xor/infer"
    # No Content-Type on either body, as tritonclient sends them.
    json_script = _post_script(directory, "v2_json", v2_json_body(XOR_BATCH), {})
    binary_script = _post_script(
        directory, "v2_binary", *v2_binary_body(XOR_BATCH, parameters={"binary_data_output": True})
    )
    predict_script = _post_script(
        directory,
        "predict",
        json.dumps({"model": "xor", "inputs": XOR_BATCH.tolist()}).encode(),
        {"Content-Type": "application/json"},
    )
    targets = {
        "GET /healthz (trivial)": (server.url + "/healthz", None),
        "POST /predict (XOR, batch 4)": (server.url + "/predict", predict_script),
        "POST /v2 infer, JSON (XOR, batch 4)": (infer_url, json_script),
        "POST /v2 infer, binary (XOR, batch 4)": (infer_url, binary_script),
    }
    runs = {name: [] for name in targets}
    for url, script in targets.values():  # warm every worker's model cache and code paths
        subprocess.run(
            [wrk, "-t1", "-c2", "-d1s", *(["-s", script] if script else []), url], check=True, capture_output=True
        )
    for _ in range(ROUNDS):  # alternate, so drift in the machine's load hits every target alike
        for name, (url, script) in targets.items():
            runs[name].append(measured_run(wrk, server, url, script))
    print(
        f"load generator: wrk, 2 threads, {CONNECTIONS} connections, {DURATION_S}s x {ROUNDS} rounds each "
        f"(medians), gunicorn {server.workers} gthread workers (gunicorn.conf.py) on loopback"
    )
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            key: statistics.median(r[key] for r in results) for key in ("rps", "p50", "p99", "cpu_per_request")
        }
        failures = sum(r["non_2xx"] for r in results)
        s = summary[name]
        print(
            f"  {name:40s} {s['rps']:6.0f} req/s   p50 {s['p50'] * 1e3:6.2f} ms   p99 {s['p99'] * 1e3:6.2f} ms"
            f"   server CPU {s['cpu_per_request'] * 1e6:5.0f} us/request   non-2xx {failures}"
        )
    trivial = summary["GET /healthz (trivial)"]
    for name in list(targets)[1:]:
        s = summary[name]
        print(
            f"  {name} / trivial: throughput {s['rps'] / trivial['rps']:.2f}x, p99 {s['p99'] / trivial['p99']:.2f}x, "
            f"server CPU per request {s['cpu_per_request'] / trivial['cpu_per_request']:.2f}x"
        )


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-v2-") as tmp:
        directory = Path(tmp)
        model_dir = directory / "models"
        model_dir.mkdir()
        (model_dir / "xor.json").write_bytes((REPO_ROOT / "models" / "xor.json").read_bytes())
        rng = np.random.default_rng(2)
        minigrad.save(
            Sequential([Linear(784, 128, rng=rng), Relu(), Linear(128, 10, rng=rng)]), model_dir / "mnist.json"
        )
        env = {"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": directory / "var", "MINIGRAD_API_TOKEN": ""}
        with GunicornServer(env=env, workers=2) as server:
            large_batch(server)
            wrk = ensure_wrk()
            if wrk:
                load_test(wrk, server, directory)


if __name__ == "__main__":
    run()
