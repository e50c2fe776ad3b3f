"""The Tensor's public surface: construction, dtypes, no_grad, repr, errors."""

import numpy as np
import pytest

from minigrad import Linear, MSELoss, Sequential, Tensor, is_grad_enabled, no_grad


@pytest.mark.parametrize(
    "data,dtype",
    [
        ([1, 2, 3], np.float64),
        (np.array([1, 2], dtype=np.int32), np.float64),
        (np.array([True, False]), np.float64),
        (np.array([1.5], dtype=np.float32), np.float32),
        (np.array([1.5], dtype=np.float64), np.float64),
        (3, np.float64),
    ],
)
def test_integer_inputs_become_floats_and_floats_keep_their_width(data, dtype):
    assert Tensor(data).dtype == dtype


def test_constructor_copies_its_input():
    source = np.zeros(3)
    t = Tensor(source)
    t.data += 1
    assert source.sum() == 0


def test_non_numeric_data_is_refused():
    with pytest.raises(TypeError, match="must be numeric"):
        Tensor(["a", "b"])


def test_float32_stays_float32_through_ops_and_gradients():
    x = Tensor(np.ones((2, 3), dtype=np.float32), autograd=True)
    w = Tensor(np.full((3, 2), 0.5, dtype=np.float32), autograd=True)
    y = ((x.mm(w) * 2.0 + 1.0).sigmoid().tanh().relu() / 3.0) ** 2
    z = y.exp().log().softmax(1).log_softmax(1).mean()
    assert z.dtype == np.float32
    z.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


@pytest.mark.parametrize("scalar", [np.float64(2.0), np.int64(2), np.float32(2.0)], ids=repr)
def test_a_numpy_scalar_operand_keeps_a_float32_tensor_float32(scalar):
    # numpy scalars are not "weak" as Python numbers are: x * np.float64(2) was a float64 tensor.
    x = Tensor(np.full(2, 3.0, dtype=np.float32), autograd=True)
    results = [x * scalar, scalar * x, x + scalar, scalar + x, x - scalar, scalar - x, x / scalar, scalar / x,
               x**scalar, scalar**x]
    assert [y.dtype for y in results] == [np.float32] * len(results)
    sum(results[1:], results[0]).sum().backward()
    assert x.grad.dtype == np.float32


def test_a_leaf_gradient_keeps_the_leaf_dtype_whatever_it_met():
    # A float32 weight combined with float64 data (a constant, a target) got a float64 gradient, as PyTorch's does not.
    w = Tensor(np.ones(3, dtype=np.float32), autograd=True)
    b = Tensor(np.ones(3), autograd=True)
    (w * np.array([0.0, 1.0, 2.0]) + b).sum().backward()
    assert w.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(w.grad.data, [0.0, 1.0, 2.0])
    pred = Tensor(np.full((2, 1), 0.5, dtype=np.float32), autograd=True)
    MSELoss()(pred, np.array([[1.0], [0.0]])).backward()  # a float64 target, as np.array makes it
    assert pred.grad.dtype == np.float32
    np.testing.assert_array_equal(pred.grad.data, [[-1.0], [1.0]])


def test_a_step_written_by_hand_updates_the_parameters_in_place():
    # p -= alpha * p.grad rebound the loop variable to a new tensor: the model never changed.
    model = Sequential([Linear(2, 1, rng=np.random.default_rng(0))])
    params = model.get_parameters()
    MSELoss()(model(Tensor(np.ones((3, 2)))), np.zeros((3, 1))).backward()
    expected = [p.data - 0.5 * p.grad.data for p in params]
    with no_grad():
        for p in model.get_parameters():
            p -= 0.5 * p.grad
    assert model.get_parameters() == params
    for p, values in zip(params, expected):
        np.testing.assert_array_equal(p.data, values)


@pytest.mark.parametrize("op", ["+=", "-=", "*=", "/="])
def test_in_place_arithmetic(op):
    def apply(x, y):
        scope = {"x": x, "y": y}
        exec(f"x {op} y", scope)
        return scope["x"]

    w = Tensor(np.array([2.0, 4.0], dtype=np.float32), autograd=True)
    with no_grad():
        same = apply(w, np.float64(2.0))
    assert same is w and w.dtype == np.float32  # a parameter changes in place, keeping its dtype
    np.testing.assert_array_equal(w.data, {"+=": [4, 6], "-=": [0, 2], "*=": [4, 8], "/=": [1, 2]}[op])
    c = Tensor([2.0])
    product = w * c
    apply(c, 5.0)  # a constant may be in a graph: it gets a new tensor, and the graph's gradient stays right
    product.sum().backward()
    np.testing.assert_array_equal(c.data, [2.0])
    np.testing.assert_array_equal(w.grad.data, [2.0, 2.0])
    x = Tensor([1.0, 3.0], autograd=True)
    y = apply(x * 1.0, 2.0)  # a graph node: a new node, so the gradient stays right
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, {"+=": 1.0, "-=": 1.0, "*=": 2.0, "/=": 0.5}[op])
    with pytest.raises(RuntimeError, match="in-place operation on a tensor with autograd=True .* no_grad"):
        apply(x, 2.0)  # a leaf would have silently become a node that no optimizer or layer sees
    np.testing.assert_array_equal(x.data, [1.0, 3.0])


