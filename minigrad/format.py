"""The model document: a Sequential model as one versioned, validated JSON file.

One marshmallow schema (``ModelDocumentSchema``) defines the document; loading, saving, the
service's request validation and the JSON Schema file all come from it. Layer specs are dispatched
on ``type`` through ``LAYER_TYPES``: a new layer type is one ``LayerSpecSchema`` subclass plus one
``register_layer`` call. Weights are checked with numpy in one pass per array (never number by
number through marshmallow fields), so loading costs little more than ``json.loads``.

Every defect raises ``ModelFormatError`` naming where it is, e.g.
``layers[2].weight: expected shape [3, 1], got [3, 2]``. The layout is described in
``docs/model-format.md``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

import numpy as np
from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from .nn import Layer, Linear, Relu, Sequential, Sigmoid, Softmax, Tanh
from .tensor import Tensor

__all__ = [
    "FORMAT",
    "VERSION",
    "DTYPES",
    "ModelFormatError",
    "ModelDocumentSchema",
    "LayerSpecSchema",
    "LayerType",
    "LAYER_TYPES",
    "register_layer",
    "to_dict",
    "from_dict",
    "dumps",
    "loads",
    "save",
    "load",
    "document_summary",
    "finite_array",
    "has_boolean",
]

FORMAT = "minigrad.sequential"
VERSION = 1
DTYPES = ("float64", "float32")
# Metadata is free-form, but a bound on nesting keeps a hostile document from exhausting the stack.
MAX_METADATA_DEPTH = 32


class ModelFormatError(ValueError):
    """A model document (or a model about to become one) has a defect.

    ``errors`` lists every ``(location, message)`` found, in document order where marshmallow
    keeps it; ``location`` is the first one's, e.g. ``layers[2].weight``.
    """

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(f"{where}: {what}" for where, what in self.errors))

    @property
    def location(self) -> str:
        return self.errors[0][0]


def describe(value) -> str:
    """A short, JSON-flavoured rendering of a bad value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, (int, float, np.number)):
        return _number_text(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _number_text(value) -> str:
    value = float(value) if isinstance(value, (float, np.floating)) else value
    if isinstance(value, float) and not np.isfinite(value):
        return ("Infinity" if value > 0 else "-Infinity") if value == value else "NaN"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _at(index: tuple, message: str):
    """marshmallow's nested message layout for an element: (1, 2) -> {1: {2: [message]}}."""
    nested = [message]
    for i in reversed(index):
        nested = {int(i): nested}
    return nested


# ---------------------------------------------------------------------- fields


class _Described:
    """Mixin: marshmallow's ``{input}`` in messages renders the bad value as JSON would show it."""

    def make_error(self, key, **kwargs):
        if "input" in kwargs:
            kwargs["input"] = describe(kwargs["input"])
        return super().make_error(key, **kwargs)


_MESSAGES = {"required": "required field is missing", "null": "expected a value, got null"}


class Text(_Described, fields.String):
    default_error_messages = {**_MESSAGES, "invalid": "expected a string, got {input}"}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return value


class WholeNumber(_Described, fields.Integer):
    """A JSON integer: ``3``, not ``3.0``, ``"3"`` or ``true``."""

    default_error_messages = {**_MESSAGES, "invalid": "expected an integer, got {input}"}

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)


