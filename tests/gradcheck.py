"""Central finite differences, the reference every analytic gradient is checked against."""

import numpy as np

from minigrad import Tensor


def numeric_gradient(f, arrays, index, eps=1e-6):
    """d sum(f(*arrays)) / d arrays[index], by central differences in float64."""
    base = [np.array(a, dtype=np.float64) for a in arrays]
    target = base[index]
    grad = np.zeros_like(target)
    for i in np.ndindex(target.shape):
        original = target[i]
        target[i] = original + eps
        up = np.array(f(*[Tensor(a) for a in base]).data, dtype=np.float64)
        target[i] = original - eps
        down = np.array(f(*[Tensor(a) for a in base]).data, dtype=np.float64)
        target[i] = original
        # Difference per output element before summing: outputs the nudge does not reach cancel
        # exactly, so one huge output does not drown the others' differences in rounding error.
        grad[i] = np.sum(up - down) / (2 * eps)
    return grad


def analytic_gradients(f, arrays):
    tensors = [Tensor(np.array(a, dtype=np.float64), autograd=True) for a in arrays]
    f(*tensors).sum().backward()
    return [t.grad.data if t.grad is not None else np.zeros_like(t.data) for t in tensors]


def max_relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"gradient shape {a.shape} != reference shape {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)))


def assert_gradients_match(f, arrays, tolerance=1e-6):
    for index, grad in enumerate(analytic_gradients(f, arrays)):
        reference = numeric_gradient(f, arrays, index)
        error = max_relative_error(grad, reference)
        assert error <= tolerance, f"operand {index}: max relative error {error:.3g} > {tolerance}"
