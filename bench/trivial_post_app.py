"""The service's app plus two bench-only POST routes, for bench_service only (never shipped in the service).

``POST /bench/echo`` reads a JSON body and answers a small JSON object: the least any JSON-over-POST
endpoint does. Next to ``GET /healthz`` it shows how much of a prediction's cost is HTTP POST handling
(gunicorn reading a body, Flask's request wrappers) rather than the prediction.

``POST /bench/bare-predict`` is the least a JSON prediction does: parse the body, run the model's own
forward pass (``Sequential.predict``) on ``inputs``, write the rows. No envelope or input checks, no
registry freshness checks, no metrics, no token. Next to ``POST /predict`` it shows what the service's
own code adds to the arithmetic and the JSON.
"""

import json
from pathlib import Path

import numpy as np
from flask import Response, current_app, request

import minigrad
from service import create_app


def create_bench_app():
    app = create_app()
    models = {}  # name -> Sequential, loaded once per worker

    @app.post("/bench/echo")
    def echo():
        body = json.loads(request.get_data())
        return Response(json.dumps({"keys": len(body)}), mimetype="application/json")

    @app.post("/bench/bare-predict")
    def bare_predict():
        body = json.loads(request.get_data())
        name = body["model"]
        model = models.get(name)
        if model is None:
            model = models[name] = minigrad.load(Path(current_app.config["MINIGRAD_MODEL_DIR"]) / f"{name}.json")
        outputs = model.predict(np.asarray(body["inputs"], dtype=model.layers[0].weight.data.dtype))
        return Response(f'{{"model": "{name}", "version": 1, "outputs": {outputs.tolist()!r}}}',
                        mimetype="application/json")

    return app