class NumberArray(fields.Field):
    """A rectangular array of finite numbers with ``ndim`` axes, loaded as a float64 ndarray.

    The happy path is one ``np.asarray`` and a few vectorised checks; only a defective array is
    walked element by element, to name the first bad element's index.
    """

    default_error_messages = {**_MESSAGES}

    def __init__(self, ndim: int, **kwargs):
        self.ndim = ndim
        items = {"type": "number"}
        for _ in range(ndim):
            items = {"type": "array", "items": items}
        super().__init__(metadata={**items, **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> np.ndarray:
        return finite_array(value, self.ndim)

    def _serialize(self, value, attr, obj, **kwargs):
        return value.tolist() if isinstance(value, np.ndarray) else value


def finite_array(value, ndim: int) -> np.ndarray:
    """``value`` (nested lists or an ndarray) as a float64 array; ValidationError if not numbers.

    The shape is not checked here beyond being rectangular: the layer spec knows the shape it
    expects and says so (``expected shape [3, 1], got [3]``).
    """
    if isinstance(value, np.ndarray):
        array = value
        if array.dtype.kind not in "fiu":
            raise ValidationError(f"expected an array of numbers, got an array of {array.dtype}")
    elif isinstance(value, (list, tuple)):
        # The common case, JSON's: lists of Python ints and floats. Their types are known from one scan
        # (which a boolean, since True would silently become 1.0, or anything else fails), so numpy
        # converts straight to float64 without discovering a dtype; integers need no finiteness pass.
        types = _leaf_types(value, ndim)
        if types is not None and types <= _PLAIN_NUMBERS:
            try:
                array = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):  # ragged, or an integer beyond float64
                array = None
            if array is not None and array.ndim == ndim:
                if float not in types:
                    return array
                return _checked_finite(array)
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            array = None
        # A boolean among numbers would silently become 1.0, so look for one (a C-speed type scan).
        if array is None or array.dtype.kind not in "fiu" or (array.ndim == ndim and has_boolean(value, ndim)):
            defect = _first_defect(value, ndim)
            if defect is not None:
                raise ValidationError(defect)
            try:  # e.g. integers too big for int64 yet finite as floats
                array = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):
                raise ValidationError("expected a rectangular array of numbers") from None
    else:
        raise ValidationError(f"expected an array of numbers, got {describe(value)}")
    if array.dtype.kind != "f":
        return array.astype(np.float64)  # integers: always finite as float64 (at most ~1.8e19)
    if array.dtype != np.float64:
        array = array.astype(np.float64)
    return _checked_finite(array)


def _checked_finite(array: np.ndarray) -> np.ndarray:
    # One numpy call proves the usual array finite: its sum of squares (a BLAS dot) is finite only when every
    # value is, since an inf or a NaN makes it inf or NaN. Values beyond ~1e154 overflow it though finite;
    # then the element-wise pass decides. BLAS leaves numpy's error state alone, so the overflow warns nobody.
    if math.isfinite(np.vdot(array, array)):
        return array
    finite = np.isfinite(array)
    if not finite.all():
        index = tuple(np.argwhere(~finite)[0])
        raise ValidationError(_at(index, f"{_number_text(array[index])} is not allowed (numbers must be finite)"))
    return array


_PLAIN_NUMBERS = frozenset({int, float})


def _leaf_types(value, ndim: int) -> set | None:
    """The types of the leaves when ``value`` is lists nested ``ndim`` deep (ragged or not), else None.
    Rows and matrices, the usual shapes, are scanned at C speed (``map(type, ...)``): a Python call per
    row costs as much as numpy's whole conversion of a small batch."""
    if type(value) is not list:
        return None
    if ndim == 1:
        return set(map(type, value))
    if not _LISTS.issuperset(map(type, value)):
        return None
    if ndim == 2:
        return set(map(type, chain.from_iterable(value)))
    types = set()
    for row in value:
        found = _leaf_types(row, ndim - 1)
        if found is None:
            return None
        types |= found
    return types


_LISTS = frozenset({list})


def has_boolean(value, ndim: int) -> bool:
    """Whether nested lists ``value``, ``ndim`` deep (as numpy converted them), hold a boolean: numpy turns
    ``[1, True]`` into integers without a word, so a converter that refuses booleans looks for them."""
    if ndim == 1:
        return not _BOOLEANS.isdisjoint(map(type, value))
    return any(has_boolean(row, ndim - 1) for row in value)


_BOOLEANS = {bool, np.bool_}


def _is_number(item) -> bool:
    return isinstance(item, (int, float, np.number)) and not isinstance(item, (bool, np.bool_))


