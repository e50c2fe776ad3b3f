"""The service's app plus one trivial POST route, for bench_service only (never shipped in the service).

``POST /bench/echo`` reads a JSON body and answers a small JSON object: the least any JSON-over-POST
endpoint does. Next to ``GET /healthz`` it shows how much of a prediction's cost is HTTP POST handling
(gunicorn reading a body, Flask's request wrappers) rather than the prediction.
"""

import json

from flask import Response, request

from service import create_app


def create_bench_app():
    app = create_app()

    @app.post("/bench/echo")
    def echo():
        body = json.loads(request.get_data())
        return Response(json.dumps({"keys": len(body)}), mimetype="application/json")

    return app
