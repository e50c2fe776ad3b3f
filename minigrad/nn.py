"""Layers and losses, with the course notes' API: ``forward``, ``get_parameters``, ``__call__``."""

from __future__ import annotations

import functools
import numbers

import numpy as np

from .tensor import (
    Tensor,
    _add_reduce,
    _constant,
    _constants,
    _linear_input_error,
    _node,
    _records,
    _whole_numbers,
    linear,
    linear_array,
    no_grad,
)

__all__ = [
    "Layer",
    "Linear",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Softmax",
    "Sequential",
    "MSELoss",
    "BCELoss",
    "CrossEntropyLoss",
]


class Layer:
    """Base of every layer: holds its parameters; calling a layer is ``forward``."""

    def __init__(self):
        self.parameters = []

    def get_parameters(self):
        return self.parameters

    def forward(self, *inputs):
        raise NotImplementedError

    def __call__(self, *inputs):
        try:
            return self.forward(*inputs)
        except AttributeError:
            # An ndarray or a list has no .tanh() or .data as a Tensor does: say so, not which attribute.
            if all(isinstance(x, Tensor) for x in inputs):
                raise
            kinds = ", ".join(type(x).__name__ for x in inputs)
            raise TypeError(f"{type(self).__name__}: expected Tensor inputs, got {kinds} "
                            "(wrap the data in Tensor(...))") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Layer):
    """``input.mm(weight) + bias`` with ``weight`` of shape [n_inputs, n_outputs].

    Weights start as normal * sqrt(2 / n_inputs) (He initialization, as in the course notes),
    drawn from numpy's global RNG unless ``rng`` (a ``numpy.random.Generator``) is given; the
    bias starts at zero.
    """

    def __init__(self, n_inputs, n_outputs, rng=None, dtype=np.float64):
        super().__init__()
        for name, size in (("n_inputs", n_inputs), ("n_outputs", n_outputs)):
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral):
                raise TypeError(f"Linear: {name} must be an integer, got {size!r}")  # 2.5 was truncated to 2
        n_inputs, n_outputs = int(n_inputs), int(n_outputs)
        if n_inputs < 1 or n_outputs < 1:
            raise ValueError(f"Linear({n_inputs}, {n_outputs}): sizes must be positive")
        if np.dtype(dtype).kind != "f":  # an integer dtype truncated the initial weights to 0 and +-1
            raise TypeError(f"Linear: dtype must be a floating-point type, got {np.dtype(dtype)}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"Linear: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if rng is None:
            w = np.random.randn(n_inputs, n_outputs)
        else:
            w = rng.standard_normal((n_inputs, n_outputs))
        w *= np.sqrt(2.0 / n_inputs)
        self.weight = Tensor(w.astype(dtype, copy=False), autograd=True)
        self.bias = Tensor(np.zeros(n_outputs, dtype=dtype), autograd=True)
        self.parameters.append(self.weight)
        self.parameters.append(self.bias)

    @property
    def in_features(self) -> int:
        return self.weight.data.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.data.shape[1]

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"


class Tanh(Layer):
    def forward(self, input):
        return input.tanh()


class Sigmoid(Layer):
    def forward(self, input):
        return input.sigmoid()


class Relu(Layer):
    def forward(self, input):
        return input.relu()


class Softmax(Layer):
    """Softmax over the last axis (the features of each sample)."""

    def forward(self, input):
        return input.softmax(-1)


# Exact types only: a subclass may override forward, and then it must run.
_FUSED_ACTIVATIONS = {Tanh: "tanh", Sigmoid: "sigmoid", Relu: "relu"}


class Sequential(Layer):
    """Layers applied one after the other."""

    def __init__(self, layers=None):
        super().__init__()
        self.layers = []
        if callable(getattr(layers, "forward", None)):  # Sequential(Linear(2, 3)): "'Linear' object is not iterable"
            name = type(layers).__name__
            raise TypeError(f"Sequential: expected a list of layers, got a {name}; "
                            f"write Sequential([{name}(...), ...])")
        for layer in layers if layers is not None else ():
            self.add(layer)
        self.metadata = {}  # free-form facts saved with the model in its document (minigrad.format)

    def add(self, layer):
        # Checked here, not at the first forward, where it was "'int' object has no attribute 'forward'".
        if isinstance(layer, type):
            raise TypeError(f"Sequential: layers[{len(self.layers)}] is the class {layer.__name__}; "
                            f"add an instance, {layer.__name__}(...)")
        if not (callable(getattr(layer, "forward", None)) and callable(getattr(layer, "get_parameters", None))):
            raise TypeError(f"Sequential: layers[{len(self.layers)}] must be a Layer (with forward and "
                            f"get_parameters), got {type(layer).__name__}")
        self.layers.append(layer)

    def forward(self, input):
        layers = self.layers
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            i += 1
            # A Linear followed by an activation runs as one fused graph node (same arithmetic).
            if type(layer) is Linear and i < n:
                activation = _FUSED_ACTIVATIONS.get(type(layers[i]))
                if activation is not None:
                    input = linear(input, layer.weight, layer.bias, activation)
                    i += 1
                    continue
            input = layer.forward(input)
        return input

    def predict(self, array: np.ndarray) -> np.ndarray:
        """The forward pass on an array of the model's dtype, for inference: bit for bit
        ``self(Tensor(array)).data`` under ``no_grad``, without a Tensor per Linear layer (a small
        model's prediction is mostly that bookkeeping)."""
        layers = self.layers
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            i += 1
            if type(layer) is Linear:
                activation = _FUSED_ACTIVATIONS.get(type(layers[i])) if i < n else None
                i += activation is not None
                try:
                    array = linear_array(array, layer.weight.data, None if layer.bias is None else layer.bias.data,
                                         activation)
                except (AttributeError, ValueError) as exc:  # only once it failed: nothing on the hot path
                    if not isinstance(array, np.ndarray):
                        raise TypeError(f"predict: expected a numpy array, got {type(array).__name__}") from None
                    raise _linear_input_error(_constant(array), layer.weight.data, exc) from None
            else:
                with no_grad():
                    array = layer(Tensor(array)).data
        return array

    def get_parameters(self):
        params = []
        for layer in self.layers:
            params += layer.get_parameters()
        return params

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"

    # The model document lives in minigrad.format, which imports this module; hence the late imports.
    def to_dict(self) -> dict:
        """The model as a model document (plain JSON data); see docs/model-format.md."""
        from .format import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, document) -> Sequential:
        """The model a model document describes; ModelFormatError names any defect's location."""
        from .format import from_dict

        return from_dict(document, cls)


