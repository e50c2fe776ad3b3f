"""The ``minigrad`` command line: every subcommand, its files and its refusals (a message, never a traceback)."""

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from jobs_support import XOR_ARCHITECTURE, wait_for, xor_request
from sklearn.datasets import load_iris

import minigrad
from minigrad.cli import main
from minigrad.format import load, save
from service.testing import free_port

REPO = Path(__file__).resolve().parent.parent
EXECUTABLE = Path(sys.executable).parent / "minigrad"

XOR_CSV = "a,b,xor\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n"
XOR_TRAIN = ["--loss", "bce", "--alpha", "0.5", "--epochs", "1500", "--seed", "7"]


@pytest.fixture
def files(tmp_path):
    """A scratch directory holding the XOR architecture and data, as paths by name."""
    (tmp_path / "arch.json").write_text(json.dumps(XOR_ARCHITECTURE))
    (tmp_path / "xor.csv").write_text(XOR_CSV)
    (tmp_path / "inputs.csv").write_text("a,b\n0,0\n0,1\n1,0\n1,1\n")
    return tmp_path


def run(*args, input=None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    # Every refusal is a click exit (a message and a status), never an exception escaping the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def forward(model, rows):
    with minigrad.no_grad():
        return model(minigrad.Tensor(np.asarray(rows, dtype=np.float64))).data


@pytest.fixture
def xor_model(files):
    result = run("train", files / "arch.json", files / "xor.csv", "-o", files / "xor.json", *XOR_TRAIN)
    assert result.exit_code == 0, result.output
    return files / "xor.json"


# ---------------------------------------------------------------------- train -> predict -> validate


def test_train_then_predict_round_trip(files, xor_model):
    model = load(xor_model)
    assert model.metadata["inputs"] == ["a", "b"] and model.metadata["outputs"] == ["xor"]
    assert model.metadata["training"]["seed"] == 7 and model.metadata["training"]["loss"] == "bce"

    result = run("predict", xor_model, files / "inputs.csv")
    assert result.exit_code == 0, result.output
    outputs = np.array(json.loads(result.stdout))
    # JSON floats are written exactly, so the printed outputs are the forward pass bit for bit.
    assert np.array_equal(outputs, forward(model, [[0, 0], [0, 1], [1, 0], [1, 1]]))
    assert ((outputs[:, 0] > 0.5) == [False, True, True, False]).all()

    validated = run("validate", xor_model)
    assert validated.exit_code == 0
    summary = "valid, float64, 2 inputs -> 1 output: Linear(2->3), Tanh, Linear(3->1), Sigmoid"
    assert validated.stdout == f"{xor_model}: {summary}\n"


def test_training_reports_its_final_loss(files, xor_model):
    result = run("train", files / "arch.json", files / "xor.csv", "-o", files / "again.json", *XOR_TRAIN)
    assert "trained 1500 epochs on 4 rows" in result.stderr and "final loss" in result.stderr


def test_same_seed_same_bytes_and_json_data_equals_csv_data(files, xor_model):
    rows = [[float(v) for v in line.split(",")] for line in XOR_CSV.splitlines()[1:]]
    data = {"inputs": [r[:2] for r in rows], "targets": [r[2:] for r in rows]}
    (files / "xor-data.json").write_text(json.dumps(data))
    result = run("train", files / "arch.json", files / "xor-data.json", "-o", files / "from-json.json", *XOR_TRAIN)
    assert result.exit_code == 0, result.output
    a, b = load(xor_model), load(files / "from-json.json")
    for p, q in zip(a.get_parameters(), b.get_parameters(), strict=True):
        assert p.data.tobytes() == q.data.tobytes()


def test_cli_and_service_train_the_same_model_from_the_same_seed(files, xor_model):
    from service.training import TrainingSpec, train

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    spec = TrainingSpec(inputs=x, targets=y, epochs=1500, seed=7, loss="bce",
                        optimizer={"type": "sgd", "alpha": 0.5}, architecture=XOR_ARCHITECTURE)
    service_model, _ = train(spec)
    for p, q in zip(load(xor_model).get_parameters(), service_model.get_parameters(), strict=True):
        assert p.data.tobytes() == q.data.tobytes()


def test_without_a_seed_the_drawn_seed_is_recorded_and_repeats_the_run(files):
    first = run("train", files / "arch.json", files / "xor.csv", "-o", files / "a.json", "--epochs", "5")
    assert first.exit_code == 0, first.output
    seed = load(files / "a.json").metadata["training"]["seed"]
    run("train", files / "arch.json", files / "xor.csv", "-o", files / "b.json", "--epochs", "5", "--seed", seed)
    assert (files / "a.json").read_bytes() == (files / "b.json").read_bytes()


def test_training_continues_from_a_model_document(files, xor_model):
    before = load(xor_model)
    result = run("train", xor_model, files / "xor.csv", "-o", files / "tuned.json", "--loss", "bce",
                 "--optimizer", "adam", "--alpha", "0.01", "--epochs", "50", "--seed", "1")
    assert result.exit_code == 0, result.output
    tuned = load(files / "tuned.json")
    assert tuned.metadata["inputs"] == ["a", "b"]  # the model's metadata survives, training is updated
    assert tuned.metadata["training"]["optimizer"] == {"type": "adam", "alpha": 0.01}
    assert tuned.metadata["training"]["final_loss"] < before.metadata["training"]["final_loss"]


def test_classifier_with_a_label_column_and_csv_output(tmp_path):
    iris = load_iris()
    x = (iris.data - iris.data.mean(axis=0)) / iris.data.std(axis=0)
    table = np.column_stack([x, iris.target]).tolist()
    lines = ["sl,sw,pl,pw,species"] + [",".join(map(repr, row)) for row in table]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    architecture = {"dtype": "float32", "layers": [
        {"type": "Linear", "in_features": 4, "out_features": 8}, {"type": "Relu"},
        {"type": "Linear", "in_features": 8, "out_features": 3}]}
    (tmp_path / "arch.json").write_text(json.dumps(architecture))
    result = run("train", tmp_path / "arch.json", tmp_path / "iris.csv", "-o", tmp_path / "iris.json",
                 "--loss", "cross_entropy", "--optimizer", "adam", "--alpha", "0.05", "--epochs", "200",
                 "--batch-size", "32", "--seed", "3")
    assert result.exit_code == 0, result.output
    model = load(tmp_path / "iris.json")
    assert model.get_parameters()[0].data.dtype == np.float32
    assert "outputs" not in model.metadata  # one label column names no output

    (tmp_path / "x.csv").write_text("\n".join(",".join(map(repr, row)) for row in x.tolist()) + "\n")
    predicted = run("predict", tmp_path / "iris.json", tmp_path / "x.csv", "-o", tmp_path / "out.csv")
    assert predicted.exit_code == 0, predicted.output
    header, *rows = (tmp_path / "out.csv").read_text().splitlines()
    assert header == "output_0,output_1,output_2"
    logits = np.array([[float(v) for v in row.split(",")] for row in rows])
    assert (logits.argmax(axis=1) == iris.target).mean() > 0.9


@pytest.mark.parametrize(
    "inputs",
    [
        "[[0, 1], [1, 1]]",
        '{"inputs": [[0, 1], [1, 1]]}',
        "0,1\n1,1\n",
    ],
    ids=["json-rows", "json-object", "csv-without-header"],
)
def test_predict_reads_inputs_from_standard_input(xor_model, inputs):
    result = run("predict", xor_model, "-", input=inputs)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.array(json.loads(result.stdout)), forward(load(xor_model), [[0, 1], [1, 1]]))


