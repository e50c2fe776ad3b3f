"""minigrad.fit: it learns, it is reproducible, it reports, it stops, it refuses nonsense."""

import gc
import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

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
    Tanh,
    Tensor,
    TrainingDiverged,
    evaluate,
    fit,
    no_grad,
)

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
XOR_Y = np.array([[0], [1], [1], [0]])


def xor_model(seed=0, dtype=np.float64):
    gen = np.random.default_rng(seed)
    return Sequential([Linear(2, 3, rng=gen, dtype=dtype), Tanh(), Linear(3, 1, rng=gen, dtype=dtype), Sigmoid()])


def weights(model):
    return [p.data.copy() for p in model.get_parameters()]


def test_xor_trains_below_0_01():
    model = xor_model()
    history = fit(model, XOR_X, XOR_Y, MSELoss(), SGD(model.get_parameters(), alpha=1), epochs=500)
    assert len(history) == 500 and history[-1]["epoch"] == 500
    assert history[-1]["loss"] < 0.01
    pred = model(Tensor(XOR_X)).data
    np.testing.assert_array_equal(pred.round(), XOR_Y)


def test_digits_reach_95_percent_test_accuracy():
    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.2, random_state=0)
    gen = np.random.default_rng(0)
    model = Sequential([Linear(64, 64, rng=gen), Relu(), Linear(64, 10, rng=gen)])
    history = fit(
        model,
        x_train,
        y_train,
        CrossEntropyLoss(),
        Adam(model.get_parameters(), alpha=1e-3),
        epochs=30,
        batch_size=32,
        seed=0,
        validation=(x_test, y_test),
    )
    assert history[-1]["val_accuracy"] >= 0.95
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    accuracy = (model(Tensor(x_test)).data.argmax(axis=1) == y_test).mean()
    assert accuracy == pytest.approx(history[-1]["val_accuracy"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_seed_same_data_gives_bitwise_identical_weights(dtype):
    runs = []
    for _ in range(2):
        model = xor_model(seed=5, dtype=dtype)
        opt = SGD(model.get_parameters(), alpha=0.5, momentum=0.5)
        fit(model, XOR_X, XOR_Y, MSELoss(), opt, epochs=20, batch_size=2, seed=11)
        runs.append(weights(model))
    for a, b in zip(runs[0], runs[1]):
        assert a.dtype == dtype
        assert a.tobytes() == b.tobytes()


def test_different_shuffle_seed_gives_different_weights():
    finals = []
    for seed in (1, 2):
        model = xor_model(seed=5)
        fit(model, XOR_X, XOR_Y, MSELoss(), SGD(model.get_parameters(), alpha=0.5), epochs=5, batch_size=1, seed=seed)
        finals.append(weights(model)[0])
    assert not np.array_equal(finals[0], finals[1])


def test_history_records_and_callback_can_stop():
    model = xor_model()
    seen = []

    def callback(record):
        seen.append(record["epoch"])
        return record["epoch"] < 3

    history = fit(
        model,
        XOR_X,
        XOR_Y,
        BCELoss(),
        SGD(model.get_parameters(), alpha=0.5),
        epochs=10,
        validation=(XOR_X, XOR_Y),
        callback=callback,
    )
    assert seen == [1, 2, 3] and len(history) == 3
    assert set(history[0]) == {"epoch", "loss", "val_loss", "val_accuracy", "seconds"}
    assert 0.0 <= history[0]["val_accuracy"] <= 1.0


def test_regression_validation_has_no_accuracy():
    model = xor_model()
    history = fit(model, XOR_X, XOR_Y, MSELoss(), SGD(model.get_parameters()), epochs=1, validation=(XOR_X, XOR_Y))
    assert "val_accuracy" not in history[0] and history[0]["val_loss"] > 0


def test_divergence_raises_training_diverged():
    gen = np.random.default_rng(0)
    model = Sequential([Linear(1, 8, rng=gen), Linear(8, 1, rng=gen)])
    x = np.linspace(-100, 100, 32).reshape(-1, 1)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch \d+: loss became (nan|inf)"):
        fit(model, x, x * 1e3, MSELoss(), SGD(model.get_parameters(), alpha=10.0), epochs=50)


def test_inputs_may_be_lists_or_tensors():
    model = xor_model()
    opt = SGD(model.get_parameters())
    assert len(fit(model, XOR_X.tolist(), Tensor(XOR_Y), MSELoss(), opt, epochs=2)) == 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"inputs": XOR_X[:3]}, "inputs has 3 samples but targets has 4"),
        ({"inputs": [[0, 1], [1]]}, "inputs: expected a rectangular array"),
        ({"inputs": [["a", "b"]] * 4}, "inputs: expected numbers"),
        ({"inputs": np.full((4, 2), np.nan)}, "inputs: contains NaN"),
        ({"inputs": np.zeros((0, 2))}, "inputs: expected at least one sample"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(kwargs, message):
    model = xor_model()
    args = {"inputs": XOR_X, "targets": XOR_Y, "epochs": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit(model, args["inputs"], args["targets"], MSELoss(), SGD(model.get_parameters()), args["epochs"],
            batch_size=args.get("batch_size"))


def test_cross_entropy_labels_must_be_whole_numbers():
    gen = np.random.default_rng(0)
    model = Sequential([Linear(2, 2, rng=gen)])
    with pytest.raises(ValueError, match="whole numbers"):
        fit(model, XOR_X, np.array([0, 1, 0.5, 1]), CrossEntropyLoss(), SGD(model.get_parameters()), 1)


def resident_bytes():
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_10000_steps_without_reference_cycles():
    gen = np.random.default_rng(0)
    f32 = np.float32
    model = Sequential([Linear(784, 128, rng=gen, dtype=f32), Relu(), Linear(128, 10, rng=gen, dtype=f32)])
    opt = SGD(model.get_parameters(), alpha=1e-4)
    loss_fn = MSELoss("sum")
    x = Tensor(gen.random((64, 784), dtype=np.float32))
    y = Tensor(gen.random((64, 10), dtype=np.float32))

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(200):
        step()
    gc.collect()
    gc.disable()
    try:
        before = resident_bytes()
        for _ in range(10_000):
            step()
        after = resident_bytes()
        cycles = gc.collect()
    finally:
        gc.enable()
    assert after - before < 5 * 1024 * 1024, f"grew {(after - before) / 1e6:.1f} MB"
    assert cycles == 0, f"{cycles} objects were only reclaimable by the cycle collector"


def classifier(seed=0):
    gen = np.random.default_rng(seed)
    return Sequential([Linear(2, 4, rng=gen), Relu(), Linear(4, 3, rng=gen)])


def _mse_call(**changes):
    """fit's arguments for the XOR model with MSE and SGD, with some replaced."""
    model = changes.pop("model", None) or xor_model()
    args = {"model": model, "inputs": XOR_X, "targets": XOR_Y, "loss": MSELoss(),
            "optimizer": SGD(model.get_parameters()), "epochs": 2}
    return {**args, **changes}


def unbounded_model():
    """A model without a Sigmoid last, whose output (2.0 for every input) is no probability."""
    model = Sequential([Linear(2, 1, rng=np.random.default_rng(0))])
    model.layers[0].weight.data[...] = 0.0
    model.layers[0].bias.data[...] = 2.0
    return model


def _labels_call(labels, validation=None):
    model = classifier()
    return {"model": model, "inputs": XOR_X, "targets": labels, "loss": CrossEntropyLoss(),
            "optimizer": SGD(model.get_parameters()), "epochs": 2, "validation": validation}


# Each refused before the first step (the weights are checked to be untouched), with the place named.
@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: _mse_call(epochs=2.7), ValueError, "epochs: expected a whole number, got 2.7"),
        (lambda: _mse_call(epochs=None), ValueError, "epochs: expected a whole number, got None"),
        (lambda: _mse_call(epochs=float("inf")), ValueError, "epochs: expected a whole number"),
        (lambda: _mse_call(batch_size=2.5), ValueError, "batch_size: expected a whole number, got 2.5"),
        (lambda: _mse_call(batch_size=True), ValueError, "batch_size: expected a whole number, got True"),
        (lambda: _mse_call(inputs=np.zeros((4, 3))), ValueError, r"^inputs: "),
        (lambda: _mse_call(targets=XOR_Y.ravel()), ValueError, r"^targets: target shape \[1\]"),
        (lambda: _mse_call(targets=np.zeros((4, 2))), ValueError, r"^targets: target shape \[1, 2\]"),
        (lambda: _mse_call(loss=BCELoss(), targets=XOR_Y * 5), ValueError, r"targets: BCELoss needs targets in \[0, 1"),
        (lambda: _mse_call(model=unbounded_model(), loss=BCELoss()), ValueError,
         r"^model: BCELoss takes probabilities in \[0, 1\], but prediction\[0, 0\] is 2.0"),
        (lambda: _mse_call(validation=(XOR_X,)), ValueError, r"validation: expected a pair \(inputs, targets\)"),
        (lambda: _mse_call(validation=XOR_X), ValueError, r"validation: expected a pair \(inputs, targets\)"),
        (lambda: _mse_call(validation=(XOR_X, XOR_Y, XOR_Y)), ValueError, "validation: expected a pair"),
        (lambda: _mse_call(validation=(np.zeros((4, 3)), XOR_Y)), ValueError, r"^validation inputs: "),
        (lambda: _mse_call(validation=(XOR_X, np.zeros((4, 2)))), ValueError, r"^validation targets: target shape"),
        (lambda: _mse_call(callback=3), TypeError, "callback: expected a function"),
        (lambda: _mse_call(loss=3), TypeError, "loss: expected a loss"),
        (lambda: _mse_call(optimizer=None), TypeError, "optimizer: expected an optimizer"),
        (lambda: _mse_call(optimizer=SGD(xor_model(1).get_parameters())), ValueError,
         "optimizer: it updates none of the model's parameters"),
        (lambda: _mse_call(seed="abc"), ValueError, "seed: expected None or a non-negative integer"),
        (lambda: _labels_call(np.array([0, 1, 3, 1])), ValueError,
         r"targets: class label 3 is out of range; the model has 3 outputs, so labels must lie in \[0, 2\]"),
        (lambda: _labels_call(np.array([0, -1, 2, 1])), ValueError, "targets: class label -1 is out of range"),
        (lambda: _labels_call(np.array([0, 1e30, 2, 1])), ValueError, "targets: class label 1e\\+30 is out of range"),
        (lambda: _labels_call(np.eye(4)), ValueError, r"^targets: target shape \[1, 4\] does not match"),
        (lambda: _labels_call(np.array([0, 1, 2, 1]), (XOR_X, np.array([0, 5, 0, 0]))), ValueError,
         "validation targets: class label 5 is out of range"),
    ],
)
def test_bad_fit_calls_are_refused_before_any_step(call, error, message):
    args = call()
    before = weights(args["model"])
    with pytest.raises(error, match=message):
        fit(**args)
    for old, new in zip(before, weights(args["model"])):
        np.testing.assert_array_equal(old, new)