# ---------------------------------------------------------------------- losses
# Each loss is one graph node: its gradient w.r.t. the prediction has a closed form that is both
# cheaper and numerically better than differentiating the composed elementwise ops.

_REDUCTIONS = ("batch", "sum", "mean")


def _reduce(values: np.ndarray, reduction: str):
    """Reduce per-element losses; also return d(reduced)/d(values) as a scale (None for 1)."""
    if reduction == "batch":
        return np.asarray(_add_reduce(values, 0)), None
    if reduction == "sum":
        return np.asarray(_add_reduce(values, None)), None
    if not values.size:
        raise ValueError(f"reduction='mean' of an empty prediction (shape {list(values.shape)}): nothing to average")
    return np.asarray(values.mean()), 1.0 / values.size


def _target_array(target, like: np.ndarray) -> np.ndarray:
    if isinstance(target, Tensor):
        data = target.data
    else:
        try:
            data = np.asarray(target)
        except ValueError as exc:
            raise ValueError(f"target: expected a rectangular array of numbers ({exc})") from None
        if data.dtype.kind not in "biuf":
            raise ValueError(f"target: expected numbers, got an array of {data.dtype}")
    if data.shape != like.shape:
        raise ValueError(f"target shape {list(data.shape)} does not match prediction shape {list(like.shape)}")
    return data


class _Loss(Layer):
    def __init__(self, reduction):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}; got {reduction!r}")
        self.reduction = reduction

    def _finish(self, pred, target, values, gradient, target_gradient, name):
        """Wrap the reduced ``values`` in a node; ``gradient()`` (d values / d pred) and ``target_gradient()``
        (d values / d target, for a target Tensor with autograd) run only in backward."""
        out, scale = _reduce(values, self.reduction)
        parents = _loss_parents(pred, target)
        if not _records(*parents):
            return _constant(out)

        def backward(g):
            # With reduction="batch", g has the per-output shape and broadcasts over the batch.
            g = g if scale is None else g * scale
            if len(parents) == 1:
                return (gradient() * g,)
            return gradient() * g, target_gradient() * g

        return _node(out, name, parents, backward)


def _loss_parents(pred, target) -> tuple:
    """The inputs a loss's node differentiates: the target too when it is a Tensor with autograd (the output
    of another model, say), as in PyTorch; a plain target is data."""
    return (pred, target) if isinstance(target, Tensor) and target.autograd else (pred,)


class MSELoss(_Loss):
    """Squared error. ``reduction="batch"`` (the course notes' loss) sums over the batch axis and
    keeps one value per output; ``"sum"`` sums everything; ``"mean"`` averages everything."""

    def __init__(self, reduction="batch"):
        super().__init__(reduction)

    def forward(self, pred, target):
        p = pred.data
        diff = p - _target_array(target, p)
        if self.reduction == "sum":
            # The sum of squares as one dot product: a third of the numpy calls of square-then-reduce,
            # which on a small model cost more than their arithmetic.
            flat = diff.ravel()
            out = np.asarray(flat.dot(flat))  # ndarray.dot: no Python-level dispatcher, unlike np.vdot
            if not _records(pred, target):
                return _constant(out)
            one = _constants(p.dtype).one  # backward()'s default seed: d loss / d loss
            # _loss_parents, inlined (a call on every step): a target with autograd is a parent too.
            of_target = isinstance(target, Tensor) and target.autograd

            def backward(g):
                twice = diff + diff
                if g is not one:  # x * 1 == x: one numpy call fewer
                    twice = twice * g
                return (twice, -twice) if of_target else (twice,)

            return _node(out, "mse", (pred, target) if of_target else (pred,), backward)
        return self._finish(pred, target, diff * diff, lambda: diff + diff, lambda: -(diff + diff), "mse")


