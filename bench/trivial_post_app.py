"""The service's app plus two bench-only POST routes, for bench_service only (never shipped in the service).

``POST /bench/echo`` reads a JSON body and answers a small JSON object: the least any JSON-over-POST
endpoint does. Next to ``GET /healthz`` it shows how much of a prediction's cost is HTTP POST handling
(gunicorn reading a body, Flask's request wrappers) rather than the prediction.

``POST /bench/bare-predict`` is the least a JSON prediction does: parse the body, run the model's own
forward pass (``Sequential.predict``) on ``inputs``, write the rows. No envelope or input checks, no
registry freshness checks, no metrics, no token. Next to ``POST /predict`` it shows what the service's
own code adds to the arithmetic and the JSON.

``POST /bench/inline-xor`` is less still: the body read straight from the WSGI stream, and the XOR model's
nine numpy operations (two products, two bias additions, a tanh, a sigmoid's four steps) written out in
the view, with no loop over layers. The floor of a JSON prediction of that model in Flask + gunicorn.
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

    xor = minigrad.load(Path(app.config["MINIGRAD_MODEL_DIR"]) / "xor.json")
    (w1, b1), (w2, b2) = ((layer.weight.data, layer.bias.data) for layer in xor.layers[::2])

    @app.post("/bench/inline-xor")
    def inline_xor():
        environ = request.environ
        body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        hidden = np.asarray(body["inputs"], dtype=np.float64).dot(w1)
        hidden += b1
        np.tanh(hidden, out=hidden)
        outputs = hidden.dot(w2)
        outputs += b2
        outputs *= 0.5  # the sigmoid as minigrad computes it: 0.5 * (1 + tanh(x / 2))
        np.tanh(outputs, out=outputs)
        outputs += 1.0
        outputs *= 0.5
        return Response(f'{{"model": "xor", "version": 1, "outputs": {outputs.tolist()!r}}}',
                        mimetype="application/json")

    return app
