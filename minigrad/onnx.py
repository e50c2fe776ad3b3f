"""ONNX export and import: a minigrad model as a standard ONNX graph, and the dense MLPs of other tools as minigrad
models.

``export(model, path)`` writes one ``Gemm`` per ``Linear`` (our weight layout, ``transB=0``, so the weights are
stored bit for bit) and one ``Relu``/``Tanh``/``Sigmoid``/``Softmax(axis=-1)`` per activation, with a dynamic batch
dimension, in the model's dtype, and the model's metadata as ONNX ``metadata_props``. ``load(path)`` reads the
dense subset that ``torch.onnx.export`` and ``skl2onnx`` produce for MLPs back into a ``Sequential``; any other
graph is refused with an ``OnnxImportError`` naming the node and its op type. See docs/onnx.md.

This module needs the ``onnx`` package (``pip install minigrad[onnx]``); the rest of minigrad never imports it.
"""

from __future__ import annotations

import json
import os

import numpy as np

try:
    # An absolute import: the top-level onnx package, not this module (Python 3 has no implicit relative imports).
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without onnx
    raise ImportError(
        f"minigrad.onnx needs the onnx package, which cannot be imported ({exc}); install it with: "
        "pip install minigrad[onnx]"
    ) from exc

from . import __version__
from .format import FORMAT, VERSION, ModelFormatError, from_dict, to_dict, validate_document
from .nn import Sequential

__all__ = ["OnnxImportError", "export", "dumps", "load", "loads", "SUPPORTED_OPS", "OPSET", "IR_VERSION"]

#: The opset written by ``export``: Softmax-13 (axis -1 means the features), Gemm-13; read by every
#: ONNX Runtime since 1.12 (IR version 8).
OPSET = 17
IR_VERSION = 8

#: Ops ``load`` turns into layers or skips as harmless, in the order the refusal message lists them.
SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Softmax", "Flatten", "Identity", "Cast",
                 "Reshape")

_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "Softmax")
# How many inputs the ops with weights take (the ONNX spec's arity; a malformed graph may say otherwise). The
# rest take one tensor, plus Reshape's shape.
_INPUT_COUNTS = {"Gemm": (2, 3), "MatMul": (2, 2), "Add": (2, 2)}
_ELEMENT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
_DTYPE_ELEMENTS = {name: element for element, name in _ELEMENT_TYPES.items()}
_DEFAULT_DOMAINS = ("", "ai.onnx")

# metadata_props hold strings only: values that are not strings are written as JSON, and this key lists which,
# so that a string that happens to look like JSON ("3") comes back as the string it was.
JSON_VALUES_KEY = "minigrad.json_values"


class OnnxImportError(ModelFormatError):
    """An ONNX model minigrad cannot represent (or cannot write); ``location`` names the node, input or
    initializer, e.g. ``node 'Conv_0' (Conv)``."""


def _type_name(number: int, enum=TensorProto.DataType) -> str:
    """FLOAT, INT64...; a number outside the enum (a corrupt or future file) as itself, not protobuf's ValueError."""
    return enum.Name(number) if number in enum.values() else str(number)


def _refuse(location: str, message: str):
    raise OnnxImportError([(location, message)])


# ---------------------------------------------------------------------- export