def _first_defect(value, ndim: int):
    """Walk ``value`` (at most ``ndim`` levels) to the first element that makes it not an array of numbers."""
    expected = []  # the lengths along the first element's path: what every other row must match
    probe = value
    for _ in range(ndim):
        if not isinstance(probe, (list, tuple)):
            break
        expected.append(len(probe))
        if not probe:
            break
        probe = probe[0]

    def walk(item, index):
        depth = len(index)
        if depth == ndim:
            if not _is_number(item):
                return _at(index, f"expected a number, got {describe(item)}")
            try:
                float(item)
            except OverflowError:
                return _at(index, f"number {describe(item)} is too large")
            return None
        if not isinstance(item, (list, tuple)):
            return _at(index, f"expected an array, got {describe(item)}")
        if depth < len(expected) and len(item) != expected[depth] and depth > 0:
            first = "[0]" * depth
            return _at(index, f"expected {expected[depth]} items like {first}, got {len(item)}")
        for i, sub in enumerate(item):
            found = walk(sub, index + (i,))
            if found is not None:
                return found
        return None

    return walk(value, ())


class JSONObject(fields.Dict):
    """A free-form JSON object (``metadata``): any JSON values, finite numbers, bounded nesting."""

    default_error_messages = {**_MESSAGES}

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        return json_value(value, MAX_METADATA_DEPTH, want_object=True)

    def _serialize(self, value, attr, obj, **kwargs):
        return value


def json_value(value, depth: int, want_object: bool = False):
    """A copy of ``value`` made of plain JSON types; ValidationError naming the first bad place."""
    if want_object and not isinstance(value, Mapping):
        raise ValidationError(f"expected an object, got {describe(value)}")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping) or isinstance(value, (list, tuple)):
        if depth <= 0:
            raise ValidationError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        copy = {} if isinstance(value, Mapping) else []
        for key, item in items:
            if isinstance(value, Mapping) and not isinstance(key, str):
                raise ValidationError({str(key): [f"keys must be strings, got {describe(key)}"]})
            try:
                item = json_value(item, depth - 1)
            except ValidationError as exc:
                raise ValidationError({key: exc.messages}) from None
            if isinstance(copy, dict):
                copy[key] = item
            else:
                copy.append(item)
        return copy
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, np.bool_):
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and not np.isfinite(value):
            raise ValidationError(f"{_number_text(value)} is not allowed (numbers must be finite)")
        return value
    raise ValidationError(f"expected JSON (a string, number, boolean, null, array or object), got {describe(value)}")


# ---------------------------------------------------------------------- layer specs and their registry


class _StrictSchema(Schema):
    """Unknown keys are defects: the document's layout is closed (extra facts go in ``metadata``)."""

    error_messages = {"unknown": "unknown field", "type": "expected an object"}


class LayerSpecSchema(_StrictSchema):
    """One layer of the document. Subclasses add fields and say how to build and describe the layer.

    The base describes a layer without parameters whose output has the shape of its input (an
    activation); register one with ``register_layer(TheLayerClass)``.
    """

    type = Text(required=True)

    #: The Layer subclass this spec builds; set by ``register_layer``.
    layer_class: type[Layer] = Layer

    def features(self, spec: dict) -> tuple[int, int] | None:
        """(inputs, outputs) if the layer changes the number of features, None if it keeps them."""
        return None

    def build(self, spec: dict, dtype: np.dtype) -> Layer:
        """The layer for a loaded, valid ``spec`` with parameters of ``dtype``."""
        return self.layer_class()

    def describe(self, layer: Layer) -> dict:
        """The spec's fields besides ``type`` for ``layer`` (numpy arrays for weights)."""
        return {}

    def summary(self, spec: dict) -> str:
        """A short human name for listings, e.g. ``Linear(2->3)``."""
        return spec["type"]


_POSITIVE = validate.Range(min=1, error="expected a positive integer, got {input}")