def test_in_place_power_works_as_the_other_in_place_operators():
    # p **= 2 fell back to p = p ** 2: the loop variable was rebound and the parameter never changed.
    w = Tensor(np.array([2.0, 4.0], dtype=np.float32), autograd=True)
    with no_grad():
        w_before = w
        w **= np.float64(2)
    assert w is w_before and w.dtype == np.float32
    np.testing.assert_array_equal(w.data, [4.0, 16.0])
    with pytest.raises(RuntimeError, match="in-place operation on a tensor with autograd=True"):
        w **= 2
    with no_grad(), pytest.raises(TypeError, match="the exponent must be a real Python or numpy scalar"):
        w **= Tensor([2.0, 2.0])
    np.testing.assert_array_equal(w.data, [4.0, 16.0])
    x = Tensor([1.0, 3.0], autograd=True)
    y = x * 1.0
    y **= 2  # a graph node: a new node, whose gradient is 2x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 6.0])


def test_in_place_update_of_a_parameter_keeps_its_dtype_and_takes_any_operand():
    w = Tensor(np.array([1.0, 2.0], dtype=np.float32), autograd=True)
    (w * w).sum().backward()
    with no_grad():
        w -= np.array([0.5, 0.5])  # float64: cast into the float32 values, as PyTorch does
        w -= 0.25 * w.grad  # a Tensor
        w += w  # the operand is the tensor itself
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w.data, [0.0, 1.0])


def test_in_place_arithmetic_keeps_the_tensor_shape():
    w = Tensor(np.ones(3), autograd=True)
    with no_grad():
        w += np.full(1, 2.0)  # a smaller operand broadcasts
        with pytest.raises(ValueError, match=r"in-place subtract on a tensor of shape \[3\]: the other operand has "
                                             r"shape \[2, 3\], which does not broadcast to it"):
            w -= np.ones((2, 3))  # was numpy's "non-broadcastable output operand", naming neither tensor nor operator
    np.testing.assert_array_equal(w.data, [3.0, 3.0, 3.0])


def test_no_grad_records_nothing_and_restores_state():
    w = Tensor(np.ones(2), autograd=True)
    with no_grad():
        assert not is_grad_enabled()
        y = w * 3
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.autograd and y.creators is None
    with pytest.raises(RuntimeError, match="autograd=False"):
        y.backward()


def test_no_grad_as_decorator():
    @no_grad()
    def forward(t):
        return t * 2

    assert not forward(Tensor([1.0], autograd=True)).autograd
    assert is_grad_enabled()


def test_no_grad_on_a_generator_records_nothing_in_its_body_and_leaves_the_caller_recording():
    # The body of a generator runs at each next(), after the decorated call returned: it used to record.
    w = Tensor([1.0, 2.0], autograd=True)

    @no_grad
    def scaled(factors):
        """Doc."""
        received = None
        for factor in factors:
            assert not is_grad_enabled()
            received = yield w * factor + (0 if received is None else received)
        return "done"

    outputs = scaled([2, 3, 4])
    assert scaled.__name__ == "scaled" and scaled.__doc__ == "Doc."
    first = next(outputs)
    assert is_grad_enabled()  # between items, the caller's own mode
    caller = w * 2
    assert caller.autograd
    second = outputs.send(10)
    assert not first.autograd and not second.autograd
    np.testing.assert_array_equal(second.data, [13.0, 16.0])
    with pytest.raises(ValueError, match="into the body"):
        outputs.throw(ValueError("into the body"))  # raised where the body paused; it does not catch it
    assert is_grad_enabled()

    finished = scaled([1])
    next(finished)
    with pytest.raises(StopIteration) as stop:
        next(finished)
    assert stop.value.value == "done"
    closed = scaled([1, 2])
    next(closed)
    closed.close()
    assert is_grad_enabled()


