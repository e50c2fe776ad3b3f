"""Optimizers: they read each parameter's ``.grad`` and update ``.data`` in place."""

from __future__ import annotations

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    def __init__(self, parameters, alpha):
        self.parameters = list(parameters)
        if not alpha > 0 or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
        self.alpha = alpha

    def zero(self):
        """Forget accumulated gradients (safe before any backward). The next backward starts afresh."""
        for p in self.parameters:
            p.grad = None

    def step(self, zero=True):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay."""

    def __init__(self, parameters, alpha=0.1, momentum=0.0, weight_decay=0.0):
        super().__init__(parameters, alpha)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._velocity = [None] * len(self.parameters)

    def step(self, zero=True):
        alpha, momentum, decay = self.alpha, self.momentum, self.weight_decay
        for i, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            g = p.grad.data
            if decay:
                g = g + decay * p.data
            if momentum:
                v = self._velocity[i]
                if v is None:
                    v = self._velocity[i] = np.array(g, dtype=p.data.dtype)
                else:
                    v *= momentum
                    v += g
                g = v
            p.data -= alpha * g
            if zero:
                p.grad = None


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction."""

    def __init__(self, parameters, alpha=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(parameters, alpha)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.betas = (beta1, beta2)
        self.eps = eps
        self.t = 0
        self._m = [np.zeros_like(p.data) for p in self.parameters]
        self._v = [np.zeros_like(p.data) for p in self.parameters]

    def step(self, zero=True):
        self.t += 1
        beta1, beta2 = self.betas
        # Fold both bias corrections into the step size: alpha * sqrt(1 - b2^t) / (1 - b1^t).
        step_size = self.alpha * np.sqrt(1 - beta2**self.t) / (1 - beta1**self.t)
        eps_hat = self.eps * np.sqrt(1 - beta2**self.t)
        for p, m, v in zip(self.parameters, self._m, self._v):
            if p.grad is None:
                continue
            g = p.grad.data
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            denom = np.sqrt(v)
            denom += eps_hat
            p.data -= step_size * (m / denom)
            if zero:
                p.grad = None
