"""The Dockerfile, .dockerignore and docker-compose.yml, checked without a Docker engine.

hadolint lints the Dockerfile; the compose file is validated against the Compose Specification's JSON
Schema (tests/compose-spec.json, see tests/README.md) and then held to what the deployment relies on.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from compose_file import MissingVariable, interpolate, load_compose, read_env_file
from dockerfile import build_context, parse_dockerfile

REPO = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"
STAGES = parse_dockerfile(REPO / "Dockerfile")
RUNTIME = STAGES[-1]
COMPOSE = load_compose(REPO / "docker-compose.yml")
COMPOSE_SCHEMA = json.loads((REPO / "tests" / "compose-spec.json").read_text())


# ---------------------------------------------------------------------- Dockerfile


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([HADOLINT, "--no-color", path], capture_output=True, text=True, timeout=60)


def test_hadolint_passes():
    result = hadolint(REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_mistakes(tmp_path):
    # So that the test above cannot pass by hadolint not looking.
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= {w for w in result.stdout.split() if w.startswith("DL")}


def test_multi_stage_on_the_slim_official_python_image():
    assert len(STAGES) >= 2
    assert all(stage.base == "python:3.11-slim" for stage in STAGES)
    build = STAGES[0]
    assert any("pip wheel" in run.arguments for run in build.all("RUN"))
    # The runtime stage installs the wheel that the build stage made, from a bind mount (no layer of wheels).
    installs = [run.arguments for run in RUNTIME.all("RUN") if "pip install" in run.arguments]
    assert len(installs) == 1
    assert f"from={build.name}" in installs[0] and "--no-index" in installs[0] and "--find-links=" in installs[0]
    assert "minigrad[onnx]" in installs[0]  # the service in the image takes and gives ONNX files
    assert not any(flags_from(copy_) for copy_ in RUNTIME.all("COPY")), "wheels must not be COPYed into a layer"


def flags_from(instruction):
    return instruction.flags_and_words()[0].get("from")


def test_no_build_tools_or_caches_in_the_runtime_stage():
    runs = " ".join(run.arguments for run in RUNTIME.all("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "make ", "git "):
        assert tool not in runs
    env = RUNTIME.env()
    assert env.get("PIP_NO_CACHE_DIR") == "1" or "--no-cache-dir" in runs
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"


def test_runs_as_a_non_root_user():
    user = RUNTIME.last("USER").arguments
    assert user.split(":")[0] not in ("root", "0")
    assert RUNTIME.instructions.index(RUNTIME.last("USER")) > max(
        RUNTIME.instructions.index(run) for run in RUNTIME.all("RUN")
    ), "USER must come after the RUN steps that need root"
    assert f"--uid {user.split(':')[0]}" in " ".join(run.arguments for run in RUNTIME.all("RUN"))


def test_gunicorn_is_the_entrypoint_with_the_project_config():
    entrypoint = RUNTIME.last("ENTRYPOINT").exec_form()
    assert entrypoint[0] == "gunicorn"
    config = entrypoint[entrypoint.index("--config") + 1]
    assert dict(RUNTIME.copies_from_context())["gunicorn.conf.py"] == config  # the project's file, in the image
    command = RUNTIME.last("CMD").exec_form()
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    assert RUNTIME.last("EXPOSE").arguments == "8000"


def test_healthcheck_asks_healthz_with_python():
    healthcheck = RUNTIME.last("HEALTHCHECK").arguments
    assert "CMD " in healthcheck and "/healthz" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]


def test_models_and_data_are_volumes_named_by_the_environment():
    env = RUNTIME.env()
    volumes = json.loads(RUNTIME.last("VOLUME").arguments)
    assert sorted(volumes) == sorted([env["MINIGRAD_MODEL_DIR"], env["MINIGRAD_DATA_DIR"]])
    # The shipped models are copied into the models volume, so a fresh named volume starts with them.
    assert ("models/", env["MINIGRAD_MODEL_DIR"] + "/") in RUNTIME.copies_from_context()


def test_the_build_context_has_what_the_dockerfile_copies_and_nothing_private():
    context = build_context(REPO)
    for stage in STAGES:
        for source, _ in stage.copies_from_context():
            assert any(f == source.rstrip("/") or f.startswith(source) for f in context), source
    shipped = sorted(p.name for p in (REPO / "models").glob("*.json"))
    assert shipped and all(f"models/{name}" in context for name in shipped)
    assert "minigrad/model.schema.json" in context
    for private in (".env", ".git/", ".venv/", "var/", "__pycache__", "tests/", "build/", "dist/"):
        assert not any(f.startswith(private) or f"/{private}" in f for f in context), private


# ---------------------------------------------------------------------- docker-compose.yml


def test_compose_file_follows_the_compose_specification():
    jsonschema.Draft7Validator.check_schema(COMPOSE_SCHEMA)
    errors = list(jsonschema.Draft7Validator(COMPOSE_SCHEMA).iter_errors(COMPOSE))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["api"].update(restart_policy="always"),
        lambda c: c["services"]["worker"].update(ports="8000"),
        lambda c: c["services"]["redis"]["healthcheck"].update(retries=[3]),
    ],
    ids=["unknown-key", "ports-not-a-list", "retries-not-a-number"],
)
def test_the_schema_check_catches_mistakes(mutate):
    broken = copy.deepcopy(COMPOSE)
    mutate(broken)
    assert list(jsonschema.Draft7Validator(COMPOSE_SCHEMA).iter_errors(broken))


def test_worker_can_be_scaled():
    worker = COMPOSE["services"]["worker"]
    # --scale worker=3 needs containers without a fixed name or a fixed host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["entrypoint"] == ["minigrad", "worker"]
    assert worker["healthcheck"] == {"disable": True}  # the image's check asks /healthz, served by the api only


def test_api_runs_the_image_entrypoint_and_publishes_its_port():
    api = COMPOSE["services"]["api"]
    assert "entrypoint" not in api and "command" not in api  # gunicorn, as the Dockerfile says
    assert [port.split(":")[-1] for port in api["ports"]] == ["8000"]


def test_api_and_workers_share_the_models_volume_and_redis():
    model_dir = RUNTIME.env()["MINIGRAD_MODEL_DIR"]
    mounts = {name: set(COMPOSE["services"][name]["volumes"]) for name in ("api", "worker")}
    assert f"models:{model_dir}" in mounts["api"] & mounts["worker"]
    assert "models" in COMPOSE["volumes"]
    for name in ("api", "worker"):
        service = COMPOSE["services"][name]
        assert service["image"] == COMPOSE["services"]["api"]["image"]
        assert service["environment"]["MINIGRAD_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["env_file"] == ".env"
    assert COMPOSE["services"]["redis"]["image"].startswith("redis:")


def test_the_token_comes_from_the_env_file_and_compose_refuses_to_start_without_one():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    example = read_env_file(REPO / ".env.example")
    assert example["MINIGRAD_API_TOKEN"] == ""  # no shared default token: each deployment sets its own
    for name in ("api", "worker"):
        token = COMPOSE["services"][name]["environment"]["MINIGRAD_API_TOKEN"]
        with pytest.raises(MissingVariable, match="MINIGRAD_API_TOKEN"):
            interpolate(token, example)
        assert interpolate(token, {**example, "MINIGRAD_API_TOKEN": "s3cret"}) == "s3cret"
    # The host port comes from the env file too.
    assert interpolate(COMPOSE["services"]["api"]["ports"][0], example) == f"{example['MINIGRAD_PORT']}:8000"
