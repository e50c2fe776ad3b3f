"""The v2 wire format on its own: request bodies in, arrays out; arrays in, response bodies out."""

import gzip
import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.v2_codec import (
    HEADER_LENGTH,
    RequestedOutput,
    V2ProtocolError,
    datatype_of,
    decode_body,
    encode_infer_response,
    parse_infer_request,
)


def json_request(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_request(arrays: dict, datatype="FP64", **extra) -> tuple[bytes, str]:
    """A body as tritonclient builds it in binary mode, and its Inference-Header-Content-Length."""
    inputs = [
        {"name": name, "shape": list(a.shape), "datatype": datatype, "parameters": {"binary_data_size": a.nbytes}}
        for name, a in arrays.items()
    ]
    header = json_request(inputs, **extra)
    return header + b"".join(a.tobytes() for a in arrays.values()), str(len(header))


def error_of(body: bytes, header_length=None) -> V2ProtocolError:
    with pytest.raises(V2ProtocolError) as info:
        parse_infer_request(body, header_length)
    return info.value


# ---------------------------------------------------------------------- JSON requests


@pytest.mark.parametrize(
    "data",
    [[0, 1, 1, 1, 0.5, -2.25], [[0, 1], [1, 1], [0.5, -2.25]], [[[0, 1]], [[1, 1]], [[0.5, -2.25]]]],
    ids=["flat", "nested", "deeper"],
)
@pytest.mark.parametrize("datatype, dtype", [("FP32", np.float32), ("FP64", np.float64)])
def test_json_data_is_read_row_major_whatever_its_nesting(data, datatype, dtype):
    body = json_request([{"name": "input", "shape": [3, 2], "datatype": datatype, "data": data}], id="r-7")
    request = parse_infer_request(body)
    array = request.inputs["input"]
    assert array.dtype == dtype and array.shape == (3, 2)
    np.testing.assert_array_equal(array, np.array([[0, 1], [1, 1], [0.5, -2.25]], dtype=dtype))
    assert request.id == "r-7"
    assert request.outputs is None and request.binary_data_output is False


def test_unknown_envelope_fields_are_ignored_as_the_protocol_allows():
    body = json_request([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], model_name="xor")
    assert list(parse_infer_request(body).inputs) == ["x"]


def test_fp32_numbers_round_to_the_nearest_float32():
    value = 0.1
    body = json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [value]}])
    assert parse_infer_request(body).inputs["x"][0] == np.float32(value)


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"", "request body is empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"{}", "inputs: Missing data for required field"),
        (json_request([]), "inputs: Shorter than minimum length 1"),
        (json_request([{"name": "x", "datatype": "FP32", "data": [1]}]), "inputs[0].shape: Missing data"),
        # marshmallow's "_schema" key was written out as if it were a field: "inputs[0]._schema: Invalid input type."
        (json_request([0, 1]), "inputs[0]: Invalid input type.; inputs[1]: Invalid input type."),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], outputs=["y"]),
         "outputs[0]: Invalid input type."),
        (json_request([{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]), "inputs[0].shape[0]"),
        (json_request([{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]), "inputs[0].shape[0]"),
        (json_request([{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]), "'INT32' is not supported"),
        (json_request([{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]), "expected one of FP32"),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32"}]), "inputs[0]: no data"),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": 1}]), "must be a list of numbers"),
        (json_request([{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "2"]}]), "only numbers"),
        (json_request([{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, None]}]), "only numbers"),
        (json_request([{"name": "x", "shape": [2], "datatype": "FP32", "data": [True, False]}]), "only numbers"),
        # numpy turns a boolean among numbers into 1 or 0 without a word: it was served as a number.
        (json_request([{"name": "x", "shape": [2], "datatype": "FP32", "data": [0, True]}]), "only numbers"),
        (json_request([{"name": "x", "shape": [2], "datatype": "FP64", "data": [0.5, False]}]), "only numbers"),
        (json_request([{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[0, 1], [True, 1]]}]),
         "only numbers"),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [2**70]}]), "only numbers"),
        (json_request([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}]), "ragged"),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": json.loads("[" * 70 + "1" + "]" * 70)}]),
         "inputs[0].data is nested more than 64 lists deep"),  # was called ragged
        (json_request([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]), "has 3 elements"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1e999]}]}', "must be finite"),
        (json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e300]}]), "must be finite"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [NaN]}]}', "NaN is not a JSON"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [-Infinity]}]}', "-Infinity"),
        (
            json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2),
            "input 'x' is given twice",
        ),
        (
            json_request([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], id=7),
            "id: Not a valid string",
        ),
        (
            json_request(
                [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], parameters={"binary_data_output": 1}
            ),
            "parameters.binary_data_output must be true or false",
        ),
        (
            json_request(
                [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}],
            ),
            "outputs[0].parameters.binary_data must be true or false",
        ),
        (
            json_request(
                [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "y", "parameters": {"classification": 2}}],
            ),
            "outputs[0].parameters.classification: this server does not support",
        ),
        (
            json_request(
                [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "y"}, {"name": "y", "parameters": {"binary_data": True}}],
            ),
            "outputs[1].name: output 'y' is requested twice",
        ),
        (
            json_request(
                [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "FP32",
                        "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4},
                    }
                ]
            ),
            "inputs[0].parameters.shared_memory_region: this server does not support",
        ),
    ],
)
def test_bad_json_requests_are_rejected_naming_the_field(body, expected):
    error = error_of(body)
    assert expected in str(error)
    assert error.status == 400


