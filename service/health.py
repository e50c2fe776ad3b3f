"""Liveness and readiness probes."""

from __future__ import annotations

from .api import Blueprint
from .errors import abort_problem
from .registry import get_registry
from .schemas import HealthSchema, ReadinessSchema

blp = Blueprint("health", __name__, description="Liveness and readiness probes")


@blp.route("/healthz")
@blp.response(200, HealthSchema)
def healthz():
    """The process is up and answering (also the trivial endpoint the benchmarks compare against)."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.response(200, ReadinessSchema)
@blp.alt_problem(503, "The model directory cannot be read")
def readyz():
    """The model directory can be read."""
    try:
        count = len(get_registry().names())
    except OSError as error:
        abort_problem(503, detail=f"The model directory cannot be read: {error.strerror or error}.",
                      type="urn:minigrad:problem:not-ready")
    return {"status": "ready", "models": count}