class LinearSpec(LayerSpecSchema):
    """``Linear``: ``input.mm(weight) + bias`` with weight [in_features][out_features] as in the seed."""

    in_features = WholeNumber(required=True, validate=_POSITIVE)
    out_features = WholeNumber(required=True, validate=_POSITIVE)
    weight = NumberArray(2, required=True)
    bias = NumberArray(1, required=True)

    @validates_schema
    def _shapes_match_features(self, spec, **kwargs):
        errors = {}
        expected = {"weight": [spec["in_features"], spec["out_features"]], "bias": [spec["out_features"]]}
        for name, shape in expected.items():
            got = list(spec[name].shape)
            if got != shape:
                # _number_text: a declared size of 10**400 is not worth 400 digits in the message
                wanted = "[" + ", ".join(map(_number_text, shape)) + "]"
                errors[name] = [f"expected shape {wanted}, got {got}"]
        if errors:
            raise ValidationError(errors)

    def features(self, spec):
        return spec["in_features"], spec["out_features"]

    def build(self, spec, dtype):
        weight, bias = spec["weight"], spec["bias"]
        # Linear's own constructor is the one way to make a Linear; a private generator keeps the
        # throwaway initial draw from touching numpy's global random state.
        layer = self.layer_class(*weight.shape, rng=np.random.default_rng(0), dtype=dtype)
        np.copyto(layer.weight.data, weight)
        np.copyto(layer.bias.data, bias)
        return layer

    def describe(self, layer):
        # A model whose parameters were replaced by hand: say which, rather than fail on .shape[1].
        for name, shape in (("weight", "[in_features, out_features]"), ("bias", "[out_features]")):
            tensor = getattr(layer, name, None)
            if not isinstance(tensor, Tensor) or tensor.data.ndim != shape.count(",") + 1:
                got = f"shape {list(tensor.data.shape)}" if isinstance(tensor, Tensor) else describe(tensor)
                raise ValidationError({name: [f"expected a Tensor of shape {shape}, got {got}"]})
        return {
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "weight": layer.weight.data,
            "bias": layer.bias.data,
        }

    def summary(self, spec):
        return f"Linear({spec['in_features']}->{spec['out_features']})"


@dataclass(frozen=True)
class LayerType:
    """A registered layer type: its document name, its Layer class and its spec schema."""

    name: str
    layer_class: type[Layer]
    schema: LayerSpecSchema


LAYER_TYPES: dict[str, LayerType] = {}


def register_layer(layer_class: type[Layer], spec_schema: type[LayerSpecSchema] = LayerSpecSchema, name=None):
    """Make documents with ``"type": name`` (default: the class name) load as ``layer_class``."""
    name = name or layer_class.__name__
    schema_class = type(f"{name}Spec", (spec_schema,), {"layer_class": layer_class})
    LAYER_TYPES[name] = LayerType(name, layer_class, schema_class())
    return LAYER_TYPES[name]


register_layer(Linear, LinearSpec)
for _activation in (Tanh, Sigmoid, Relu, Softmax):
    register_layer(_activation)


def _known_types() -> str:
    return ", ".join(sorted(LAYER_TYPES))


