"""The ``minigrad`` command: train, predict and validate model documents; run the server and the job consumer.

``train``, ``predict`` and ``validate`` use the library only. ``serve`` and ``worker`` replace this process
with gunicorn and the Huey consumer of the ``service`` package (installed with minigrad), so the library never
imports the web side and signals (Ctrl-C, ``docker stop``) reach the server itself.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

import click
import numpy as np
from marshmallow import ValidationError

from . import format as model_format
from .nn import Linear, NotProbabilities
from .tensor import Tensor, no_grad
from .training import DEFAULT_ALPHA, LOSSES, OPTIMIZERS, TrainingDiverged, fit

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# ---------------------------------------------------------------------- reading files


def _read_text(path: str) -> str:
    """The contents of ``path`` ('-' is standard input) without a leading byte-order mark, or a ClickException
    saying why not. Spreadsheets write CSV with a BOM, which would make the first cell of a file without a header
    a non-number, and so that row a header."""
    if path == "-":
        return sys.stdin.read().removeprefix("\ufeff")
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read it: {exc.strerror}") from None


def _parse_json(text: str, path: str):
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise click.ClickException(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except RecursionError:  # the json module recurses once per nested [ or {
        raise click.ClickException(f"{path}: nested too deeply; expected rows of numbers") from None


def _reject_constant(name):
    raise ValueError(f"{name} is not a number JSON allows; use finite numbers")


def _looks_like_json(path: str, text: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".csv"):
        return suffix == ".json"
    return text.lstrip()[:1] in ("[", "{")


def _read_csv(text: str, path: str) -> tuple[np.ndarray, list[str] | None]:
    """A CSV file of numbers as a 2-D float64 array, and its header (a first row without any number).

    A first row that mixes numbers and other text ("0,x", "0,1," with a trailing comma) is a defective row of
    data, refused naming the cell, not a header: taking it for one dropped a row of data without a word."""
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [(reader.line_num, row) for row in reader if any(row)]
    except csv.Error as exc:  # a cell longer than the csv module's limit (128 KiB)
        raise click.ClickException(f"{path}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise click.ClickException(f"{path}: no rows; expected comma-separated numbers")
    header = None
    if not any(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise click.ClickException(f"{path}: only a header row ({','.join(header)}); expected rows of "
                                       "comma-separated numbers below it")
    width = len(header) if header is not None else len(rows[0][1])
    values = []
    for line, row in rows:
        if len(row) != width:
            raise click.ClickException(f"{path}: line {line}: expected {width} columns, got {len(row)}")
        parsed = []
        for column, cell in enumerate(row, start=1):
            try:
                number = float(cell)
            except ValueError:
                what = "an empty cell (a trailing comma?)" if not cell.strip() else repr(cell)
                raise click.ClickException(f"{path}: line {line}, column {column}: {what} is not a number") from None
            if not math.isfinite(number):
                raise click.ClickException(f"{path}: line {line}, column {column}: {cell!r} is not a finite number")
            parsed.append(number)
        values.append(parsed)
    return np.array(values, dtype=np.float64), header


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _as_matrix(value, where: str) -> np.ndarray:
    """JSON rows of numbers as a 2-D float64 array (a flat list is one row), checked by the format's own
    one-pass numpy check, which names the first bad element."""
    if isinstance(value, list) and value and not isinstance(value[0], list):
        value = [value]
    try:
        array = model_format.finite_array(value, 2)
    except ValidationError as exc:
        messages = exc.messages
        while isinstance(messages, dict):  # {1: {0: ["expected a number, got true"]}} -> [1][0]: ...
            index, messages = next(iter(messages.items()))
            where += f"[{index}]"
        raise click.ClickException(f"{where}: {messages[0]}") from None
    if array.ndim != 2 or array.size == 0:
        raise click.ClickException(f"{where}: expected a non-empty list of rows of numbers")
    return array


def _check_range(array: np.ndarray, dtype: np.dtype, where: str):
    """Refuse values a float32 model cannot take: the cast would make them inf, and the run would end in a
    misleading 'training diverged' or an output 'overflow'."""
    beyond = np.abs(array) > np.finfo(dtype).max
    if beyond.any():
        row, column = np.argwhere(beyond)[0]
        value = float(array[row, column])
        raise click.ClickException(f"{where}: row {row + 1}, column {column + 1}: {value!r} is out of the range of "
                                   f"{np.dtype(dtype).name}, the model's dtype")


# ---------------------------------------------------------------------- models


def _load_model(path: str):
    text = _read_text(path)
    try:
        return model_format.loads(text)
    except model_format.ModelFormatError as exc:
        raise click.ClickException(f"{path}: not a valid model document: {exc}") from None


def _model_width(model) -> tuple[int, int]:
    """The numbers of inputs and outputs (the format guarantees a model at least one Linear layer)."""
    linears = [layer for layer in model.layers if isinstance(layer, Linear)]
    return linears[0].in_features, linears[-1].out_features


_ARCHITECTURE_KEYS = ("layers", "dtype", "metadata")


def _build_from_architecture(spec, path: str, rng: np.random.Generator):
    """A model with fresh weights (He initialization, seeded) from layer specs without weights.

    ``spec`` is a list of layer specs or ``{"layers": [...], "dtype": ..., "metadata": ...}``. The completed
    document goes through the format's own loader, so every defect is reported as ``layers[i].field``.
    """
    if isinstance(spec, list):
        spec = {"layers": spec}
    for key in spec:  # as the model document does: a misspelt "dtpye" was ignored, and the model trained as float64
        if key not in _ARCHITECTURE_KEYS:
            known = ", ".join(_ARCHITECTURE_KEYS)
            raise click.ClickException(f"{path}: {key}: unknown field; an architecture has {known}")
    if not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise click.ClickException(f"{path}: layers: expected a non-empty list of layer specs")
    dtype = spec.get("dtype", "float64")
    if dtype not in ("float32", "float64"):
        raise click.ClickException(f"{path}: dtype: expected float32 or float64, got {dtype!r}")
    layers = []
    for index, layer in enumerate(spec["layers"]):
        if not isinstance(layer, dict):
            raise click.ClickException(f"{path}: layers[{index}]: expected an object like {{\"type\": \"Tanh\"}}")
        layer = dict(layer)
        if layer.get("type") == "Linear" and "weight" not in layer:
            for key in ("in_features", "out_features"):
                value = layer.get(key)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise click.ClickException(f"{path}: layers[{index}].{key}: expected a positive integer")
            try:
                fresh = Linear(layer["in_features"], layer["out_features"], rng=rng, dtype=np.dtype(dtype))
            except (MemoryError, ValueError):  # numpy's ValueError: more values than an array can ever hold
                raise click.ClickException(
                    f"{path}: layers[{index}]: {layer['in_features']} x {layer['out_features']} {dtype} weights "
                    "do not fit in this machine's memory") from None
            layer["weight"] = fresh.weight.data.tolist()
            layer["bias"] = fresh.bias.data.tolist()
        layers.append(layer)
    document = {
        "format": "minigrad.sequential",
        "version": 1,
        "dtype": dtype,
        "layers": layers,
        # Absent or null is none; anything else goes to the format's loader, which checks that it is an object.
        "metadata": {} if spec.get("metadata") is None else spec["metadata"],
    }
    try:
        return model_format.from_dict(document)
    except model_format.ModelFormatError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _model_or_architecture(path: str, rng: np.random.Generator):
    """``path`` holds either a model document (trained further) or an architecture (fresh weights)."""
    text = _read_text(path)
    document = _parse_json(text, path)
    if isinstance(document, dict) and "format" in document:
        try:  # the format's own reader, as predict and validate use: it also refuses repeated keys
            return model_format.loads(text)
        except model_format.ModelFormatError as exc:
            raise click.ClickException(f"{path}: not a valid model document: {exc}") from None
    if isinstance(document, list | dict):
        return _build_from_architecture(document, path, rng)
    raise click.ClickException(f"{path}: expected a model document or an architecture (a list of layer specs)")


# ---------------------------------------------------------------------- data sets


def _training_data(path: str, n_inputs: int, n_outputs: int, labels: bool):
    """Inputs, targets and the column names (or None) from a CSV or JSON file."""
    text = _read_text(path)
    if _looks_like_json(path, text):
        document = _parse_json(text, path)
        if not isinstance(document, dict) or "inputs" not in document or "targets" not in document:
            raise click.ClickException(f"{path}: expected an object {{\"inputs\": [[...]], \"targets\": [[...]]}}")
        inputs = _as_matrix(document["inputs"], f"{path}: inputs")
        raw = document["targets"]
        if isinstance(raw, list) and raw and not isinstance(raw[0], list):
            # A flat list is one target per row, as POST /train reads it: class labels, or a single output.
            raw = [[target] for target in raw]
        targets = _as_matrix(raw, f"{path}: targets")
        if len(targets) != len(inputs):
            raise click.ClickException(f"{path}: inputs has {len(inputs)} rows but targets has {len(targets)}")
        names = None
    else:
        table, names = _read_csv(text, path)
        inputs, targets = table[:, :n_inputs], table[:, n_inputs:]
    if inputs.shape[1] != n_inputs:
        raise click.ClickException(f"{path}: the model takes {n_inputs} inputs per row, the data has {inputs.shape[1]}")
    target_widths = {1, n_outputs} if labels else {n_outputs}
    if targets.shape[1] not in target_widths:
        expected = f"1 (class labels) or {n_outputs} (one-hot)" if labels else str(n_outputs)
        raise click.ClickException(
            f"{path}: expected {expected} target column(s) after the {inputs.shape[1]} input columns, "
            f"got {targets.shape[1]}"
        )
    if labels and targets.shape[1] == 1:
        targets = targets[:, 0]
    return inputs, targets, names


def _prediction_inputs(path: str, n_inputs: int) -> np.ndarray:
    text = _read_text(path)
    if _looks_like_json(path, text):
        document = _parse_json(text, path)
        if isinstance(document, dict):
            if "inputs" not in document:
                raise click.ClickException(f"{path}: expected rows of numbers or an object {{\"inputs\": [[...]]}}")
            document = document["inputs"]
        inputs = _as_matrix(document, f"{path}: inputs")
    else:
        inputs, _ = _read_csv(text, path)
    if inputs.shape[1] != n_inputs:
        raise click.ClickException(f"{path}: the model takes {n_inputs} inputs per row, the data has {inputs.shape[1]}")
    return inputs


# ---------------------------------------------------------------------- commands


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="minigrad", prog_name="minigrad")
def main():
    """Train, run and check minigrad models; serve them over HTTP.

    \b
    minigrad train net.json data.csv -o model.json     train a model (architecture or model + data)
    minigrad predict model.json inputs.csv             run a model on rows of inputs
    minigrad validate model.json                       check a model document
    minigrad export model.json model.onnx              write a model as ONNX (needs minigrad[onnx])
    minigrad import model.onnx model.json              read a PyTorch / scikit-learn / minigrad ONNX MLP
    minigrad serve                                     the HTTP service (gunicorn) and a job consumer
    minigrad worker                                    the training-job consumer (Huey)
    """


def _finite(ctx, param, value):
    """A click callback: FloatRange lets nan and inf through (comparisons with nan are all false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _check_output_directory(output: str):
    """Refuse an output in a directory that is not there before the work (training can take hours), not after."""
    if not output:
        raise click.BadParameter("an empty path; give the file to write", param_hint="'-o' / '--output'")
    directory = os.path.dirname(output) or "."
    if not os.path.isdir(directory):
        raise click.ClickException(f"{output}: cannot write it: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise click.ClickException(f"{output}: cannot write it: the directory {directory} is not writable")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model_or_architecture", metavar="MODEL_OR_ARCHITECTURE", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              help="Where to write the trained model document ('-': standard output).")
@click.option("--loss", type=click.Choice(sorted(LOSSES)), default="mse", show_default=True,
              help="mse for regression, bce for probabilities after a Sigmoid, cross_entropy on logits.")
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default="sgd", show_default=True)
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=None, callback=_finite,
              help="Learning rate  [default: 0.1 for sgd, 0.001 for adam]")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              callback=_finite, help="SGD momentum.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per step  [default: all rows]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Seeds the fresh weights and the shuffling; the same seed gives the same model bit for bit  "
                   "[default: random, recorded in the model's metadata]")
