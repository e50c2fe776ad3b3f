"""``minigrad export`` and ``minigrad import``: model documents to ONNX files and back, refusals as messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import minigrad
import minigrad.onnx
from minigrad.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXECUTABLE = Path(sys.executable).parent / "minigrad"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    # Every refusal is a click exit (a message and a status), never an exception escaping the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("example", ["xor", "iris"])
def test_export_then_import_gives_back_the_same_document_byte_for_byte(example, tmp_path):
    source = REPO / "models" / f"{example}.json"
    exported = run("export", source, tmp_path / "model.onnx")
    assert exported.exit_code == 0, exported.output
    assert f"wrote {tmp_path / 'model.onnx'}: float64" in exported.stderr

    imported = run("import", tmp_path / "model.onnx", tmp_path / "back.json")
    assert imported.exit_code == 0, imported.output
    assert (tmp_path / "back.json").read_bytes() == minigrad.dumps(minigrad.load(source)).encode()


def test_the_exported_file_runs_in_onnxruntime(tmp_path):
    assert run("export", REPO / "models" / "xor.json", tmp_path / "xor.onnx").exit_code == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "xor.onnx"), providers=["CPUExecutionProvider"])
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    with minigrad.no_grad():
        expected = minigrad.load(REPO / "models" / "xor.json")(minigrad.Tensor(inputs)).data
    np.testing.assert_allclose(session.run(None, {"input": inputs})[0], expected, rtol=0, atol=1e-12)


def test_import_of_a_pytorch_export_writes_a_model_that_predicts(tmp_path):
    result = run("import", FIXTURES / "torch_mlp_float32.onnx", tmp_path / "torch.json")
    assert result.exit_code == 0, result.output
    assert "float32, 4 inputs -> 3, Linear(4->8), Relu, Linear(8->6), Tanh, Linear(6->3), Softmax" in result.stderr
    record = json.loads((FIXTURES / "torch_mlp_outputs.json").read_text())["models"][0]
    assert record["file"] == "torch_mlp_float32.onnx"
    (tmp_path / "inputs.json").write_text(json.dumps(record["inputs"]))
    predicted = run("predict", tmp_path / "torch.json", tmp_path / "inputs.json")
    assert predicted.exit_code == 0, predicted.output
    np.testing.assert_allclose(json.loads(predicted.stdout), record["outputs"], rtol=0, atol=1e-6)


def test_import_refuses_an_unsupported_graph_naming_the_node(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "k"], ["y"], name="Conv_0")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])],
    )
    (tmp_path / "conv.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    result = run("import", tmp_path / "conv.onnx", tmp_path / "out.json")
    assert result.exit_code == 1
    assert f"{tmp_path / 'conv.onnx'}: cannot import it: node 'Conv_0' (Conv): unsupported op" in result.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(("command", "source", "message"), [
    ("export", "reserved.json", "reserved.json: cannot export it: metadata.minigrad.json_values: this key is "
                                "reserved for the ONNX export"),
    ("import", "missing.onnx", "missing.onnx: cannot read it: No such file or directory"),
    ("import", "model.json", "model.json: cannot import it: document: not an ONNX model"),
    ("export", "missing.json", "missing.json: cannot read it"),
    ("export", "model.onnx", "model.onnx: not a UTF-8 text file"),
])
def test_wrong_or_missing_files_are_refused_with_a_message(command, source, message, tmp_path):
    (tmp_path / "model.json").write_bytes((REPO / "models" / "xor.json").read_bytes())
    reserved = json.loads((REPO / "models" / "xor.json").read_text())
    reserved["metadata"][minigrad.onnx.JSON_VALUES_KEY] = []  # a valid document that ONNX metadata cannot carry
    (tmp_path / "reserved.json").write_text(json.dumps(reserved))
    minigrad.onnx.export(minigrad.load(REPO / "models" / "xor.json"), tmp_path / "model.onnx")
    result = run(command, tmp_path / source, tmp_path / "out")
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_without_onnx_the_commands_say_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from minigrad.cli import main\n"
            f"main(['export', {str(REPO / 'models' / 'xor.json')!r}, {str(tmp_path / 'x.onnx')!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install minigrad[onnx]" in result.stderr and "Traceback" not in result.stderr


def test_the_installed_command_lists_both(tmp_path):
    result = subprocess.run([str(EXECUTABLE), "--help"], capture_output=True, text=True, timeout=60)
    assert "minigrad export model.json model.onnx" in result.stdout
    assert "minigrad import model.onnx model.json" in result.stdout


@pytest.mark.parametrize(("command", "source"), [("export", REPO / "models" / "xor.json"),
                                                 ("import", FIXTURES / "torch_mlp_float64.onnx")])
def test_an_unwritable_output_is_refused_with_a_message(command, source, tmp_path):
    result = run(command, source, tmp_path / "no-such-directory" / "out")
    assert result.exit_code == 1
    assert "no-such-directory/out: cannot write it: No such file or directory" in result.output


def test_dash_is_standard_input_and_output_for_both(tmp_path):
    # '-' once wrote (and then read) a file named '-' in the working directory.
    source = (REPO / "models" / "iris.json").read_bytes()
    exported = subprocess.run([str(EXECUTABLE), "export", "-", "-"], input=source, capture_output=True,
                              cwd=tmp_path, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == minigrad.onnx.dumps(minigrad.load(REPO / "models" / "iris.json"))
    imported = subprocess.run([str(EXECUTABLE), "import", "-", "-"], input=exported.stdout, capture_output=True,
                              cwd=tmp_path, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == minigrad.dumps(minigrad.load(REPO / "models" / "iris.json")).encode()
    assert b"wrote standard output: float64, 4 inputs -> 3" in imported.stderr
    assert list(tmp_path.iterdir()) == []