def _graph(model) -> onnx.ModelProto:
    """The ONNX model for a minigrad model (validated through the model document first)."""
    document = validate_document(to_dict(model))
    dtype = np.dtype(document["dtype"])
    element = _DTYPE_ELEMENTS[document["dtype"]]
    nodes, initializers = [], []
    current, n_inputs, features = "input", None, None
    for i, spec in enumerate(document["layers"]):
        output = f"layers.{i}"
        if spec["type"] == "Linear":
            weight, bias = f"layers.{i}.weight", f"layers.{i}.bias"
            # Our [in, out] layout is Gemm's B with transB=0: the weights are stored as they are, bit for bit.
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(spec["weight"], dtype=dtype), weight))
            initializers.append(numpy_helper.from_array(np.asarray(spec["bias"], dtype=dtype), bias))
            nodes.append(helper.make_node("Gemm", [current, weight, bias], [output], name=f"layers.{i}.Gemm",
                                          alpha=1.0, beta=1.0, transA=0, transB=0))
            n_inputs = spec["in_features"] if n_inputs is None else n_inputs
            features = spec["out_features"]
        elif spec["type"] not in _ACTIVATIONS:  # a layer registered by a program: its ONNX op is unknown
            _refuse(f"layers[{i}].type", f"{spec['type']} has no ONNX export; minigrad exports Linear, "
                                         f"{', '.join(_ACTIVATIONS)}")
        elif spec["type"] == "Softmax":
            nodes.append(helper.make_node("Softmax", [current], [output], name=f"layers.{i}.Softmax", axis=-1))
        else:
            nodes.append(helper.make_node(spec["type"], [current], [output], name=f"layers.{i}.{spec['type']}"))
        current = output
    nodes[-1].output[0] = "output"
    name = document["metadata"].get("name")
    graph = helper.make_graph(
        nodes, name if isinstance(name, str) else "minigrad",
        [helper.make_tensor_value_info("input", element, ["batch", n_inputs])],
        [helper.make_tensor_value_info("output", element, ["batch", features])],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minigrad", producer_version=__version__)
    proto.ir_version = IR_VERSION
    _write_metadata(proto, document["metadata"])
    return proto


def _write_metadata(proto: onnx.ModelProto, metadata: dict) -> None:
    if JSON_VALUES_KEY in metadata:
        _refuse(f"metadata.{JSON_VALUES_KEY}", "this key is reserved for the ONNX export; rename it")
    encoded = []
    for key, value in metadata.items():
        if not isinstance(value, str):
            value = json.dumps(value, allow_nan=False)
            encoded.append(key)
        proto.metadata_props.add(key=key, value=value)
    proto.metadata_props.add(key=JSON_VALUES_KEY, value=json.dumps(encoded))


def dumps(model) -> bytes:
    """The model as the bytes of an ONNX file."""
    return _graph(model).SerializeToString()


def export(model, path) -> None:
    """Write the model as an ONNX file at ``path`` (atomically: a reader never sees half a file).

    A model the model document refuses (NaN weights, mixed dtypes) raises ``ModelFormatError`` and writes
    nothing.
    """
    data = dumps(model)
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------- import


def _node_location(node) -> str:
    return f"node '{node.name or (node.output[0] if node.output else '')}' ({node.op_type})"


def _unsupported(node):
    _refuse(_node_location(node), f"unsupported op; minigrad imports {', '.join(SUPPORTED_OPS)}")


class _Graph:
    """The parts of an ONNX graph the import needs: constants, producers, the one input."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), 1)
        self.constants = {}
        for tensor in graph.initializer:
            self.constants[tensor.name] = tensor
        self.producers = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is None or len(node.output) != 1:
                    _refuse(_node_location(node), "only Constant nodes with a tensor 'value' and one output are read")
                self.constants[node.output[0]] = value
            else:
                for output in node.output:
                    self.producers[output] = node
        inputs = [value for value in graph.input if value.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(f"'{value.name}'" for value in inputs) or "none"
            _refuse("graph", f"expected one input (rows of features), got {len(inputs)}: {names}")
        self.input = inputs[0]
        tensor_type = self.input.type.tensor_type
        if not self.input.type.HasField("tensor_type") or tensor_type.elem_type not in _ELEMENT_TYPES:
            got = _type_name(tensor_type.elem_type) if self.input.type.HasField("tensor_type") \
                else "not a tensor"
            _refuse(f"input '{self.input.name}'", f"expected a float or double tensor, got {got}")
        self.dtype = _ELEMENT_TYPES[tensor_type.elem_type]
        dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        if dims is not None and len(dims) != 2:
            _refuse(f"input '{self.input.name}'",
                    f"expected shape [batch, features], got {len(dims)} dimensions; minigrad models take rows")
        self.features = dims[1].dim_value if dims is not None and dims[1].HasField("dim_value") else None

    def constant(self, name: str, node, weights: bool = True) -> np.ndarray:
        """The value of a constant input of ``node``; ``weights`` must have the graph's dtype (a shape need not)."""
        value = self.array(name)
        if weights and value.dtype.name != self.dtype:
            _refuse(f"initializer '{name}'", f"is {value.dtype.name} but the graph's input is {self.dtype}; "
                                              "minigrad models have one dtype")
        return value

    def array(self, name: str) -> np.ndarray:
        """The value of the constant ``name``, from the model's own bytes only: numpy_helper would read external
        data from a file relative to the working directory, so a stranger's bytes could pull any file there into
        the model (class labels are copied into its metadata). ``load(path)`` has already inlined its external
        data by the time this runs."""
        tensor = self.constants[name]
        if tensor.data_location == TensorProto.EXTERNAL:
            _refuse(f"initializer '{name}'", "stored in an external data file; load the model from its path, next to "
                                              "that file")
        try:
            return numpy_helper.to_array(tensor)
        except KeyError:  # numpy_helper has no numpy type for it (UNDEFINED, or a number outside the enum)
            _refuse(f"initializer '{name}'", f"has data type {_type_name(tensor.data_type)}, which has no numpy type")
        except (ValueError, TypeError) as error:  # e.g. dims of 10**9 x 10**9 over six numbers
            _refuse(f"initializer '{name}'", f"its data do not fill its declared shape {list(tensor.dims)} ({error})")

    def target(self) -> str:
        """The tensor to import: the one output, or a classifier's probabilities.

        skl2onnx classifiers have a label output (int64, ArgMax of the probabilities) and a probability output
        (a float tensor, or a ZipMap of one into a sequence of maps); the probabilities are what minigrad models.
        """
        outputs = self.proto.graph.output
        candidates = []
        for value in outputs:
            producer = self.producers.get(value.name)
            if producer is not None and producer.op_type == "ZipMap":
                if len(producer.input) != 1:
                    _refuse(_node_location(producer), f"has {len(producer.input)} inputs; ZipMap takes 1")
                candidates.append(producer.input[0])
            elif len(outputs) == 1 or value.type.tensor_type.elem_type in _ELEMENT_TYPES:
                candidates.append(value.name)
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) != 1:
            names = ", ".join(f"'{value.name}'" for value in outputs)
            _refuse("graph", f"{len(outputs)} outputs ({names}); minigrad imports a graph with one output, or a "
                             "classifier's label and probabilities (then the probabilities)")
        return candidates[0]

    def class_labels(self) -> list[str] | None:
        """A classifier's class labels as strings (for metadata ``outputs``): those a ZipMap attaches to the
        probabilities, or the constant the label output picks from (ArrayFeatureExtractor), else None."""
        for node in self.proto.graph.node:
            labels = None
            if node.op_type == "ZipMap":
                attributes = _attributes(node)
                labels = attributes.get("classlabels_int64s", attributes.get("classlabels_strings"))
            elif node.op_type == "ArrayFeatureExtractor" and node.input and node.input[0] in self.constants:
                labels = self.array(node.input[0]).reshape(-1).tolist()
            if labels is not None:
                # Strings in ONNX are bytes with no promise of UTF-8: a stray byte shows as \xff, not a crash.
                return [label.decode(errors="backslashreplace") if isinstance(label, bytes) else str(label)
                        for label in labels]
        return None

    def two_class_concat(self, node) -> str | None:
        """For skl2onnx's binary classifier tail ``Concat([1 - p, p])`` with ``p = Sigmoid(z)``: the name of ``p``."""
        if node.op_type != "Concat" or len(node.input) != 2 or _attributes(node).get("axis") not in (1, -1):
            return None
        complement, probability = (self.producers.get(name) for name in node.input)
        if complement is None or probability is None or probability.op_type != "Sigmoid":
            return None
        if complement.op_type != "Sub" or list(complement.input[1:]) != [node.input[1]]:
            return None
        one = complement.input[0]
        if one not in self.constants or not np.all(self.array(one) == 1):
            return None
        return node.input[1]

    def chain(self, target: str) -> tuple[list, bool]:
        """The nodes from the input to ``target``, in order, and whether they end in a two-class tail; refused
        unless one tensor flows through them all."""
        nodes, name, two_class = [], target, False
        while name != self.input.name:
            node = self.producers.get(name)
            if node is None:
                what = "a constant" if name in self.constants else "not computed by any node"
                _refuse("graph", f"the output tensor '{name}' is {what}; expected it computed from the input")
            probability = self.two_class_concat(node) if not nodes else None
            if probability is not None:
                name, two_class = probability, True
                continue
            if node.domain not in _DEFAULT_DOMAINS or node.op_type not in SUPPORTED_OPS:
                _unsupported(node)
            fewest, most = _INPUT_COUNTS.get(node.op_type, (1, 2))
            if not fewest <= len(node.input) <= most:
                expected = fewest if fewest == most else f"{fewest} to {most}"
                _refuse(_node_location(node), f"has {len(node.input)} inputs; {node.op_type} takes {expected}")
            computed = [i for i in node.input if i and i not in self.constants]
            if len(computed) != 1:
                _refuse(_node_location(node),
                        f"takes {len(computed)} computed tensors ({', '.join(repr(i) for i in computed)}); minigrad "
                        "imports a chain of layers with one tensor flowing through (no residual or branching "
                        "connections)")
            nodes.append(node)
            name = computed[0]
            if len(nodes) > len(self.proto.graph.node):
                _refuse("graph", "the nodes form a cycle")
        nodes.reverse()
        return nodes, two_class