def train(model_or_architecture, data, output, loss, optimizer, alpha, momentum, epochs, batch_size, seed):
    """Train a model on DATA and write the result to --output.

    MODEL_OR_ARCHITECTURE is a file: a model document (training continues from its weights) or an
    architecture, a JSON list of layer specs without weights, e.g.
    [{"type": "Linear", "in_features": 2, "out_features": 3}, {"type": "Tanh"},
    {"type": "Linear", "in_features": 3, "out_features": 1}, {"type": "Sigmoid"}]
    (or {"layers": [...], "dtype": "float32"}).

    DATA is a CSV file whose first columns are the inputs and whose remaining columns are the targets (one
    column of class labels with --loss cross_entropy; a first row of names is optional), or a JSON file
    {"inputs": [[...]], "targets": [[...]]} (a flat list of targets is one per row, as POST /train reads it).
    """
    if optimizer != "sgd" and momentum:
        raise click.BadParameter("only the sgd optimizer takes a momentum", param_hint="'--momentum'")
    if output != "-":
        _check_output_directory(output)
    if seed is None:
        seed = secrets.randbits(63)  # recorded in the model's metadata, so the run can be repeated
    # The same streams as the service's training jobs (service/training.py): the same data, settings
    # and seed give the same model bit for bit from `minigrad train` and from POST /train.
    init_seed, _split_seed, shuffle_seed = np.random.SeedSequence(seed).spawn(3)
    model = _model_or_architecture(model_or_architecture, np.random.default_rng(init_seed))
    n_inputs, n_outputs = _model_width(model)
    loss_fn = LOSSES[loss]()
    inputs, targets, names = _training_data(data, n_inputs, n_outputs, labels=loss == "cross_entropy")
    dtype = model.get_parameters()[0].data.dtype
    _check_range(inputs, dtype, f"{data}: inputs")
    _check_range(targets.reshape(len(targets), -1), dtype, f"{data}: targets")
    alpha = DEFAULT_ALPHA[optimizer] if alpha is None else alpha
    options = {"alpha": alpha, "momentum": momentum} if optimizer == "sgd" else {"alpha": alpha}
    opt = OPTIMIZERS[optimizer](model.get_parameters(), **options)

    started = time.perf_counter()
    progress = click.progressbar(length=epochs, label="training", file=sys.stderr,
                                 item_show_func=lambda record: record and f"loss {record['loss']:.6g}")
    # Overflow on the way to a NaN loss is reported once, as TrainingDiverged, not as numpy warnings.
    with progress as bar, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            history = fit(model, inputs, targets, loss_fn, opt, epochs, batch_size=batch_size, seed=shuffle_seed,
                          callback=lambda record: bar.update(1, record))
        except TrainingDiverged as exc:
            raise click.ClickException(f"training diverged, nothing written: {exc}") from None
        except NotProbabilities as exc:  # --loss bce on a model without a Sigmoid last
            raise click.ClickException(f"{model_or_architecture}: {exc}") from None
        except ValueError as exc:
            raise click.ClickException(f"{data}: {exc}") from None
    seconds = time.perf_counter() - started

    metadata = dict(model.metadata)
    if names is not None and "inputs" not in metadata:
        metadata["inputs"] = names[:n_inputs]
        if targets.ndim == 2:  # a column of class labels is not one name per output
            metadata["outputs"] = names[n_inputs:]
    metadata["training"] = {
        "loss": loss,
        "optimizer": {"type": optimizer, **options},
        "epochs": epochs,
        "batch_size": min(batch_size or len(inputs), len(inputs)),  # the rows per step, not the request
        "seed": seed,
        "samples": len(inputs),
        "final_loss": history[-1]["loss"],
    }
    model.metadata = metadata
    click.echo(f"trained {len(history)} epochs on {len(inputs)} rows in {seconds:.2f} s, "
               f"final loss {history[-1]['loss']:.6g}", err=True)
    _write_model(model_format.save, model_format.dumps, model, output)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, allow_dash=True), default="-",
              help="Where to write the outputs  [default: standard output]")