def test_whole_float_counts_are_accepted():
    assert len(fit(**_mse_call(epochs=3.0, batch_size=np.int64(2)))) == 3


def one_weight_model():
    model = Sequential([Linear(1, 1)])
    model.layers[0].weight.data[...] = 1.0
    return model


@pytest.mark.parametrize(
    "call,message",
    [
        # One batch, its loss 1e308 (finite), its gradient infinite: the weight became -inf on the last step
        # and fit returned normally.
        (lambda m: fit(m, [[1e154]], [[0.0]], MSELoss("sum"), SGD(m.get_parameters(), alpha=1.0), 1),
         "epoch 1: parameter 0 .* became NaN or infinite"),
        # Each batch loss finite (1.44e308), their sum not: the record said loss inf. (Only the bias trains,
        # its gradient finite.)
        (lambda m: setattr(m.layers[0].weight, "autograd", False)
         or fit(m, [[1.2e154], [1.2e154]], [[0.0], [0.0]], MSELoss("sum"), SGD(m.get_parameters(), alpha=1e-300), 1,
                batch_size=1), "epoch 1: loss became inf"),
        # A sane model, extreme validation data: val_loss inf went into the history (and from there into JSON).
        (lambda m: fit(m, [[1.0]], [[0.0]], MSELoss("sum"), SGD(m.get_parameters()), 1,
                       validation=([[1e200]], [[0.0]])), "epoch 1: val_loss became inf"),
    ],
)
def test_non_finite_values_never_reach_the_history(call, message):
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(TrainingDiverged, match=message):
        call(one_weight_model())