# ---------------------------------------------------------------------- binary requests


@pytest.mark.parametrize("datatype, dtype", [("FP32", "<f4"), ("FP64", "<f8")])
def test_binary_inputs_are_read_from_after_the_json_header(datatype, dtype):
    a = np.arange(12, dtype=dtype).reshape(4, 3) / 7
    b = -np.arange(2, dtype=dtype)
    body, length = binary_request({"a": a, "b": b}, datatype)
    request = parse_infer_request(body, length)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    assert request.inputs["a"].dtype == np.dtype(dtype)


def test_binary_and_json_inputs_mix_in_one_request():
    a = np.array([[1.5, 2.5]])
    header = json_request(
        [
            {"name": "j", "shape": [2], "datatype": "FP64", "data": [3, 4]},
            {"name": "b", "shape": [1, 2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
        ]
    )
    request = parse_infer_request(header + a.tobytes(), str(len(header)))
    np.testing.assert_array_equal(request.inputs["b"], a)
    np.testing.assert_array_equal(request.inputs["j"], [3, 4])


def test_big_endian_hosts_see_the_same_values():
    # The wire is little-endian: the bytes of 1.0 as '<f8' must read back as 1.0 on any host.
    body, length = binary_request({"x": np.array([1.0, -2.0], dtype="<f8")})
    np.testing.assert_array_equal(parse_infer_request(body, length).inputs["x"], [1.0, -2.0])


def binary_case(size=None, extra=b"", cut=0, header_length=None, data_too=False, values=(1.0, 2.0)):
    parameters = {"binary_data_size": 16 if size is None else size}
    spec = {"name": "x", "shape": [2], "datatype": "FP64", "parameters": parameters}
    if data_too:
        spec["data"] = [1, 2]
    header = json_request([spec])
    body = header + np.array(values).tobytes() + extra
    body = body[: len(body) - cut]
    return body, str(len(header)) if header_length is None else header_length


@pytest.mark.parametrize(
    "case, expected",
    [
        (binary_case(size=8), "binary_data_size is 8 but shape [2] needs 16"),
        (binary_case(size=-16), "must be a non-negative integer"),
        (binary_case(size="16"), "must be a non-negative integer"),
        (binary_case(size=True), "must be a non-negative integer"),
        (binary_case(cut=3), "the request body ends 3 bytes before its data does"),
        (binary_case(extra=b"\0" * 5), "5 bytes after the last input's binary data"),
        (binary_case(header_length="abc"), "Inference-Header-Content-Length must be a non-negative integer"),
        # int() took these: a negative length was reported as "past the body", and other scripts' digits were read
        (binary_case(header_length="-5"), "must be a non-negative integer (the JSON object's length in bytes), "
                                          "got '-5'"),
        (binary_case(header_length="+115"), "must be a non-negative integer"),
        (binary_case(header_length="1_15"), "must be a non-negative integer"),
        (binary_case(header_length="\u0661\u0661\u0665"), "must be a non-negative integer"),
        (binary_case(header_length="0"), "Inference-Header-Content-Length is 0"),
        (binary_case(header_length="100000"), "but the request body has"),
        # int() refuses strings of over 4300 digits: a ValueError, answered as a 500
        (binary_case(header_length="9" * 5000), "Inference-Header-Content-Length is a number of 5000 digits but the "
                                                "request body has 117 bytes"),
        (binary_case(header_length="0" * 5000 + "97"), "not valid JSON"),  # leading zeros, as int() reads them
        (binary_case(header_length="10"), "not valid JSON"),
        (binary_case(data_too=True), "either data or parameters.binary_data_size, not both"),
        (binary_case(values=(1.0, np.nan)), "must be finite"),
        (binary_case(values=(np.inf, 1.0)), "must be finite"),
    ],
)
def test_bad_binary_requests_are_rejected_naming_the_problem(case, expected):
    assert expected in str(error_of(*case))


def test_a_huge_binary_data_size_is_not_echoed_whole():
    # A JSON integer of 4,000 digits (Python reads up to 4,300) was written out whole in the error message.
    message = str(error_of(*binary_case(size=10**3999)))
    assert "binary_data_size is 1000000000000000000000000000000000000000 but shape [2] needs 16" in message
    assert len(message) < 200


def test_the_header_length_may_carry_surrounding_spaces():
    body, length = binary_case()
    np.testing.assert_array_equal(parse_infer_request(body, f" {length} ").inputs["x"], [1.0, 2.0])


def test_binary_data_size_without_the_header_is_an_error():
    body, _ = binary_case()
    assert f"the {HEADER_LENGTH} header is not" in str(error_of(body[: body.index(b"}]}") + 3]))


# ---------------------------------------------------------------------- requested outputs


@pytest.mark.parametrize(
    "outputs, binary_data_output, expected",
    [
        (None, None, [("*", False)]),
        (None, True, [("*", True)]),
        ([], True, [("*", True)]),  # an empty list once asked for no output at all: a response without outputs
        ([{"name": "y"}], True, [("y", True)]),
        ([{"name": "y", "parameters": {"binary_data": False}}], True, [("y", False)]),
        ([{"name": "y", "parameters": {"binary_data": True}}], None, [("y", True)]),
    ],
)
def test_binary_output_follows_the_request_default_unless_an_output_says_otherwise(
    outputs, binary_data_output, expected
):
    extra = {}
    if outputs is not None:
        extra["outputs"] = outputs
    if binary_data_output is not None:
        extra["parameters"] = {"binary_data_output": binary_data_output}
    request = parse_infer_request(json_request([{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], **extra))
    asked = request.outputs or [None]
    assert [(o.name if o else "*", request.wants_binary(o)) for o in asked] == expected
    if outputs:
        assert all(isinstance(o, RequestedOutput) for o in request.outputs)


# ---------------------------------------------------------------------- responses


def test_json_response_echoes_the_request_and_flattens_data_row_major():
    y = np.array([[0.25, -1.0], [3.0, 4.5]], dtype=np.float32)
    body, headers = encode_infer_response("xor", 3, "req-1", [("output", y, False)])
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "model_name": "xor",
        "model_version": "3",
        "id": "req-1",
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [2, 2], "data": [0.25, -1.0, 3.0, 4.5]}],
    }


