"""The training loop: mini-batch SGD over numpy data, with per-epoch history and a stop hook."""

from __future__ import annotations

import math
import numbers
import time

import numpy as np

from .nn import BCELoss, CrossEntropyLoss, MSELoss, NotProbabilities
from .optim import SGD, Adam, Optimizer
from .tensor import Tensor, _add_reduce, _constant, _whole_numbers, is_grad_enabled, no_grad

__all__ = ["fit", "evaluate", "TrainingDiverged", "LOSSES", "OPTIMIZERS", "DEFAULT_ALPHA"]

# Losses and optimizers by the names that `minigrad train` and the service's POST /train accept. MSE is
# averaged there, so that a learning rate does not have to shrink as the data set grows.
LOSSES = {"mse": lambda: MSELoss(reduction="mean"), "bce": BCELoss, "cross_entropy": CrossEntropyLoss}
OPTIMIZERS = {"sgd": SGD, "adam": Adam}
DEFAULT_ALPHA = {"sgd": 0.1, "adam": 0.001}


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite; the model's weights are no longer meaningful."""


def _model_dtype(model):
    params = model.get_parameters()
    return params[0].data.dtype if params else np.dtype(np.float64)


def _as_array(values, name, dtype=None) -> np.ndarray:
    data = values.data if isinstance(values, Tensor) else values
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a rectangular array of numbers ({exc})") from None
    if array.ndim == 0 or len(array) == 0:
        raise ValueError(f"{name}: expected at least one sample")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return array


def _targets_array(values, name, loss, dtype) -> np.ndarray:
    """Targets as an array: class labels (still unchecked against the number of classes) stay whole
    numbers for ``CrossEntropyLoss``, anything else takes the model's dtype."""
    array = _as_array(values, name)
    if isinstance(loss, CrossEntropyLoss) and array.ndim == 1:
        if array.dtype.kind == "f" and not _whole_numbers(array):  # finite already (_as_array)
            raise ValueError(f"{name}: class labels must be whole numbers")
        return array
    if isinstance(loss, BCELoss) and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name}: BCELoss needs targets in [0, 1], got values from {array.min()} to {array.max()}")
    return array.astype(dtype, copy=False)


def _count(value, name) -> int:
    """``value`` as a whole number of at least 1; ``2.5``, ``True`` or ``"3"`` are refused, not truncated."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, float, np.floating)):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    count = int(value)
    if count < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return count


def _check_model(model):
    if not callable(model) or not callable(getattr(model, "get_parameters", None)):
        raise TypeError(f"model: expected a minigrad Layer (e.g. Sequential), got {type(model).__name__}")


def _check_setup(model, loss, optimizer, callback):
    _check_model(model)
    if not callable(loss):
        raise TypeError(f"loss: expected a loss such as minigrad.MSELoss(), got {type(loss).__name__}")
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"optimizer: expected an optimizer such as minigrad.SGD, got {type(optimizer).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function of the epoch's record, got {type(callback).__name__}")
    params = model.get_parameters()
    if not any(p.autograd for p in params):
        raise ValueError("model: it has no parameter with autograd=True, so there is nothing to train")
    if not is_grad_enabled():
        raise RuntimeError("fit: gradient recording is off (fit was called inside no_grad())")
    if isinstance(optimizer, Optimizer):
        # Else every step would update other tensors while the model's gradients pile up unseen.
        mine = {id(p) for p in params}
        if not any(id(p) in mine for p in optimizer.parameters):
            raise ValueError("optimizer: it updates none of the model's parameters "
                             "(make it from this model's get_parameters())")


def _probe(model, loss, x, y, inputs_name, targets_name):
    """The loss of the first sample, recording nothing: shape mismatches between the data, the model and
    the loss surface here, naming the data at fault, before any weight has changed. Returns the prediction."""
    with no_grad():
        try:
            pred = model(_constant(x[:1]))
        except ValueError as exc:
            raise ValueError(f"{inputs_name}: {exc}") from None
        labels = isinstance(loss, CrossEntropyLoss) and y.ndim == 1
        try:
            # Labels are checked against the number of classes by _labels, over all of them.
            loss(pred, _constant(np.zeros(1, np.intp) if labels else y[:1]))
        except NotProbabilities as exc:  # the model's outputs are at fault, not the targets
            raise NotProbabilities(f"model: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{targets_name}: {exc}") from None
    return pred.data


def _labels(y, name, loss, pred) -> np.ndarray:
    """Class labels for CrossEntropyLoss checked against the model's number of outputs, as indices."""
    if not (isinstance(loss, CrossEntropyLoss) and y.ndim == 1):
        return y
    classes = pred.shape[-1]
    low, high = y.min(), y.max()
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"{name}: class label {bad} is out of range; the model has {classes} outputs, "
                         f"so labels must lie in [0, {classes - 1}]")
    return y.astype(np.intp)