def test_fit_refuses_a_model_with_nothing_to_train_and_a_no_grad_context():
    model = Sequential([Sigmoid()])
    with pytest.raises(ValueError, match="model: it has no parameter with autograd=True"):
        # was backward's RuntimeError in the first batch
        fit(model, XOR_Y, XOR_Y, MSELoss(), SGD([Tensor([1.0], autograd=True)]), 1)
    model = xor_model()
    with no_grad(), pytest.raises(RuntimeError, match=r"fit: gradient recording is off"):
        fit(model, XOR_X, XOR_Y, MSELoss(), SGD(model.get_parameters()), 1)


def test_evaluate_takes_what_fit_takes():
    # Lists raised "'list' object has no attribute 'shape'"; labels out of range were not checked.
    model = classifier()
    by_lists = evaluate(model, XOR_X.tolist(), [0, 1, 2, 1], CrossEntropyLoss())
    assert by_lists == evaluate(model, XOR_X.astype(float), np.array([0, 1, 2, 1]), CrossEntropyLoss())
    with pytest.raises(ValueError, match="targets: class label 3 is out of range"):
        evaluate(model, XOR_X, [0, 1, 3, 1], CrossEntropyLoss())


def test_gradients_left_from_before_do_not_leak_into_the_first_step():
    stale, fresh = xor_model(), xor_model()
    loss = MSELoss()
    loss(stale(Tensor(XOR_X)), Tensor(XOR_Y)).backward()  # by hand, never stepped: it was added to fit's first step
    for model in (stale, fresh):
        fit(model, XOR_X, XOR_Y, loss, SGD(model.get_parameters()), 1, seed=0)
    for a, b in zip(weights(stale), weights(fresh)):
        np.testing.assert_array_equal(a, b)
