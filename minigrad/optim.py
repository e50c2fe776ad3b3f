"""Optimizers: they read each parameter's ``.grad`` and update ``.data`` in place.

At the sizes of small models a numpy call costs more than its arithmetic, so an optimizer whose
parameters hold at most ``PACK_LIMIT`` values in all (and share one dtype) packs them into one
contiguous array, each ``p.data`` becoming a view of it: a step is then a few numpy calls for the
whole model instead of a few per tensor. Optimizer state (momentum, Adam's moments) is likewise one
array with a view per parameter, so a step that must go parameter by parameter (some gradient is
missing) updates the same state.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable

import numpy as np

from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam"]

PACK_LIMIT = 1 << 16


class _State:
    """Per-value optimizer state, zero to start: ``whole`` (one array, or None) and one view per parameter."""

    __slots__ = ("whole", "views")

    def __init__(self, parameters, packed):
        if packed is None:
            self.whole = None
            self.views = [np.zeros_like(p.data) for p in parameters]
        else:
            self.whole = np.zeros_like(packed)
            self.views = _views(self.whole, [p.data for p in parameters])

    def __setstate__(self, state):
        # copy.deepcopy and pickle copy each view as an array of its own: make them views of the copied whole again,
        # else a step on the whole model and a step parameter by parameter would each update a different copy.
        _, slots = state
        self.whole, self.views = slots["whole"], slots["views"]
        if self.whole is not None:
            self.views = _views(self.whole, self.views)


def _views(whole, arrays):
    """Views of the flat array ``whole``, one shaped like each of ``arrays`` (laid end to end)."""
    views, start = [], 0
    for array in arrays:
        size = array.size
        views.append(whole[start : start + size].reshape(array.shape))
        start += size
    return views


# ``values -= alpha * g`` on a large tensor goes this many values at a time through a small
# temporary (256 KB of float32) that stays in the core's cache, instead of writing and re-reading
# a full-size one: measured 208 -> 122 us on a 784x512 float32 update.
_CHUNK = 1 << 16


def _subtract_scaled(values: np.ndarray, alpha: float, g: np.ndarray):
    """``values -= alpha * g`` (in place), chunked when both arrays are large and laid out alike."""
    if values.size > 2 * _CHUNK and values.shape == g.shape:  # below that, the loop costs more than it saves
        if values.flags.c_contiguous and g.flags.c_contiguous:
            order = "C"
        elif values.flags.f_contiguous and g.flags.f_contiguous:
            order = "F"
        else:
            order = None
        if order is not None:
            flat_values, flat_g = values.reshape(-1, order=order), g.reshape(-1, order=order)
            scratch = np.empty(_CHUNK, dtype=np.result_type(alpha, g))
            for start in range(0, flat_values.size, _CHUNK):
                part = flat_g[start : start + _CHUNK]
                scaled = np.multiply(part, alpha, out=scratch[: part.size])
                chunk = flat_values[start : start + _CHUNK]
                chunk -= scaled
            return
    values -= alpha * g


def _sole_owner(grad, g) -> bool:
    """Whether nothing but the parameter (``p.grad``) and the caller (its locals ``grad`` and ``g``) holds the
    gradient Tensor ``grad`` or its array ``g``, and ``g`` owns its memory (it is no view of another array):
    then a change to ``g`` in place can be seen nowhere. Needed because the engine shares gradient arrays
    (both operands of an addition get the same one), and a caller may have kept a gradient: either shows in
    the reference counts. Where those counts are not exact (not CPython, or CPython without its GIL) the
    answer is always no."""
    return (_SOLE_COUNTS is not None and type(g) is np.ndarray and g.base is None and g.flags.writeable
            and (sys.getrefcount(grad), sys.getrefcount(g)) == _SOLE_COUNTS)


def _sole_counts():
    """What ``_sole_owner`` counts for a gradient held as in ``SGD.step``'s loop, measured rather than
    assumed (how calls and locals count varies between Python versions): the parameter's slot, the
    caller's local, the callee's argument and getrefcount's own."""
    if sys.implementation.name != "cpython" or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    holder = Tensor(np.zeros(1))
    holder.grad = Tensor(np.zeros(1))
    grad = holder.grad
    g = grad.data
    return _counts_seen_by_a_callee(grad, g)


