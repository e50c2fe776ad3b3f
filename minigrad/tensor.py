"""The autograd Tensor.

A Tensor wraps a numpy array. When it has ``autograd=True`` (and gradient recording is on), every
operation on it returns a Tensor that remembers its parents and a backward function mapping the
output's gradient to the parents' gradients. ``backward`` visits that graph in reverse creation
order (ids grow monotonically, so a child always has a larger id than its parents): no recursion,
each node's backward function runs exactly once, and gradients from several children are summed
before they flow further.

Invariants the engine relies on:
- gradient arrays are never modified in place (several tensors may share one), so accumulation
  always allocates; optimizers only read ``.grad`` (plain SGD scales one in place only when the
  reference counts show nobody else can see it: ``optim._sole_owner``).
- backward closures capture arrays, never the output Tensor, so a graph holds no reference
  cycle and is freed by reference counting as soon as the loss goes out of scope.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
import operator
import threading

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

__all__ = ["Tensor", "no_grad", "is_grad_enabled"]

_next_id = itertools.count(1).__next__


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def _real_exponent(exponent):
    """The exponent of ``Tensor ** x``: a real Python or numpy scalar, a numpy one as a Python number (so that
    x32 ** np.float64(2) stays float32); a Tensor, an array, a complex number or a string is a TypeError."""
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"Tensor ** x: the exponent must be a real Python or numpy scalar, got {exponent!r}")
    return exponent.item() if isinstance(exponent, np.generic) else exponent


def _generator_without_recording(function):
    """``function`` (a generator function) whose body records nothing. The body runs at each ``next()``, long after
    the call returned, so each resumption is wrapped (as PyTorch's decorator does), and the caller keeps its own
    mode in between."""

    def wrapper(*args, **kwargs):
        generator = function(*args, **kwargs)
        resume, value = generator.send, None
        while True:
            try:
                with no_grad():
                    item = resume(value)
            except StopIteration as stop:
                return stop.value
            try:
                value, resume = (yield item), generator.send
            except GeneratorExit:
                with no_grad():  # the body's finally and except clauses run here, and record nothing either
                    generator.close()
                raise
            except BaseException as error:  # thrown in by the caller: into the body, where it belongs
                value, resume = error, generator.throw

    return wrapper


class no_grad:
    """Context manager (or decorator, ``@no_grad()`` or ``@no_grad``) inside which no operation is recorded
    for backward."""

    def __new__(cls, function=None):
        if function is not None:  # @no_grad without parentheses: it was "takes no arguments"
            return cls()(function)
        return super().__new__(cls)

    def __init__(self, function=None):
        # A stack, not one saved flag: the same instance entered twice (nested) must restore twice.
        self._previous = []

    def __enter__(self):
        self._previous.append(_grad_mode.enabled)
        _grad_mode.enabled = False
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._previous.pop()
        return False

    def __call__(self, function):
        if inspect.isgeneratorfunction(function):
            wrapper = _generator_without_recording(function)
        else:
            def wrapper(*args, **kwargs):
                with no_grad():
                    return function(*args, **kwargs)

        wrapper.__name__ = getattr(function, "__name__", "wrapper")
        wrapper.__doc__ = getattr(function, "__doc__", None)
        return wrapper


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


def _as_float_array(data) -> np.ndarray:
    """Copy ``data`` into a float ndarray: integers and booleans become float64, floats keep their width."""
    if isinstance(data, Tensor):
        data = data.data
    try:
        array = np.array(data)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"Tensor data must be a rectangular array of numbers ({exc})") from None
    kind = array.dtype.kind
    if kind == "f":
        return array
    if kind in "biu":
        return array.astype(np.float64)
    raise TypeError(f"Tensor data must be numeric, got an array of dtype {array.dtype}")


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes numpy broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


def _operand(value):
    """The array behind a Tensor, or a Python/numpy scalar or array used as a constant."""
    if isinstance(value, Tensor):
        return value.data
    cls = type(value)
    if cls is float or cls is int:  # by exact type, before the numpy check: the usual scalar pays no isinstance
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        # As a Python number: numpy's own scalars are not "weak" (NEP 50), so np.float64(2) or np.int64(2)
        # turned a float32 tensor into float64. PyTorch, too, takes them as plain numbers.
        return value.item()
    if isinstance(value, (int, float)):  # bool, and subclasses of int or float
        return value
    return _as_float_array(value)


_new = object.__new__


def _constant(data: np.ndarray) -> Tensor:
    t = _new(Tensor)
    t.data = data
    t.autograd = False
    t.grad = None
    t.id = _next_id()
    t._parents = ()
    t._backward = None
    t.creation_op = None
    return t


def _node(data: np.ndarray, op: str, parents: tuple, backward) -> Tensor:
    t = _new(Tensor)
    t.data = data
    t.autograd = True
    t.grad = None
    t.id = _next_id()
    t._parents = parents
    t._backward = backward
    t.creation_op = op
    return t


def _records(*tensors) -> bool:
    """Whether an operation on these operands must be recorded for backward."""
    if not _grad_mode.enabled:
        return False
    for t in tensors:
        if isinstance(t, Tensor) and t.autograd:
            return True
    return False



def _whole_numbers(values: np.ndarray) -> bool:
    """Whether every value is a finite whole number (a float array that can stand for positions or labels)."""
    return bool(np.isfinite(values).all()) and np.array_equal(values, np.round(values))


class Tensor:
    """An n-dimensional array with reverse-mode automatic differentiation."""

    __slots__ = ("data", "autograd", "grad", "id", "_parents", "_backward", "creation_op", "__weakref__")
    # numpy defers to our reflected operators (ndarray * Tensor -> Tensor.__rmul__).
    __array_ufunc__ = None

    def __init__(self, data, autograd=False, dtype=None):
        array = _as_float_array(data)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":  # an integer Tensor would truncate every gradient step
                raise TypeError(f"Tensor dtype must be a floating-point type, got {dtype}")
            array = array.astype(dtype, copy=False)
        self.data = array
        self.autograd = bool(autograd)
        self.grad = None
        self.id = _next_id()
        self._parents = ()
        self._backward = None
        self.creation_op = None

    def __setstate__(self, state):
        # copy.copy, copy.deepcopy and pickle rebuild a tensor here. The copy is a tensor of its own and needs an id of
        # its own: backward keys gradients by id, so a deep-copied model (a teacher, a target network) shared its
        # original's ids and the two models' gradients were merged into one of them. A deep copy sets its parents'
        # state before its own, so a copied graph keeps every parent's id below its children's.
        # (instance dict, slots): the dict is a subclass's own attributes, if it has any.
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        for name, value in itertools.chain((attributes or {}).items(), (slots or {}).items()):
            setattr(self, name, value)
        self.id = _next_id()

    # ------------------------------------------------------------------ introspection
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def creators(self):
        """The tensors this one was computed from (None for a leaf), as in the course notes."""
        return list(self._parents) if self._parents else None

    def numpy(self) -> np.ndarray:
        return self.data

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # np.asarray(t) is t's values, as for a PyTorch tensor; without this numpy took a Tensor for a sequence
        # and made an object array of 0-d Tensors.
        if copy is False and dtype is not None and np.dtype(dtype) != self.data.dtype:
            raise ValueError(f"np.asarray(Tensor, dtype={np.dtype(dtype)}, copy=False): a {self.data.dtype} tensor "
                             "needs a copy for that dtype")
        if dtype is not None:
            return self.data.astype(dtype, copy=bool(copy))
        return self.data.copy() if copy else self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        return _constant(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        # As numpy: the truth of a one-element tensor is its value's, a larger one's is ambiguous (an error).
        # Without this, Python judged a tensor by its length: Tensor([0.0]) was true.
        return bool(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        extras = "" if self.data.dtype == np.float64 else f", dtype={self.data.dtype}"
        if self.autograd:
            extras += ", autograd=True"
        return f"Tensor({body}{extras})"

    def __str__(self) -> str:
        return str(self.data)

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) * grad into ``.grad`` of every leaf with ``autograd=True``.

        ``grad`` defaults to ones (the gradient of ``self.sum()``). Only leaves keep ``.grad``;
        intermediate gradients live for the duration of this call.
        """
        if not self.autograd:
            raise RuntimeError("backward() called on a tensor with autograd=False: nothing to differentiate")
        if grad is None:
            data = self.data
            seed = _constants(data.dtype).one if data.ndim == 0 else np.ones(data.shape, data.dtype)
        else:
            seed = grad.data if isinstance(grad, Tensor) else np.asarray(grad, dtype=self.data.dtype)
            if seed.dtype != self.data.dtype:  # else a float64 model's leaves got float32 gradients
                seed = seed.astype(self.data.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(f"backward(grad): expected shape {self.data.shape}, got {seed.shape}")

        # Leaves' gradients are summed in ``leaves`` (id -> (leaf, gradient)) and stored at the end.
        leaves = {}
        if self._backward is None:  # self is itself a leaf
            leaves[self.id] = (self, seed)
        else:
            # Fast path: while each node has at most one recorded non-leaf parent, the nodes below
            # form a chain and each receives exactly one gradient: follow it with no visit order and
            # no pending-gradient dict (most of a small model's backward was that bookkeeping).
            node, g = self, seed
            while node is not None:
                following = branches = None
                for parent, pg in zip(node._parents, node._backward(g)):
                    if pg is None or not parent.autograd:
                        continue
                    if parent._backward is None:  # _gather_leaf, inlined: the common case
                        pid = parent.id
                        held = leaves.get(pid)
                        leaves[pid] = (parent, pg) if held is None else (parent, held[1] + pg)
                    elif following is None:
                        following, g = parent, pg
                    elif branches is None:
                        branches = [(following, g), (parent, pg)]
                    else:
                        branches.append((parent, pg))
                if branches is not None:  # the graph branches here: the general walk takes over
                    _backpropagate(branches, leaves)
                    break
                node = following
        for leaf, g in leaves.values():
            dtype = leaf.data.dtype
            if g.dtype is not dtype and g.dtype != dtype:  # a float32 weight that met float64 data: float32 still
                g = g.astype(dtype)
            if leaf.grad is not None:
                g = leaf.grad.data + g  # a new array, see the module docstring
            elif not g.flags.writeable:  # a broadcast view or a shared constant: copy it
                g = g.copy()
            leaf.grad = _constant(g)

    # ------------------------------------------------------------------ elementwise arithmetic
    def __neg__(self):
        out = -self.data
        if _records(self):
            return _node(out, "neg", (self,), _neg_backward)
        return _constant(out)

    def __add__(self, other):
        b = _operand(other)
        out = self.data + b
        if _records(self, other):
            a_shape, b_shape = self.data.shape, np.shape(b)

            def backward(g):
                return _unbroadcast(g, a_shape), _unbroadcast(g, b_shape)

            return _node(out, "add", _pair(self, other), backward)
        return _constant(out)

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        b = _operand(other)
        out = self.data - b
        if _records(self, other):
            a_shape, b_shape = self.data.shape, np.shape(b)

            def backward(g):
                return _unbroadcast(g, a_shape), _unbroadcast(-g, b_shape)

            return _node(out, "sub", _pair(self, other), backward)
        return _constant(out)

    def __rsub__(self, other):
        return (-self).__add__(other)

    def __mul__(self, other):
        a = self.data
        b = _operand(other)
        out = a * b
        if _records(self, other):
            needs_a, needs_b = self.autograd, isinstance(other, Tensor) and other.autograd

            def backward(g):
                return (
                    _unbroadcast(g * b, a.shape) if needs_a else None,
                    _unbroadcast(g * a, np.shape(b)) if needs_b else None,
                )

            return _node(out, "mul", _pair(self, other), backward)
        return _constant(out)

    def __rmul__(self, other):
        return self.__mul__(other)

    def __truediv__(self, other):
        a = self.data
        b = _operand(other)
        out = a / b
        if _records(self, other):
            needs_a, needs_b = self.autograd, isinstance(other, Tensor) and other.autograd

            def backward(g):
                return (
                    _unbroadcast(g / b, a.shape) if needs_a else None,
                    _unbroadcast(-g * out / b, np.shape(b)) if needs_b else None,
                )

            return _node(out, "div", _pair(self, other), backward)
        return _constant(out)

    def __rtruediv__(self, other):
        return _lift(other, self.data.dtype).__truediv__(self)

    # In-place arithmetic (and **= below). Without these, ``p -= alpha * p.grad`` (a step written by hand) fell back to
    # ``p = p - ...``: a new tensor bound to the loop variable, while the model's parameter never changed.
    def __iadd__(self, other):
        return self._in_place(other, np.add, Tensor.__add__)

    def __isub__(self, other):
        return self._in_place(other, np.subtract, Tensor.__sub__)

    def __imul__(self, other):
        return self._in_place(other, np.multiply, Tensor.__mul__)

    def __itruediv__(self, other):
        return self._in_place(other, np.divide, Tensor.__truediv__)

    def _in_place(self, other, ufunc, recorded):
        """``self op= other``. A leaf with autograd (a parameter) changes in place inside ``no_grad``, as an optimizer
        changes it, and refuses while recording (as in PyTorch: it would silently become a graph node that optimizers
        and layers no longer see). Any other tensor gets a new one, as from ``self op other``: a constant or a node
        may be held by a recorded graph whose gradient its old values must still give."""
        if not (self.autograd and self._backward is None):
            return recorded(self, other)
        if _grad_mode.enabled:
            raise RuntimeError("an in-place operation on a tensor with autograd=True while gradients are recorded; "
                               "update parameters inside `with no_grad():`, or write `x = x + ...` for a new tensor")
        operand = _operand(other)
        try:
            ufunc(self.data, operand, out=self.data)
        except ValueError:  # numpy's "non-broadcastable output operand", raised before it wrote anything
            raise ValueError(f"in-place {ufunc.__name__} on a tensor of shape {list(self.data.shape)}: the other "
                             f"operand has shape {list(np.shape(operand))}, which does not broadcast to it (the tensor "
                             "keeps its shape; write x = x + y for a tensor of the broadcast shape)") from None
        return self

    def __ipow__(self, exponent):  # as += does: in place for a parameter inside no_grad
        return self._in_place(_real_exponent(exponent), np.power, Tensor.__pow__)

    def __pow__(self, exponent):
        cls = type(exponent)
        if cls is not int and cls is not float:  # a Python number needs neither check (numbers.Real's is slow)
            exponent = _real_exponent(exponent)
        a = self.data
        out = a**exponent
        if _records(self):

            def backward(g):
                if exponent == 0:  # x ** 0 is constant; the formula below gives 0 * 0 ** -1 = NaN at 0
                    return (np.zeros_like(out),)
                return (g * (exponent * a ** (exponent - 1)),)

            return _node(out, "pow", (self,), backward)
        return _constant(out)

    def __rpow__(self, base):  # base ** self, e.g. 2 ** x: d/dx = base ** x * log(base)
        if not isinstance(base, numbers.Real):
            raise TypeError(f"x ** Tensor: the base must be a real Python or numpy scalar, got {base!r}")
        base = _operand(base)
        out = np.power(base, self.data)
        if _records(self):
            # A Python float, which keeps a float32 gradient float32. The gradient of 0 ** x is 0 where x > 0 (as
            # PyTorch has it); a negative base has no real logarithm.
            log_base = math.log(base) if base > 0 else 0.0 if base == 0 else math.nan
            return _node(out, "rpow", (self,), lambda g: (g * out * log_base,))
        return _constant(out)

    # ------------------------------------------------------------------ elementwise functions
    def exp(self):
        out = np.exp(self.data)
        if _records(self):
            return _node(out, "exp", (self,), lambda g: (g * out,))
        return _constant(out)

    def log(self):
        a = self.data
        out = np.log(a)
        if _records(self):
            return _node(out, "log", (self,), lambda g: (g / a,))
        return _constant(out)

    def sigmoid(self):
        return self._activation("sigmoid")

    def tanh(self):
        return self._activation("tanh")

    def relu(self):
        return self._activation("relu")

    def _activation(self, name):
        forward, derivative = _ACTIVATIONS[name]
        data = self.data
        # numpy returns a scalar, not a 0-d array, for a 0-d input without ``out``; give it one.
        out = forward(data, None if data.ndim else np.empty_like(data))
        if _records(self):
            return _node(out, name, (self,), lambda g: (derivative(g, out),))
        return _constant(out)

    def softmax(self, dim=-1):
        out = _softmax(self.data, dim)
        if _records(self):

            def backward(g):
                return (out * (g - (g * out).sum(axis=dim, keepdims=True)),)

            return _node(out, "softmax", (self,), backward)
        return _constant(out)

    def log_softmax(self, dim=-1):
        shifted = self.data - self.data.max(axis=dim, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        if _records(self):

            def backward(g):
                return (g - np.exp(out) * g.sum(axis=dim, keepdims=True),)

            return _node(out, "log_softmax", (self,), backward)
        return _constant(out)

    # ------------------------------------------------------------------ reductions and shapes
    def sum(self, dim=None):
        a_shape = self.data.shape
        out = np.asarray(self.data.sum(axis=dim))
        if _records(self):

            def backward(g):
                if dim is not None:
                    g = np.expand_dims(g, dim)
                return (np.broadcast_to(g, a_shape),)

            return _node(out, "sum" if dim is None else f"sum_{dim}", (self,), backward)
        return _constant(out)

    def mean(self, dim=None):
        shape = self.data.shape
        if dim is None:
            count = self.data.size
        else:
            try:
                axes = normalize_axis_tuple(dim, len(shape))
            except TypeError:
                raise TypeError(f"mean(dim): expected an integer or a tuple of integers, got {dim!r}") from None
            count = 1
            for axis in axes:
                count *= shape[axis]
        if not count:
            raise ValueError(f"mean(dim={dim!r}) of a tensor of shape {list(shape)}: no values to average")
        return self.sum(dim) * (1.0 / count)

    def expand(self, dim, copies):
        """Repeat the tensor ``copies`` times along a new axis inserted at ``dim``."""
        if isinstance(copies, (bool, np.bool_)) or not isinstance(copies, numbers.Integral) or copies < 0:
            raise ValueError(f"expand(dim, copies): copies must be a non-negative integer, got {copies!r}")
        out = np.repeat(np.expand_dims(self.data, dim), copies, axis=dim)
        if _records(self):
            return _node(out, f"expand_{dim}", (self,), lambda g: (g.sum(axis=dim),))
        return _constant(out)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        out = self.data.transpose(*axes)
        if _records(self):
            # Axes as numpy takes them (-1 is the last): the inverse is the argsort of their positions.
            inverse = tuple(np.argsort(np.mod(axes, self.data.ndim))) if axes else ()

            def backward(g):
                return (g.transpose(*inverse),)

            return _node(out, "transpose", (self,), backward)
        return _constant(out)

    @property
    def T(self):
        return self.transpose()

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        a_shape = self.data.shape
        out = self.data.reshape(shape)
        if _records(self):
            return _node(out, "reshape", (self,), lambda g: (g.reshape(a_shape),))
        return _constant(out)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = _positions(index)
        elif type(index) is tuple:  # x[rows, columns] with Tensors of positions: numpy refused them
            index = tuple(_positions(i) if isinstance(i, Tensor) else i for i in index)
        a_shape, dtype = self.data.shape, self.data.dtype
        out = self.data[index]
        if _records(self):

            def backward(g):
                full = np.zeros(a_shape, dtype=dtype)
                np.add.at(full, index, g)
                return (full,)

            return _node(out, "index", (self,), backward)
        return _constant(out)

    # ------------------------------------------------------------------ matrix products
    def mm(self, x):
        """Matrix product, as ``numpy.matmul``; only the operands that need a gradient get one."""
        a = self.data
        other = x if isinstance(x, Tensor) else _lift(x, a.dtype)
        b = other.data
        try:
            out = a @ b
        except ValueError:
            raise _mm_error(a.shape, b.shape) from None
        if _records(self, other):
            needs_a, needs_b = self.autograd, other.autograd

            def backward(g):
                return _matmul_backward(a, b, g, needs_a, needs_b)

            return _node(out, "mm", (self, other), backward)
        return _constant(out)

    __matmul__ = mm

    def __rmatmul__(self, other):
        return _lift(other, self.data.dtype).mm(self)


_by_id = operator.attrgetter("id")


def _gather_leaf(leaves: dict, leaf: Tensor, g: np.ndarray):
    """Add ``g`` to the gradient ``leaf`` receives in this backward (in the order contributions arrive)."""
    lid = leaf.id
    held = leaves.get(lid)
    leaves[lid] = (leaf, g) if held is None else (leaf, held[1] + g)


def _backpropagate(contributions: list, leaves: dict):
    """Backward through every recorded node reachable from ``contributions``, (node, gradient) pairs
    for non-leaf nodes, visiting children before parents; leaves' gradients go to ``leaves``.

    Every node is collected iteratively, then visited in descending id order: a parent is always
    created before its children, so each node's gradient is complete when it is reached.
    """
    # Pending gradients, keyed by node id: popped when the node is reached, so the dict only ever
    # holds the frontier and each array is released as soon as it has been used.
    grads = {}
    nodes, seen = [], set()
    for node, g in contributions:
        nid = node.id
        held = grads.get(nid)
        grads[nid] = g if held is None else held + g
        if nid not in seen:
            seen.add(nid)
            nodes.append(node)
    stack = list(nodes)
    while stack:
        for parent in stack.pop()._parents:
            if parent._backward is not None and parent.autograd and parent.id not in seen:
                seen.add(parent.id)
                nodes.append(parent)
                stack.append(parent)
    nodes.sort(key=_by_id, reverse=True)
    take, held = grads.pop, grads.get
    for node in nodes:
        g = take(node.id, None)
        if g is None:
            continue
        for parent, pg in zip(node._parents, node._backward(g)):
            if pg is None or not parent.autograd:
                continue
            if parent._backward is None:
                _gather_leaf(leaves, parent, pg)
            else:
                pid = parent.id
                previous = held(pid)
                grads[pid] = pg if previous is None else previous + pg


def _mm_error(a_shape: tuple, b_shape: tuple) -> ValueError:
    """Why numpy's matmul refused these shapes, in the words of ``mm``."""
    shapes = f"mm: cannot multiply shapes {list(a_shape)} and {list(b_shape)}"
    if not a_shape or not b_shape:
        return ValueError(f"{shapes}: both operands need at least one axis")
    inner = b_shape[-2] if len(b_shape) >= 2 else b_shape[0]
    if a_shape[-1] != inner:
        return ValueError(f"{shapes}: the first one's last axis ({a_shape[-1]}) must match the second one's "
                          f"{'second-to-last' if len(b_shape) >= 2 else 'only'} axis ({inner})")
    return ValueError(f"{shapes}: their leading (batch) axes do not broadcast together")


def _positions(index: Tensor) -> np.ndarray:
    """A Tensor used as an index, as integer positions."""
    positions = index.data
    # A Tensor holds floats: 0.7 was truncated to 0, and a boolean mask (stored as 1.0/0.0) taken
    # as the positions 1 and 0. Only whole numbers are positions; a mask stays a numpy bool array.
    if not _whole_numbers(positions):
        raise IndexError("a Tensor index must hold whole numbers (positions); use a numpy array for a mask")
    return positions.astype(np.intp)


def _neg_backward(g):
    return (-g,)


def _lift(value, dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return _constant(np.asarray(value, dtype=dtype))


def _pair(a: Tensor, b) -> tuple:
    """Parents of a binary op: a non-Tensor operand is a constant and gets no gradient."""
    return (a, b) if isinstance(b, Tensor) else (a,)


def _softmax(x: np.ndarray, dim) -> np.ndarray:
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    e /= e.sum(axis=dim, keepdims=True)
    return e


def _matmul_backward(a, b, g, needs_a, needs_b):
    ga = gb = None
    if a.ndim == 2 and b.ndim == 2:
        if needs_a:
            ga = g @ b.T
        if needs_b:
            gb = a.T @ g
        return ga, gb
    # Vectors and stacks: lift 1-d operands to matrices, then reduce broadcast batch axes.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    # b's axis first: for two vectors g is 0-d, and only then has the axis a's needs to go before.
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if needs_a:
        ga = _unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
    if needs_b:
        gb = _unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
    return ga, gb


# ---------------------------------------------------------------------- activations
# Numpy combines an array with a 0-d array of its own dtype about twice as fast as with a Python
# scalar, and such a constant never widens float32 to float64: every op uses these.
class _Constants:
    __slots__ = ("zero", "half", "one")

    def __init__(self, dtype):
        for name, value in (("zero", 0), ("half", 0.5), ("one", 1)):
            constant = np.array(value, dtype=dtype)
            constant.flags.writeable = False  # shared by every op (and the seed of backward)
            setattr(self, name, constant)


class _ConstantsByDtype(dict):
    def __missing__(self, dtype):
        constants = self[dtype] = _Constants(dtype)
        return constants


# ``_constants(dtype) -> _Constants``: a dict look-up called as a function, with no Python frame
# (several calls per training step).
_constants = _ConstantsByDtype().__getitem__


# Each activation is ``forward(x, out)``, writing f(x) into ``out`` (a new array if None, or x
# itself), and ``derivative(g, y)``, returning g * f'(x) from the output y = f(x) alone. Tensor's
# methods and the fused ``linear`` node share them.
def _relu(x, out):
    return np.maximum(x, _constants(x.dtype).zero, out=out)


def _relu_derivative(g, y):
    return g * (y > _constants(y.dtype).zero)


def _tanh(x, out):
    return np.tanh(x, out=out)


def _tanh_derivative(g, y):
    return g * (_constants(y.dtype).one - y * y)


def _sigmoid(x, out):
    # 0.5 * (1 + tanh(x / 2)) is the logistic function without exp overflow for large |x|.
    k = _constants(x.dtype)
    out = np.multiply(x, k.half, out=out)
    np.tanh(out, out=out)
    out += k.one
    out *= k.half
    return out


def _sigmoid_derivative(g, y):
    d = _constants(y.dtype).one - y
    d *= y
    return g * d


_ACTIVATIONS = {
    "relu": (_relu, _relu_derivative),
    "tanh": (_tanh, _tanh_derivative),
    "sigmoid": (_sigmoid, _sigmoid_derivative),
}


def linear_array(a: np.ndarray, w: np.ndarray, b: np.ndarray | None, activation: str | None = None) -> np.ndarray:
    """The arithmetic of ``linear``'s forward on arrays, recording nothing (inference without Tensors):
    ``activation(a @ w + b)`` in one new array."""
    # ndarray.dot runs the same BLAS product as @ on matrices with less per-call overhead (and
    # np.dot's Python-level dispatcher adds more: 0.45 vs 0.31 us on a small model).
    out = a.dot(w) if a.ndim == 2 else a @ w
    if b is not None:
        out += b
    if activation is not None:
        _ACTIVATIONS[activation][0](out, out)
    return out


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None = None) -> Tensor:
    """``activation(x @ weight + bias)`` as one graph node.

    One allocation forward (bias and activation are applied in place: the pre-activation is never
    seen by anyone else), one node's bookkeeping instead of three, and no input gradient unless
    ``x`` needs one. ``activation`` is None or a name in ``_ACTIVATIONS``.
    """
    w = weight.data
    try:
        a = x.data
        out = linear_array(a, w, None if bias is None else bias.data, activation)
    except (AttributeError, ValueError) as exc:  # checked only once it failed: nothing extra on the hot path
        raise _linear_input_error(x, w, exc) from None
    derivative = None if activation is None else _ACTIVATIONS[activation][1]
    needs_x, needs_w = x.autograd, weight.autograd
    if not (_grad_mode.enabled and (needs_x or needs_w or (bias is not None and bias.autograd))):
        return _constant(out)
    op = _LINEAR_OPS[activation]

    if a.ndim == 2 and bias is not None:
        # The usual case (a batch of rows, with a bias) with no shape branches: on a small model
        # the backward's Python steps cost as much as its numpy calls.
        def matrix_backward(g):
            if derivative is not None:
                g = derivative(g, out)
            return (
                g.dot(w.T) if needs_x else None,
                a.T.dot(g) if needs_w else None,
                _ones(g.shape[0], g.dtype).dot(g),  # _column_sums, inlined
            )

        return _node(out, op, (x, weight, bias), matrix_backward)

    def backward(g):
        if derivative is not None:
            g = derivative(g, out)
        gw = gb = None
        if a.ndim == 2:
            if needs_w:
                gw = a.T.dot(g)
            gb = _column_sums(g)
        elif a.ndim == 1:
            if needs_w:
                gw = np.outer(a, g)
            gb = g
        else:
            flat_g = g.reshape(-1, g.shape[-1])
            if needs_w:
                gw = a.reshape(-1, a.shape[-1]).T.dot(flat_g)
            gb = _column_sums(flat_g)
        gx = (g.dot(w.T) if g.ndim == 2 else g @ w.T) if needs_x else None
        return (gx, gw) if bias is None else (gx, gw, gb)

    if bias is None:
        return _node(out, op, (x, weight), backward)
    return _node(out, op, (x, weight, bias), backward)


def _linear_input_error(x, w: np.ndarray, error: Exception) -> Exception:
    """What made ``linear`` fail, if it is the input: the error to raise instead of ``error``."""
    name = f"Linear({w.shape[0]}, {w.shape[1]})" if w.ndim == 2 else "Linear"
    if not isinstance(x, Tensor):
        return TypeError(f"{name}: expected a Tensor input, got {type(x).__name__} (wrap the data in Tensor(...))")
    if not isinstance(x.data, np.ndarray):
        return TypeError(f"{name}: the input Tensor holds a {type(x.data).__name__}, not a numpy array")
    shape = x.data.shape
    if w.ndim == 2 and (not shape or shape[-1] != w.shape[0]):
        return ValueError(f"{name}: expected inputs with {w.shape[0]} features (the last axis), "
                          f"got shape {list(shape)}")
    return error  # the input fits: the layer's own parameters are at fault


_LINEAR_OPS = {None: "linear", **{name: f"linear_{name}" for name in _ACTIVATIONS}}


_add_reduce = np.add.reduce  # ndarray.sum without the Python-level wrapper (half the call cost)


def _column_sums(g: np.ndarray) -> np.ndarray:
    """``g.sum(axis=0)`` of a matrix as a BLAS product with a ones vector: 2-3x faster than a reduce."""
    return _ones(g.shape[0], g.dtype).dot(g)


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype) -> np.ndarray:
    ones = np.ones(n, dtype=dtype)
    ones.flags.writeable = False  # shared by every call
    return ones