@pytest.mark.parametrize("content", ["0,1\r\n1,1\r\n", "a,b\n0,1\n1,1\n", "0,1\n1,1\n", "[[0, 1], [1, 1]]"],
                         ids=["csv-crlf", "csv-header", "csv-without-header", "json"])
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_byte_order_mark_is_not_data(files, xor_model, content, source):
    # Spreadsheets save CSV with a UTF-8 BOM: it once made the first row of a file without a header look like
    # a header, which was dropped, so one output row was silently missing.
    data = "\ufeff" + content
    (files / "bom.txt").write_bytes(data.encode("utf-8"))
    result = run("predict", xor_model, files / "bom.txt") if source == "file" else run("predict", xor_model, "-",
                                                                                      input=data)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.array(json.loads(result.stdout)), forward(load(xor_model), [[0, 1], [1, 1]]))


def test_predict_one_flat_row(files, xor_model):
    (files / "one.json").write_text("[1, 0]")
    result = run("predict", xor_model, files / "one.json", "--format", "csv")
    assert result.stdout.splitlines()[0] == "xor"
    assert float(result.stdout.splitlines()[1]) == forward(load(xor_model), [[1, 0]])[0, 0]


@pytest.mark.parametrize(("command", "content", "message"), [
    ("predict", "0,1\n1e39,0\n", "data.csv: inputs: row 2, column 1: 1e+39 is out of the range of float32"),
    ("train", "0,1,0\n-1e39,0,1\n", "data.csv: inputs: row 2, column 1: -1e+39 is out of the range of float32"),
    ("train", "0,1,1e39\n", "data.csv: targets: row 1, column 1: 1e+39 is out of the range of float32"),
])
def test_values_beyond_a_float32_model_are_refused_naming_them(files, command, content, message):
    # They became inf in the cast: 'training diverged; try a smaller learning rate', or an output 'overflow'
    # after numpy's raw RuntimeWarning.
    (files / "arch32.json").write_text(json.dumps({"layers": XOR_ARCHITECTURE, "dtype": "float32"}))
    (files / "data.csv").write_text(content)
    model = files / "arch32.json"
    if command == "predict":
        assert run("train", model, files / "xor.csv", "-o", files / "m32.json", "--epochs", "2").exit_code == 0
        model = files / "m32.json"
    result = run(command, model, files / "data.csv", *(["-o", files / "out.json"] if command == "train" else []))
    assert result.exit_code == 1
    assert message in result.output and "RuntimeWarning" not in result.output
    assert not (files / "out.json").exists()


