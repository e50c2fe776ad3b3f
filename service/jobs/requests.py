"""From a schema-valid POST /train body to what a job needs: arrays checked with numpy, shapes checked
against the model, limits applied, the starting model and the seed pinned down.

Every problem raises ``TrainingRequestError`` whose messages are keyed like marshmallow's
(``{"data": {"inputs": ["..."]}}``), so the client learns the field and what was expected.
"""

from __future__ import annotations

import secrets

import numpy as np
from marshmallow import ValidationError

from minigrad import Linear
from minigrad.format import finite_array

from ..errors import counted
from ..training import held_out_count
from .settings import JobLimits


class TrainingRequestError(ValueError):
    """``path`` (``"data.inputs"``) and a message, or marshmallow-style nested messages below that path."""

    def __init__(self, path: str, message):
        self.path, self.message = path, message
        super().__init__(_flatten(path, message))

    @property
    def messages(self) -> dict:
        """``"data.inputs"`` -> ``{"data": {"inputs": [message]}}``."""
        nested = [self.message] if isinstance(self.message, str) else self.message
        for part in reversed(self.path.split(".")):
            nested = {part: nested}
        return nested


def _flatten(path: str, message) -> str:
    """The first message, with its place: ``data.inputs[0][1]: expected a number, got true``."""
    while isinstance(message, dict):
        index, message = next(iter(message.items()))
        path += f"[{index}]"
    if isinstance(message, list):
        message = message[0]
    return f"{path}: {message}"


def _rows(values, path: str, dtype, allow_flat: bool) -> np.ndarray:
    """A rectangular, finite [n, width] array (or [n] when ``allow_flat``): one numpy pass, and the
    place of the first defect when there is one (``minigrad.format.finite_array``)."""
    ndim = 2 if not allow_flat or (isinstance(values, list) and values and isinstance(values[0], list)) else 1
    try:
        array = finite_array(values, ndim)
    except ValidationError as error:
        raise TrainingRequestError(path, error.messages) from None
    if array.ndim != ndim or array.size == 0:
        shape = "a list of rows, or a flat list" if allow_flat else "a non-empty list of rows (lists of numbers)"
        raise TrainingRequestError(path, f"expected {shape}; got an array of shape {list(array.shape)}")
    with np.errstate(over="ignore"):
        array = array.astype(dtype, copy=False)
    if not np.isfinite(array).all():
        raise TrainingRequestError(path, f"contains a number too large for {np.dtype(dtype).name}")
    return array


def _check_architecture(architecture: list[dict], limits: JobLimits) -> tuple[int, int]:
    """Linear sizes must chain; returns (input width, output width)."""
    if len(architecture) > limits.max_layers:
        raise TrainingRequestError("architecture", f"at most {limits.max_layers} layers "
                                                   f"(MINIGRAD_TRAIN_MAX_LAYERS), got {len(architecture)}")
    linears = [(i, layer) for i, layer in enumerate(architecture) if layer["type"] == "Linear"]
    if not linears:
        raise TrainingRequestError("architecture", "needs at least one Linear layer")
    for i, layer in linears:
        for key in ("in_features", "out_features"):
            if layer[key] > limits.max_layer_size:
                raise TrainingRequestError(f"architecture.{i}.{key}", f"at most {limits.max_layer_size} "
                                           f"(MINIGRAD_TRAIN_MAX_LAYER_SIZE), got {layer[key]}")
    for (_, previous), (i, layer) in zip(linears, linears[1:]):
        if layer["in_features"] != previous["out_features"]:
            raise TrainingRequestError(f"architecture.{i}.in_features", f"expected {previous['out_features']} "
                                       f"(the previous Linear's out_features), got {layer['in_features']}")
    return linears[0][1]["in_features"], linears[-1][1]["out_features"]