@click.option("--format", "output_format", type=click.Choice(["json", "csv"]), default=None,
              help="Output format  [default: from the --output file's extension, else json]")
def predict(model, inputs, output, output_format):
    """Run MODEL on the rows of INPUTS and print one row of outputs per row of inputs.

    INPUTS is a CSV file (one row of numbers per sample, a first row of names is optional), a JSON list of
    rows, a JSON object {"inputs": [[...]]}, or '-' for standard input. Outputs are JSON rows of numbers
    (exact: they read back as the same floats) or CSV with a header row.
    """
    loaded = _load_model(model)
    n_inputs, _ = _model_width(loaded)
    array = _prediction_inputs(inputs, n_inputs)
    dtype = loaded.get_parameters()[0].data.dtype  # the format guarantees a Linear layer
    _check_range(array, dtype, f"{inputs}: inputs")
    with no_grad():
        outputs = loaded(Tensor(array.astype(dtype, copy=False))).data
    rows = outputs.astype(np.float64).tolist()

    if output_format is None:
        output_format = "csv" if Path(output).suffix.lower() == ".csv" else "json"
    if output_format == "json" and not np.isfinite(outputs).all():  # json.dumps would write Infinity: not JSON
        row, column = np.argwhere(~np.isfinite(outputs))[0]
        raise click.ClickException(f"row {row + 1}, output {column + 1}: the model computed {outputs[row, column]} "
                                   "(an overflow), which JSON cannot carry; use --format csv to write it")
    try:
        with click.open_file(output, "w", encoding="utf-8", atomic=output != "-") as file:
            if output_format == "json":
                file.write("[" + ",\n ".join(json.dumps(row) for row in rows) + "]\n")
            else:
                names = loaded.metadata.get("outputs")
                if not (isinstance(names, list) and len(names) == outputs.shape[1]):
                    names = [f"output_{i}" for i in range(outputs.shape[1])]
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(names)
                writer.writerows([repr(value) for value in row] for row in rows)
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write it: {exc.strerror}") from None