def test_outputs_that_overflow_are_refused_as_json_and_written_as_csv(files):
    model = minigrad.Sequential([minigrad.Linear(1, 1)])
    model.layers[0].weight.data[:] = 1e300
    save(model, files / "huge.json")
    (files / "big.json").write_text("[[1], [1e10]]")
    with np.errstate(over="ignore"):
        refused = run("predict", files / "huge.json", files / "big.json", "-o", files / "out.json")
        written = run("predict", files / "huge.json", files / "big.json", "--format", "csv")
    assert refused.exit_code == 1
    assert "row 2, output 1: the model computed inf" in refused.output
    assert not (files / "out.json").exists()
    assert written.exit_code == 0
    assert written.stdout.splitlines()[1:] == ["1e+300", "inf"]


# 10^6 x 10^6 float64 weights are 8 TB: numpy refuses the allocation up front (MemoryError). Larger sizes are
# more than any array can hold, which numpy says with a ValueError: that one escaped as a traceback.
@pytest.mark.parametrize("inputs,outputs", [(10**6, 10**6), (10**10, 10**11), (10**20, 1)])
def test_an_architecture_too_big_for_memory_is_refused_with_its_layer(files, inputs, outputs):
    (files / "huge-arch.json").write_text(json.dumps([{"type": "Linear", "in_features": inputs,
                                                        "out_features": outputs}]))
    (files / "one.csv").write_text("0,1\n")
    result = run("train", files / "huge-arch.json", files / "one.csv", "-o", files / "out.json")
    assert result.exit_code == 1
    assert f"layers[0]: {inputs} x {outputs} float64 weights do not fit in this machine's memory" in result.output
    assert not (files / "out.json").exists()


# ---------------------------------------------------------------------- validate


