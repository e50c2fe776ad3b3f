"""The course notes' two demos run unchanged against minigrad and reproduce the notes' own losses.

The notes' engine draws tensor ids from numpy's global RNG, so its initial weights depend on how many
tensors were made before the model. The comparison therefore fixes the initial weights and replays
the notes' arithmetic (forward, the backward formulas of each op in the notes, SGD) in plain numpy.
"""

import contextlib
import io

import numpy as np
import pytest

# The demo exactly as the notes print it (only the target line differs between the two demos).
DEMO = """
from minigrad import *
np.random.seed(0)
data = Tensor(np.array([[0,0],[0,1],[1,0],[1,1]]), autograd=True) # (4,2)
target = Tensor(np.array(TARGET), autograd=True) # (4,1)
model = Sequential([Linear(2,3),
Tanh(),
Linear(3,1),
Sigmoid()])
criterion = MSELoss()
# optim = SGD(model.get_parameters(), alpha=0.05) # Lineal
optim = SGD(model.get_parameters(), alpha=1) # Tanh, Sigmoid
for i in range(10):
    # Predecir
    pred = model.forward(data)
    # Comparar
    loss = criterion.forward(pred, target)
    # Aprender
    loss.backward(Tensor(np.ones_like(loss.data)))
    optim.step()
    if (i%1 == 0):
        print(loss)
"""

TARGETS = {"targets 0101": [[0], [1], [0], [1]], "xor": [[0], [1], [1], [0]]}


def notes_reference_losses(w1, b1, w2, b2, x, t, steps=10, alpha=1.0):
    """The notes' training loop, op by op, in numpy: mm + expanded bias, tanh, mm, sigmoid, MSE summed over axis 0."""
    losses = []
    for _ in range(steps):
        h1 = x.dot(w1) + b1
        a1 = np.tanh(h1)
        h2 = a1.dot(w2) + b2
        p = 1 / (1 + np.exp(-h2))
        diff = p - t
        losses.append((diff * diff).sum(0))
        ones = np.ones((len(x), 1))
        g_diff = ones * diff + ones * diff  # mul's two operands are the same difference
        g_h2 = g_diff * (p * (1 - p))
        g_a1 = g_h2.dot(w2.T)
        g_w2 = a1.T.dot(g_h2)
        g_b2 = g_h2.sum(0)
        g_h1 = g_a1 * (1 - a1 * a1)
        g_w1 = x.T.dot(g_h1)
        g_b1 = g_h1.sum(0)
        w1, b1, w2, b2 = w1 - alpha * g_w1, b1 - alpha * g_b1, w2 - alpha * g_w2, b2 - alpha * g_b2
    return np.array(losses)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_demo_runs_unchanged_and_matches_the_notes(name):
    source = DEMO.replace("TARGET", repr(TARGETS[name]))
    namespace = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        np.random.seed(0)
        exec(compile(source, f"<demo {name}>", "exec"), namespace)
    lines = printed.getvalue().split()
    assert len(lines) == 10 and all(line.startswith("[") for line in lines)

    # Replay with the same initial weights the demo's model started from.
    np.random.seed(0)
    w1 = np.random.randn(2, 3) * np.sqrt(2.0 / 2)
    w2 = np.random.randn(3, 1) * np.sqrt(2.0 / 3)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    t = np.array(TARGETS[name], dtype=np.float64)
    expected = notes_reference_losses(w1, np.zeros(3), w2, np.zeros(1), x, t)

    # Re-run the demo's loop collecting the losses (the printed text is rounded).
    from minigrad import SGD, Linear, MSELoss, Sequential, Sigmoid, Tanh, Tensor

    np.random.seed(0)
    model = Sequential([Linear(2, 3), Tanh(), Linear(3, 1), Sigmoid()])
    np.testing.assert_array_equal(model.layers[0].weight.data, w1)
    data = Tensor(x, autograd=True)
    target = Tensor(t, autograd=True)
    optim = SGD(model.get_parameters(), alpha=1)
    got = []
    for _ in range(10):
        loss = MSELoss().forward(model.forward(data), target)
        loss.backward(Tensor(np.ones_like(loss.data)))
        optim.step()
        got.append(loss.data)
    np.testing.assert_allclose(np.array(got), expected, rtol=0, atol=1e-12)
    printed_values = np.array([float(line.strip("[]")) for line in lines])
    np.testing.assert_allclose(printed_values, expected[:, 0], atol=1e-7)
    assert expected[-1, 0] < expected[0, 0]  # it learns


def test_zero_before_any_backward_is_safe():
    from minigrad import SGD, Linear

    layer = Linear(2, 2)
    optim = SGD(layer.get_parameters())
    optim.zero()
    optim.step()
    assert all(p.grad is None for p in layer.get_parameters())


def test_tanh_without_autograd_is_tanh():
    from minigrad import Tensor

    x = np.array([-2.0, 0.5, 3.0])
    np.testing.assert_array_equal(Tensor(x).tanh().data, np.tanh(x))