@main.command(context_settings=CONTEXT_SETTINGS)
# A directory (models/* takes in models/__pycache__) is one more bad file in the report, not a usage error that
# stops the check of every other file.
@click.argument("models", nargs=-1, required=True, type=click.Path(allow_dash=True))
def validate(models):
    """Check model documents; print each defect with its location.

    Exits with 0 when every file is a valid model document (and prints a summary of each), 1 otherwise.
    """
    failed = False
    for path in models:
        try:
            model = model_format.loads(_read_text(path))
        except click.ClickException as exc:
            click.echo(exc.format_message())
            failed = True
            continue
        except model_format.ModelFormatError as exc:
            for location, message in exc.errors:
                click.echo(f"{path}: {location}: {message}")
            failed = True
            continue
        summary = model_format.document_summary(model)
        outputs = "output" if summary["outputs"] == 1 else "outputs"
        click.echo(f"{path}: valid, {summary['dtype']}, {summary['inputs']} inputs -> {summary['outputs']} {outputs}: "
                   + ", ".join(summary["layers"]))
    sys.exit(1 if failed else 0)


def _onnx_interop():
    """minigrad.onnx, or a ClickException saying how to install the onnx package it needs."""
    try:
        from . import onnx as onnx_interop
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    return onnx_interop


def _write_model(save, dumps, model, output: str):
    """``save(model, output)`` (both savers are atomic: a reader never sees half a file), or ``dumps(model)`` to
    standard output for '-'; then say what was written on standard error."""
    try:
        if output == "-":
            data = dumps(model)
            if isinstance(data, bytes) and sys.stdout.isatty():
                raise click.ClickException("-: standard output is a terminal; redirect the ONNX bytes to a file or "
                                           "a pipe, or name the output file")
            with click.open_file("-", "wb") as stream:
                stream.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        else:
            save(model, output)
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write it: {exc.strerror}") from None
    summary = model_format.document_summary(model)
    click.echo(f"wrote {'standard output' if output == '-' else output}: {summary['dtype']}, "
               f"{summary['inputs']} inputs -> {summary['outputs']}, " + ", ".join(summary["layers"]), err=True)