class LayerSpecField(fields.Field):
    """A layer spec, loaded by the schema that its ``type`` names in ``LAYER_TYPES``."""

    default_error_messages = {**_MESSAGES}

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        if not isinstance(value, Mapping):
            raise ValidationError(f'expected a layer object with a "type", got {describe(value)}')
        kind = value.get("type")
        if "type" not in value:
            raise ValidationError({"type": [f"required field is missing; expected one of {_known_types()}"]})
        if not isinstance(kind, str) or kind not in LAYER_TYPES:
            raise ValidationError({"type": [f"unknown layer type {describe(kind)}; expected one of {_known_types()}"]})
        return LAYER_TYPES[kind].schema.load(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return LAYER_TYPES[value["type"]].schema.dump(value)


# ---------------------------------------------------------------------- the document


_UNSUPPORTED = f"unsupported version {{input}} (this minigrad reads {VERSION})"


class ModelDocumentSchema(_StrictSchema):
    """The whole model document.

    ``load`` validates a document (a dict as parsed from JSON) and returns it normalised: weights
    as lists of floats, ``metadata`` as ``{}`` when absent. With ``arrays=True`` the weights come
    back as numpy arrays of the document's dtype instead (what ``from_dict`` builds from); ``dump``
    turns either form into JSON-ready data. Invalid input raises marshmallow's ValidationError
    with messages keyed by field and index; ``from_dict``/``loads`` turn those into
    ``ModelFormatError``.
    """

    format = Text(required=True, validate=validate.Equal(FORMAT, error=f"expected '{FORMAT}', got {{input!r}}"))
    # Other integers never reach this validator (the pre_load hook reports them first); it states
    # the constraint for OpenAPI and the JSON Schema file.
    version = WholeNumber(required=True, validate=validate.Equal(VERSION, error=_UNSUPPORTED))
    dtype = Text(required=True, validate=validate.OneOf(DTYPES, error="expected one of {choices}, got {input!r}"))
    layers = fields.List(
        LayerSpecField(metadata={"description": "A layer spec; `type` selects which: " + _known_types()}),
        required=True,
        error_messages={**_MESSAGES, "invalid": "expected an array of layer objects"},
    )
    metadata = JSONObject(load_default=dict, dump_default=dict)

    def __init__(self, *, arrays: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.arrays = arrays

    @pre_load
    def _readable_version_first(self, document, **kwargs):
        # A document from a newer minigrad may differ everywhere else; its version is the one fact
        # worth reporting, so it is checked before anything else (in documents that say they are ours).
        if not isinstance(document, Mapping):
            raise ValidationError(f"expected a JSON object, got {describe(document)}")
        version = document.get("version")
        if document.get("format") == FORMAT and type(version) is int and version != VERSION:
            raise ValidationError({"version": [_UNSUPPORTED.format(input=_number_text(version))]})
        return document

    @validates_schema
    def _layers_fit_together(self, document, **kwargs):
        errors = {}
        previous = None  # (index, out_features) of the last layer that set the number of features
        for i, spec in enumerate(document["layers"]):
            features = LAYER_TYPES[spec["type"]].schema.features(spec)
            if features is None:
                continue
            if previous is not None and features[0] != previous[1]:
                expected = f"expected {previous[1]} (the outputs of layers[{previous[0]}])"
                errors[i] = {"in_features": [f"{expected}, got {features[0]}"]}
            previous = (i, features[1])
        if previous is None:
            raise ValidationError({"layers": ["expected at least one layer with weights (e.g. Linear), got none"]})
        if document["dtype"] == "float32":
            for i, spec in enumerate(document["layers"]):
                for name, value in spec.items():
                    if isinstance(value, np.ndarray):
                        with np.errstate(over="ignore"):
                            overflow = ~np.isfinite(value.astype(np.float32))
                        if overflow.any():
                            index = tuple(np.argwhere(overflow)[0])
                            message = f"{_number_text(value[index])} is out of float32 range"
                            errors.setdefault(i, {})[name] = _at(index, message)
        if errors:
            raise ValidationError({"layers": errors})

    @post_load
    def _finish(self, document, **kwargs):
        dtype = np.dtype(document["dtype"])
        for spec in document["layers"]:
            for name, value in spec.items():
                if isinstance(value, np.ndarray):
                    spec[name] = value.astype(dtype, copy=False) if self.arrays else value.tolist()
        return document


def _flatten(messages, location=""):
    """marshmallow's nested messages -> [(location, message)], e.g. ("layers[2].weight", "...")."""
    if isinstance(messages, Mapping):
        found = []
        for key, sub in messages.items():
            if key == "_schema":
                child = location
            elif isinstance(key, int):
                child = f"{location}[{key}]"
            else:
                child = f"{location}.{key}" if location else str(key)
            found += _flatten(sub, child)
        return found
    if isinstance(messages, (list, tuple)):
        return [item for message in messages for item in _flatten(message, location)]
    return [(location or "document", str(messages))]


def validate_document(document, arrays: bool = True) -> dict:
    """The loaded document (see ``ModelDocumentSchema``); ModelFormatError for any defect."""
    try:
        return ModelDocumentSchema(arrays=arrays).load(document)
    except ValidationError as exc:
        raise ModelFormatError(_flatten(exc.messages)) from None
    except RecursionError:
        raise ModelFormatError([("document", "nested too deeply")]) from None


# ---------------------------------------------------------------------- models <-> documents


def from_dict(document, cls=Sequential) -> Sequential:
    """The model a document (a dict as parsed from JSON) describes, with its ``metadata``."""
    loaded = validate_document(document)
    dtype = np.dtype(loaded["dtype"])
    model = cls([LAYER_TYPES[spec["type"]].schema.build(spec, dtype) for spec in loaded["layers"]])
    model.metadata = loaded["metadata"]
    return model


def _layer_type(layer, index: int) -> LayerType:
    for layer_type in LAYER_TYPES.values():
        if type(layer) is layer_type.layer_class:
            return layer_type
    raise ModelFormatError(
        [(f"layers[{index}]", f"cannot save a {type(layer).__name__}; the model document knows {_known_types()}")]
    )


def _model_document(model) -> dict:
    """The document for ``model`` with weights still as numpy arrays, validated like a loaded one."""
    if not isinstance(model, Sequential):
        raise ModelFormatError([("document", f"expected a minigrad Sequential model, got {describe(model)}")])
    layers = []
    dtypes = set()
    for i, layer in enumerate(model.layers):
        layer_type = _layer_type(layer, i)
        try:
            spec = {"type": layer_type.name, **layer_type.schema.describe(layer)}
        except ValidationError as exc:
            raise ModelFormatError(_flatten(exc.messages, f"layers[{i}]")) from None
        dtypes.update(v.dtype.name for v in spec.values() if isinstance(v, np.ndarray))
        layers.append(spec)
    if len(dtypes) > 1:
        mixed = " and ".join(sorted(dtypes))
        raise ModelFormatError([("dtype", f"parameters mix {mixed}; cast the model to one dtype")])
    dtype = dtypes.pop() if dtypes else "float64"
    if dtype not in DTYPES:
        raise ModelFormatError([("dtype", f"cannot save {dtype} parameters; expected one of {', '.join(DTYPES)}")])
    document = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": dtype,
        "layers": layers,
        "metadata": getattr(model, "metadata", None) or {},
    }
    return validate_document(document)


def to_dict(model) -> dict:
    """The model's document as plain JSON data (weights as nested lists of floats)."""
    return ModelDocumentSchema().dump(_model_document(model))


def dumps(model) -> str:
    """The model's document as JSON text: one line per layer, metadata indented."""
    document = to_dict(model)
    head = ",\n".join(f"  {json.dumps(key)}: {json.dumps(document[key])}" for key in ("format", "version", "dtype"))
    # Floats are written with repr, the shortest text that reads back to the same double, so
    # float64 weights survive bit for bit and float32 ones (exact in a double) too.
    layers = ",\n    ".join(json.dumps(spec, allow_nan=False) for spec in document["layers"])
    metadata = json.dumps(document["metadata"], indent=2, allow_nan=False).replace("\n", "\n  ")
    return f'{{\n{head},\n  "layers": [\n    {layers}\n  ],\n  "metadata": {metadata}\n}}\n'


class _RepeatedKey(Exception):
    """Raised from inside json.loads; not a ValueError, so it is not mistaken for a syntax error."""


def _object_without_repeated_keys(pairs):
    # Plain json.loads keeps the last of repeated keys; other parsers keep the first. A document
    # that means different things to different readers is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return obj


def loads(text) -> Sequential:
    """The model in a JSON document (str or bytes)."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise ModelFormatError([("document", f"expected JSON text (str or bytes), got {describe(text)}")])
    if isinstance(text, str) and text.startswith("\ufeff"):
        # json.loads skips a byte order mark in bytes but not in text: load(path) read a file that
        # load(open(path)) refused.
        text = text[1:]
    try:
        document = json.loads(text, object_pairs_hook=_object_without_repeated_keys)
    except _RepeatedKey as exc:
        message = f"the key {describe(exc.args[0])} appears twice in one object (which one counts is ambiguous)"
        raise ModelFormatError([("document", message)]) from None
    except RecursionError:
        raise ModelFormatError([("document", "nested too deeply")]) from None
    except UnicodeDecodeError as exc:
        raise ModelFormatError([("document", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    except ValueError as exc:  # json.JSONDecodeError
        raise ModelFormatError([("document", f"not valid JSON ({exc})")]) from None
    return from_dict(document)


def save(model, path_or_file) -> None:
    """Write the model's document to a path (atomically: a reader never sees half a file) or a file object.

    The model is validated first, so a refused model leaves the destination untouched.
    """
    text = dumps(model)
    if hasattr(path_or_file, "write"):
        try:
            path_or_file.write(text)
        except TypeError:  # a binary file
            path_or_file.write(text.encode("utf-8"))
        return
    path = os.fspath(path_or_file)
    try:
        kept_mode = os.stat(path).st_mode & 0o777  # a model file replaced keeps its mode
    except FileNotFoundError:
        kept_mode = None
    try:
        # Never more open than the file it replaces, not even until the chmod below: a reader that opened the
        # temporary file in between would read the model once written.
        fd, tmp = _new_temporary_file(os.path.dirname(path) or ".", 0o666 if kept_mode is None else kept_mode)
    except OSError as exc:  # it named the random temporary file, not the path the caller gave
        raise type(exc)(exc.errno, exc.strerror, path) from None
    try:
        if kept_mode is not None:  # the umask may have taken bits the file had
            os.chmod(tmp, kept_mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename != path:  # a full disk names no file, os.replace the temporary
            raise type(exc)(exc.errno, exc.strerror, path) from None
        raise


# As tempfile.mkstemp opens its files: not inherited by child processes (O_CLOEXEC here, O_NOINHERIT on
# Windows), and binary on Windows, where a text-mode descriptor would turn the "\r\n" that fdopen's text layer
# writes into "\r\r\n".
_TEMPORARY_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)
                    | getattr(os, "O_BINARY", 0))


def _new_temporary_file(directory: str, mode: int) -> tuple[int, str]:
    """A new file in ``directory``, open for writing, created with ``mode`` less the umask (0666: the mode
    ``open()`` would give it). ``tempfile.mkstemp`` would make it 0600 whatever the umask."""
    for _ in range(100):
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}.json")
        try:
            return os.open(tmp, _TEMPORARY_FLAGS, mode), tmp
        except FileExistsError:  # another writer's: try another name
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def load(path_or_file) -> Sequential:
    """The model in a document file (a path or a file object open for reading).

    A missing or unreadable file raises the usual OSError; a defective document ModelFormatError.
    """
    if hasattr(path_or_file, "read"):
        return loads(path_or_file.read())
    with open(path_or_file, "rb") as f:
        return loads(f.read())


def document_summary(doc_or_model) -> dict:
    """``inputs``, ``outputs``, ``dtype`` and short ``layers`` names of a document or a model."""
    if isinstance(doc_or_model, Sequential):
        document = _model_document(doc_or_model)
    else:
        document = validate_document(doc_or_model)
    schemas = [LAYER_TYPES[spec["type"]].schema for spec in document["layers"]]
    features = [f for f in (schema.features(spec) for schema, spec in zip(schemas, document["layers"])) if f]
    return {
        "inputs": features[0][0],
        "outputs": features[-1][1],
        "dtype": document["dtype"],
        "layers": [schema.summary(spec) for schema, spec in zip(schemas, document["layers"])],
    }
