"""minigrad: a small numpy autograd engine, layers, losses, optimizers and a training loop.

The public names follow the course notes the project grew from, so their programs run unchanged
after ``from minigrad import *``.
"""

import numpy as np

from .format import ModelFormatError, dumps, load, loads, save
from .nn import BCELoss, CrossEntropyLoss, Layer, Linear, MSELoss, Relu, Sequential, Sigmoid, Softmax, Tanh
from .optim import SGD, Adam, Optimizer
from .tensor import Tensor, is_grad_enabled, no_grad
from .training import TrainingDiverged, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    # The course notes' programs use ``np`` from the notebook cell that defined Tensor; exporting
    # it keeps them running unchanged with that cell replaced by ``from minigrad import *``.
    "np",
    "Tensor",
    "no_grad",
    "is_grad_enabled",
    "Layer",
    "Linear",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Softmax",
    "Sequential",
    "MSELoss",
    "BCELoss",
    "CrossEntropyLoss",
    "Optimizer",
    "SGD",
    "Adam",
    "fit",
    "evaluate",
    "TrainingDiverged",
    "save",
    "load",
    "dumps",
    "loads",
    "ModelFormatError",
]