def test_response_without_request_id_has_no_id():
    body, _ = encode_infer_response("xor", 1, None, [("output", np.zeros((1, 1)), False)])
    assert "id" not in json.loads(body)


def test_binary_response_puts_each_tensor_after_the_header_in_order():
    y = np.arange(6, dtype=np.float64).reshape(3, 2) / 3
    z = np.array([[7.0]], dtype=np.float32)
    body, headers = encode_infer_response("m", 1, None, [("y", y, True), ("z", z, False), ("w", y[:1], True)])
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    y_out, z_out, w_out = header["outputs"]
    assert y_out == {"name": "y", "datatype": "FP64", "shape": [3, 2], "parameters": {"binary_data_size": 48}}
    assert z_out["data"] == [7.0] and "parameters" not in z_out
    assert w_out["parameters"] == {"binary_data_size": 16}
    assert body[length:] == y.astype("<f8").tobytes() + y[:1].astype("<f8").tobytes()


def test_json_response_refuses_non_finite_outputs():
    with pytest.raises(V2ProtocolError, match="request it as binary data") as info:
        encode_infer_response("m", 1, None, [("y", np.array([np.inf]), False)])
    assert info.value.status == 422


@pytest.mark.parametrize("dtype, name", [(np.float32, "FP32"), (np.float64, "FP64"), (np.dtype(">f8"), "FP64")])
def test_datatype_names(dtype, name):
    assert datatype_of(dtype) == name