@functools.lru_cache(maxsize=16)
def _probability_bounds(eps: float, dtype: np.dtype) -> tuple[float, float]:
    """Where BCELoss clips probabilities: ``[eps, 1 - eps]``, widened to the nearest values the dtype
    holds apart from 0 and 1 (in float32, 1 - 1e-12 is 1.0, and log(1 - 1.0) made the loss NaN)."""
    info = np.finfo(dtype)
    return max(eps, float(info.tiny)), 1 - max(eps, float(info.epsneg))


class NotProbabilities(ValueError):
    """BCELoss was given predictions outside [0, 1]: the model's outputs are at fault, not the targets."""


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities (e.g. after ``Sigmoid``); averaged by default."""

    eps = 1e-12

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, pred, target):
        raw = pred.data
        low, high = _probability_bounds(self.eps, raw.dtype)
        p = raw
        if raw.size:
            smallest, largest = np.minimum.reduce(raw, None), np.maximum.reduce(raw, None)
            # As PyTorch: a prediction beyond [0, 1] (no Sigmoid last) was clipped to 0 or 1 and trained nonsense.
            # A NaN passes every comparison: it makes a NaN loss, which fit reports as TrainingDiverged.
            if smallest < 0 or largest > 1:
                index = tuple(int(i) for i in np.argwhere((raw < 0) | (raw > 1))[0])
                which = f"prediction{list(index)}" if index else "the prediction"  # a 0-d one said "prediction[]"
                raise NotProbabilities(f"BCELoss takes probabilities in [0, 1], but {which} is "
                                       f"{float(raw[index])!r} (end the model with a Sigmoid, or train on logits "
                                       "with CrossEntropyLoss)")
            if smallest < low or largest > high:  # else no value needs clipping (a sigmoid's usually: no copy)
                p = np.clip(raw, low, high)
        t = _target_array(target, p)
        values = -(t * np.log(p) + (1 - t) * np.log1p(-p))
        return self._finish(pred, target, values, lambda: (p - t) / (p * (1 - p)), lambda: np.log1p(-p) - np.log(p),
                            "bce")


class CrossEntropyLoss(Layer):
    """Cross-entropy on logits (apply no Softmax before it), averaged over the batch.

    ``target`` is either class indices (shape [batch], integers) or one-hot / probability rows of
    the logits' shape.
    """

    def forward(self, logits, target):
        z = logits.data
        t = target.data if isinstance(target, Tensor) else np.asarray(target)
        if z.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits of shape [batch, classes], got {list(z.shape)}")
        n = z.shape[0]
        # log softmax = shifted - log(total): finite for any logits, no clipping needed.
        shifted = z - np.maximum.reduce(z, 1, keepdims=True)
        exp = np.exp(shifted)
        total = _add_reduce(exp, 1, keepdims=True)
        log_total = np.log(total)
        if not n:
            raise ValueError("CrossEntropyLoss: an empty batch (no samples to average over)")
        if t.ndim == 1:
            if t.shape[0] != n:
                raise ValueError(f"target has {t.shape[0]} labels for a batch of {n}")
            if t.dtype.kind not in "iu":  # fit passes integers: only other callers pay for these checks
                if t.dtype.kind not in "bf":
                    raise ValueError(f"target: expected class labels (integers), got an array of {t.dtype}")
                if t.dtype.kind == "f" and not _whole_numbers(t):
                    raise ValueError("target labels must be whole numbers (class indices)")
            labels = t.astype(np.intp, copy=False)
            if labels.size and (np.minimum.reduce(labels) < 0 or np.maximum.reduce(labels) >= z.shape[1]):
                raise ValueError(f"target labels must lie in [0, {z.shape[1] - 1}]")
            rows = np.arange(n)
            # Both sums are of non-negative terms (log_total >= 0 >= shifted), so no cancellation.
            out = np.asarray((_add_reduce(log_total, None) - _add_reduce(shifted[rows, labels], None)) / n)

            def gradient():
                probs = exp / total
                probs[rows, labels] -= 1
                return probs

        else:
            onehot = _target_array(t, z)
            out = np.asarray(-_add_reduce(onehot * (shifted - log_total), None) / n)

            def gradient():
                return exp / total * _add_reduce(onehot, 1, keepdims=True) - onehot

        out = out.astype(z.dtype, copy=False)
        # Class labels are not differentiable; probability rows are: d loss / d target = -log softmax / n.
        parents = (logits,) if t.ndim == 1 else _loss_parents(logits, target)
        if not _records(*parents):
            return _constant(out)

        def backward(g):
            g = g / n
            if len(parents) == 1:
                return (gradient() * g,)
            return gradient() * g, (log_total - shifted) * g

        return _node(out, "cross_entropy", parents, backward)