def _check_base_model(loaded, limits: JobLimits) -> None:
    """A registered model to fine-tune is held to the architecture's limits: they bound a job's compute."""
    where = f"model {loaded.name!r} version {loaded.version}"
    layers = loaded.model.layers
    widest = max((max(layer.in_features, layer.out_features) for layer in layers if isinstance(layer, Linear)),
                 default=0)
    _check_limits(
        ("model", len(layers), limits.max_layers, f"layers in {where}", "MAX_LAYERS"),
        ("model", widest, limits.max_layer_size, f"features per layer in {where}", "MAX_LAYER_SIZE"),
    )


def _pair(block: dict, path: str, n_inputs: int, n_outputs: int, loss: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    inputs = _rows(block["inputs"], f"{path}.inputs", dtype, allow_flat=False)
    if inputs.shape[1] != n_inputs:
        raise TrainingRequestError(f"{path}.inputs", f"expected rows of {counted(n_inputs, 'number')} (the model's "
                                                     f"input width), got {inputs.shape[1]}")
    targets = _rows(block["targets"], f"{path}.targets", np.float64, allow_flat=True)
    if len(targets) != len(inputs):
        raise TrainingRequestError(f"{path}.targets", f"expected {counted(len(inputs), 'row')} (one per input row), "
                                                      f"got {len(targets)}")
    if targets.ndim == 1 and loss == "cross_entropy":
        if not np.array_equal(targets, np.round(targets)) or targets.min() < 0 or targets.max() >= n_outputs:
            raise TrainingRequestError(f"{path}.targets", f"class indices must be whole numbers in [0, {n_outputs})")
        return inputs, targets.astype(np.intp)
    if targets.ndim == 1:
        targets = targets[:, np.newaxis]
    if targets.shape[1] != n_outputs:
        raise TrainingRequestError(f"{path}.targets", f"expected rows of {counted(n_outputs, 'number')} (the "
                                                      f"model's output width), got {targets.shape[1]}")
    if loss == "bce" and (targets.min() < 0 or targets.max() > 1):
        # Outside [0, 1] binary cross-entropy has no meaning (its loss goes negative) yet trains without a word.
        row, column = np.argwhere((targets < 0) | (targets > 1))[0]
        raise TrainingRequestError(f"{path}.targets", f"the bce loss needs targets between 0 and 1 (labels or "
                                                      f"probabilities); row {row} has {targets[row, column]:g}")
    return inputs, targets.astype(dtype)


# What bounds a layer's outputs, from what bounds its inputs: (never below 0, never above 1). Binary
# cross-entropy needs both at the end, which Sigmoid and Softmax give, but so do Relu after one of them,
# Tanh after Relu, Sigmoid or Softmax, and Relu after Tanh: the engine trains those without a complaint.
_BOUNDS_AFTER = {
    "Linear": lambda at_least_0, at_most_1: (False, False),
    "Sigmoid": lambda at_least_0, at_most_1: (True, True),
    "Softmax": lambda at_least_0, at_most_1: (True, True),
    "Tanh": lambda at_least_0, at_most_1: (at_least_0, True),  # in [-1, 1]; not negative from inputs that are not
    "Relu": lambda at_least_0, at_most_1: (True, at_most_1),  # not negative; at most 1 from inputs that are
}


def _check_ends_in_probabilities(architecture: list[dict] | None, loaded) -> None:
    """The bce loss needs predictions in [0, 1]: minigrad's BCELoss refuses others, so a model whose outputs can
    leave that range would be queued only to fail once they do, perhaps hours in."""
    if architecture is not None:
        types, field = [layer["type"] for layer in architecture], f"architecture.{len(architecture) - 1}.type"
        where = "the architecture ends"
    else:
        types, field = [type(layer).__name__ for layer in loaded.model.layers], "loss"
        where = f"model {loaded.name!r} version {loaded.version} ends"
    at_least_0 = at_most_1 = False
    for kind in types:
        # A layer type added later and not listed here is taken as bounding nothing, as Linear.
        at_least_0, at_most_1 = _BOUNDS_AFTER.get(kind, _BOUNDS_AFTER["Linear"])(at_least_0, at_most_1)
    if not (at_least_0 and at_most_1):
        raise TrainingRequestError(field, f"the bce loss takes probabilities, but {where} with {types[-1]}, whose "
                                          "outputs can leave [0, 1]; end with Sigmoid (or Softmax), or use the mse "
                                          "loss")


def _check_sizes(inputs: np.ndarray, path: str, limits: JobLimits) -> None:
    """The limits on one block of rows (``data`` or ``validation``): each is held in the queue message."""
    samples, features = inputs.shape
    _check_limits(
        (f"{path}.inputs", samples, limits.max_samples, "samples (rows)", "MAX_SAMPLES"),
        (f"{path}.inputs", features, limits.max_features, "features (columns)", "MAX_FEATURES"),
        (f"{path}.inputs", samples * features, limits.max_values, "values (rows x columns)", "MAX_VALUES"),
    )


def _check_epochs(samples: int, epochs: int, limits: JobLimits) -> None:
    _check_limits(
        ("epochs", epochs, limits.max_epochs, "epochs", "MAX_EPOCHS"),
        ("epochs", epochs * samples, limits.max_sample_epochs, "sample-epochs (epochs x rows, validation's too)",
         "MAX_SAMPLE_EPOCHS"),
    )


def _check_limits(*checks) -> None:
    for path, value, limit, what, name in checks:
        if value > limit:
            raise TrainingRequestError(path, f"at most {limit} {what} per job (MINIGRAD_TRAIN_{name}), got {value}")


def prepare_training(body: dict, limits: JobLimits, registry) -> tuple[dict, dict]:
    """``(summary, payload)``: the job's request as recorded (no data), and the task's argument."""
    if "architecture" in body:
        n_inputs, n_outputs = _check_architecture(body["architecture"], limits)
        dtype = np.dtype(body.get("dtype", "float64"))
        base = None
    else:
        loaded = registry.get(body["model"], body.get("version"))  # ModelNotFound / VersionNotFound: 404
        n_inputs, n_outputs, dtype = loaded.n_inputs, loaded.n_outputs, loaded.dtype
        base = {"name": loaded.name, "version": loaded.version}
        _check_base_model(loaded, limits)

    if body["loss"] == "bce":
        _check_ends_in_probabilities(body.get("architecture"), None if base is None else loaded)
    if "save_as" in body:  # else the job would train, then fail to register its model
        registry.check_storable(body["save_as"])  # ModelNameTaken: 409
    loss = body["loss"]
    inputs, targets = _pair(body["data"], "data", n_inputs, n_outputs, loss, dtype)
    _check_sizes(inputs, "data", limits)
    validation = None
    if "validation" in body:
        validation = _pair(body["validation"], "validation", n_inputs, n_outputs, loss, dtype)
        _check_sizes(validation[0], "validation", limits)
    # Every epoch also runs the validation rows through the model: they count towards the compute budget.
    _check_epochs(len(inputs) + (0 if validation is None else len(validation[0])), body["epochs"], limits)
    # The count the job will hold out (at least one row): rounding alone let a split of one row through.
    if body.get("validation_split") and held_out_count(len(inputs), body["validation_split"]) >= len(inputs):
        raise TrainingRequestError("validation_split", f"leaves no training rows out of {len(inputs)}")

    seed = body["seed"] if "seed" in body else secrets.randbits(63)
    spec = {
        "inputs": inputs,
        "targets": targets,
        "epochs": body["epochs"],
        "seed": seed,
        "loss": loss,
        "optimizer": body["optimizer"],
        "batch_size": body.get("batch_size"),
        "shuffle": body["shuffle"],
        "architecture": body.get("architecture"),
        "dtype": dtype.name,
        "validation": validation,
        "validation_split": body.get("validation_split"),
    }
    summary = {key: body[key] for key in body if key not in ("data", "validation")}
    summary.update(seed=seed, samples=len(inputs), features=n_inputs, outputs=n_outputs, dtype=dtype.name)
    if base:
        summary["version"] = base["version"]
    if validation is not None:
        summary["validation_samples"] = len(validation[0])
    payload = {"spec": spec, "base": base, "save_as": body.get("save_as")}
    return summary, payload
