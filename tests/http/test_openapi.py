"""The OpenAPI document is made from the route table: every route documented, nothing
documented that is not a route, valid JSON Schema, served at /openapi.json, and docs/openapi.json
is the document of the default settings (``COROLLA_WRITE_OPENAPI=1`` rewrites it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from corolla.http.openapi import OPERATIONS, PATH, document
from corolla.http.routes import Route, RouteTable
from corolla.options import ServerOptions
from corolla.server import CorollaServer

DOCS_COPY = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture
def servers() -> Iterator[list[CorollaServer]]:
    made: list[CorollaServer] = []
    yield made
    for s in made:
        for pool in (s.decode_pool, s.infer_pool, s.load_pool):
            pool.shutdown(wait=False)


def _server(servers: list[CorollaServer], **kw: Any) -> CorollaServer:
    s = CorollaServer(ServerOptions(**kw))
    servers.append(s)
    return s


def _table(s: CorollaServer) -> RouteTable:
    return RouteTable(s.rest_routes())


def test_every_route_is_documented_and_nothing_else(servers: list[CorollaServer]) -> None:
    paths = ("/metrics", "/monitoring/prometheus/metrics")
    s = _server(servers, web_ui=True, metrics_paths=paths)
    table = _table(s)
    doc = document(table, paths)
    routes = {r.path: r for r in table.routes if not r.prefix}
    assert set(doc["paths"]) == set(routes)
    for path, item in doc["paths"].items():
        methods = {m for m in item if m != "parameters"}
        assert methods, path
        assert {m.upper() for m in methods} <= routes[path].methods, path
        for name in ("name", "version", "label"):
            declared = [p for p in item.get("parameters", ()) if p["name"] == name]
            assert bool(declared) == (f"{{{name}}}" in path), (path, name)
    # Every API the table serves has its operations, and no API is documented for nothing.
    apis = {r.api for r in table.routes if r.api is not None}
    assert apis == set(OPERATIONS)


def test_an_undocumented_route_is_refused() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError

    table = RouteTable([Route(api="NewApi", path="/v2/new/{name}", methods=frozenset({"GET"}),
                              handler=handler)])
    with pytest.raises(ValueError, match="not documented"):
        document(table)


def test_schemas_are_valid_json_schema(servers: list[CorollaServer]) -> None:
    doc = document(_table(_server(servers)), ("/metrics",))
    assert doc["openapi"].startswith("3.1")
    # Component schemas resolve against the document (their $refs point inside it).
    resolver_doc = {**doc, "$id": "urn:corolla-openapi"}
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"urn:corolla-openapi#/components/schemas/{name}"},
            registry=_registry(resolver_doc))
        list(validator.iter_errors({}))  # every $ref resolves


def _registry(doc: dict[str, Any]) -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(
        "urn:corolla-openapi", Resource.from_contents(doc, default_specification=DRAFT202012))


def test_docs_copy_is_the_default_server_s_document(servers: list[CorollaServer]) -> None:
    options = ServerOptions()
    doc = document(_table(_server(servers)), options.metrics_paths)
    text = json.dumps(doc, indent=2) + "\n"
    if os.environ.get("COROLLA_WRITE_OPENAPI") == "1":
        DOCS_COPY.write_text(text)
    assert DOCS_COPY.exists(), "run with COROLLA_WRITE_OPENAPI=1 to write docs/openapi.json"
    assert json.loads(DOCS_COPY.read_text()) == json.loads(text), (
        "docs/openapi.json is stale: rerun this test with COROLLA_WRITE_OPENAPI=1")


async def test_served_at_openapi_json(servers: list[CorollaServer]) -> None:
    s = _server(servers, grpc_port=-1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=s.rest_app()),
                                 base_url="http://corolla") as c:
        r = await c.get(PATH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == json.loads(json.dumps(document(_table(s), s.options.metrics_paths)))