def test_validate_prints_every_defect_with_its_location(files, xor_model):
    document = json.loads(xor_model.read_text())
    document["layers"][2]["weight"] = [[1.0, 2.0]] * 3
    document["layers"][1]["type"] = "Conv2d"
    (files / "broken.json").write_text(json.dumps(document))
    result = run("validate", files / "broken.json", xor_model)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{files / 'broken.json'}: layers[1].type: unknown layer type 'Conv2d'; expected one of " \
           "Linear, Relu, Sigmoid, Softmax, Tanh" in lines
    assert any(line.startswith(f"{files / 'broken.json'}: layers[2].weight: expected shape [3, 1]") for line in lines)
    assert lines[-1].startswith(f"{xor_model}: valid")  # the other file is still checked


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "document: not valid JSON"),
        ("[1, 2]", "document: "),
        ('{"format": "minigrad.sequential", "version": 7, "dtype": "float64", "layers": []}',
         "version: unsupported version 7"),
    ],
    ids=["not-json", "not-an-object", "future-version"],
)
def test_validate_refuses_what_is_not_a_model(tmp_path, content, message):
    (tmp_path / "m.json").write_text(content)
    result = run("validate", tmp_path / "m.json")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{tmp_path / 'm.json'}: {message}")


def test_validate_a_missing_file(tmp_path):
    result = run("validate", tmp_path / "nope.json")
    assert result.exit_code == 1
    assert "nope.json: cannot read it: No such file or directory" in result.stdout


def test_validate_many_files_reports_each_and_fails_if_any_is_bad(tmp_path, xor_model):
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "subdir").mkdir()
    result = run("validate", xor_model, tmp_path / "subdir", tmp_path / "bad.json", xor_model)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{xor_model}: valid") and lines[-1].startswith(f"{xor_model}: valid")
    assert f"{tmp_path / 'subdir'}: cannot read it: Is a directory" in lines
    assert any(line.startswith(f"{tmp_path / 'bad.json'}: document: ") for line in lines)


# ---------------------------------------------------------------------- bad arguments and files


BAD_FILES = {
    "bad.json": "{not json",
    "unknown-layer.json": json.dumps([{"type": "Linear", "in_features": 2, "out_features": 3}, {"type": "Conv2d"}]),
    "zero-width.json": json.dumps([{"type": "Linear", "in_features": 0, "out_features": 3}]),
    "chain.json": json.dumps([{"type": "Linear", "in_features": 2, "out_features": 3},
                              {"type": "Linear", "in_features": 4, "out_features": 1}]),
    "number.json": "3",
    "text.csv": "a,b,xor\n0,0,0\n0,x,1\n",
    "ragged.csv": "0,0,0\n0,1\n",
    "nan.csv": "0,0,0\nnan,1,1\n",
    "wide.csv": "0,0,0,1\n1,1,0,1\n",
    "header-only.csv": "a,b,xor\n",
    "no-targets.json": json.dumps({"inputs": [[0, 1]]}),
    "mixed.json": json.dumps({"inputs": [[0, 1], [1, True]], "targets": [[1], [0]]}),
    "short.json": json.dumps({"inputs": [[0, 1], [1, 0]], "targets": [[1]]}),
    "ragged.json": json.dumps({"inputs": [[0, 1], [1]], "targets": [[1], [0]]}),
    "infinite.json": '{"inputs": [[0, 1], [1, 1e999]], "targets": [[1], [0]]}',
    "huge.csv": "1e400,0,1\n",
    "linear.json": json.dumps([{"type": "Linear", "in_features": 2, "out_features": 1}]),
    "outputs-two.json": json.dumps({"format": "minigrad.sequential", "version": 1, "dtype": "float64", "layers": [
        {"type": "Linear", "in_features": 2, "out_features": 1, "weight": [[0], [0]], "bias": [2]}]}),
    "big.csv": "0,0,0\n1e150,1e150,1\n",
    "wide.json": json.dumps({"inputs": [[0, 1, 2]]}),
    "deep.json": "[" * 100_000 + "]" * 100_000,
    # A first row that mixes numbers and text is bad data, not a header that would silently drop a row.
    "typo.csv": "0,x\n1,1\n",
    "trailing-comma.csv": "0,1,\n1,1,\n",
    "semicolons.csv": "0;1\n",
    "long-cell.csv": "0,1\n0," + "1" * 200_000 + "\n",
    "misspelt.json": json.dumps({"layers": [{"type": "Linear", "in_features": 2, "out_features": 1}],
                                 "dtpye": "float32"}),
    "list-metadata.json": json.dumps({"layers": [{"type": "Linear", "in_features": 2, "out_features": 1}],
                                      "metadata": [["name", "xor"]]}),
}