def _check_finite(record, model):
    """TrainingDiverged if the epoch's record or the weights hold NaN or infinity. Each batch loss was finite,
    but their sum can overflow, the last step can still overflow the weights, and the validation data can
    overflow a sane model: none of it may reach the history (JSON has no Infinity) or pass as trained."""
    epoch = record["epoch"]
    for key in ("loss", "val_loss"):
        if key in record and not math.isfinite(record[key]):
            raise TrainingDiverged(f"epoch {epoch}: {key} became {record[key]}; "
                                   "try a smaller learning rate (alpha) or normalized inputs")
    for i, p in enumerate(model.get_parameters()):
        if not np.isfinite(p.data).all():
            raise TrainingDiverged(f"epoch {epoch}: parameter {i} (of get_parameters()) became NaN or infinite; "
                                   "try a smaller learning rate (alpha) or normalized inputs")


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _accuracy(loss, pred: np.ndarray, target: np.ndarray):
    if isinstance(loss, CrossEntropyLoss):
        labels = target if target.ndim == 1 else target.argmax(axis=1)
        return float((pred.argmax(axis=1) == labels).mean())
    if isinstance(loss, BCELoss):
        return float(((pred > 0.5) == (target > 0.5)).mean())
    return None


def _data(model, loss, inputs, targets, dtype, name=""):
    """``inputs`` and ``targets`` as checked arrays ready for ``model`` and ``loss`` (``name`` prefixes the
    messages, e.g. "validation ")."""
    x = _as_array(inputs, f"{name}inputs").astype(dtype, copy=False)
    y = _targets_array(targets, f"{name}targets", loss, dtype)
    if len(x) != len(y):
        raise ValueError(f"{name}inputs has {len(x)} samples but targets has {len(y)}")
    pred = _probe(model, loss, x, y, f"{name}inputs", f"{name}targets")
    return x, _labels(y, f"{name}targets", loss, pred)


def _evaluate(model, x: np.ndarray, y: np.ndarray, loss):
    with no_grad():
        pred = model(_constant(x))
        value = float(loss(pred, _constant(y)).data.sum())
    return value, _accuracy(loss, pred.data, y)


def evaluate(model, inputs, targets, loss):
    """Loss (summed to a scalar) and, for classification losses, accuracy, without recording a graph.

    ``inputs`` and ``targets`` are checked as ``fit`` checks them (numpy arrays, nested lists or Tensors).
    """
    _check_model(model)
    x, y = _data(model, loss, inputs, targets, _model_dtype(model))
    return _evaluate(model, x, y, loss)


def fit(
    model,
    inputs,
    targets,
    loss,
    optimizer,
    epochs,
    batch_size=None,
    shuffle=True,
    seed=None,
    validation=None,
    callback=None,
):
    """Train ``model`` in place and return its history, one dict per epoch.

    Each record has ``epoch`` (1-based), ``loss`` (mean over the epoch's batches of the batch loss
    summed to a scalar), ``seconds``, and with ``validation=(inputs, targets)`` also ``val_loss``
    and, for ``BCELoss``/``CrossEntropyLoss``, ``val_accuracy``. ``callback(record)`` runs after
    each epoch; returning ``False`` stops training. Shuffling uses ``numpy.random.default_rng(seed)``,
    so the same seed, data and initial weights give bit-identical weights.

    Raises ``TrainingDiverged`` as soon as a batch loss is NaN or infinite.
    """
    # Everything is checked before the first step: a bad argument leaves the model as it was.
    _check_setup(model, loss, optimizer, callback)
    dtype = _model_dtype(model)
    x, y = _data(model, loss, inputs, targets, dtype)
    n = len(x)
    epochs = _count(epochs, "epochs")
    batch = n if batch_size is None else _count(batch_size, "batch_size")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"validation: expected a pair (inputs, targets), got {_describe(validation)}")
        val_x, val_y = _data(model, loss, *validation, dtype, "validation ")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed: expected None or a non-negative integer ({exc})") from None
    # Gradients left from before (a backward run by hand, a loop interrupted before its step) would
    # otherwise be added into the first step's: each step must see its own batch's gradient only.
    for p in model.get_parameters():
        p.grad = None
    history = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(n) if shuffle else None
        total = 0.0
        batches = 0
        for start in range(0, n, batch):
            if order is None:
                xb, yb = x[start : start + batch], y[start : start + batch]
            else:
                index = order[start : start + batch]
                xb, yb = x[index], y[index]
            value = loss(model(_constant(xb)), _constant(yb))
            batch_loss = float(_add_reduce(value.data, None))
            if not math.isfinite(batch_loss):
                raise TrainingDiverged(
                    f"epoch {epoch}, batch {batches + 1}: loss became {batch_loss}; "
                    "try a smaller learning rate (alpha) or normalized inputs"
                )
            value.backward()
            optimizer.step()
            total += batch_loss
            batches += 1
        record = {"epoch": epoch, "loss": total / batches}
        if validation is not None:
            val_loss, val_accuracy = _evaluate(model, val_x, val_y, loss)
            record["val_loss"] = val_loss
            if val_accuracy is not None:
                record["val_accuracy"] = val_accuracy
        _check_finite(record, model)
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if callback is not None and callback(record) is False:
            break
    return history
