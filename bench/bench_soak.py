"""A bounded load and soak test: 60 s of ``POST /predict`` at 32 connections while a training job runs.

wrk (2 threads, 32 connections) against gunicorn with 2 workers on loopback, a consumer training a
64-64-10 MLP beside it on the same 2 cores. Printed: requests/s, p50/p99, non-2xx responses and socket
errors, the training job's epochs meanwhile, and each worker's resident memory (VmRSS from /proc) after
a warm-up and after the soak. It stops by itself (the job is cancelled) and fails (raises) on any non-2xx
response, any socket error or a worker whose RSS grew by more than ``RSS_GROWTH_BOUND_MIB``.
``BENCH_SOAK_SECONDS`` shortens the soak for a quick check.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import minigrad
from bench.bench_jobs import _request, _training_job, _wait_status, consumer
from bench.bench_service import XOR_BATCH, _post_script, _xor_model, ensure_wrk, run_wrk
from service.testing import GunicornServer

SOAK_SECONDS = int(os.environ.get("BENCH_SOAK_SECONDS", "60"))
CONNECTIONS = 32
WARM_UP_SECONDS = 5
# A worker caches parsed models and reuses its buffers, so after the warm-up its memory should stay put: 8 MiB
# leaves room for the allocator's arenas of 4 threads, and is far below what a per-request leak would add
# over ~10^5 requests (80 bytes each).
RSS_GROWTH_BOUND_MIB = 8.0


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def soak(wrk: str, server: GunicornServer, env: dict, directory: Path) -> list[str]:
    """Runs the soak; returns what went wrong (nothing, if all held)."""
    script = _post_script(directory, {"model": "xor", "inputs": XOR_BATCH})
    url = server.url + "/predict"
    with consumer(env):
        job = _request("POST", server.url + "/train", _training_job())
        _wait_status(server, job["id"], lambda status: status == "running")
        subprocess.run([wrk, "-t2", f"-c{CONNECTIONS}", f"-d{WARM_UP_SECONDS}s", "-s", script, url], check=True,
                       capture_output=True)
        workers = server.worker_pids()
        before = {pid: resident_mib(pid) for pid in workers}
        epoch_before = _request("GET", f"{server.url}/jobs/{job['id']}")["progress"]["epoch"]
        result = run_wrk(wrk, url, script, connections=CONNECTIONS, seconds=SOAK_SECONDS)
        after = {pid: resident_mib(pid) for pid in server.worker_pids()}
        during = _request("GET", f"{server.url}/jobs/{job['id']}")
        _request("DELETE", f"{server.url}/jobs/{job['id']}")
        _wait_status(server, job["id"], lambda status: status != "running")

    print(f"POST /predict (XOR, batch 4) with wrk -t2 -c{CONNECTIONS} for {SOAK_SECONDS} s after a "
          f"{WARM_UP_SECONDS} s warm-up, gunicorn {server.workers} workers, a training job running throughout")
    print(f"  {result['requests']} requests, {result['rps']:.0f} req/s, p50 {result['p50'] * 1e3:.2f} ms, "
          f"p99 {result['p99'] * 1e3:.2f} ms, non-2xx {result['non_2xx']}, "
          f"socket errors: {result['socket_errors'] or 'none'}")
    print(f"  training job: {during['status']} throughout, epochs {epoch_before} -> {during['progress']['epoch']} "
          "during the soak (then cancelled)")
    problems = []
    if result["non_2xx"] or result["socket_errors"]:
        problems.append(f"{result['non_2xx']} non-2xx responses, socket errors: {result['socket_errors']}")
    if during["status"] != "running":
        problems.append(f"the training job was {during['status']} at the end of the soak, not running")
    if set(after) != set(before):
        problems.append(f"workers changed during the soak: {sorted(before)} -> {sorted(after)}")
    for pid in workers:
        growth = after.get(pid, float("nan")) - before[pid]
        print(f"  worker {pid}: RSS {before[pid]:.1f} MiB -> {after.get(pid, float('nan')):.1f} MiB "
              f"({growth:+.1f} MiB; bound +{RSS_GROWTH_BOUND_MIB:g} MiB)")
        if not growth <= RSS_GROWTH_BOUND_MIB:
            problems.append(f"worker {pid} grew by {growth:.1f} MiB")
    return problems


def run() -> None:
    wrk = ensure_wrk()
    if not wrk:
        return
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        directory = Path(tmp)
        model_dir = directory / "models"
        model_dir.mkdir()
        minigrad.save(_xor_model(), model_dir / "xor.json")
        env = {**os.environ, "MINIGRAD_MODEL_DIR": str(model_dir), "MINIGRAD_DATA_DIR": str(directory / "var"),
               "MINIGRAD_API_TOKEN": ""}
        env.pop("MINIGRAD_REDIS_URL", None)
        with GunicornServer(env=env, workers=2) as server:
            problems = soak(wrk, server, env, directory)
    print("  soak: " + ("held (zero non-2xx, memory within its bound)" if not problems else "FAILED"))
    if problems:
        raise RuntimeError("soak test failed: " + "; ".join(problems))


if __name__ == "__main__":
    run()