BAD_ARGUMENTS = [
    # (arguments, exit code, message): files by name come from BAD_FILES or the fixture.
    (["train", "arch.json", "xor.csv"], 2, "Missing option '-o' / '--output'"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--loss", "hinge"], 2, "'hinge' is not one of"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--epochs", "0"], 2, "0 is not in the range x>=1"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--alpha", "-1"], 2, "Invalid value for '--alpha'"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--alpha", "nan"], 2, "'--alpha': nan is not a finite number"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--alpha", "inf"], 2, "'--alpha': inf is not a finite number"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--momentum", "nan"], 2,
     "'--momentum': nan is not a finite number"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--batch-size", "many"], 2, "'many' is not a valid integer"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--seed", "-3"], 2, "Invalid value for '--seed'"),
    (["train", "arch.json", "xor.csv", "-o", "m.json", "--optimizer", "adam", "--momentum", "0.9"], 2,
     "only the sgd optimizer takes a momentum"),
    (["train", "missing.json", "xor.csv", "-o", "m.json"], 1, "missing.json: cannot read it: No such file"),
    (["train", "bad.json", "xor.csv", "-o", "m.json"], 1, "bad.json: not valid JSON: Expecting property name"),
    (["train", "unknown-layer.json", "xor.csv", "-o", "m.json"], 1, "layers[1].type: unknown layer type 'Conv2d'"),
    (["train", "zero-width.json", "xor.csv", "-o", "m.json"], 1, "layers[0].in_features: expected a positive integer"),
    (["train", "chain.json", "xor.csv", "-o", "m.json"], 1, "layers[1]"),
    (["train", "number.json", "xor.csv", "-o", "m.json"], 1, "expected a model document or an architecture"),
    (["train", "misspelt.json", "xor.csv", "-o", "m.json"], 1,
     "misspelt.json: dtpye: unknown field; an architecture has layers, dtype, metadata"),  # trained as float64
    (["train", "list-metadata.json", "xor.csv", "-o", "m.json"], 1,
     "list-metadata.json: metadata: expected an object, got an array"),
    (["train", "arch.json", "text.csv", "-o", "m.json"], 1, "text.csv: line 3, column 2: 'x' is not a number"),
    (["train", "arch.json", "ragged.csv", "-o", "m.json"], 1, "ragged.csv: line 2: expected 3 columns, got 2"),
    (["train", "arch.json", "nan.csv", "-o", "m.json"], 1, "nan.csv: line 2, column 1: 'nan' is not a finite number"),
    (["train", "arch.json", "wide.csv", "-o", "m.json"], 1, "expected 1 target column(s) after the 2 input columns"),
    (["train", "arch.json", "header-only.csv", "-o", "m.json"], 1, "only a header row"),
    (["train", "arch.json", "no-targets.json", "-o", "m.json"], 1, "no-targets.json: expected an object"),
    (["train", "arch.json", "mixed.json", "-o", "m.json"], 1, "mixed.json: inputs[1][1]: expected a number, got true"),
    (["train", "arch.json", "short.json", "-o", "m.json"], 1, "inputs has 2 rows but targets has 1"),
    (["train", "arch.json", "ragged.json", "-o", "m.json"], 1, "inputs[1]: expected 2 items like [0], got 1"),
    (["train", "arch.json", "infinite.json", "-o", "m.json"], 1, "inputs[1][1]: Infinity is not allowed"),
    (["train", "arch.json", "huge.csv", "-o", "m.json"], 1, "huge.csv: line 1, column 1: '1e400' is not a finite"),
    (["train", "arch.json", "xor.csv", "-o", "no/such/dir/m.json"], 1, "cannot write it"),
    (["train", "arch.json", "xor.csv", "-o", ""], 2, "Invalid value for '-o' / '--output': an empty path"),
    (["train", "linear.json", "big.csv", "-o", "m.json", "--alpha", "1e6", "--epochs", "50"], 1,
     "training diverged, nothing written: epoch"),
    # Trained on, clipped to a probability, and written: a model without a Sigmoid last learnt nonsense.
    (["train", "outputs-two.json", "xor.csv", "-o", "m.json", "--loss", "bce"], 1,
     "outputs-two.json: model: BCELoss takes probabilities in [0, 1], but prediction[0, 0] is 2.0 (end the model "
     "with a Sigmoid"),
    (["predict", "bad.json", "inputs.csv"], 1, "bad.json: not a valid model document: document: not valid JSON"),
    (["predict", "xor.json", "xor.csv"], 1, "xor.csv: the model takes 2 inputs per row, the data has 3"),
    (["predict", "xor.json", "wide.json"], 1, "wide.json: the model takes 2 inputs per row, the data has 3"),
    (["predict", "xor.json", "inputs.csv", "--format", "yaml"], 2, "'yaml' is not one of 'json', 'csv'"),
    (["predict", "xor.json", "inputs.csv", "-o", "no/such/dir/out.json"], 1,
     "no/such/dir/out.json: cannot write it: No such file or directory"),
    (["predict", "xor.json"], 2, "Missing argument 'INPUTS'"),
    (["predict", "xor.json", "deep.json"], 1, "deep.json: nested too deeply"),
    (["predict", "xor.json", "typo.csv"], 1, "typo.csv: line 1, column 2: 'x' is not a number"),
    (["predict", "xor.json", "long-cell.csv"], 1, "long-cell.csv: line 2: field larger than field limit"),
    (["predict", "xor.json", "trailing-comma.csv"], 1,
     "trailing-comma.csv: line 1, column 3: an empty cell (a trailing comma?) is not a number"),
    (["predict", "xor.json", "semicolons.csv"], 1,
     "semicolons.csv: only a header row (0;1); expected rows of comma-separated numbers"),
    (["train", "deep.json", "xor.csv", "-o", "m.json"], 1, "deep.json: nested too deeply"),
    (["train", "arch.json", "deep.json", "-o", "m.json"], 1, "deep.json: nested too deeply"),
    (["validate"], 2, "Missing argument 'MODELS...'"),
    (["serve", "--port", "0"], 2, "0 is not in the range 1<=x<=65535"),
    (["serve", "--workers", "none"], 2, "'none' is not a valid integer"),
    (["serve", "--config", "missing.conf.py"], 2, "Invalid value for '--config': 'missing.conf.py' is not a file"),
    (["fit"], 2, "No such command 'fit'"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_ARGUMENTS, ids=[" ".join(a[0]) for a in BAD_ARGUMENTS])
