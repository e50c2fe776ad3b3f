"""What one training job computes, apart from any queue: build the model, split the data, run ``fit``.

``TrainingSpec`` is a validated request (arrays already checked); ``train`` is deterministic given the
spec, so the same request with the same seed yields a bit-identical model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minigrad
from minigrad.format import LAYER_TYPES
from minigrad.training import DEFAULT_ALPHA, LOSSES, OPTIMIZERS


@dataclass
class TrainingSpec:
    inputs: np.ndarray
    targets: np.ndarray
    epochs: int
    seed: int
    loss: str = "mse"
    optimizer: dict = field(default_factory=lambda: {"type": "sgd", "alpha": 0.1})
    batch_size: int | None = None
    shuffle: bool = True
    # Exactly one of these two: a layer list for fresh weights, or a registered model's document.
    architecture: list[dict] | None = None
    dtype: str = "float64"
    base_document: dict | None = None
    validation: tuple[np.ndarray, np.ndarray] | None = None
    validation_split: float | None = None


def _seeds(seed: int):
    # Independent streams for the initial weights, the validation split and the shuffling, so that
    # changing one use (say, no validation_split) leaves the others' draws unchanged.
    init, split, shuffle = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(init), np.random.default_rng(split), shuffle


def fresh_layer(layer: dict, rng: np.random.Generator, dtype) -> minigrad.Layer:
    layer_class = LAYER_TYPES[layer["type"]].layer_class
    if layer_class is minigrad.Linear:
        return minigrad.Linear(layer["in_features"], layer["out_features"], rng=rng, dtype=dtype)
    return layer_class()


def build_model(spec: TrainingSpec, rng: np.random.Generator) -> minigrad.Sequential:
    if spec.base_document is not None:
        return minigrad.Sequential.from_dict(spec.base_document)
    dtype = np.dtype(spec.dtype)
    return minigrad.Sequential([fresh_layer(layer, rng, dtype) for layer in spec.architecture])


def held_out_count(samples: int, validation_split: float) -> int:
    """How many of ``samples`` rows ``validation_split`` holds out for validation: at least one."""
    return max(1, int(round(samples * validation_split)))


def split_validation(spec: TrainingSpec, rng: np.random.Generator):
    """(train inputs, train targets, validation pair or None)."""
    if spec.validation is not None:
        return spec.inputs, spec.targets, spec.validation
    if not spec.validation_split:
        return spec.inputs, spec.targets, None
    n = len(spec.inputs)
    held_out = held_out_count(n, spec.validation_split)
    # A seeded shuffle first: data sets often arrive sorted by class.
    order = rng.permutation(n)
    train, held = order[: n - held_out], order[n - held_out :]
    return spec.inputs[train], spec.targets[train], (spec.inputs[held], spec.targets[held])


def make_optimizer(config: dict, parameters):
    options = {"alpha": DEFAULT_ALPHA[config["type"]]} | {k: v for k, v in config.items() if k != "type"}
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return OPTIMIZERS[config["type"]](parameters, **options)


def train(spec: TrainingSpec, callback=None):
    """Run the job's ``fit``; returns ``(model, history)``. Raises ``minigrad.TrainingDiverged``."""
    init_rng, split_rng, shuffle_seed = _seeds(spec.seed)
    model = build_model(spec, init_rng)
    inputs, targets, validation = split_validation(spec, split_rng)
    history = minigrad.fit(
        model,
        inputs,
        targets,
        LOSSES[spec.loss](),
        make_optimizer(spec.optimizer, model.get_parameters()),
        spec.epochs,
        batch_size=spec.batch_size,
        shuffle=spec.shuffle,
        seed=shuffle_seed,
        validation=validation,
        callback=callback,
    )
    return model, history