# The attributes the import reads, with the type the ONNX spec gives them: a value of another type (a list
# for Cast's 'to') is refused naming the node, not compared or iterated as if it had the right one.
_ATTRIBUTE_TYPES = {
    "alpha": onnx.AttributeProto.FLOAT, "beta": onnx.AttributeProto.FLOAT, "transA": onnx.AttributeProto.INT,
    "transB": onnx.AttributeProto.INT, "axis": onnx.AttributeProto.INT, "allowzero": onnx.AttributeProto.INT,
    "to": onnx.AttributeProto.INT, "classlabels_strings": onnx.AttributeProto.STRINGS,
    "classlabels_int64s": onnx.AttributeProto.INTS,
}


def _attributes(node) -> dict:
    values = {}
    for attribute in node.attribute:
        expected = _ATTRIBUTE_TYPES.get(attribute.name)
        if expected is not None and attribute.type != expected:
            kinds = onnx.AttributeProto.AttributeType
            _refuse(_node_location(node), f"attribute '{attribute.name}' is {_type_name(attribute.type, kinds)}; "
                                          f"expected {_type_name(expected, kinds)}")
        values[attribute.name] = helper.get_attribute_value(attribute)
    return values


def _linear(weight: np.ndarray, bias: np.ndarray | None, node, bias_name: str | None) -> dict:
    out_features = weight.shape[1]
    if bias is None:
        bias = np.zeros(out_features, dtype=weight.dtype)
    elif bias.size not in (1, out_features) or (bias.ndim == 2 and bias.shape[0] != 1) or bias.ndim > 2:
        _refuse(_node_location(node), f"bias '{bias_name}' of shape {list(bias.shape)} does not broadcast to "
                                      f"[{out_features}] per row")
    return {"type": "Linear", "in_features": weight.shape[0], "out_features": out_features,
            "weight": weight, "bias": np.broadcast_to(bias.reshape(-1), (out_features,)).copy()}