def test_bad_arguments_and_files_are_refused_with_a_message(files, xor_model, monkeypatch, args, code, message):
    for name, content in BAD_FILES.items():
        (files / name).write_text(content)
    monkeypatch.chdir(files)
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (files / "m.json").exists()


def test_train_writes_the_model_to_standard_output_for_dash(files, monkeypatch):
    monkeypatch.chdir(files)
    result = run("train", "arch.json", "xor.csv", "-o", "-", *XOR_TRAIN)
    assert result.exit_code == 0, result.output
    assert minigrad.loads(result.stdout).metadata["training"]["seed"] == 7
    assert not (files / "-").exists()


def test_a_flat_list_of_targets_is_one_per_row_as_post_train_reads_it(files):
    # It was read as a single row: 'inputs has 4 rows but targets has 1' for data POST /train accepts.
    flat = {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [0, 1, 1, 0]}
    (files / "flat.json").write_text(json.dumps(flat))
    (files / "rows.json").write_text(json.dumps({**flat, "targets": [[0], [1], [1], [0]]}))
    for name in ("flat", "rows"):
        result = run("train", files / "arch.json", files / f"{name}.json", "-o", files / f"{name}-model.json",
                     *XOR_TRAIN[:-4], "--epochs", "5", "--seed", "3")
        assert result.exit_code == 0, result.output
    assert (files / "flat-model.json").read_bytes() == (files / "rows-model.json").read_bytes()


