"""Property-based API fuzzing with schemathesis against the service's own /openapi.json.

Every operation, with generated valid and invalid requests, in process (the WSGI app: fast) and a small run
over real HTTP (gunicorn); plus stateful sequences along the links schemathesis infers from the document
(PUT /models/<name> -> GET its version, POST /train -> GET /jobs/<id>...). The checks: no 5xx, every status
documented, every body matching its documented schema and content type, missing tokens refused.

Two checks are off where their assumption is not this API's: ``positive_data_acceptance`` expects every
schema-valid request to succeed, but whether a row has the model's input width or a name is registered
depends on the registry, which no schema states (such requests get a documented 404 or 422); and
``use_after_free`` on /jobs/<id>, because DELETE there cancels a job, which stays readable as ``cancelled``.
The finds of earlier runs have regression tests in tests/test_fuzz_regressions.py; docs/reliability.md
lists them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from service import create_app
from service.testing import GunicornServer

REPO = Path(__file__).resolve().parent.parent
TOKEN = "fuzz-token"
EXCLUDED_CHECKS = ["positive_data_acceptance"]
IN_PROCESS_EXAMPLES = 120
HTTP_EXAMPLES = 150
STATEFUL_SCENARIOS = 40


@schemathesis.serializer("application/onnx")
def onnx_bytes(context, value):
    """PUT /models/<name> also takes an ONNX file: the generated value sent as raw bytes."""
    return {"data": value if isinstance(value, bytes) else str(value).encode()}


def fresh_directories(root: Path) -> dict:
    """Settings for an app over a private copy of the shipped models and its own job store under ``root``."""
    (root / "models").mkdir()
    for name in ("xor.json", "iris.json"):
        shutil.copy(REPO / "models" / name, root / "models" / name)
    return {"MINIGRAD_MODEL_DIR": str(root / "models"), "MINIGRAD_DATA_DIR": str(root / "var")}


# Invalid requests count as refused with schemathesis's usual statuses plus 413 and 414: gunicorn refuses a
# request line over 4 KB (a long generated query) with 414 before the app sees it (service/gunicorn_problems.py),
# and a body over MINIGRAD_MAX_BODY_BYTES gets 413.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "5xx"]
# DELETE /jobs/<id> is a cancel (the README's and docs/jobs.md's contract), not a removal.
FUZZ_CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
               "operations": [{"include-path-regex": "^/jobs/", "checks": {"use_after_free": {"enabled": False}}}]}


def configured(schema, examples: int):
    schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
    schema.config.checks.update(excluded_check_names=EXCLUDED_CHECKS)
    schema.config.generation.update(max_examples=examples)
    return schema


# The app is built at import: schemathesis parametrizes the test from its document at collection.
APP = create_app({"TESTING": True, "MINIGRAD_API_TOKEN": TOKEN, "MINIGRAD_PROTECT_PREDICT": False,
                  **fresh_directories(Path(tempfile.mkdtemp(prefix="minigrad-fuzz-")))})
SCHEMA = configured(schemathesis.openapi.from_wsgi("/openapi.json", APP,
                                                   config=schemathesis.Config.from_dict(FUZZ_CONFIG)),
                    IN_PROCESS_EXAMPLES)


@pytest.fixture(scope="module", autouse=True)
def remove_directories():
    yield
    shutil.rmtree(Path(APP.config["MINIGRAD_MODEL_DIR"]).parent, ignore_errors=True)
    shutil.rmtree(SEQUENCE_APP.root, ignore_errors=True)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_in_process(case):
    case.call_and_validate()


class FreshAppPerScenario:
    """A WSGI app that is a new service over fresh directories after every ``reset``: each stateful scenario
    starts from the shipped models and no jobs, so Hypothesis can replay a scenario and get the same answers."""

    def __init__(self):
        self.root = None
        self.reset()

    def reset(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = Path(tempfile.mkdtemp(prefix="minigrad-fuzz-sequence-"))
        self.app = create_app({"TESTING": True, "MINIGRAD_API_TOKEN": TOKEN, "MINIGRAD_PROTECT_PREDICT": False,
                               **fresh_directories(self.root)})

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


SEQUENCE_APP = FreshAppPerScenario()
SEQUENCE_SCHEMA = configured(schemathesis.openapi.from_wsgi("/openapi.json", SEQUENCE_APP,
                                                            config=schemathesis.Config.from_dict(FUZZ_CONFIG)),
                             IN_PROCESS_EXAMPLES)


class Sequences(SEQUENCE_SCHEMA.as_state_machine()):
    """Chains of calls along the links: a version uploaded then fetched, a job submitted then followed."""

    def setup(self):
        SEQUENCE_APP.reset()


TestSequences = Sequences.TestCase
TestSequences.settings = settings(TestSequences.settings, max_examples=STATEFUL_SCENARIOS, stateful_step_count=6,
                                  deadline=None)


@pytest.fixture(scope="module")
def http_schema(tmp_path_factory):
    env = {"MINIGRAD_API_TOKEN": TOKEN, **fresh_directories(tmp_path_factory.mktemp("fuzz-http"))}
    with GunicornServer(env=env, workers=1) as server:
        yield configured(schemathesis.openapi.from_url(f"{server.url}/openapi.json",
                                                 config=schemathesis.Config.from_dict(FUZZ_CONFIG)), HTTP_EXAMPLES)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_over_http(http_schema, mode):
    """Cases drawn across all operations, sent through gunicorn: the HTTP layer (chunking, headers, errors
    raised before Flask) answers as documented too."""

    @given(http_schema.as_strategy(mode))
    @settings(max_examples=HTTP_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def sent_over_http(case):
        case.call_and_validate()

    sent_over_http()
