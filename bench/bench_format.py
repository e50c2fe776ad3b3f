"""The model document's cost against plain ``json``, measured side by side in this process.

A 784-512-512-10 ReLU model (670,000 parameters): ``minigrad.dumps(model)`` against
``json.dumps`` of the very document ``model.to_dict()`` returns, and ``minigrad.loads(text)``
against ``json.loads(text)`` of the same text. minigrad's side does everything a user gets:
validation (schema, shapes, finiteness), building the model, exact float text; json's side only
converts. Also shown: ``save``/``load`` through a real file (``save`` writes a temporary file,
fsyncs and renames it, so a reader never sees half a model) against writing ``json.dumps``'s text
to a plain open file and ``json.loads`` of a file's bytes, and the file's size.

Timing: the two sides alternate (the order flips every round) and each figure is the median over
rounds, so drift on a shared machine hits both.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np

import minigrad as mg

SIZES = [784, 512, 512, 10]
TARGET = 2.0  # the bound on both ratios
ROUNDS = 7


def make_model(dtype) -> mg.Sequential:
    rng = np.random.default_rng(0)
    layers = []
    for n_in, n_out in zip(SIZES, SIZES[1:]):
        layers += [mg.Linear(n_in, n_out, rng=rng, dtype=dtype), mg.Relu()]
    model = mg.Sequential(layers[:-1])
    for layer in model.layers[::2]:  # trained-looking biases rather than zeros
        layer.bias.data[...] = rng.standard_normal(layer.bias.data.shape) * 0.01
    model.metadata = {"name": "bench", "inputs": [f"pixel{i}" for i in range(784)], "outputs": list("0123456789")}
    return model


def alternating_medians(first, second, rounds=ROUNDS):
    times = ([], [])
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            call = (first, second)[side]
            started = time.perf_counter()
            call()
            times[side].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def row(label, ours, peer, target=None):
    verdict = "" if target is None else f"{target:>6.1f}x  {'ok' if ours / peer <= target else 'MISSED'}"
    print(f"{label:38} {ours * 1e3:9.1f}ms {peer * 1e3:9.1f}ms {ours / peer:7.2f}x  {verdict}")


def measure(dtype) -> None:
    model = make_model(dtype)
    document = model.to_dict()
    text = mg.dumps(model)
    name = np.dtype(dtype).name
    assert mg.loads(text).layers[0].weight.data.tobytes() == model.layers[0].weight.data.tobytes()
    save = alternating_medians(lambda: mg.dumps(model), lambda: json.dumps(document))
    row(f"{name} save: dumps vs json.dumps", *save, TARGET)
    load = alternating_medians(lambda: mg.loads(text), lambda: json.loads(text))
    row(f"{name} load: loads vs json.loads", *load, TARGET)
    with tempfile.TemporaryDirectory() as tmp:
        ours, plain = os.path.join(tmp, "model.json"), os.path.join(tmp, "plain.json")

        # The quickest plain ways: json.dump/json.load through a file object are slower than these.
        def json_save():
            with open(plain, "w", encoding="utf-8") as f:
                f.write(json.dumps(document))

        def json_load():
            with open(plain, "rb") as f:
                return json.loads(f.read())

        row(f"{name} save to file (atomic, fsync)", *alternating_medians(lambda: mg.save(model, ours), json_save))
        row(f"{name} load from file", *alternating_medians(lambda: mg.load(ours), json_load))
        size = os.path.getsize(ours)
    parameters = sum(p.data.size for p in model.get_parameters())
    print(f"{name} file: {size / 1e6:.1f} MB, {size / parameters:.1f} bytes per parameter ({parameters:,} parameters)")


def run():
    print(f"model {'-'.join(map(str, SIZES))} ReLU; median of {ROUNDS} alternating rounds")
    print(f"{'':38} {'minigrad':>11} {'json':>11} {'ratio':>8}  {'target':>7}")
    for dtype in (np.float64, np.float32):
        measure(dtype)
