"""The image, rehearsed without Docker: what the Dockerfile builds, installed in a fresh virtual environment.

The build stage's COPY lines pick the files (from the context .dockerignore allows) and its RUN line builds
the wheels; the runtime stage's ``pip install`` command installs them, offline, into a new venv; its COPY
lines fill a scratch root standing in for / (models, gunicorn config), and its ENV, WORKDIR, ENTRYPOINT, CMD
and HEALTHCHECK are used as written, with paths moved under that root and the bind address moved to a free
loopback port. The consumers run with docker-compose.yml's worker entrypoint, alone on SQLite (`docker run`)
or as compose arranges them (Redis, two workers, a shared models volume). Nothing imports the checkout,
so a file missing from the wheel (shipped models, the JSON Schema, the /docs page's assets) fails here.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from compose_file import interpolate, load_compose, read_env_file
from dockerfile import build_context, copy_from_context, parse_dockerfile
from jobs_support import XOR_ARCHITECTURE, redis_server, wait_for

import minigrad
from service.testing import free_port

REPO = Path(__file__).resolve().parent.parent
STAGES = parse_dockerfile(REPO / "Dockerfile")
BUILD, RUNTIME = STAGES[0], STAGES[-1]
COMPOSE = load_compose(REPO / "docker-compose.yml")
TOKEN = "wheel-test-token"


def run(command, **kwargs):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


class Image:
    """The scratch root (``fs``), the venv and the environment a container of the image would have."""

    def __init__(self, base: Path):
        context_files = build_context(REPO)
        build_root = base / "build-stage"
        for source, destination in BUILD.copies_from_context():
            copy_from_context(REPO, context_files, source, destination, build_root)
        # The build stage's RUN lines, as written, with its paths under build_root and this venv's pip
        # (pip and setuptools, like the image's, come from the package index: build isolation stays on).
        build_env = {**os.environ, **BUILD.env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for step in BUILD.all("RUN"):
            run(["bash", "-euc", step.arguments.replace(" /", f" {build_root}/")],
                cwd=build_root / BUILD.workdir().lstrip("/"), env=build_env)

        # The runtime stage's install: the build stage's directory bind-mounted, then its pip command as written.
        (install,) = [step for step in RUNTIME.all("RUN") if "pip install" in step.arguments]
        flags, words = install.flags_and_words()
        mount = dict(item.split("=", 1) for item in flags["mount"].split(","))
        wheels = build_root / mount["source"].lstrip("/")
        (self.wheel,) = wheels.glob("minigrad-*.whl")
        pip_step, *setup = " ".join(words).split(" && ")
        # What follows needs root (the user, directories owned by it): test_packaging checks it, not this test.
        assert all(step.split()[0] in ("groupadd", "useradd", "mkdir", "chown") for step in setup), setup
        self.venv = base / "venv"
        run([sys.executable, "-m", "venv", self.venv])
        run(["bash", "-euc", pip_step.replace(mount["target"], str(wheels))], cwd=base,
            env={**os.environ, **RUNTIME.env(), "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}"})

        self.fs = base / "fs"
        for source, destination in RUNTIME.copies_from_context():
            copy_from_context(REPO, context_files, source, destination, self.fs)
        for volume in json.loads(RUNTIME.last("VOLUME").arguments):
            self.path(volume).mkdir(parents=True, exist_ok=True)
        self.workdir = self.path(RUNTIME.workdir())
        self.env = {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(base),
            "LANG": "C.UTF-8",
            **{key: self.moved(value) for key, value in RUNTIME.env().items()},
        }

    def path(self, absolute: str) -> Path:
        return self.fs / absolute.lstrip("/")

    def moved(self, value: str) -> str:
        """An absolute path of the image, as the same place under the scratch root; anything else unchanged."""
        if value.startswith("/") and self.path(value.split("/")[1]).exists():
            return str(self.path(value))
        return value

    def run(self, command: list) -> subprocess.CompletedProcess:
        """A command run as in the container: its PATH, environment and working directory (never the checkout,
        which ``python -c`` would otherwise put first on sys.path)."""
        return run([self.moved(str(word)) for word in command], cwd=self.workdir, env=self.env)

    def start(self, command: list[str], log: Path, extra_env: dict, cwd: Path | None = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen([self.moved(word) for word in command], cwd=cwd or self.workdir,
                                    env={**self.env, **extra_env}, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    started = time.perf_counter()
    built = Image(tmp_path_factory.mktemp("image"))
    print(f"the Dockerfile's wheel built and installed in a fresh venv in {time.perf_counter() - started:.1f} s")
    return built


@dataclass
class Deployment:
    url: str
    port: int
    models: Path  # the models volume
    worker_pids: set[int]
    data_dirs: dict[str, Path]  # each container's /data
    queue: str  # "sqlite" (under /data) or "redis"


def fresh_volume(image, mount_point: str, where: Path) -> str:
    """A new volume for ``mount_point``: Docker fills an empty volume with what the image holds there."""
    shutil.copytree(image.path(mount_point), where)
    return str(where)


@pytest.fixture(scope="module", params=["docker-run", "compose"])
def deployment(request, image, tmp_path_factory):
    """The api (the image's ENTRYPOINT + CMD) and consumers (compose's worker entrypoint), started either as one
    container of each on the embedded SQLite queue, or as docker-compose.yml arranges them: the env file,
    Redis as the queue, two workers (--scale worker=2), one models volume shared by all, /data per container.

    """
    base = tmp_path_factory.mktemp(request.param)
    port = free_port()
    api_command = RUNTIME.last("ENTRYPOINT").exec_form() + RUNTIME.last("CMD").exec_form()
    api_command[api_command.index("--bind") + 1] = f"127.0.0.1:{port}"
    worker_command = COMPOSE["services"]["worker"]["entrypoint"]
    models = fresh_volume(image, RUNTIME.env()["MINIGRAD_MODEL_DIR"], base / "models-volume")
    data = RUNTIME.env()["MINIGRAD_DATA_DIR"]

    with contextlib.ExitStack() as stack:
        if request.param == "docker-run":
            # `docker run` of the image, and of the image with `minigrad worker` as entrypoint, sharing its volumes.
            shared = {"MINIGRAD_API_TOKEN": TOKEN, "MINIGRAD_MODEL_DIR": models,
                      "MINIGRAD_DATA_DIR": fresh_volume(image, data, base / "data-volume")}
            containers = {"api": (api_command, shared), "worker": (worker_command, shared)}
        else:
            redis_url = stack.enter_context(redis_server(base))
            dot_env = {**read_env_file(REPO / ".env.example"), "MINIGRAD_API_TOKEN": TOKEN}  # as the user's .env
            containers = {}
            for name, command in [("api", api_command), ("worker-1", worker_command), ("worker-2", worker_command)]:
                service = COMPOSE["services"][name.split("-")[0]]
                assert {m.split(":")[1] for m in service["volumes"]} == {RUNTIME.env()["MINIGRAD_MODEL_DIR"]}
                environment = {key: interpolate(value, dot_env) for key, value in service["environment"].items()}
                containers[name] = (command, {
                    **dot_env, **environment,  # env_file: .env, overridden by environment
                    "MINIGRAD_REDIS_URL": redis_url,  # the test's redis-server standing in for the redis service
                    "MINIGRAD_MODEL_DIR": models,
                    "MINIGRAD_DATA_DIR": fresh_volume(image, data, base / f"{name}-data"),
                })
        processes = {}
        for name, (command, extra_env) in containers.items():
            processes[name] = image.start(command, base / f"{name}.log", extra_env)
            stack.callback(stop, processes[name])  # stopped in reverse order: consumers first, then the api

        def logs():
            return "\n".join(f"--- {name}:\n{(base / f'{name}.log').read_text()}" for name in processes)

        def api_ready():
            assert all(p.poll() is None for p in processes.values()), logs()
            with contextlib.suppress(requests.RequestException):  # not listening yet, or busy starting
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200

        wait_for(api_ready, 60, what="gunicorn to answer /healthz")

        def workers_ready():  # their first log line comes once SIGTERM is a graceful stop
            return all("minigrad worker:" in (base / f"{name}.log").read_text()
                       for name in processes if name.startswith("worker"))

        wait_for(workers_ready, 60, what="the workers to start")
        yield Deployment(
            url=f"http://127.0.0.1:{port}", port=port, models=Path(models),
            worker_pids={p.pid for name, p in processes.items() if name.startswith("worker")},
            data_dirs={name: Path(extra_env["MINIGRAD_DATA_DIR"]) for name, (_, extra_env) in containers.items()},
            queue="redis" if request.param == "compose" else "sqlite",
        )
        statuses = {name: stop(process) for name, process in reversed(processes.items())}
        assert set(statuses.values()) == {0}, f"{statuses}\n{logs()}"


def test_nothing_comes_from_the_checkout(image):
    located = image.run(["python", "-c", "import minigrad, service; print(minigrad.__file__, service.__file__)"])
    located = located.stdout.split()
    assert all(path.startswith(str(image.venv)) for path in located)


def test_the_wheel_ships_the_json_schema(image):
    shipped = image.run(["python", "-c", "import importlib.resources as r; "
                         "print(r.files('minigrad').joinpath('model.schema.json').read_text(), end='')"]).stdout
    assert shipped == (REPO / "minigrad" / "model.schema.json").read_text()


def test_the_installed_command_line_validates_the_shipped_models(image):
    models = sorted(Path(image.env["MINIGRAD_MODEL_DIR"]).glob("*.json"))
    assert [m.name for m in models] == sorted(p.name for p in (REPO / "models").glob("*.json"))
    result = image.run(["minigrad", "validate", *models])
    assert result.stdout.count(": valid, ") == len(models)


def test_the_healthcheck_command_passes(image, deployment):
    port = deployment.port
    command = json.loads(re.sub(r"^.*?CMD ", "", RUNTIME.last("HEALTHCHECK").arguments))
    command = [word.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for word in command]
    image.run(command)


def test_the_image_takes_and_gives_onnx(deployment):
    url = deployment.url
    exported = requests.get(url + "/models/xor/versions/1", params={"format": "onnx"}, timeout=10)
    assert exported.status_code == 200, exported.text
    headers = {"Content-Type": "application/onnx", "Authorization": f"Bearer {TOKEN}"}
    uploaded = requests.put(url + "/models/xor-from-onnx", data=exported.content, headers=headers, timeout=10)
    assert uploaded.status_code == 201, uploaded.text
    answer = requests.post(url + "/predict", json={"model": "xor-from-onnx", "inputs": [[0, 1]]}, timeout=10)
    original = requests.post(url + "/predict", json={"model": "xor", "inputs": [[0, 1]]}, timeout=10)
    assert answer.json()["outputs"] == original.json()["outputs"]


def test_a_prediction_from_a_shipped_model(deployment):
    url = deployment.url
    listed = requests.get(url + "/models", timeout=10).json()
    names = {entry["name"] for entry in (listed["models"] if isinstance(listed, dict) else listed)}
    assert {p.stem for p in (REPO / "models").glob("*.json")} <= names
    answer = requests.post(url + "/predict", json={"model": "xor", "inputs": [[0, 1], [1, 1]]}, timeout=10)
    assert answer.status_code == 200, answer.text
    with minigrad.no_grad():
        expected = minigrad.load(REPO / "models" / "xor.json")(minigrad.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]])))
    assert answer.json()["outputs"] == expected.data.tolist()


def test_the_openapi_document(deployment):
    spec = requests.get(deployment.url + "/openapi.json", timeout=10)
    assert spec.status_code == 200 and "/predict" in spec.json()["paths"] and "/train" in spec.json()["paths"]


# The pages the service renders from package data (templates, static files, Swagger UI's bundle).
@pytest.mark.parametrize("page", ["/docs", "/", "/ui/models/xor"])
def test_the_pages_and_their_scripts_and_styles(deployment, page):
    response = requests.get(deployment.url + page, timeout=10)
    assert response.status_code == 200 and "text/html" in response.headers["Content-Type"], response.text
    assets = {path for path in re.findall(r'(?:src|href)="(/[^"?#]+)[^"]*"', response.text)
              if path.endswith((".js", ".css", ".png", ".svg", ".ico"))}
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), response.text
    for asset in assets:
        fetched = requests.get(deployment.url + asset, timeout=10)
        assert fetched.status_code == 200 and fetched.content, asset


def test_a_training_job_through_the_consumer(deployment):
    url = deployment.url
    body = {
        "architecture": XOR_ARCHITECTURE,
        "data": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]},
        "loss": "bce", "optimizer": {"type": "sgd", "alpha": 0.5}, "epochs": 1500, "seed": 7,
        "save_as": "xor-from-the-wheel",
    }
    assert requests.post(url + "/train", json=body, timeout=10).status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    job = requests.post(url + "/train?wait=25", json=body, headers=headers, timeout=40).json()
    # On a busy machine the job may outlast the wait: follow it as a client would.
    job = wait_for(lambda: (j := requests.get(url + job["url"], timeout=10).json())["status"] not in
                   ("queued", "running") and j, 120, interval=0.2, what="the training job to finish")
    assert job["status"] == "succeeded", job
    document = requests.get(url + job["result"]["model_url"], timeout=10).json()
    assert document["format"] == "minigrad.sequential"
    # Registered in the models volume, where every api and worker container sees it.
    assert (deployment.models / "xor-from-the-wheel" / "1.json").is_file()
    assert int(job["worker"].rsplit(":", 1)[1]) in deployment.worker_pids
    # With Redis (compose) no container may have fallen back to a SQLite queue of its own under /data.
    sqlite_queues = {name for name, data in deployment.data_dirs.items() if (data / "jobs.sqlite3").exists()}
    assert sqlite_queues == (set() if deployment.queue == "redis" else set(deployment.data_dirs))
    answer = requests.post(url + "/predict", json={"model": "xor-from-the-wheel", "inputs": [[1, 0], [1, 1]]},
                           timeout=10).json()
    assert answer["outputs"][0][0] > 0.5 > answer["outputs"][1][0]


def test_the_wheel_is_what_the_image_installs(image):
    with zipfile.ZipFile(image.wheel) as wheel:
        names = set(wheel.namelist())
    assert {"minigrad/cli.py", "minigrad/model.schema.json", "service/worker.py"} <= names
    assert not any("__pycache__" in name or name.startswith("tests/") for name in names)
    entry_points = image.run(["python", "-c", "import importlib.metadata as m; print(sorted(e.name for e in "
                              "m.entry_points(group='console_scripts') if e.dist.name == 'minigrad'))"]).stdout
    assert "'minigrad'" in entry_points and "'minigrad-worker'" in entry_points


def serve_and_predict(image, arguments: list[str], log: Path, cwd: Path | None = None) -> None:
    """``minigrad serve ARGUMENTS`` on a free port answers an iris prediction, and then stops cleanly."""
    port = free_port()
    server = image.start(["minigrad", "serve", *arguments, "--port", str(port), "--workers", "1"], log, {}, cwd=cwd)
    try:
        def answers():
            assert server.poll() is None, log.read_text()
            with contextlib.suppress(requests.RequestException):
                body = {"model": "iris", "inputs": [5.1, 3.5, 1.4, 0.2]}
                return requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=2).json()

        assert len(wait_for(answers, 60, what="minigrad serve to answer")["outputs"]) == 3
    finally:
        assert stop(server) == 0


def test_minigrad_serve_from_the_install_with_the_image_config(image, tmp_path):
    entrypoint = RUNTIME.last("ENTRYPOINT").exec_form()
    serve_and_predict(image, ["--config", entrypoint[entrypoint.index("--config") + 1]], tmp_path / "serve.log")


def test_minigrad_serve_outside_any_checkout_uses_the_packaged_settings(image, tmp_path):
    # No gunicorn.conf.py in the working directory (as after a plain `pip install minigrad`): the same
    # settings come from the package, JSON access log and gthread workers included.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = tmp_path / "serve.log"
    serve_and_predict(image, ["--no-consumer"], log, cwd=elsewhere)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("message") == "Using worker: gthread" for line in lines), log.read_text()
    assert any(line.get("logger") == "gunicorn.access" and line.get("path") == "/predict" for line in lines)