def test_datatype_of_other_dtypes_is_an_error():
    with pytest.raises(ValueError, match="float16 has no v2 datatype"):
        datatype_of(np.float16)


# ---------------------------------------------------------------------- compressed bodies


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                               ("x-gzip", gzip.compress)])  # was a 415; RFC 9110 8.4.1.3
def test_compressed_bodies_are_inflated(encoding, compress):
    body = b'{"inputs": []}' * 10
    assert decode_body(compress(body), encoding, limit=1000) == body
    assert decode_body(body, None, limit=None) == body


def test_a_gzip_body_of_several_members_is_inflated_whole():
    # Only the first member was read, and the rest of the body dropped without a word (RFC 1952: members follow
    # each other; gzip -d reads them all).
    head, tail = b'{"inputs": [' * 3, b"]}" * 3
    assert decode_body(gzip.compress(head) + gzip.compress(tail), "gzip", limit=1000) == head + tail
    with pytest.raises(V2ProtocolError, match="exceeds the limit of 1000 bytes"):
        decode_body(gzip.compress(b"x" * 600) + gzip.compress(b"x" * 401), "gzip", limit=1000)
    assert decode_body(gzip.compress(b"x" * 600) + gzip.compress(b"x" * 400), "gzip", limit=1000) == b"x" * 1000


_ZLIB_DECOMPRESSOBJ = zlib.decompressobj  # the real one, which the test below replaces


class _CountingInflater:
    """zlib's own inflater, counting the bytes it copies past a member's end into ``unused_data``."""

    copied = 0

    def __init__(self, wbits):
        self._inflater = _ZLIB_DECOMPRESSOBJ(wbits)

    def decompress(self, data, max_length=0):
        out = self._inflater.decompress(data, max_length)
        _CountingInflater.copied += len(self._inflater.unused_data)
        return out

    def __getattr__(self, name):  # eof, unused_data, unconsumed_tail
        return getattr(self._inflater, name)


def test_a_body_of_many_gzip_members_is_inflated_in_linear_time(monkeypatch):
    # Each member was given all the rest of the body, which zlib copied past the member's end: quadratic in the
    # number of members (a 64 MiB body of 20-byte empty members, the limit's worth, took hours of CPU).
    monkeypatch.setattr(zlib, "decompressobj", _CountingInflater)
    monkeypatch.setattr(_CountingInflater, "copied", 0)
    members = [gzip.compress(b"", mtime=0)] * 3000 + [gzip.compress(bytes(range(256)) * 40, mtime=0)]
    body = b"".join(members)
    assert decode_body(body, "gzip", limit=20_000) == bytes(range(256)) * 40
    assert _CountingInflater.copied <= 4 * len(body)  # was 3000 * len(body) / 2


