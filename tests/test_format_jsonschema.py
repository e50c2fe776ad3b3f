"""minigrad/model.schema.json: current, valid, and in agreement with the loader on structure."""

import json
from pathlib import Path

import jsonschema
import pytest
from format_cases import BROKEN, HAND_WRITTEN, models, valid_document
from hypothesis import given, settings

import minigrad
from minigrad.format_jsonschema import SCHEMA_PATH, render

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "models").glob("*.json"))


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_file_is_generated_from_the_loader():
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        assert f.read() == render(), "stale: run `python -m minigrad.format_jsonschema`"


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"xor.json", "iris.json"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_model_validates(validator, path):
    with open(path, encoding="utf-8") as f:
        validator.validate(json.load(f))


def test_hand_written_documents_validate(validator):
    validator.validate(valid_document())
    validator.validate(json.loads(HAND_WRITTEN))


@settings(max_examples=40, deadline=None)
@given(models())
def test_every_saved_model_validates(validator, model):
    validator.validate(json.loads(minigrad.dumps(model)))


STRUCTURAL = [case for case in BROKEN if case[4]]
BEYOND = [case for case in BROKEN if not case[4]]


@pytest.mark.parametrize("make", [case[1] for case in STRUCTURAL], ids=[case[0] for case in STRUCTURAL])
def test_schema_rejects_structural_defects(validator, make):
    assert not validator.is_valid(make())


@pytest.mark.parametrize("make", [case[1] for case in BEYOND], ids=[case[0] for case in BEYOND])
def test_defects_beyond_structure_are_left_to_the_loader(validator, make):
    # Keeps the table's "JSON Schema can tell" column honest: these pass the schema, fail the loader.
    assert validator.is_valid(make())