def _counts_seen_by_a_callee(grad, g) -> tuple:
    return sys.getrefcount(grad), sys.getrefcount(g)


_SOLE_COUNTS = _sole_counts()


def _number(value, name):
    """``value`` if it is a finite real number (not a bool, a string or an array), else a named error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _parameter_list(parameters) -> list:
    """The tensors to optimize, each once: a tensor listed twice (a layer used twice) already gets the
    sum of both uses in its one gradient, so stepping it twice would double its learning rate."""
    if isinstance(parameters, Tensor) or not isinstance(parameters, Iterable):
        raise TypeError(f"parameters must be an iterable of Tensors (e.g. model.get_parameters()), "
                        f"got {type(parameters).__name__}")
    unique, seen = [], set()
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters[{i}] must be a Tensor, got {type(p).__name__}")
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    if not unique:  # as PyTorch: every step would silently change nothing
        raise ValueError("parameters is empty: nothing to optimize (pass model.get_parameters(); a Sequential's "
                         ".parameters attribute holds none of its layers' parameters)")
    return unique


class Optimizer:
    def __init__(self, parameters, alpha):
        self.parameters = _parameter_list(parameters)
        if not _number(alpha, "alpha") > 0:
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
        self.alpha = alpha
        self._packed = None
        self._packed_views = None
        params = self.parameters
        if (
            params
            and sum(p.data.size for p in params) <= PACK_LIMIT
            and len({p.data.dtype for p in params}) == 1
        ):
            self._packed = np.concatenate([p.data.ravel() for p in params])
            self._packed_views = _views(self._packed, [p.data for p in params])
            for p, view in zip(params, self._packed_views):
                p.data = view

    def __setstate__(self, state):
        # copy.deepcopy and pickle copy each parameter's view of the packed array as an array of its own, so a copied
        # optimizer (with its model, as in a checkpoint) stepped its copy of the packed array and never the model's
        # parameters. Each parameter still holding its copied view gets a view of the copied packed array again.
        self.__dict__.update(state)
        if self._packed is not None:
            copied, self._packed_views = self._packed_views, _views(self._packed, self._packed_views)
            for p, was, view in zip(self.parameters, copied, self._packed_views):
                if p.data is was:
                    p.data = view

    def zero(self):
        """Forget accumulated gradients (safe before any backward). The next backward starts afresh."""
        for p in self.parameters:
            p.grad = None

    def step(self, zero=True):
        raise NotImplementedError

    def _updates(self, *states):
        """What to update in place this step: ``(values, gradient, *state arrays)`` tuples.

        One tuple for the whole packed model when every parameter has a gradient (the gradients are
        concatenated: a new array), else one per parameter that has a gradient.
        """
        g = self._packed_gradient()
        if g is not None:
            return [(self._packed, g, *[state.whole for state in states])]
        return [
            (p.data, p.grad.data, *[state.views[i] for state in states])
            for i, p in enumerate(self.parameters)
            if p.grad is not None
        ]

    def _packed_gradient(self):
        """Every parameter's gradient in one new flat array laid out like the packed values, or None
        (the parameters are not packed, or some gradient is missing)."""
        if self._packed is None or not self._still_packed():
            return None
        arrays = []
        for p in self.parameters:
            g = p.grad
            if g is None:
                return None
            arrays.append(g.data.ravel())
        return np.concatenate(arrays)

    def _still_packed(self) -> bool:
        """Whether every ``p.data`` is still its view of the packed array, re-packing any that was
        replaced (e.g. weights loaded into the model); False (for good) if a shape or dtype changed."""
        for p, view in zip(self.parameters, self._packed_views):
            data = p.data
            if data is not view:
                if data.shape != view.shape or data.dtype != view.dtype:
                    self._packed = self._packed_views = None
                    return False
                view[...] = data
                p.data = view
        return True

    def _clear(self, zero):
        if zero:
            for p in self.parameters:
                p.grad = None


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay."""

    def __init__(self, parameters, alpha=0.1, momentum=0.0, weight_decay=0.0):
        super().__init__(parameters, alpha)
        if not 0 <= _number(momentum, "momentum") < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        if _number(weight_decay, "weight_decay") < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._velocity = _State(self.parameters, self._packed) if momentum else None

    def step(self, zero=True):
        alpha, momentum, decay = self.alpha, self.momentum, self.weight_decay
        if not (momentum or decay) and type(alpha) in (float, int):
            # Plain SGD: with alpha 1 (as in the course notes; 1 * g == g exactly) one subtraction
            # per parameter; on a packed model otherwise two numpy calls for the whole model, scaling
            # the concatenated gradient (a new array) in place. A Python number is cast to the values'
            # dtype either way, so this is bit for bit ``values -= alpha * g`` (a numpy float64 alpha
            # would widen that product: general path).
            if alpha == 1:
                for p in self.parameters:
                    if p.grad is not None:
                        np.subtract(p.data, p.grad.data, out=p.data)
                self._clear(zero)
                return
            g = self._packed_gradient()
            if g is not None:
                np.multiply(g, alpha, out=g)
                np.subtract(self._packed, g, out=self._packed)
                self._clear(zero)
                return
            if zero and self._packed is None:
                # Every gradient is dropped after this step, so one that nothing else can see is scaled in
                # place: no temporary as large as the weights (or chunked loop, for large ones) to write and
                # read back. Measured 8-11% off a 784-128-10 step; the same bits as the loop below.
                for p in self.parameters:
                    grad = p.grad
                    if grad is not None:
                        g, values = grad.data, p.data
                        if _sole_owner(grad, g) and g.shape == values.shape and g.dtype == values.dtype:
                            np.multiply(g, alpha, out=g)
                            np.subtract(values, g, out=values)
                        else:
                            _subtract_scaled(values, alpha, g)
                        p.grad = None
                return
        states = (self._velocity,) if momentum else ()
        for values, g, *velocity in self._updates(*states):
            if decay:
                g = g + decay * values
            if momentum:
                v = velocity[0]
                v *= momentum
                v += g
                g = v
            _subtract_scaled(values, alpha, g)
        self._clear(zero)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(self, parameters, alpha=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(parameters, alpha)
        pair = tuple(betas) if isinstance(betas, Iterable) and not isinstance(betas, (str, bytes)) else ()
        if len(pair) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = (_number(beta, f"betas[{i}]") for i, beta in enumerate(pair))
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not _number(eps, "eps") > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.betas = (beta1, beta2)
        self.eps = eps
        # eps must survive the cast to the parameters' dtype: 1e-8 is 0 in float16, and then a zero
        # gradient's update is 0 / 0 = NaN. For float32 and float64 the floor is far under eps: no change.
        self._eps_floor = max((float(np.finfo(p.data.dtype).smallest_subnormal) for p in self.parameters),
                              default=0.0)
        self.t = 0
        self._m = _State(self.parameters, self._packed)
        self._v = _State(self.parameters, self._packed)

    def step(self, zero=True):
        updates = self._updates(self._m, self._v)
        if not updates:  # no gradient yet: a step that changes nothing must not count in the bias correction
            self._clear(zero)
            return
        self.t += 1
        beta1, beta2 = self.betas
        # Fold both bias corrections into the step size: alpha * sqrt(1 - b2^t) / (1 - b1^t).
        # math.sqrt keeps these Python floats, which never widen a float32 model to float64.
        correction = math.sqrt(1 - beta2**self.t)
        step_size = self.alpha * correction / (1 - beta1**self.t)
        eps_hat = max(self.eps * correction, self._eps_floor)
        for values, g, m, v in updates:
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            update = np.sqrt(v)
            update += eps_hat
            np.divide(m, update, out=update)
            update *= step_size
            values -= update
        self._clear(zero)