def test_no_grad_on_a_generator_records_nothing_in_its_cleanup_or_its_handlers():
    # close() ran the body's finally clause recording: a tensor built there joined the caller's graph.
    w = Tensor([1.0, 2.0], autograd=True)
    built = {}

    @no_grad
    def items():
        try:
            while True:
                try:
                    yield w * 2
                except KeyError:  # a thrown exception the body catches: it goes on, still not recording
                    built["handler"] = w * 3
        finally:
            built["cleanup"] = w * 4

    generator = items()
    next(generator)
    assert not generator.throw(KeyError("skip")).autograd
    generator.close()
    assert is_grad_enabled()
    assert not built["handler"].autograd and not built["cleanup"].autograd


def test_tensors_without_autograd_record_nothing():
    a, b = Tensor([1.0, 2.0]), Tensor([3.0, 4.0])
    c = (a * b + a).tanh()
    assert not c.autograd and c.creators is None


def test_mixed_operands_record_and_only_the_tracked_one_gets_a_gradient():
    a = Tensor([1.0, 2.0], autograd=True)
    b = Tensor([3.0, 4.0])
    c = a * b
    assert c.autograd and c.creators == [a, b] and c.creation_op == "mul"
    c.sum().backward()
    np.testing.assert_array_equal(a.grad.data, [3.0, 4.0])
    assert b.grad is None


def test_numpy_arrays_on_the_left_dispatch_to_tensor():
    a = Tensor([1.0, 2.0], autograd=True)
    c = np.array([2.0, 3.0]) * a
    assert isinstance(c, Tensor)
    c.sum().backward()
    np.testing.assert_array_equal(a.grad.data, [2.0, 3.0])


def test_shape_dtype_numpy_item_len():
    t = Tensor(np.arange(6).reshape(2, 3))
    assert t.shape == (2, 3) and t.dtype == np.float64 and len(t) == 2
    assert t.numpy() is t.data
    assert Tensor(4.0).item() == 4.0


def test_numpy_reads_a_tensor_as_its_values():
    t = Tensor([[1.0, 2.0]])
    assert np.asarray(t) is t.data  # was an object array of 0-d Tensors
    assert np.array(t).dtype == np.float64 and np.array(t) is not t.data
    np.testing.assert_array_equal(np.asarray(t, dtype=np.float32), [[1.0, 2.0]])
    np.testing.assert_array_equal(np.array([t, t]), [[[1.0, 2.0]], [[1.0, 2.0]]])
    with pytest.raises(ValueError, match="needs a copy"):
        np.asarray(t, dtype=np.float32, copy=False)


def test_repr_and_str():
    t = Tensor([1.0, 2.0], autograd=True)
    assert repr(t) == "Tensor([1., 2.], autograd=True)"
    assert repr(Tensor(np.array([1.0], dtype=np.float32))) == "Tensor([1.], dtype=float32)"
    assert str(t) == "[1. 2.]"


def test_seed_style_sum_expand_transpose_mm():
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), autograd=True)
    np.testing.assert_array_equal(x.sum(0).data, [4.0, 6.0])
    np.testing.assert_array_equal(x.sum(1).data, [3.0, 7.0])
    np.testing.assert_array_equal(x.sum().data, 10.0)
    np.testing.assert_array_equal(Tensor([1.0, 2.0]).expand(0, 3).data, [[1, 2]] * 3)
    np.testing.assert_array_equal(Tensor([1.0, 2.0]).expand(1, 2).data, [[1, 1], [2, 2]])
    np.testing.assert_array_equal(x.transpose().data, [[1, 3], [2, 4]])
    np.testing.assert_array_equal(x.mm(x).data, [[7, 10], [15, 22]])