@pytest.mark.parametrize(
    "body, encoding, status, expected",
    [
        (gzip.compress(b"x" * 5000), "gzip", 413, "exceeds the limit of 1000 bytes"),
        (b"plain", "gzip", 400, "not valid gzip data"),
        (zlib.compress(b"x" * 100)[:-4], "deflate", 400, "truncated deflate data"),
        # bytes after the end of the compressed data were dropped without a word
        (zlib.compress(b"x" * 100) + b"junk", "deflate", 400, "4 bytes after the end of its deflate data"),
        (gzip.compress(b"x" * 100, mtime=0) + b"junk", "gzip", 400, "not valid gzip data"),
        ((gzip.compress(b"x" * 100, mtime=0) * 2)[:-4], "gzip", 400, "truncated gzip data"),
        (b"x", "br", 415, "'br' is not supported"),
    ],
)
def test_bad_compressed_bodies(body, encoding, status, expected):
    with pytest.raises(V2ProtocolError, match=expected) as info:
        decode_body(body, encoding, limit=1000)
    assert info.value.status == status


# ---------------------------------------------------------------------- any finite array survives every encoding

finite_arrays = hnp.arrays(
    dtype=st.sampled_from([np.dtype("<f4"), np.dtype("<f8")]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
    elements={"allow_nan": False, "allow_infinity": False},
)


@settings(max_examples=150, deadline=None)
@given(finite_arrays)
def test_json_nested_json_flat_and_binary_all_read_the_same_array(x):
    datatype = "FP32" if x.dtype.itemsize == 4 else "FP64"
    spec = {"name": "x", "shape": list(x.shape), "datatype": datatype}
    nested = parse_infer_request(json_request([{**spec, "data": x.tolist()}])).inputs["x"]
    flat = parse_infer_request(json_request([{**spec, "data": x.ravel().tolist()}])).inputs["x"]
    binary = parse_infer_request(*binary_request({"x": x}, datatype)).inputs["x"]
    for array in (nested, flat, binary):
        assert array.shape == x.shape and array.dtype == x.dtype
        assert array.tobytes() == x.tobytes()


@settings(max_examples=100, deadline=None)
@given(finite_arrays)
def test_responses_carry_outputs_exactly_in_json_and_binary(y):
    as_json, _ = encode_infer_response("m", 1, None, [("y", y, False)])
    (output,) = json.loads(as_json)["outputs"]
    assert np.array(output["data"], dtype=y.dtype).reshape(output["shape"]).tobytes() == y.tobytes()
    as_binary, headers = encode_infer_response("m", 1, None, [("y", y, True)])
    assert as_binary[int(headers[HEADER_LENGTH]) :] == y.tobytes()


# The envelope shortcut (_envelope_as_loaded) against the schema it stands in for.
_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False), st.text(max_size=3),
                    st.just([]), st.just({}), st.lists(st.integers(-1, 3), max_size=3),
                    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
_parameters = st.dictionaries(st.sampled_from(["binary_data_size", "binary_data", "x"]),
                              st.one_of(st.integers(0, 8), st.booleans()), max_size=2)
def _mutants(valid: st.SearchStrategy, keys: list[str]) -> st.SearchStrategy:
    """``valid`` objects, and the same with one field removed or set to any value (an unknown one too)."""
    def mutate(spec):
        return st.one_of(st.just(spec),
                         st.sampled_from(keys).map(lambda key: {k: v for k, v in spec.items() if k != key}),
                         st.tuples(st.sampled_from([*keys, "model_name"]), _values)
                         .map(lambda kv: {**spec, kv[0]: kv[1]}))
    return valid.flatmap(mutate)


