"""Layers, losses and optimizers."""

import copy
import pickle

import numpy as np
import pytest
from gradcheck import assert_gradients_match

from minigrad import (
    SGD,
    Adam,
    BCELoss,
    CrossEntropyLoss,
    Linear,
    MSELoss,
    Relu,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    Tensor,
)

rng = np.random.default_rng(7)


def test_linear_initialisation_follows_the_notes():
    np.random.seed(3)
    layer = Linear(4, 5)
    np.random.seed(3)
    expected = np.random.randn(4, 5) * np.sqrt(2.0 / 4)
    np.testing.assert_array_equal(layer.weight.data, expected)
    np.testing.assert_array_equal(layer.bias.data, np.zeros(5))
    assert layer.get_parameters() == [layer.weight, layer.bias]


def test_linear_with_generator_is_reproducible_and_leaves_global_rng_alone():
    state = np.random.get_state()[1].copy()
    a = Linear(3, 2, rng=np.random.default_rng(0))
    b = Linear(3, 2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_linear_float32():
    layer = Linear(3, 2, dtype=np.float32)
    out = layer(Tensor(np.ones((4, 3), dtype=np.float32)))
    assert out.dtype == np.float32 and out.shape == (4, 2)


def test_linear_rejects_empty_sizes():
    with pytest.raises(ValueError, match="sizes must be positive"):
        Linear(0, 3)


# Linear(2.5, 3) was Linear(2, 3); dtype=int truncated the initial weights to 0 and +-1 (then stored
# them as floats); rng=5 and Linear(None, 3) raised bare AttributeError/TypeError.
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: Linear(2.5, 3), "Linear: n_inputs must be an integer, got 2.5"),
        (lambda: Linear(2, None), "Linear: n_outputs must be an integer, got None"),
        (lambda: Linear(True, 3), "Linear: n_inputs must be an integer, got True"),
        (lambda: Linear(2, 3, dtype=np.int64), "Linear: dtype must be a floating-point type, got int64"),
        (lambda: Linear(2, 3, rng=5), "Linear: rng must be a numpy.random.Generator, got int"),
    ],
)
def test_linear_constructor_arguments_are_checked(call, message):
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("layer", [Tanh(), Sigmoid(), Relu(), Softmax(), Sequential([Tanh(), Linear(2, 1)])])
@pytest.mark.parametrize("data", [np.ones((1, 2)), [[1.0, 2.0]]])
def test_layers_say_they_want_a_tensor(layer, data):
    # Was "'numpy.ndarray' object has no attribute 'tanh'" (or 'list' ... 'data').
    with pytest.raises(TypeError, match=f"{type(layer).__name__}: expected Tensor inputs, got {type(data).__name__}"):
        layer(data)


@pytest.mark.parametrize("shape", [(4, 3), (3,), (2, 4, 3)])
def test_linear_gradients(shape):
    layer = Linear(3, 2, rng=np.random.default_rng(1))
    w, b = layer.weight.data, layer.bias.data

    def f(x, weight, bias):
        layer.weight, layer.bias = weight, bias
        return layer(x).tanh()

    assert_gradients_match(f, [rng.normal(size=shape), w, b])


def test_linear_skips_the_input_gradient():
    layer = Linear(3, 2)
    x = Tensor(np.ones((4, 3)))
    layer(x).sum().backward()
    assert x.grad is None and layer.weight.grad is not None


def test_sequential_forward_call_parameters_and_add():
    model = Sequential([Linear(2, 3), Tanh()])
    model.add(Linear(3, 1))
    model.add(Sigmoid())
    params = model.get_parameters()
    assert [p.shape for p in params] == [(2, 3), (3,), (3, 1), (1,)]
    x = Tensor(rng.normal(size=(5, 2)))
    np.testing.assert_array_equal(model(x).data, model.forward(x).data)
    assert repr(model) == "Sequential([Linear(2, 3), Tanh(), Linear(3, 1), Sigmoid()])"


def test_sequential_default_layers_are_not_shared():
    a, b = Sequential(), Sequential()
    a.add(Tanh())
    assert b.layers == []


