"""The Open Inference Protocol (KServe / Triton "v2") wire format, as pure functions: bytes in, numpy out.

An infer request is either a JSON object, or -- with the binary tensor data extension -- a JSON object of
``Inference-Header-Content-Length`` bytes followed by the raw little-endian, row-major bytes of each input
that carries ``parameters.binary_data_size``, in the order the inputs are listed. Responses mirror that:
outputs asked for as binary (``binary_data_output`` on the request, overridden per output by
``parameters.binary_data``) are appended after the JSON header.

Nothing here knows Flask or models; ``service.inference_v2`` maps HTTP and the registry onto it. Every
defect in a request raises ``V2ProtocolError`` whose message names the offending field.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass

import numpy as np
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from minigrad.format import has_boolean

__all__ = [
    "DATATYPES",
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "V2ProtocolError",
    "InferRequest",
    "RequestedOutput",
    "datatype_of",
    "decode_body",
    "parse_infer_request",
    "encode_infer_response",
]

# The protocol's names for the only element types a minigrad model computes in; binary data is
# little-endian whatever the host's byte order.
DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"


class V2ProtocolError(ValueError):
    """A request the protocol cannot accept; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------- envelope schemas
# The schemas check the envelope only: ``data`` is a Raw field so that a million numbers are converted
# and checked by numpy in one pass instead of one marshmallow field at a time.


class _Envelope(Schema):
    class Meta:
        # The protocol lets clients send fields this server does not use (``model_name``, ...).
        unknown = EXCLUDE


class RequestInputSchema(_Envelope):
    name = fields.String(required=True, validate=validate.Length(min=1))
    shape = fields.List(fields.Integer(strict=True, validate=validate.Range(min=0)), required=True)
    datatype = fields.String(required=True)
    parameters = fields.Dict(load_default=dict)
    data = fields.Raw(metadata={"description": "numbers, flat or nested, in row-major order"})


class RequestOutputSchema(_Envelope):
    name = fields.String(required=True, validate=validate.Length(min=1))
    parameters = fields.Dict(load_default=dict)


class InferRequestSchema(_Envelope):
    id = fields.String()
    parameters = fields.Dict(load_default=dict)
    inputs = fields.List(fields.Nested(RequestInputSchema), required=True, validate=validate.Length(min=1))
    outputs = fields.List(fields.Nested(RequestOutputSchema))


# One instance for every request: building a schema (and copying its nested fields) costs more than
# loading a small envelope with it.
_REQUEST_SCHEMA = InferRequestSchema()


def _envelope_as_loaded(header: dict) -> dict | None:
    """What ``InferRequestSchema`` loads ``header`` to, for the requests clients send (no unknown fields,
    every field of the right type), built without it: marshmallow's load of a small envelope costs ~30 us,
    more than the forward pass of a small model. None for anything else, which goes through the schema
    and gets its messages. tests/test_v2_codec.py checks over generated envelopes that this never accepts
    what the schema refuses, nor loads anything to something else."""
    if not _REQUEST_FIELDS.issuperset(header):
        return None
    envelope = dict(header)
    if not (_is_text(header.get("id", "")) and _parameters_of(envelope)):
        return None
    inputs = header.get("inputs")
    if type(inputs) is not list or not inputs:
        return None
    envelope["inputs"] = loaded = []
    for spec in inputs:
        spec = _tensor_as_loaded(spec, _INPUT_FIELDS)
        if spec is None:
            return None
        shape = spec.get("shape")
        if not (type(shape) is list and _is_text(spec.get("datatype")) and spec.get("data", 0) is not None):
            return None
        if not all(type(size) is int and size >= 0 for size in shape):
            return None
        loaded.append(spec)
    outputs = header.get("outputs")
    if outputs is not None:
        if type(outputs) is not list:
            return None
        envelope["outputs"] = loaded = []
        for spec in outputs:
            spec = _tensor_as_loaded(spec, _OUTPUT_FIELDS)
            if spec is None:
                return None
            loaded.append(spec)
    elif "outputs" in header:  # null: the schema refuses it
        return None
    return envelope