@pytest.mark.parametrize(("batch_size", "recorded"), [(None, 4), (3, 3), (4, 4), (10**29, 4)])
def test_the_recorded_batch_size_is_the_rows_per_step(files, batch_size, recorded):
    # --batch-size 10**29 on 4 rows was recorded as 10**29 in metadata.training.
    options = [] if batch_size is None else ["--batch-size", batch_size]
    result = run("train", files / "arch.json", files / "xor.csv", "-o", files / "m.json", "--epochs", "2", *options)
    assert result.exit_code == 0, result.output
    assert load(files / "m.json").metadata["training"]["batch_size"] == recorded


def test_an_output_that_cannot_be_written_is_refused_before_training(files):
    # It was found only after the last epoch, so a long run was lost to a typo in -o.
    result = run("train", files / "arch.json", files / "xor.csv", "-o", files / "no-dir" / "m.json", "--epochs", "5")
    assert result.exit_code == 1
    assert f"{files / 'no-dir' / 'm.json'}: cannot write it: the directory {files / 'no-dir'} does not exist" \
        in result.output
    assert "trained" not in result.output


def test_train_refuses_a_model_document_that_validate_refuses(files, xor_model):
    # A repeated key (which one counts is ambiguous): train took the document that validate and predict refuse.
    text = xor_model.read_text().replace('"dtype": "float64",', '"dtype": "float64", "dtype": "float64",', 1)
    (files / "twice.json").write_text(text)
    expected = "twice.json: document: the key 'dtype' appears twice in one object"
    assert expected in run("validate", files / "twice.json").output
    result = run("train", files / "twice.json", files / "xor.csv", "-o", files / "m.json", "--epochs", "2")
    assert result.exit_code == 1
    assert expected.replace(": ", ": not a valid model document: ", 1) in result.output
    assert not (files / "m.json").exists()


def test_a_refused_training_leaves_an_existing_output_untouched(files):
    (files / "m.json").write_text("precious")
    (files / "nan.csv").write_text("0,0,0\nnan,1,1\n")
    assert run("train", files / "arch.json", files / "nan.csv", "-o", files / "m.json").exit_code == 1
    assert (files / "m.json").read_text() == "precious"


def test_predict_with_a_json_object_missing_inputs(files, xor_model):
    (files / "in.json").write_text('{"rows": [[0, 1]]}')
    result = run("predict", xor_model, files / "in.json")
    assert result.exit_code == 1
    assert "in.json: expected rows of numbers or an object {\"inputs\": [[...]]}" in result.output