@pytest.mark.parametrize(
    "layer,expected",
    [(Tanh(), np.tanh), (Relu(), lambda v: np.maximum(v, 0)), (Sigmoid(), lambda v: 1 / (1 + np.exp(-v)))],
)
def test_activation_layers(layer, expected):
    x = rng.normal(size=(3, 4))
    np.testing.assert_allclose(layer(Tensor(x)).data, expected(x), rtol=1e-14)


def test_softmax_layer_rows_sum_to_one():
    out = Softmax()(Tensor(rng.normal(size=(3, 4)))).data
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


# ---------------------------------------------------------------------- losses
PRED = rng.normal(size=(5, 3))
TARGET = rng.normal(size=(5, 3))
PROBS = rng.uniform(0.05, 0.95, size=(5, 3))
BITS = rng.integers(0, 2, size=(5, 3)).astype(float)
LABELS = np.array([0, 2, 1, 1, 0])


@pytest.mark.parametrize(
    "loss,pred,target,expected",
    [
        (MSELoss(), PRED, TARGET, ((PRED - TARGET) ** 2).sum(0)),
        (MSELoss("sum"), PRED, TARGET, ((PRED - TARGET) ** 2).sum()),
        (MSELoss("mean"), PRED, TARGET, ((PRED - TARGET) ** 2).mean()),
        (BCELoss(), PROBS, BITS, -(BITS * np.log(PROBS) + (1 - BITS) * np.log(1 - PROBS)).mean()),
        (BCELoss("sum"), PROBS, BITS, -(BITS * np.log(PROBS) + (1 - BITS) * np.log(1 - PROBS)).sum()),
    ],
)
def test_loss_values_and_gradients(loss, pred, target, expected):
    np.testing.assert_allclose(loss(Tensor(pred), Tensor(target)).data, expected, rtol=1e-12)
    assert_gradients_match(lambda p: loss(p, Tensor(target)), [pred])


@pytest.mark.parametrize(
    "loss,pred,target",
    [
        (MSELoss(), PRED, TARGET),
        (MSELoss("sum"), PRED, TARGET),
        (MSELoss("mean"), PRED, TARGET),
        (BCELoss(), PROBS, BITS),
        (BCELoss("batch"), PROBS, PROBS),
        (CrossEntropyLoss(), PRED, PROBS),
    ],
    ids=["mse batch", "mse sum", "mse mean", "bce", "bce batch", "cross-entropy probability rows"],
)
def test_a_target_tensor_with_autograd_gets_its_gradient(loss, pred, target):
    # The target of another model's output (or the notes' Tensor(..., autograd=True)) got no gradient at all.
    assert_gradients_match(loss, [pred, target])


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_cross_entropy_with_labels_and_one_hot_agree():
    expected = -log_softmax(PRED)[np.arange(5), LABELS].mean()
    onehot = np.eye(3)[LABELS]
    loss = CrossEntropyLoss()
    np.testing.assert_allclose(loss(Tensor(PRED), LABELS).data, expected, rtol=1e-12)
    np.testing.assert_allclose(loss(Tensor(PRED), Tensor(onehot)).data, expected, rtol=1e-12)
    assert_gradients_match(lambda z: loss(z, LABELS), [PRED])
    assert_gradients_match(lambda z: loss(z, Tensor(onehot)), [PRED])


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: MSELoss()(Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))), r"target shape \[3, 2\]"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones((2, 3))), np.array([0, 3])), r"labels must lie in \[0, 2\]"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones(3)), np.array([0])), "logits of shape"),
        (lambda: MSELoss("avg"), "reduction must be one of"),
        # These gave a ZeroDivisionError, NaN, a bare numpy error, or silently truncated labels.
        (lambda: MSELoss("mean")(Tensor(np.ones((0, 3))), np.ones((0, 3))), "reduction='mean' of an empty prediction"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones((0, 3))), np.zeros(0, int)), "CrossEntropyLoss: an empty batch"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones((2, 3))), np.array([1.5, 0.2])), "labels must be whole numbers"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones((2, 3))), np.array([np.nan, 1])), "labels must be whole numbers"),
        (lambda: CrossEntropyLoss()(Tensor(np.ones((2, 3))), np.array(["a", "b"])), "target: expected class labels"),
        (lambda: MSELoss()(Tensor(np.ones((2, 1))), [[0], [1, 2]]), "target: expected a rectangular array"),
        (lambda: MSELoss()(Tensor(np.ones((2, 1))), [["a"], ["b"]]), "target: expected numbers"),
        # Clipped to 0 or 1 and trained on without a word: a model without a Sigmoid last learnt nonsense.
        (lambda: BCELoss()(Tensor([[0.5], [1.7]]), [[1.0], [0.0]]),
         r"BCELoss takes probabilities in \[0, 1\], but prediction\[1, 0\] is 1.7 \(end the model with a Sigmoid"),
        (lambda: BCELoss("sum")(Tensor([-0.25, 0.0]), [1.0, 0.0]), r"but prediction\[0\] is -0.25"),
        (lambda: BCELoss()(Tensor(1.5), 1.0), r"but the prediction is 1.5 \(end"),  # was "prediction[] is 1.5"
    ],
)
def test_loss_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bce_stays_finite_on_saturated_narrow_probabilities(dtype):
    # In float32, 1 - 1e-12 rounds to 1.0: a sigmoid output of exactly 1.0 (any logit above ~17) made the
    # loss and its gradient NaN, and fit report a diverged training.
    pred = Tensor(np.array([1.0, 0.0, 1.0, 0.0], dtype=dtype), autograd=True)
    loss = BCELoss()(pred, np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype))
    loss.backward()
    assert loss.dtype == dtype and np.isfinite(loss.data) and np.isfinite(pred.grad.data).all()
    assert loss.data > 0