@main.command("export", context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("output", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
def export_onnx(model, output):
    """Write the model document MODEL as the ONNX file OUTPUT ('-' for either: standard input or output).

    The graph is Gemm per Linear plus its activations, with a dynamic batch dimension, in the model's dtype;
    the metadata becomes ONNX metadata properties. Needs the onnx package (pip install minigrad[onnx]).
    """
    onnx_interop = _onnx_interop()
    loaded = _load_model(model)
    try:
        _write_model(onnx_interop.export, onnx_interop.dumps, loaded, output)
    except model_format.ModelFormatError as exc:  # a valid document ONNX cannot carry (a reserved metadata key)
        raise click.ClickException(f"{model}: cannot export it: {exc}") from None


@main.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("onnx_file", metavar="MODEL_ONNX", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("output", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
def import_onnx(onnx_file, output):
    """Read the ONNX file MODEL_ONNX and write it as the model document OUTPUT ('-' for either: standard input or
    output).

    Reads dense MLPs: what minigrad export writes, and what torch.onnx.export and skl2onnx produce for
    nn.Sequential of Linear and activations and for MLPClassifier / MLPRegressor (a classifier's probabilities
    become the outputs). Any other graph is refused naming the node. Needs the onnx package.
    """
    onnx_interop = _onnx_interop()
    try:
        if onnx_file == "-":  # weights in external data files need the model's own directory: a path only
            with click.open_file("-", "rb") as stream:
                loaded = onnx_interop.loads(stream.read())
        else:
            loaded = onnx_interop.load(onnx_file)
    except OSError as exc:
        raise click.ClickException(f"{onnx_file}: cannot read it: {exc.strerror}") from None
    except model_format.ModelFormatError as exc:
        raise click.ClickException(f"{onnx_file}: cannot import it: {exc}") from None
    _write_model(model_format.save, model_format.dumps, loaded, output)


def _exec(argv: list[str]):
    """Replace this process with ``argv``, so that signals and the exit status are the program's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _require_module(name: str, what: str):
    if importlib.util.find_spec(name.partition(".")[0]) is None or importlib.util.find_spec(name) is None:
        raise click.ClickException(f"{what} is not installed (module {name} is missing); reinstall minigrad")


_PROJECT_CONF = "gunicorn.conf.py"  # in the working directory: the project's root, or /app in the image
_PACKAGED_CONF = "python:service.gunicorn_config"  # the same settings, from the installed package


@main.command(context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="gunicorn settings file  [default: ./gunicorn.conf.py when there is one (the project's, "
                   "/app in the image), else the same settings from the installed package]")
@click.option("--host", default=None, help="Interface to listen on  [default: the config's, 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="[default: $PORT or 8000]")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="gunicorn worker processes.")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None, help="Sets MINIGRAD_MODEL_DIR.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Sets MINIGRAD_DATA_DIR.")
@click.option("--consumer/--no-consumer", default=True, show_default=True,
              help="Also run a training-job consumer, started and stopped with gunicorn (as make serve does).")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(config_path, host, port, workers, model_dir, data_dir, consumer, gunicorn_args):
    """Run the HTTP service under gunicorn with the project's configuration, and a training-job consumer.

    Ctrl-C or SIGTERM stops both: requests in flight finish, a running job goes back in the queue. With
    --no-consumer only gunicorn runs (consumers elsewhere: minigrad worker). Further arguments go to gunicorn
    unchanged, e.g. minigrad serve -- --timeout 120.
    """
    _require_module("service.serve" if consumer else "service", "the HTTP service")
    if config_path is None:
        config = os.path.abspath(_PROJECT_CONF) if os.path.isfile(_PROJECT_CONF) else _PACKAGED_CONF
    elif os.path.isfile(config_path):
        config = os.path.abspath(config_path)
    else:
        raise click.BadParameter(f"{config_path!r} is not a file; give the path of a gunicorn settings file, or "
                                 "leave --config out to use the project's", param_hint="'--config'")
    if model_dir is not None:
        os.environ["MINIGRAD_MODEL_DIR"] = os.path.abspath(model_dir)
    if data_dir is not None:
        os.environ["MINIGRAD_DATA_DIR"] = os.path.abspath(data_dir)
    # service.serve passes its arguments to gunicorn; a second --config overrides the one it starts with.
    runner = "service.serve" if consumer else "gunicorn"
    argv = [sys.executable, "-m", runner, "--config", config]
    if host is not None or port is not None:
        argv += ["--bind", f"{host or '127.0.0.1'}:{port or os.environ.get('PORT', '8000')}"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    _exec([*argv, *gunicorn_args])


# --help too goes to the consumer, which documents its own options.
@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("worker_args", nargs=-1, type=click.UNPROCESSED)
def worker(worker_args):
    """Run the training-job consumer (Huey) for the backend the environment names.

    SQLite under MINIGRAD_DATA_DIR by default; Redis when MINIGRAD_REDIS_URL is set, which is how several
    machines share one queue. Every argument goes to the consumer: see minigrad worker --help.
    """
    _require_module("service.worker", "the job consumer")
    _exec([sys.executable, "-m", "service.worker", *worker_args])