_input_specs = _mutants(st.fixed_dictionaries(
    {"name": st.just("input"), "shape": st.lists(st.integers(0, 4), max_size=3),
     "datatype": st.sampled_from(["FP32", "FP64", "BYTES"])},
    optional={"parameters": _parameters, "data": st.lists(st.integers(0, 3), max_size=4)}),
    ["name", "shape", "datatype", "parameters", "data"])
_output_specs = _mutants(st.fixed_dictionaries({"name": st.just("output")}, optional={"parameters": _parameters}),
                         ["name", "parameters"])
_envelopes = _mutants(st.fixed_dictionaries(
    {"inputs": st.lists(_input_specs, min_size=1, max_size=3)},
    optional={"id": st.text(max_size=3), "parameters": _parameters,
              "outputs": st.lists(_output_specs, max_size=2)}),
    ["id", "parameters", "inputs", "outputs"])


def assert_the_shortcut_agrees_with_the_schema(header):
    """The envelope shortcut takes ``header`` only if the schema does, and loads it to the same."""
    from marshmallow import ValidationError

    from service.v2_codec import InferRequestSchema, _envelope_as_loaded

    shortcut = _envelope_as_loaded(json.loads(json.dumps(header)))  # a copy: the schema gets the original
    if shortcut is not None:
        try:
            loaded = InferRequestSchema().load(header)
        except ValidationError as error:
            raise AssertionError(f"the shortcut accepted what the schema refuses: {error.messages}") from None
        assert shortcut == loaded


@settings(max_examples=600)
@given(_envelopes)
def test_the_envelope_shortcut_loads_what_the_schema_loads(header):
    assert_the_shortcut_agrees_with_the_schema(header)


def test_the_envelope_shortcut_takes_the_requests_clients_send():
    from service.v2_codec import _envelope_as_loaded

    # tritonclient's JSON and binary requests, and curl's usual one.
    for header in ({"inputs": [{"name": "input", "shape": [4, 2], "datatype": "FP64", "data": [0, 1] * 4}]},
                   {"inputs": [{"name": "input", "shape": [4, 2], "datatype": "FP32",
                                "parameters": {"binary_data_size": 32}}],
                    "outputs": [{"name": "output", "parameters": {"binary_data": True}}], "id": "7"},
                   {"id": "a", "parameters": {"binary_data_output": True},
                    "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [[0, 1]]}]}):
        assert _envelope_as_loaded(header) is not None


_ODD_VALUES = [None, True, False, 0, -1, 2**70, 1.5, "", "x", [], {}, [-1], [True], [2.5], [None], {"a": 1}]
_BASE_ENVELOPE = {"id": "7", "parameters": {"binary_data_output": False},
                  "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "parameters": {},
                              "data": [0, 1, 1, 0]}],
                  "outputs": [{"name": "output", "parameters": {"binary_data": False}}]}


def _single_mutations():
    """The base envelope with one field (at any level) removed, or set to each odd value, or added unknown."""
    def at(path, change):
        header = json.loads(json.dumps(_BASE_ENVELOPE))
        *parents, key = path
        target = header
        for step in parents:
            target = target[step]
        change(target, key)
        return header

    paths = [(key,) for key in _BASE_ENVELOPE] + [("inputs", 0, key) for key in _BASE_ENVELOPE["inputs"][0]] \
        + [("outputs", 0, key) for key in _BASE_ENVELOPE["outputs"][0]] + [("inputs", 0, "shape", 0)]
    for path in paths:
        if not isinstance(path[-1], int):
            yield at(path, lambda target, key: target.pop(key))
        for value in _ODD_VALUES:
            yield at(path, lambda target, key, value=value: target.__setitem__(key, value))
    for parent in [(), ("inputs", 0), ("outputs", 0)]:
        yield at((*parent, "model_name"), lambda target, key: target.__setitem__(key, "xor"))


@pytest.mark.parametrize("header", list(_single_mutations()))
def test_the_envelope_shortcut_agrees_with_the_schema_on_every_single_change(header):
    assert_the_shortcut_agrees_with_the_schema(header)
