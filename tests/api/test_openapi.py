"""The OpenAPI document describes every route the HTTP face serves, its examples are accepted, and the docs
page is rendered by the server itself."""

from __future__ import annotations

import re

from sidecar.api.http_app import build_app
from sidecar.api.openapi import DIALECT_DOCS
from tests.api.conftest import MAX_DOCUMENTS


def _served_routes(runtime) -> set[tuple[str, str]]:
    app = build_app(runtime).app.app  # Observed -> Guard -> Starlette
    return {(route.path, method) for route in app.routes for method in route.methods - {"HEAD"}}


async def test_the_document_covers_every_route_with_this_servers_limits(http, runtime):
    reply = await http.get("/openapi.json")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    doc = reply.json
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, methods in doc["paths"].items() for method in methods}
    assert documented == _served_routes(runtime)
    cohere = doc["paths"]["/v2/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert cohere["properties"]["documents"]["maxItems"] == MAX_DOCUMENTS
    responses = doc["paths"]["/v2/rerank"]["post"]["responses"]
    assert {"200", "400", "413", "415", "421", "422", "429", "503"} <= set(responses)


async def test_each_dialects_example_is_accepted_by_its_route(http):
    doc = (await http.get("/openapi.json")).json
    for path, methods in doc["paths"].items():
        body = methods.get("post", {}).get("requestBody")
        if body is None:
            continue
        reply = await http.post(path, body["content"]["application/json"]["example"])
        if path == "/v1/events":  # this server has no --events-db (tests/api/test_events.py covers the route)
            assert reply.status == 404 and "--events-db" in reply.json["error"]["message"], reply.raw
            continue
        assert reply.status == 200, (path, reply.raw)
    assert set(DIALECT_DOCS) >= {"cohere-jina-v1", "cohere-jina-v2", "tei"}


async def test_the_docs_page_needs_nothing_from_elsewhere(http):
    reply = await http.get("/docs")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    page = reply.raw.decode()
    assert "POST /v2/rerank" in page and "curl -s localhost:8080/rerank" in page
    assert not re.search(r"<script|(src|href)=['\"]https?://", page)
