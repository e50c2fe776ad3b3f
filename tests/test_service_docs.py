"""The OpenAPI document (generated from the schemas) and the /docs page, which needs no network."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_every_endpoint_is_documented(spec):
    assert spec["openapi"].startswith("3.")
    methods = {path: set(item) - {"parameters"} for path, item in spec["paths"].items()}
    assert methods["/predict"] == {"post"}
    assert methods["/models"] == {"get"}
    assert methods["/models/{name}"] == {"get", "put", "delete"}
    assert methods["/models/{name}/versions/{version}"] == {"get"}
    assert {"/healthz", "/readyz"} <= set(methods)


def _resolve(spec, node):
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_bodies_come_from_the_schemas(spec):
    predict = spec["paths"]["/predict"]["post"]
    request = _resolve(spec, predict["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == {"model", "inputs", "version"}
    assert set(request["required"]) == {"model", "inputs"}
    assert request["properties"]["model"]["pattern"].startswith("^[A-Za-z0-9]")
    response = _resolve(spec, predict["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(response["properties"]) == {"model", "version", "outputs"}
    put = spec["paths"]["/models/{name}"]["put"]
    document = _resolve(spec, put["requestBody"]["content"]["application/json"]["schema"])
    assert {"format", "version", "dtype", "layers"} <= set(document["properties"])  # minigrad's own schema


def test_errors_are_documented_as_problems(spec):
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors"} <= set(problem["properties"])
    default = spec["components"]["responses"]["DEFAULT_ERROR"]
    assert "application/problem+json" in default["content"]


def test_writes_are_marked_as_needing_the_token(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for method in ("put", "delete"):
        assert spec["paths"]["/models/{name}"][method]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/models/{name}"]["get"]
    assert spec["paths"]["/predict"]["post"]["security"] == [{}, {"bearerAuth": []}]  # optional by default


def test_error_statuses_are_listed_per_operation(spec):
    assert {"400", "401", "404", "413", "415", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    assert {"400", "401", "413", "415", "422"} <= set(spec["paths"]["/models/{name}"]["put"]["responses"])
    # POST /train answered a malformed, oversized or non-JSON body, an unknown model to fine-tune and a queue
    # that cannot be reached with statuses its operation did not list, as /jobs' operations did the 503.
    assert {"400", "404", "409", "413", "415", "422", "429", "503"} <= set(spec["paths"]["/train"]["post"]["responses"])
    for path, method in [("/jobs", "get"), ("/jobs/{job_id}", "get"), ("/jobs/{job_id}", "delete"),
                         ("/jobs/{job_id}/model", "get")]:
        assert "503" in spec["paths"][path][method]["responses"], f"{method.upper()} {path}"
    unauthorized = spec["components"]["responses"]["UNAUTHORIZED"]
    assert unauthorized["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_docs_page_loads_everything_from_the_service_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if "//" in a]  # no CDN, no absolute URL
    assert "/openapi.json" in html
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.data) > 1000
    assert "SwaggerUIBundle" in client.get("/docs/static/swagger-ui-bundle.js").get_data(as_text=True)


def test_assets_cannot_reach_outside_their_folder(client):
    assert client.get("/docs/static/../../../etc/passwd").status_code == 404
    assert client.get("/docs/static/%2e%2e/%2e%2e/service/__init__.py").status_code == 404


def _response(spec, node):
    while "$ref" in node:
        node = spec["components"]["responses"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_error_status_documents_the_body_it_is_answered_with(spec):
    # /jobs' 404s and 409s, POST /train's 429 and /readyz's 503 were documented without a body, and /v2 infer's 401
    # as a problem document: answered as {"error": ...}, as every error under /v2 is.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status != "default" and int(status) < 400:
                    continue
                content = _response(spec, response).get("content", {})
                expected = "application/json" if path.startswith("/v2") else "application/problem+json"
                assert list(content) == [expected], f"{method.upper()} {path} {status}"
                if not path.startswith("/v2"):
                    assert content[expected]["schema"] == {"$ref": "#/components/schemas/Problem"}
    protected = spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["401"]
    assert protected["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/V2Error"}


def test_v2_infer_documents_its_binary_answer(spec):
    # Outputs asked for as binary come back as application/octet-stream, which the document did not list.
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "application/octet-stream"}
        assert content["application/octet-stream"]["schema"]["format"] == "binary"