def _tensor_as_loaded(spec, known: frozenset) -> dict | None:
    """An input's or output's object as its schema loads it (a copy, ``parameters`` ``{}`` when absent), for
    the fields the two share: only ``known`` fields, a non-empty ``name``, ``parameters`` an object."""
    if type(spec) is not dict or not known.issuperset(spec):
        return None
    spec = dict(spec)
    return spec if _is_name(spec.get("name")) and _parameters_of(spec) else None


_REQUEST_FIELDS = frozenset(InferRequestSchema._declared_fields)
_INPUT_FIELDS = frozenset(RequestInputSchema._declared_fields)
_OUTPUT_FIELDS = frozenset(RequestOutputSchema._declared_fields)


def _is_text(value) -> bool:
    return type(value) is str


def _is_name(value) -> bool:
    return type(value) is str and value != ""


def _parameters_of(spec: dict) -> bool:
    """``parameters`` as the schema loads it (``{}`` when absent); False when it is not an object."""
    return type(spec.setdefault("parameters", {})) is dict


class ResponseOutputSchema(Schema):
    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    parameters = fields.Dict(metadata={"description": "binary_data_size when the data follows the JSON"})
    data = fields.List(fields.Float(), metadata={"description": "row-major, flattened"})


class InferResponseSchema(Schema):
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    id = fields.String()
    outputs = fields.List(fields.Nested(ResponseOutputSchema), required=True)


def _flatten_messages(messages, path: str = "") -> list[str]:
    """marshmallow's nested ``{"inputs": {0: {"shape": [...]}}}`` as ``inputs[0].shape: ...`` lines."""
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            if key == "_schema":  # marshmallow's key for the object itself (not an object, say): no field of it
                step = ""
            else:
                step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
            lines += _flatten_messages(value, path + step)
        return lines
    return [f"{path or 'request'}: {text}" for text in messages]


# ---------------------------------------------------------------------- request


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: not said for this output, the request's binary_data_output decides


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]  # in request order, each in its declared datatype and shape
    outputs: list[RequestedOutput] | None  # None: the client asked for every output (no list, or an empty one)
    binary_data_output: bool

    def wants_binary(self, output: RequestedOutput | None) -> bool:
        if output is not None and output.binary is not None:
            return output.binary
        return self.binary_data_output


def datatype_of(dtype) -> str:
    """The protocol's name ("FP32" / "FP64") for a numpy float dtype."""
    dtype = np.dtype(dtype)
    for name, wire in DATATYPES.items():
        if dtype.kind == "f" and dtype.itemsize == wire.itemsize:
            return name
    raise ValueError(f"dtype {dtype} has no v2 datatype here; expected one of float32, float64")


_FIRST_SLICE = 32  # bytes of input first given to a gzip member after the first (one is at least 20)