def test_softmax_and_log_softmax_are_stable():
    big = Tensor(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(big.softmax(1).data, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(big.log_softmax(1).data, [[0.0, -1000.0, -2000.0]])
    assert np.isfinite(big.sigmoid().data).all()


def test_pow_rejects_tensor_exponent():
    with pytest.raises(TypeError, match="exponent"):
        Tensor([1.0]) ** Tensor([2.0])


# Each was a numpy error from deep inside matmul, a generic TypeError/IndexError/ZeroDivisionError,
# a complex result, or a silently truncated argument.
@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: Tensor(np.ones((2, 3))).mm(Tensor(np.ones((2, 3)))), ValueError,
         r"mm: cannot multiply shapes \[2, 3\] and \[2, 3\]: the first one's last axis \(3\) must match"),
        (lambda: Tensor(np.ones((2, 3))) @ np.ones(2), ValueError, r"shapes \[2, 3\] and \[2\]: .* only axis \(2\)"),
        (lambda: np.ones((2, 2)) @ Tensor(np.ones((3, 3))), ValueError, r"shapes \[2, 2\] and \[3, 3\]"),
        (lambda: Tensor(np.ones((2, 3))).mm(2.0), ValueError, "both operands need at least one axis"),
        (lambda: Tensor(np.ones((2, 2, 3))).mm(np.ones((3, 3, 1))), ValueError, "batch\\) axes do not broadcast"),
        (lambda: Tensor(np.ones((2, 3))).mean(5), np.exceptions.AxisError, "axis 5 is out of bounds"),
        (lambda: Tensor(np.ones((2, 3))).mean("a"), TypeError, "mean\\(dim\\): expected an integer"),
        (lambda: Tensor(np.ones((0, 3))).mean(), ValueError, r"shape \[0, 3\]: no values to average"),
        (lambda: Tensor(np.ones((2, 3))).expand(0, 2.5), ValueError, "copies must be a non-negative integer, got 2.5"),
        (lambda: Tensor(np.ones((2, 3))).expand(0, -1), ValueError, "copies must be a non-negative integer, got -1"),
        (lambda: Tensor([2.0]) ** 1j, TypeError, "the exponent must be a real"),
        (lambda: Tensor([2.0]) ** "a", TypeError, "the exponent must be a real"),
        (lambda: [2.0] ** Tensor([2.0]), TypeError, r"x \*\* Tensor: the base must be a real"),
        (lambda: Tensor([1.5], dtype=np.int64), TypeError, "Tensor dtype must be a floating-point type, got int64"),
        (lambda: Tensor([[1.0], [1.0, 2.0]]), ValueError, "Tensor data must be a rectangular array"),
        (lambda: bool(Tensor([1.0, 2.0])), ValueError, "ambiguous"),
    ],
)
def test_misuse_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_mean_over_a_tuple_of_axes():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), autograd=True)
    y = x.mean((0, 2))
    np.testing.assert_allclose(y.data, x.data.mean(axis=(0, 2)))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.full((2, 3, 4), 1 / 8))


def test_truth_of_a_one_element_tensor_is_its_value():
    assert not Tensor([0.0]) and not Tensor(0.0) and Tensor([2.0])  # Tensor([0.0]) was true (its length)


def test_gradient_of_x_to_the_zero_is_zero_at_zero():
    x = Tensor([0.0, 3.0], autograd=True)
    (x**0).sum().backward()  # was 0 * 0 ** -1 = NaN at 0
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


def test_backward_seed_takes_the_tensor_dtype():
    x = Tensor([1.0, 2.0], autograd=True)
    (x * 2).backward(Tensor(np.ones(2, np.float32)))  # a float64 leaf got a float32 gradient
    assert x.grad.dtype == np.float64


def test_linear_names_the_width_it_expected():
    from minigrad.tensor import linear

    weight, bias = Tensor(np.ones((2, 3)), autograd=True), Tensor(np.zeros(3), autograd=True)
    with pytest.raises(ValueError, match=r"Linear\(2, 3\): expected inputs with 2 features \(the last axis\), "
                                         r"got shape \[4, 3\]"):
        linear(Tensor(np.ones((4, 3))), weight, bias, "relu")  # was numpy's "shapes (4,3) and (2,3) not aligned"
    with pytest.raises(TypeError, match=r"Linear\(2, 3\): expected a Tensor input, got ndarray"):
        linear(np.ones((4, 2)), weight, bias)  # was "'memoryview' object has no attribute 'dot'"


def test_one_no_grad_instance_entered_twice_restores_recording():
    quiet = no_grad()
    with quiet:
        with quiet:
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()  # was left off for good: the inner entry had overwritten the saved state


def test_a_tensor_index_must_hold_whole_numbers():
    x = Tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(x[Tensor([2.0, 0.0])].data, [3.0, 1.0])
    with pytest.raises(IndexError, match="a Tensor index must hold whole numbers"):
        x[Tensor([0.7])]  # was x[0]
    with pytest.raises(IndexError, match="a Tensor index must hold whole numbers"):
        Tensor(np.ones((2, 2)))[0, Tensor([0.7])]


def test_no_grad_as_a_decorator_without_parentheses():
    @no_grad
    def forward(x):
        """Doc."""
        return x * 2

    y = forward(Tensor([1.0], autograd=True))
    assert not y.autograd and forward.__name__ == "forward" and forward.__doc__ == "Doc."
    assert is_grad_enabled()
