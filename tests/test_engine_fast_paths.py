"""The engine's speed paths compute exactly what the plain paths compute.

Fused Linear+activation nodes, packed optimizer parameters and chunked SGD updates exist only for
speed (docs/engine.md); these tests pin them to the unfused, per-tensor, one-shot arithmetic.
"""

import numpy as np
import pytest
from gradcheck import assert_gradients_match

import minigrad
from minigrad import SGD, Adam, Linear, MSELoss, Relu, Sequential, Sigmoid, Tanh, Tensor, optim

rng = np.random.default_rng(11)
LAYERS = {"tanh": Tanh, "sigmoid": Sigmoid, "relu": Relu}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_of_a_0d_tensor(name, dtype):
    x = Tensor(np.array(0.5, dtype=dtype), autograd=True)
    y = getattr(x, name)()
    y.backward()
    expected = {"tanh": np.tanh(0.5), "sigmoid": 1 / (1 + np.exp(-0.5)), "relu": 0.5}[name]
    slope = {"tanh": 1 - np.tanh(0.5) ** 2, "sigmoid": expected * (1 - expected), "relu": 1.0}[name]
    assert isinstance(y.data, np.ndarray) and y.data.dtype == dtype
    np.testing.assert_allclose(y.data, expected, rtol=1e-6)
    np.testing.assert_allclose(x.grad.data, slope, rtol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
def test_fused_linear_activation_equals_the_separate_ops(name):
    model = Sequential([Linear(4, 3, rng=np.random.default_rng(0)), LAYERS[name]()])
    twin = Linear(4, 3, rng=np.random.default_rng(0))
    x = rng.normal(size=(5, 4))
    a, b = Tensor(x, autograd=True), Tensor(x, autograd=True)
    fused = model(a)
    separate = getattr(twin(b), name)()
    assert fused.creation_op == f"linear_{name}"
    np.testing.assert_array_equal(fused.data, separate.data)
    (fused * fused).sum().backward()
    (separate * separate).sum().backward()
    for p, q in zip(model.get_parameters() + [a], twin.get_parameters() + [b]):
        np.testing.assert_allclose(p.grad.data, q.grad.data, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", LAYERS)
def test_fused_linear_gradients_match_finite_differences(name):
    def f(x, w, b):
        layer = Linear(3, 2)
        layer.weight, layer.bias = w, b
        return Sequential([layer, LAYERS[name]()])(x)

    assert_gradients_match(f, [rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)])


def test_a_subclass_overriding_forward_is_not_fused():
    class Doubled(Tanh):
        def forward(self, input):
            return input.tanh() * 2

    model = Sequential([Linear(2, 2, rng=np.random.default_rng(0)), Doubled()])
    x = rng.normal(size=(3, 2))
    np.testing.assert_allclose(model(Tensor(x)).data, 2 * np.tanh(model.layers[0](Tensor(x)).data))


def train(factory, pack_limit, monkeypatch, steps=5, replace_at=None):
    """Weights after ``steps`` steps of a small MLP, with optimizers packing up to ``pack_limit`` values."""
    monkeypatch.setattr(optim, "PACK_LIMIT", pack_limit)
    model = Sequential([Linear(3, 4, rng=np.random.default_rng(1)), Tanh(), Linear(4, 2, rng=np.random.default_rng(2))])
    optimizer = factory(model.get_parameters())
    data = np.random.default_rng(3)
    x, y = data.normal(size=(6, 3)), data.normal(size=(6, 2))
    for step in range(steps):
        if step == replace_at:  # as when weights are loaded into a model being trained
            model.layers[0].weight.data = np.full((3, 4), 0.1)
        MSELoss()(model(Tensor(x)), Tensor(y)).backward()
        optimizer.step()
    return [p.data.copy() for p in model.get_parameters()]


@pytest.mark.parametrize(
    "factory",
    [
        lambda p: SGD(p, alpha=0.05),
        lambda p: SGD(p, alpha=0.05, momentum=0.9, weight_decay=0.01),
        lambda p: Adam(p, alpha=0.01),
    ],
)
@pytest.mark.parametrize("replace_at", [None, 2])
def test_packed_parameters_update_exactly_like_separate_ones(factory, replace_at, monkeypatch):
    packed = train(factory, 1 << 16, monkeypatch, replace_at=replace_at)
    separate = train(factory, 0, monkeypatch, replace_at=replace_at)
    for a, b in zip(packed, separate):
        np.testing.assert_array_equal(a, b)


def test_a_reference_to_data_taken_once_the_optimizer_exists_stays_current():
    # docs/engine.md said any reference stays current; one taken before packing is left behind (as the page now says).
    layer = Linear(2, 1, rng=np.random.default_rng(0))
    before = layer.weight.data
    optimizer = SGD(layer.get_parameters(), alpha=0.5)
    after = layer.weight.data
    MSELoss()(layer(Tensor(np.ones((3, 2)))), np.zeros((3, 1))).backward()
    optimizer.step()
    assert after is layer.weight.data and np.shares_memory(after, optimizer._packed)
    assert before is not after and not np.array_equal(before, after)


def test_packed_optimizer_skips_a_parameter_without_gradient():
    w, v = Tensor(np.ones(3), autograd=True), Tensor(np.ones(2), autograd=True)
    optimizer = SGD([w, v], alpha=0.5)
    (w * w).sum().backward()
    optimizer.step()
    np.testing.assert_array_equal(w.data, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(v.data, [1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_with_alpha_one_subtracts_each_gradient_exactly(dtype):
    # alpha 1 (the course notes' setting) takes its own path: values -= g, parameter by parameter.
    w = Tensor(rng.normal(size=(3, 2)).astype(dtype), autograd=True)
    b = Tensor(rng.normal(size=2).astype(dtype), autograd=True)
    unused = Tensor(np.ones(4, dtype=dtype), autograd=True)
    optimizer = SGD([w, b, unused], alpha=1)
    x = Tensor(rng.normal(size=(5, 3)).astype(dtype))
    ((x @ w + b).tanh() ** 2).sum().backward()
    expected = [w.data - w.grad.data, b.data - b.grad.data]
    weight_before = w.data
    optimizer.step()
    np.testing.assert_array_equal(w.data, expected[0])
    np.testing.assert_array_equal(b.data, expected[1])
    np.testing.assert_array_equal(unused.data, np.ones(4, dtype=dtype))
    assert w.data is weight_before and w.data.dtype == dtype  # in place, as users' references expect
    assert w.grad is None and b.grad is None


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_sgd_update_equals_the_one_shot_formula(order, dtype):
    shape = (700, 400)  # above the chunking threshold
    values = np.asarray(rng.normal(size=shape).astype(dtype), order=order)
    g = np.asarray(rng.normal(size=shape).astype(dtype), order=order)
    expected = values - 0.01 * g
    optim._subtract_scaled(values, 0.01, g)
    assert values.dtype == dtype
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 5), (5,)])
def test_sequential_predict_is_the_forward_pass_bit_for_bit(dtype, shape):
    r = np.random.default_rng(3)
    model = Sequential([Linear(5, 6, rng=r, dtype=dtype), Tanh(), Linear(6, 4, rng=r, dtype=dtype),
                        Linear(4, 4, rng=r, dtype=dtype), Relu(), minigrad.Softmax(), Sigmoid(),
                        Linear(4, 3, rng=r, dtype=dtype), Sigmoid()])
    x = r.normal(size=shape).astype(dtype)
    with minigrad.no_grad():
        expected = model(Tensor(x)).data
    predicted = model.predict(x)
    assert predicted.dtype == expected.dtype and np.array_equal(predicted, expected)


def test_backward_chain_that_branches_further_down_matches_finite_differences():
    # The chain fast path (one non-leaf parent per node) hands over to the general walk at the first
    # node with two non-leaf parents; leaves used several times sum their shares.
    def f(x, w):
        h = (x.tanh() * w).sigmoid()  # chain: sum <- sigmoid <- tanh(... * w) ...
        both = h * x + h.tanh()  # ... then branches: h feeds two ops, x three
        return ((both * w).tanh() * x).sigmoid() * w

    data = np.random.default_rng(5)
    assert_gradients_match(f, [data.uniform(-1, 1, size=(3, 2)), data.uniform(-1, 1, size=(3, 2))])


def test_backward_adds_to_existing_gradients_like_one_summed_share():
    x = Tensor(np.array([0.3, -1.2, 2.0]), autograd=True)
    x.grad = Tensor(np.array([0.1, 0.2, 0.3]))
    (x * x + x.tanh()).sum().backward()
    shares = 2 * x.data + (1 - np.tanh(x.data) ** 2)
    np.testing.assert_allclose(x.grad.data, np.array([0.1, 0.2, 0.3]) + shares, rtol=1e-15)


@pytest.mark.parametrize("alpha", [1.0, 1, 0.05, np.float64(0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_packed_sgd_equals_the_per_parameter_formula_bit_for_bit(alpha, dtype, monkeypatch):
    def weights(pack_limit):
        monkeypatch.setattr(optim, "PACK_LIMIT", pack_limit)
        model = Sequential([Linear(2, 3, rng=np.random.default_rng(1), dtype=dtype), Tanh(),
                            Linear(3, 1, rng=np.random.default_rng(2), dtype=dtype), Sigmoid()])
        optimizer = SGD(model.get_parameters(), alpha=alpha)
        x = Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype))
        y = Tensor(np.array([[0], [1], [1], [0]], dtype=dtype))
        for _ in range(5):
            MSELoss(reduction="sum")(model(x), y).backward()
            optimizer.step()
        return [p.data.copy() for p in model.get_parameters()]

    for a, b in zip(weights(1 << 16), weights(0)):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_sum_is_the_sum_of_squares(dtype):
    data = np.random.default_rng(6)
    p, t = data.normal(size=(5, 3)).astype(dtype), data.normal(size=(5, 3)).astype(dtype)
    pred = Tensor(p, autograd=True)
    loss = MSELoss(reduction="sum")(pred, Tensor(t))
    assert loss.data.shape == () and loss.data.dtype == dtype
    np.testing.assert_allclose(loss.data, ((p - t) ** 2).sum(), rtol=1e-6 if dtype == np.float32 else 1e-14)
    loss.backward()
    np.testing.assert_array_equal(pred.grad.data, 2 * (p - t))


# SGD scales a gradient in place when the step drops it and nothing else can see it (optim._sole_owner).
def _unpacked_sgd(parameters, monkeypatch, **settings):
    monkeypatch.setattr(optim, "PACK_LIMIT", 0)
    return SGD(parameters, alpha=0.05, **settings)


def test_a_plain_backward_leaves_gradients_sgd_may_scale_in_place():
    # If this fails, the in-place path is never taken (e.g. a new Python counts references differently):
    # slower, not wrong.
    model = Sequential([Linear(4, 3, rng=np.random.default_rng(1)), Relu(), Linear(3, 2, rng=np.random.default_rng(2))])
    MSELoss()(model(Tensor(rng.normal(size=(5, 4)))), Tensor(rng.normal(size=(5, 2)))).backward()
    for p in model.get_parameters():
        grad = p.grad
        g = grad.data
        alone = optim._sole_owner(grad, g)  # outside the assert: pytest's rewriting of it holds references
        kept = g
        shared = optim._sole_owner(grad, g)  # one more reference: the caller's
        del kept
        assert alone and not shared


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_sgd_step_equals_the_formula_bit_for_bit(dtype, monkeypatch):
    model = Sequential([Linear(6, 5, rng=np.random.default_rng(1), dtype=dtype), Relu(),
                        Linear(5, 2, rng=np.random.default_rng(2), dtype=dtype)])
    optimizer = _unpacked_sgd(model.get_parameters(), monkeypatch)
    x, y = rng.normal(size=(7, 6)).astype(dtype), rng.normal(size=(7, 2)).astype(dtype)
    MSELoss()(model(Tensor(x)), Tensor(y)).backward()
    expected = [p.data - 0.05 * p.grad.data for p in model.get_parameters()]
    optimizer.step()
    for p, e in zip(model.get_parameters(), expected):
        assert p.data.dtype == dtype and p.grad is None
        np.testing.assert_array_equal(p.data, e)


def test_a_gradient_the_caller_kept_is_not_changed_by_the_step(monkeypatch):
    w = Tensor(rng.normal(size=(3, 2)), autograd=True)
    optimizer = _unpacked_sgd([w], monkeypatch)
    (Tensor(rng.normal(size=(4, 3))) @ w).tanh().sum().backward()
    kept_tensor, before = w.grad, w.grad.data.copy()
    kept_array = w.grad.data
    expected = w.data - 0.05 * before
    optimizer.step()
    np.testing.assert_array_equal(kept_tensor.data, before)
    np.testing.assert_array_equal(kept_array, before)
    np.testing.assert_array_equal(w.data, expected)


def test_tensors_sharing_one_gradient_array_are_each_stepped_with_the_whole_gradient(monkeypatch):
    # a + b hands the same gradient array to both leaves; scaling it in place for a would shrink b's step.
    a, b = Tensor(rng.normal(size=(3, 2)), autograd=True), Tensor(rng.normal(size=(3, 2)), autograd=True)
    optimizer = _unpacked_sgd([a, b], monkeypatch)
    ((a + b) ** 2).sum().backward()
    assert a.grad.data is b.grad.data  # the sharing this test is about
    expected = [a.data - 0.05 * a.grad.data, b.data - 0.05 * b.grad.data]
    optimizer.step()
    np.testing.assert_array_equal(a.data, expected[0])
    np.testing.assert_array_equal(b.data, expected[1])


def test_a_gradient_that_is_a_view_of_another_is_not_changed_in_place(monkeypatch):
    # w.T's gradient reaches w as a transposed view of the array v gets: changing it would change v's.
    w, v = Tensor(rng.normal(size=(2, 3)), autograd=True), Tensor(rng.normal(size=(3, 2)), autograd=True)
    optimizer = _unpacked_sgd([w, v], monkeypatch)
    ((w.transpose() + v) ** 2).sum().backward()
    assert w.grad.data.base is not None
    expected = [w.data - 0.05 * w.grad.data, v.data - 0.05 * v.grad.data]
    optimizer.step()
    np.testing.assert_array_equal(w.data, expected[0])
    np.testing.assert_array_equal(v.data, expected[1])


def test_step_without_zeroing_keeps_the_gradients_unscaled(monkeypatch):
    w = Tensor(rng.normal(size=(3, 2)), autograd=True)
    optimizer = _unpacked_sgd([w], monkeypatch)
    (w * w).sum().backward()
    before = w.grad.data.copy()
    optimizer.step(zero=False)
    np.testing.assert_array_equal(w.grad.data, before)