# ---------------------------------------------------------------------- optimizers
def quadratic_step(optimizer_factory, steps):
    w = Tensor(np.array([3.0, -2.0]), autograd=True)
    opt = optimizer_factory([w])
    for _ in range(steps):
        (w * w).sum().backward()
        opt.step()
    return w.data


def test_sgd_step_matches_formula_and_zeroes():
    w = Tensor(np.array([1.0, 2.0]), autograd=True)
    opt = SGD([w], alpha=0.1)
    (w * w).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.data, [1.0 - 0.2, 2.0 - 0.4])
    assert w.grad is None
    (w * w).sum().backward()
    opt.step(zero=False)
    assert w.grad is not None


def test_sgd_momentum_and_weight_decay_formula():
    w = Tensor(np.array([1.0]), autograd=True)
    opt = SGD([w], alpha=0.1, momentum=0.9, weight_decay=0.5)
    v = 0.0
    expected = 1.0
    for _ in range(3):
        (w * w).sum().backward()
        g = 2 * expected + 0.5 * expected
        v = 0.9 * v + g
        expected -= 0.1 * v
        opt.step()
        np.testing.assert_allclose(w.data, [expected], rtol=1e-14)


def test_adam_matches_reference_formula():
    w = Tensor(np.array([3.0, -2.0]), autograd=True)
    opt = Adam([w], alpha=0.1)
    ref = np.array([3.0, -2.0])
    m = v = np.zeros(2)
    for t in range(1, 6):
        (w * w).sum().backward()
        opt.step()
        g = 2 * ref
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref = ref - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(w.data, ref, rtol=1e-12)


@pytest.mark.parametrize(
    "factory",
    [lambda p: SGD(p, alpha=0.1), lambda p: SGD(p, alpha=0.05, momentum=0.9), lambda p: Adam(p, alpha=0.1)],
)
def test_optimizers_minimise_a_quadratic(factory):
    assert np.abs(quadratic_step(factory, 300)).max() < 1e-3


@pytest.mark.parametrize(
    "factory,message",
    [
        (lambda p: SGD(p, alpha=0), "alpha"),
        (lambda p: SGD(p, alpha=float("nan")), "alpha"),
        (lambda p: SGD(p, momentum=1.0), "momentum"),
        (lambda p: SGD(p, weight_decay=-1), "weight_decay"),
        (lambda p: Adam(p, betas=(1.0, 0.9)), "betas"),
        (lambda p: Adam(p, eps=0), "eps"),
    ],
)
def test_optimizer_arguments_are_checked(factory, message):
    with pytest.raises(ValueError, match=message):
        factory([Tensor([1.0], autograd=True)])