class _LayerBuilder:
    """Turns the chain of nodes into layer specs, folding MatMul + Add into one Linear."""

    def __init__(self, graph: _Graph):
        self.graph = graph
        self.layers = []
        self.features = graph.features
        self.pending = None  # (node, weight) of a MatMul whose bias may follow as an Add

    def weight(self, name: str, node, transpose: bool = False) -> np.ndarray:
        weight = self.graph.constant(name, node)
        if weight.ndim != 2:
            _refuse(_node_location(node), f"weight '{name}' has shape {list(weight.shape)}; expected 2 dimensions")
        weight = weight.T if transpose else weight
        if self.features is not None and weight.shape[0] != self.features:
            _refuse(_node_location(node), f"weight '{name}' takes {weight.shape[0]} features, but {self.features} "
                                          "arrive")
        self.features = weight.shape[1]
        return weight

    def flush(self):
        if self.pending is not None:
            node, weight = self.pending
            self.layers.append(_linear(weight, None, node, None))
            self.pending = None

    def two_class(self, concat):
        """Rewrite the closing ``Linear(h->1), Sigmoid`` of ``[1 - p, p]`` as ``Linear(h->2), Softmax``:
        softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], so both class probabilities come out, as predict_proba's."""
        if len(self.layers) < 2 or self.layers[-1]["type"] != "Sigmoid" or self.layers[-2]["type"] != "Linear" \
                or self.layers[-2]["out_features"] != 1:
            _refuse(_node_location(concat), "concatenates [1 - p, p] of something other than Linear + Sigmoid")
        linear = self.layers[-2]
        zeros = np.zeros_like(linear["weight"])
        linear.update(out_features=2, weight=np.concatenate([zeros, linear["weight"]], axis=1),
                      bias=np.concatenate([np.zeros_like(linear["bias"]), linear["bias"]]))
        self.layers[-1] = {"type": "Softmax"}

    def add(self, node):
        op, attributes, graph = node.op_type, _attributes(node), self.graph
        if op != "Add":  # anything else closes a MatMul without a bias
            self.flush()
        if op == "Gemm":
            if node.input[0] in graph.constants:
                _refuse(_node_location(node), "multiplies a constant by the data; minigrad imports data @ weight")
            for name, expected in (("alpha", 1.0), ("beta", 1.0), ("transA", 0)):
                if attributes.get(name, expected) != expected:
                    _refuse(_node_location(node), f"{name}={attributes[name]}; minigrad imports Gemm with alpha=1, "
                                                  "beta=1, transA=0")
            weight = self.weight(node.input[1], node, transpose=bool(attributes.get("transB", 0)))
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            bias = graph.constant(bias_name, node) if bias_name else None
            self.layers.append(_linear(weight, bias, node, bias_name))
        elif op == "MatMul":
            if node.input[1] not in graph.constants:
                _refuse(_node_location(node), "multiplies a constant by the data; minigrad imports data @ weight")
            self.pending = (node, self.weight(node.input[1], node))
        elif op == "Add":
            if self.pending is None:
                _refuse(_node_location(node), "adds a constant that is not the bias of a MatMul just before it")
            bias_name = next((i for i in node.input if i in graph.constants), None)
            if bias_name is None:  # Add(h, ''): no second operand at all
                _refuse(_node_location(node), "adds nothing to the MatMul before it; expected its bias as a constant")
            _, weight = self.pending
            self.pending = None
            self.layers.append(_linear(weight, graph.constant(bias_name, node), node, bias_name))
        elif op in _ACTIVATIONS:
            if op == "Softmax":
                # Before opset 13 the default axis was 1; on rows of features, 1 and -1 are the same axis.
                axis = attributes.get("axis", 1 if graph.opset < 13 else -1)
                if axis not in (1, -1):
                    _refuse(_node_location(node), f"axis={axis}; minigrad's Softmax is over the features (axis -1)")
            self.layers.append({"type": op})
        elif op == "Flatten":
            # Flatten(axis=1) of rows of features changes nothing; other axes would merge the batch.
            if attributes.get("axis", 1) not in (1, -1):
                _refuse(_node_location(node), f"axis={attributes['axis']} would merge rows; only axis=1 is harmless")
        elif op == "Reshape":
            # skl2onnx's regressors end in Reshape to [-1, outputs]: a no-op on rows of that many features.
            constant = len(node.input) > 1 and node.input[1] in graph.constants
            shape = graph.constant(node.input[1], node, weights=False) if constant else None
            # 0 copies the batch size, unless allowzero=1 makes it a literal 0.
            harmless = [[-1, self.features]] + ([[0, self.features]] if not attributes.get("allowzero") else [])
            if shape is None or shape.tolist() not in harmless:
                got = "a computed shape" if shape is None else str(shape.tolist())
                _refuse(_node_location(node), f"reshapes to {got}; only [-1, {self.features}] (rows stay rows) is "
                                              "harmless")
        elif op == "Cast":
            if _ELEMENT_TYPES.get(attributes.get("to")) != graph.dtype:
                target = _type_name(attributes.get("to", 0))
                _refuse(_node_location(node), f"casts to {target}; only a cast to the graph's own {graph.dtype} is "
                                              "harmless")
        # Identity: nothing to do.