# (`minigrad worker --help` is the consumer's own help: see test_worker_hands_its_arguments_to_the_consumer.)
@pytest.mark.parametrize("command", [[], ["train"], ["predict"], ["validate"], ["serve"]])
def test_help_everywhere(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: main {' '.join(command)}".rstrip() + " ")
    assert len(result.output.splitlines()) > 3


# ---------------------------------------------------------------------- the installed executable


def test_installed_executable_round_trip(files):
    subprocess.run([EXECUTABLE, "train", "arch.json", "xor.csv", "-o", "xor.json", *XOR_TRAIN],
                   cwd=files, check=True, capture_output=True)
    predicted = subprocess.run([EXECUTABLE, "predict", "xor.json", "-"], input="1,0\n", cwd=files,
                               capture_output=True, text=True, check=True)
    assert json.loads(predicted.stdout)[0][0] > 0.5
    broken = subprocess.run([EXECUTABLE, "validate", "arch.json"], cwd=files, capture_output=True, text=True)
    assert broken.returncode == 1 and broken.stdout.startswith("arch.json: ") and "Traceback" not in broken.stderr
    usage = subprocess.run([EXECUTABLE, "train", "--epochs", "x"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage: minigrad train" in usage.stderr


def test_worker_hands_its_arguments_to_the_consumer():
    result = subprocess.run([EXECUTABLE, "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "minigrad-worker" in result.stdout and "--workers" in result.stdout
    bad = subprocess.run([EXECUTABLE, "worker", "--workers", "many"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected a whole number of at least 1, got 'many'" in bad.stderr


@pytest.mark.parametrize("consumer", [True, False], ids=["with-consumer", "no-consumer"])
def test_serve_runs_gunicorn_with_the_project_config(files, xor_model, consumer):
    models = files / "models"
    models.mkdir()
    xor_model.rename(models / "xor.json")
    port = free_port()
    command = [EXECUTABLE, "serve", "--port", port, "--workers", 1, "--model-dir", models, "--data-dir", files / "var"]
    with open(files / "serve.log", "w") as log:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen([str(word) for word in command + ([] if consumer else ["--no-consumer"])],
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert server.poll() is None, (files / "serve.log").read_text()
            with contextlib.suppress(requests.RequestException):
                return requests.get(base + "/healthz", timeout=2).status_code == 200

        wait_for(up, 60, what="minigrad serve to answer /healthz")
        # `serve` replaced its own process: the pid is gunicorn's master, or service.serve's with a consumer.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"service.serve" if consumer else b"gunicorn"]

        answer = requests.post(base + "/predict", json={"model": "xor", "inputs": [[1, 0]]}, timeout=10).json()
        assert answer["outputs"] == forward(load(models / "xor.json"), [[1, 0]]).tolist()
        if consumer:
            job = requests.post(base + "/train?wait=20", json=xor_request(save_as="served"), timeout=30).json()
            job = wait_for(lambda: (j := requests.get(base + job["url"], timeout=10).json())["status"]
                           not in ("queued", "running") and j, 60, what="the job to finish")
            assert job["status"] == "succeeded" and (models / "served" / "1.json").is_file()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, (files / "serve.log").read_text()


def test_the_readme_examples_run_as_printed(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## The command line\n"):]
    script = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    shutil.copytree(REPO / "models", tmp_path / "models")
    env = {**os.environ, "PATH": f"{EXECUTABLE.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "my-xor-tuned.json").metadata["inputs"] == ["a", "b"]
    assert (tmp_path / "species.csv").read_text().splitlines()[0] == "setosa,versicolor,virginica"
    predicted = json.loads(result.stdout[result.stdout.index("[["):])
    assert predicted[0][0] > 0.5 > predicted[1][0]


def test_a_terminal_sees_a_progress_bar_with_the_running_loss(files):
    # click draws the bar only on a terminal: give the command one (a pseudo-terminal) as its stderr.
    controller, terminal = pty.openpty()
    with subprocess.Popen([EXECUTABLE, "train", "arch.json", "xor.csv", "-o", "xor.json", *XOR_TRAIN], cwd=files,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal) as process:
        os.close(terminal)
        screen = b""
        with contextlib.suppress(OSError):  # EIO once the command has exited and closed the terminal
            while chunk := os.read(controller, 4096):
                screen += chunk
        assert process.wait(timeout=60) == 0
    os.close(controller)
    text = screen.decode()
    final_loss = load(files / "xor.json").metadata["training"]["final_loss"]
    assert "training  [" in text and "100%" in text
    assert re.search(r"\] +100% +loss " + re.escape(f"{final_loss:.6g}"), text), text[-300:]
    assert len(re.findall(r"loss \d", text)) > 2  # redrawn as training goes, each time with the loss so far
