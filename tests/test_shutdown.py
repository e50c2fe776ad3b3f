"""Graceful shutdown with real processes: SIGTERM lets a request in flight finish (gunicorn alone, and
under ``python -m service.serve``, which forwards it to gunicorn and the consumer), and a job running
in the consumer goes back to the queue and runs to the end after a restart -- never silently lost."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from jobs_support import REPO, XOR_INPUTS, XOR_TARGETS, job_env, start_serve, wait_for, xor_request

from service.jobs.store import SqliteJobStore
from service.testing import free_port

ROWS = [[0.25 * (i % 5), 1.0 - 0.125 * (i % 9)] for i in range(2000)]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def accepted(master_pid: int, client_port: int) -> bool:
    """Whether one of the master's workers holds the server side of the connection from ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:  # remote address: our end
                    inodes.add(f"socket:[{fields[9]}]")
    for worker in children(master_pid):
        with contextlib.suppress(OSError):
            if inodes & {os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")}:
                return True
    return False


class SlowUpload:
    """A POST whose body arrives in two halves: the request is in the server's hands (headers read, the
    view reading the body) until ``finish`` sends the rest -- an in-flight request that cannot finish early."""

    def __init__(self, url: str, path: str, document: dict, master_pid: int):
        parts = urlsplit(url)
        self.body = json.dumps(document).encode()
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.connection.putrequest("POST", path)
        self.connection.putheader("Content-Type", "application/json")
        self.connection.putheader("Content-Length", str(len(self.body)))
        self.connection.endheaders(self.body[: len(self.body) // 2])
        # Until a worker has accepted it, the connection waits in the kernel's queue, and a stopping
        # server would drop it; once accepted, the worker reads the headers and the view the body.
        client_port = self.connection.sock.getsockname()[1]
        wait_for(lambda: accepted(master_pid, client_port), 20, what="a worker to accept the connection")
        time.sleep(0.2)

    def finish(self) -> tuple[int, dict]:
        self.connection.send(self.body[len(self.body) // 2:])
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


def serves_no_new_requests(url: str) -> bool:
    # The workers stop accepting; until the last one exits, the kernel may still queue a connection.
    try:
        requests.get(url + "/healthz", timeout=1)
    except (requests.ConnectionError, requests.Timeout):
        return True
    return False


def test_sigterm_lets_a_request_in_flight_finish(gunicorn, model_dir, tmp_path):
    server = gunicorn(env={"MINIGRAD_MODEL_DIR": model_dir, "MINIGRAD_DATA_DIR": tmp_path / "var"}, workers=2)
    upload = SlowUpload(server.url, "/predict", {"model": "xor", "inputs": ROWS}, server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: serves_no_new_requests(server.url), 10, what="the workers to stop taking requests")
    assert server.process.poll() is None  # still waiting for the request in flight

    status, answer = upload.finish()
    assert status == 200 and len(answer["outputs"]) == len(ROWS)
    assert server.process.wait(timeout=15) == 0


@pytest.fixture
def env(model_dir, tmp_path):
    assert model_dir == tmp_path / "models"  # job_env's model directory, with the shipped models in it
    return job_env(tmp_path, MINIGRAD_HEARTBEAT_INTERVAL=0.2, MINIGRAD_POLL_INTERVAL=0.05)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def test_sigterm_to_serve_finishes_requests_and_puts_the_running_job_back_in_the_queue(env, tmp_path):
    medium = xor_request(data={"inputs": XOR_INPUTS * 64, "targets": XOR_TARGETS * 64}, batch_size=1, epochs=400)
    log = tmp_path / "serve.log"
    process, url = start_serve(env, log)
    try:
        job_id = requests.post(f"{url}/train", json=medium, timeout=10).json()["id"]
        wait_for(lambda: requests.get(f"{url}/jobs/{job_id}", timeout=10).json()["progress"]["epoch"] >= 1, 30,
                 what="the job to be running")
        gunicorn_and_consumer = children(process.pid)
        assert len(gunicorn_and_consumer) == 2
        (master,) = [pid for pid in gunicorn_and_consumer if b"gunicorn" in open(f"/proc/{pid}/cmdline", "rb").read()]

        upload = SlowUpload(url, "/predict", {"model": "xor", "inputs": ROWS}, master)
        process.send_signal(signal.SIGTERM)
        status, answer = upload.finish()
        assert status == 200 and len(answer["outputs"]) == len(ROWS)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert all(gone(pid) for pid in gunicorn_and_consumer)
    finally:
        if process.poll() is None:
            process.kill()

    # With everything stopped, the store says where the job is: back in the queue, its partial run forgotten.
    record = SqliteJobStore(tmp_path / "var" / "jobs.sqlite3").get(job_id)
    assert record["status"] == "queued" and record["epoch"] == 0 and record["worker"] is None
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "minigrad.jobs" and f"job {job_id} interrupted" in line["message"]
               for line in logged)

    process, url = start_serve(env, log)
    try:
        finished = wait_for(lambda: (j := requests.get(f"{url}/jobs/{job_id}", timeout=10).json())["status"]
                            not in ("queued", "running") and j, 60, what="the job to run again")
        assert finished["status"] == "succeeded" and len(finished["history"]) == 400
        # serve gave the consumer gunicorn's metrics directory: its training run is in /metrics.
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert "minigrad_training_seconds_count 1.0" in metrics.splitlines()
        process.send_signal(signal.SIGINT)  # Ctrl-C under make serve: the same orderly stop
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_killed_serve_takes_gunicorn_and_the_consumer_with_it(tmp_path):
    """SIGKILL cannot be forwarded: the children are told by the kernel (PR_SET_PDEATHSIG) and stop."""
    process, url = start_serve(job_env(tmp_path), tmp_path / "serve.log")
    children = [int(p) for p in open(f"/proc/{process.pid}/task/{process.pid}/children").read().split()]
    assert len(children) == 2
    process.kill()
    process.wait(timeout=10)

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as stat:  # reaped by init soon; a zombie has stopped already
                return stat.read().split()[2] == "Z"
        except FileNotFoundError:
            return True

    try:
        wait_for(lambda: all(gone(pid) for pid in children), 30, what="gunicorn and the consumer to stop")
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)


@pytest.mark.parametrize("dying", ["gunicorn", "service.worker"])
def test_serve_stops_the_other_process_and_says_which_died_when_one_is_killed(dying, tmp_path):
    """Half a service never runs unnoticed: a SIGKILLed gunicorn master or consumer stops the other, and
    serve exits 128 + 9 as a shell would report it (it used to exit 247, from sys.exit(-9))."""
    log = tmp_path / "serve.log"
    process, url = start_serve(job_env(tmp_path), log)
    try:
        both = children(process.pid)
        (victim,) = [pid for pid in both if dying.encode() in open(f"/proc/{pid}/cmdline", "rb").read()]
        everything = both + [worker for pid in both for worker in children(pid)]
        os.kill(victim, signal.SIGKILL)
        assert process.wait(timeout=30) == 128 + signal.SIGKILL
        # gunicorn's workers notice their master is gone within a second or two, then stop.
        wait_for(lambda: all(gone(pid) for pid in everything), 30, what="every process of the service to stop")
    finally:
        if process.poll() is None:
            process.kill()
    name = "gunicorn" if dying == "gunicorn" else "consumer"
    assert f"serve: {name} was killed by SIGKILL; stopping the rest" in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)


def test_sigterm_ends_a_train_wait_with_the_jobs_202_before_gunicorn_cuts_it_off(gunicorn, model_dir, tmp_path):
    """POST /train?wait=25 with no consumer waits its whole 25 s; gunicorn kills a stopping worker after its
    graceful_timeout (10 s). It used to be cut off without an answer, its client never learning the id of
    the job it had queued; the wait now ends at SIGTERM with the 202 and Location it would end with."""
    server = gunicorn(env=job_env(tmp_path, MINIGRAD_MODEL_DIR=model_dir), workers=1)
    answers = []

    def submit():
        try:
            answers.append(requests.post(f"{server.url}/train?wait=25", json=xor_request(), timeout=60))
        except requests.RequestException as error:  # before: the connection closed with no answer
            answers.append(error)

    waiting = threading.Thread(target=submit)
    waiting.start()
    try:
        wait_for(lambda: requests.get(f"{server.url}/jobs", timeout=10).json()["total"] == 1, 20,
                 what="the job to be queued")
        time.sleep(0.2)  # the request is past its submission, in its wait
        server.process.send_signal(signal.SIGTERM)
    finally:
        waiting.join(timeout=60)
    (answer,) = answers
    assert isinstance(answer, requests.Response), answer
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"] == f"/jobs/{answer.json()['id']}" and answer.json()["status"] == "queued"
    assert server.process.wait(timeout=30) == 0


@pytest.mark.parametrize("free_address_too", [False, True])
def test_serve_on_a_taken_port_starts_no_consumer(tmp_path, free_address_too):
    """gunicorn retries a taken port for 5 s and exits; the consumer, started beside it, could take a queued
    job meanwhile. It is started only once gunicorn reports every address bound (also when another address,
    bound first, is free)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        binds = ["--bind", f"127.0.0.1:{free_port()}", "--bind", f"127.0.0.1:{port}"] if free_address_too else []
        result = subprocess.run([sys.executable, "-m", "service.serve", *binds], cwd=REPO, capture_output=True,
                                text=True, env={**job_env(tmp_path), "PORT": str(port)}, timeout=120)
    assert result.returncode == 1
    assert "serve: gunicorn exited with status 1; stopping the rest" in result.stderr
    assert "Connection in use" in result.stderr  # gunicorn's own words for it
    assert not (tmp_path / "var" / "jobs.sqlite3").exists()  # no consumer opened the queue


def test_serve_reports_ready_to_systemd_once_both_run(tmp_path):
    """Under systemd (Type=notify) serve is the main process: it passes gunicorn's READY=1 on, once the
    consumer is started too."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(60)
        process, url = start_serve({**job_env(tmp_path), "NOTIFY_SOCKET": str(tmp_path / "notify")},
                                   tmp_path / "serve.log")
        try:
            assert notify.recv(4096) == b"READY=1"
            assert sorted(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[2] for pid in children(process.pid)) \
                == [b"gunicorn", b"service.worker"]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