@pytest.mark.parametrize("factory", [SGD, Adam])
def test_an_optimizer_of_no_parameters_is_refused(factory):
    # SGD(model.parameters) -- a Sequential's own, empty list -- made an optimizer whose steps changed nothing.
    model = Sequential([Linear(2, 1)])
    with pytest.raises(ValueError, match=r"parameters is empty: nothing to optimize \(pass model.get_parameters\(\)"):
        factory(model.parameters)


# Each was a comparison TypeError or numpy error naming nothing, or was silently accepted (NaN or
# infinite weight decay made every weight NaN; an infinite eps made every Adam step zero).
@pytest.mark.parametrize(
    "factory,error,message",
    [
        (lambda p: SGD(p, alpha="0.1"), TypeError, "alpha must be a number, got '0.1'"),
        (lambda p: SGD(p, alpha=None), TypeError, "alpha must be a number, got None"),
        (lambda p: SGD(p, alpha=True), TypeError, "alpha must be a number, got True"),
        (lambda p: SGD(p, alpha=np.array([0.1, 0.2])), TypeError, "alpha must be a number"),
        (lambda p: SGD(p, alpha=float("inf")), ValueError, "alpha must be finite"),
        (lambda p: SGD(p, momentum=None), TypeError, "momentum must be a number, got None"),
        (lambda p: SGD(p, weight_decay=float("nan")), ValueError, "weight_decay must be finite, got nan"),
        (lambda p: SGD(p, weight_decay=float("inf")), ValueError, "weight_decay must be finite, got inf"),
        (lambda p: Adam(p, betas=(0.9, 0.9, 0.9)), ValueError, r"betas must be a pair \(beta1, beta2\)"),
        (lambda p: Adam(p, betas=0.9), ValueError, r"betas must be a pair \(beta1, beta2\), got 0.9"),
        (lambda p: Adam(p, betas=("a", 0.9)), TypeError, r"betas\[0\] must be a number, got 'a'"),
        (lambda p: Adam(p, eps=float("inf")), ValueError, "eps must be finite, got inf"),
        (lambda p: Adam(p, eps=None), TypeError, "eps must be a number, got None"),
        (lambda p: SGD(p[0]), TypeError, "parameters must be an iterable of Tensors .* got Tensor"),
        (lambda p: SGD(None), TypeError, "parameters must be an iterable of Tensors .* got NoneType"),
        (lambda p: SGD([p[0], np.zeros(2)]), TypeError, r"parameters\[1\] must be a Tensor, got ndarray"),
    ],
)
def test_optimizer_argument_types_are_named(factory, error, message):
    with pytest.raises(error, match=message):
        factory([Tensor([1.0], autograd=True)])


@pytest.mark.parametrize("factory", [SGD, lambda p: SGD(p, momentum=0.5), Adam])
def test_a_parameter_listed_twice_is_stepped_once(factory):
    # A layer used twice: its one gradient already sums both uses (it was stepped twice, doubling its rate).
    shared, alone = Tensor([1.0, 2.0], autograd=True), Tensor([1.0, 2.0], autograd=True)
    twice, once = factory(p for p in [shared, shared]), factory([alone])
    for w, opt in ((shared, twice), (alone, once)):
        (w * w).sum().backward()
        opt.step()
    np.testing.assert_array_equal(shared.data, alone.data)
    assert twice.parameters == [shared]


def test_adam_step_without_gradients_does_not_count():
    # A step before any backward changes nothing, so it must not advance the bias correction.
    w, ref = Tensor([3.0, -2.0], autograd=True), Tensor([3.0, -2.0], autograd=True)
    early, fresh = Adam([w], alpha=0.1), Adam([ref], alpha=0.1)
    early.step()
    for p, opt in ((w, early), (ref, fresh)):
        (p * p).sum().backward()
        opt.step()
    np.testing.assert_array_equal(w.data, ref.data)
    assert early.t == fresh.t == 1


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda pair: pickle.loads(pickle.dumps(pair))],
                         ids=["deepcopy", "pickle"])