def decode_body(body: bytes, content_encoding: str | None, limit: int | None) -> bytes:
    """Undo the gzip / deflate ``Content-Encoding`` tritonclient can apply, never growing past ``limit``."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "x-gzip":  # gzip's old name, which RFC 9110 (8.4.1.3) asks recipients to take as gzip
        encoding = "gzip"
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2ProtocolError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none", 415)
    # wbits 16+MAX_WBITS reads a gzip wrapper, MAX_WBITS a zlib one (what HTTP calls "deflate").
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    view, start, pieces, size = body, 0, [], 0
    while True:  # one gzip member (a deflate body is one zlib stream)
        inflater = zlib.decompressobj(wbits)
        # At a member's end zlib copies the input it was given past that end (unused_data): given all the rest
        # of the body each time, 40,000 empty members took 0.4 s, quadratic in their number. The first member
        # (the usual body's only one) is given the whole body in one call; later ones a slice that doubles.
        step = len(view) if start == 0 else _FIRST_SLICE
        while not inflater.eof:
            if start == len(view):
                raise V2ProtocolError(f"request body is truncated {encoding} data")
            given = view[start:start + step]
            try:
                piece = inflater.decompress(given, limit + 1 - size if limit else 0)
            except zlib.error as exc:
                raise V2ProtocolError(f"request body is not valid {encoding} data: {exc}") from None
            if piece:  # an empty member's nothing, kept, would make a list as long as the body of them
                pieces.append(piece)
                size += len(piece)
            if limit and size > limit:
                raise V2ProtocolError(f"decompressed request body exceeds the limit of {limit} bytes", 413)
            start += len(given) - len(inflater.unused_data)
            step *= 2
        if start == len(view):
            return b"".join(pieces)  # the one piece itself when there is one (no copy)
        # Bytes after the end were dropped without a word. A gzip body may hold several members, whose data
        # follow each other (RFC 1952, as gzip -d reads them); a deflate body is one zlib stream.
        if encoding != "gzip":
            raise V2ProtocolError(f"request body has {len(view) - start} bytes after the end of its deflate data")
        view = memoryview(body)  # later members are given slices of the body, not copies of it


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


# One decoder for every request: json.loads with a keyword argument builds one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load_json_header(body: bytes, header_length: str | None) -> tuple[dict, int]:
    """The JSON object at the start of ``body`` and where the binary tensor data begins."""
    if header_length is None:
        end = len(body)
    else:
        digits = header_length.strip()
        # ASCII digits only: int() would also take a sign, underscores and other scripts' digits ('٣' is 3).
        if not (digits.isascii() and digits.isdigit()):
            raise V2ProtocolError(f"{HEADER_LENGTH} must be a non-negative integer (the JSON object's length in "
                                  f"bytes), got {header_length!r}")
        significant = digits.lstrip("0")
        # More digits than the body's length has is past its end; int() would refuse over 4300 (a 500).
        if len(significant) > len(str(len(body))):
            raise V2ProtocolError(f"{HEADER_LENGTH} is a number of {len(significant)} digits but the request body "
                                  f"has {len(body)} bytes")
        end = int(significant or "0")
        if not 0 < end <= len(body):
            raise V2ProtocolError(f"{HEADER_LENGTH} is {end} but the request body has {len(body)} bytes")
    if end == 0:
        raise V2ProtocolError("request body is empty; expected a JSON inference request")
    data = body if end == len(body) else body[:end]  # no copy of a JSON-only body
    try:
        header = _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))  # as json.loads does
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise V2ProtocolError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise V2ProtocolError("request body is nested too deeply") from None
    if not isinstance(header, dict):
        raise V2ProtocolError(f"request body must be a JSON object, got {type(header).__name__}")
    return header, end


def _check_bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise V2ProtocolError(f"{where} must be true or false, got {value!r}")
    return value


def _unsupported_parameters(parameters: dict, where: str, names) -> None:
    for name in names:
        if name in parameters:
            raise V2ProtocolError(f"{where}.parameters.{name}: this server does not support that extension")


def _array_from_json(data, shape: list[int], dtype: np.dtype, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise V2ProtocolError(f"{where}.data must be a list of numbers, got {type(data).__name__}")
    try:
        array = np.array(data)
    except (ValueError, OverflowError) as error:
        if "maximum number of dimension" in str(error):  # numpy's limit, not a ragged list (it was called one)
            raise V2ProtocolError(f"{where}.data is nested more than 64 lists deep") from None
        raise V2ProtocolError(f"{where}.data is ragged: nested lists must all have the same length") from None
    # 'b' (booleans), 'U' (strings) and 'O' (nulls, huge integers, mixed nesting) are not numbers; nor is a
    # boolean among numbers, which numpy converted to 1 or 0.
    if (array.dtype.kind not in "iuf" and array.size) or (array.ndim and has_boolean(data, array.ndim)):
        raise V2ProtocolError(
            f"{where}.data must contain only numbers (no booleans, strings, nulls or integers beyond 64 bits)"
        )
    expected = math.prod(shape)
    if array.size != expected:
        raise V2ProtocolError(f"{where}.data has {array.size} elements but shape {shape} needs {expected}")
    with np.errstate(over="ignore"):  # an overflow to infinity is reported below, with the field's name
        return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _array_from_binary(body: bytes, offset: int, size, shape: list[int], dtype: np.dtype, where: str):
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise V2ProtocolError(f"{where}.parameters.binary_data_size must be a non-negative integer, got {size!r:.40}")
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise V2ProtocolError(f"{where}.parameters.binary_data_size is {size!r:.40} but shape {shape} needs {expected}")
    if offset + size > len(body):
        raise V2ProtocolError(f"{where}: the request body ends {offset + size - len(body)} bytes before its data does")
    array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an infer request body (``header_length``: the ``Inference-Header-Content-Length`` header).

    Every input comes back as a numpy array of its declared shape and datatype (FP32 or FP64), finite.
    """
    header, offset = _load_json_header(body, header_length)
    envelope = _envelope_as_loaded(header)
    if envelope is None:
        try:
            envelope = _REQUEST_SCHEMA.load(header)
        except ValidationError as exc:
            raise V2ProtocolError("; ".join(_flatten_messages(exc.messages))) from None

    inputs = {}
    for index, spec in enumerate(envelope["inputs"]):
        where = f"inputs[{index}]"
        name, shape, parameters = spec["name"], spec["shape"], spec["parameters"]
        if name in inputs:
            raise V2ProtocolError(f"{where}.name: input {name!r} is given twice")
        dtype = DATATYPES.get(spec["datatype"])
        if dtype is None:
            raise V2ProtocolError(
                f"{where}.datatype: {spec['datatype']!r} is not supported; expected one of {', '.join(DATATYPES)}"
            )
        _unsupported_parameters(parameters, where, ("shared_memory_region",))
        size = parameters.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise V2ProtocolError(
                    f"{where}.parameters.binary_data_size is set but the {HEADER_LENGTH} header is not"
                )
            if "data" in spec:
                raise V2ProtocolError(f"{where}: give either data or parameters.binary_data_size, not both")
            array = _array_from_binary(body, offset, size, shape, dtype, where)
            offset += size
        elif "data" in spec:
            array = _array_from_json(spec["data"], shape, dtype, where)
        else:
            raise V2ProtocolError(f"{where}: no data; give data or parameters.binary_data_size")
        if not np.isfinite(array).all():
            raise V2ProtocolError(
                f"{where}: values must be finite numbers (no NaN or infinity) within the range of {spec['datatype']}"
            )
        inputs[name] = array
    if offset != len(body):
        raise V2ProtocolError(f"request body has {len(body) - offset} bytes after the last input's binary data")

    binary_data_output = _check_bool(
        envelope["parameters"].get("binary_data_output", False), "parameters.binary_data_output"
    )
    outputs = None
    if envelope.get("outputs"):  # an empty list names no output in particular: every output, as Triton answers
        outputs = []
        for index, spec in enumerate(envelope["outputs"]):
            where = f"outputs[{index}]"
            if any(spec["name"] == earlier.name for earlier in outputs):
                raise V2ProtocolError(f"{where}.name: output {spec['name']!r} is requested twice")
            _unsupported_parameters(spec["parameters"], where, ("classification", "shared_memory_region"))
            binary = spec["parameters"].get("binary_data")
            if binary is not None:
                _check_bool(binary, f"{where}.parameters.binary_data")
            outputs.append(RequestedOutput(spec["name"], binary))
    return InferRequest(envelope.get("id"), inputs, outputs, binary_data_output)


# ---------------------------------------------------------------------- response


# json.dumps's compact encoding, refusing NaN and infinity instead of writing the non-JSON tokens NaN and
# Infinity (as /predict's answers do).
_STRICT_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_infer_response(
    model_name: str, model_version, request_id: str | None, outputs: list[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers for ``outputs`` given as ``(name, array, as_binary)``."""
    described, chunks = [], []
    for name, array, as_binary in outputs:
        entry = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if as_binary:
            wire = np.ascontiguousarray(array, dtype=DATATYPES[entry["datatype"]])
            chunks.append(wire.tobytes())
            entry["parameters"] = {"binary_data_size": wire.nbytes}
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    document = {"model_name": model_name, "model_version": str(model_version)}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = described
    try:
        header = _STRICT_COMPACT_JSON.encode(document).encode()
    except ValueError:  # only now look for the output that holds NaN or infinity: a good answer pays nothing
        name = next(name for name, array, as_binary in outputs if not as_binary and not np.isfinite(array).all())
        raise V2ProtocolError(
            f"output {name!r} holds NaN or infinity, which JSON cannot carry; request it as binary data", 422
        ) from None
    if not chunks:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
    return b"".join([header, *chunks]), headers