def _read_metadata(proto: onnx.ModelProto) -> dict:
    props = {prop.key: prop.value for prop in proto.metadata_props}
    encoded = props.pop(JSON_VALUES_KEY, None)
    if encoded is None:  # not written by minigrad: values are plain strings; say where the model came from
        if "onnx" not in props:
            props["onnx"] = {"producer_name": proto.producer_name, "producer_version": proto.producer_version,
                             "graph": proto.graph.name}
        return props
    try:
        keys = json.loads(encoded)
        for key in keys:
            props[key] = json.loads(props[key])
    except (ValueError, KeyError, TypeError) as error:
        _refuse(f"metadata_props.{JSON_VALUES_KEY}", f"is not what minigrad writes ({error})")
    except RecursionError:  # the json module recurses once per nested [ or {
        _refuse(f"metadata_props.{JSON_VALUES_KEY}", "lists a value nested too deeply to read")
    return props


def _model(proto: onnx.ModelProto) -> Sequential:
    graph = _Graph(proto)
    target = graph.target()
    builder = _LayerBuilder(graph)
    nodes, two_class = graph.chain(target)
    for node in nodes:
        builder.add(node)
    builder.flush()
    if two_class:
        builder.two_class(graph.producers[target])
    metadata = _read_metadata(proto)
    labels = graph.class_labels()
    widths = [layer["out_features"] for layer in builder.layers if layer["type"] == "Linear"]
    if labels is not None and widths and len(labels) == widths[-1]:
        metadata.setdefault("outputs", labels)
    document = {"format": FORMAT, "version": VERSION, "dtype": graph.dtype, "layers": builder.layers,
                "metadata": metadata}
    return from_dict(document)


def _parse(data: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends
        _refuse("document", f"not an ONNX model (the protobuf does not parse: {error})")


def loads(data: bytes) -> Sequential:
    """The model in the bytes of an ONNX file (its weights inside it, not in external data files)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _refuse("document", f"expected the bytes of an ONNX file, got a {type(data).__name__}")
    proto = _parse(bytes(data))
    if not proto.HasField("graph") or not proto.graph.node:
        _refuse("document", "not an ONNX model (it has no graph nodes)")
    return _model(proto)


def load(path) -> Sequential:
    """The model in an ONNX file (weights in external data files next to it are read too).

    A missing file raises the usual OSError; a graph outside the dense subset ``OnnxImportError``.
    """
    with open(path, "rb") as file:
        data = file.read()
    proto = _parse(data)
    if any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
        except onnx.checker.ValidationError as error:  # not a ValueError: it escaped as itself
            _refuse("external data", f"{error} (external data files must sit in the model's own directory)")
        except ValueError as error:  # a data file shorter than the offset and length it is said to hold
            _refuse("external data", str(error))
    if not proto.HasField("graph") or not proto.graph.node:
        _refuse("document", "not an ONNX model (it has no graph nodes)")
    return _model(proto)