@pytest.mark.parametrize("make", [lambda ps: SGD(ps, alpha=0.1, momentum=0.9), lambda ps: Adam(ps, alpha=0.1)],
                         ids=["sgd-momentum", "adam"])
def test_a_copied_optimizer_steps_its_copied_model(duplicate, make):
    # A checkpoint of (model, optimizer): the copy's parameters were arrays of their own, no longer views of the
    # copied packed array, so the copied optimizer's steps never changed the copied model.
    model = Sequential([Linear(2, 3, rng=np.random.default_rng(0)), Tanh(), Linear(3, 1, rng=np.random.default_rng(1))])
    original = (model, make(model.get_parameters()))
    x, y = Tensor(np.ones((4, 2))), np.zeros((4, 1))
    for twin, optimizer in (original, duplicate(original)):
        for missing in (None, twin.layers[0].bias):  # every gradient (one packed update), then one missing
            MSELoss()(twin(x), y).backward()
            if missing is not None:
                missing.grad = None  # parameter by parameter: the state's views must be the packed state's
            optimizer.step()
    for mine, theirs in zip(model.get_parameters(), twin.get_parameters()):
        np.testing.assert_array_equal(mine.data, theirs.data)


def test_predict_names_the_layer_input_it_expected():
    model = Sequential([Linear(2, 3), Tanh(), Linear(3, 1)])
    with pytest.raises(ValueError, match=r"Linear\(2, 3\): expected inputs with 2 features \(the last axis\), "
                                         r"got shape \[4, 3\]"):
        model.predict(np.ones((4, 3)))  # was numpy's "shapes (4,3) and (2,3) not aligned"
    with pytest.raises(TypeError, match="predict: expected a numpy array, got list"):
        model.predict([[1.0, 2.0]])  # was "'list' object has no attribute 'ndim'"


def test_a_broken_layer_is_not_blamed_on_its_input():
    layer = Linear(2, 3)
    layer.bias = Tensor(np.zeros(4), autograd=True)  # the input fits; the bias does not
    with pytest.raises(ValueError, match="broadcast") as caught:
        layer(Tensor(np.ones((1, 2))))
    assert "features" not in str(caught.value)


def test_sequential_of_one_layer_not_in_a_list_says_to_list_it():
    # PyTorch's nn.Sequential(nn.Linear(2, 3)) habit; it was "'Linear' object is not iterable".
    with pytest.raises(TypeError, match=r"Sequential: expected a list of layers, got a Linear; "
                                        r"write Sequential\(\[Linear\(...\), ...\]\)"):
        Sequential(Linear(2, 3))


@pytest.mark.parametrize(
    "layers,message",
    [
        ([Linear(2, 3), 5], r"Sequential: layers\[1\] must be a Layer .* got int"),
        ([Linear(2, 3), Tanh], r"Sequential: layers\[1\] is the class Tanh; add an instance, Tanh\(...\)"),
    ],
)
def test_sequential_refuses_what_is_not_a_layer_when_it_is_given(layers, message):
    # Found only at the first forward, as "'int' object has no attribute 'forward'" or a missing argument.
    with pytest.raises(TypeError, match=message):
        Sequential(layers)
    model = Sequential(layers[:1])
    with pytest.raises(TypeError, match=message):
        model.add(layers[1])
    assert len(model.layers) == 1


def test_adam_in_float16_leaves_a_weight_with_zero_gradient_alone():
    # eps = 1e-8 is 0 in float16: the zero gradient's update was 0 / 0 and the weight became NaN.
    w = Tensor(np.array([1.0, 2.0], np.float16), autograd=True)
    opt = Adam([w], alpha=0.01)
    for _ in range(3):
        (w * Tensor(np.array([1.0, 0.0], np.float16))).sum().backward()
        opt.step()
    assert w.data[1] == 2.0 and w.data[0] < 1.0 and w.dtype == np.float16
