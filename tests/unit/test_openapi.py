"""workers/openapi.json: a valid OpenAPI 3.0 document that lists exactly the served routes.

An undocumented route, or a documented one the server does not have, fails here: the
document is the contract HAProxy/patronictl users and the fuzz tests rely on.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.shm import SharedState
from pgwarden.workers.api_access import SAFE_METHODS
from pgwarden.workers.api_server import ApiApp

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "workers" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def make_config() -> Config:
    return Config(
        scope="demo", namespace="service", name="n1",
        restapi=RestApiConfig(HostPort("127.0.0.1", 8008), HostPort("127.0.0.1", 8008)),
        etcd3_hosts=(HostPort("127.0.0.1", 2379),),
        bootstrap_dcs=DynamicConfig(),
        postgresql=PostgresConfig(
            data_dir="/var/lib/postgresql/data", bin_dir="/usr/lib/postgresql/16/bin",
            listen=HostPort("0.0.0.0", 5432), listen_addresses="0.0.0.0",
            connect_address=HostPort("10.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator"),
        ),
        watchdog=WatchdogConfig(), tags={}, vip=None,
    )


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


@pytest.fixture
def app() -> Iterator[ApiApp]:
    shm = SharedState.create(None)
    try:
        yield ApiApp(make_config(), shm)
    finally:
        shm.close()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local `$ref` (`#/components/...`)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def test_document_is_valid_openapi_3_0(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.0.")
    validate(doc)  # raises with the offending path when the structure is wrong


def test_documented_routes_are_exactly_the_served_routes(doc: dict[str, Any], app: ApiApp) -> None:
    documented = {(method, path) for method, path, _ in operations(doc)}
    served = set(app.routes)
    assert sorted(served - documented) == [], "served but not documented in workers/openapi.json"
    assert sorted(documented - served) == [], "documented in workers/openapi.json but not served"


def test_every_operation_lists_its_codes_and_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    for method, path, op in operations(doc):
        codes = set(op["responses"])
        assert codes and all(c.isdigit() and len(c) == 3 for c in codes), (method, path)
        assert "500" not in codes, f"{method} {path}: a 500 is a bug, not part of the contract"


def test_unsafe_operations_document_auth_and_body_errors(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        if method in SAFE_METHODS:
            assert "security" not in op, (method, path)
            continue
        assert {"401", "403"} <= set(op["responses"]), (method, path)
        assert {"basicAuth": []} in op["security"], (method, path)
        if "requestBody" in op:
            assert {"400", "411", "413"} <= set(op["responses"]), (method, path)
        challenge = resolve(doc, op["responses"]["401"])
        assert "WWW-Authenticate" in challenge["headers"]


def test_health_paths_answer_head_and_options(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        if "health" in item.get("get", {}).get("tags", []):
            assert {"get", "head", "options"} <= set(item), path
            assert {"200", "503"} <= set(item["head"]["responses"]), path


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = set(walk(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        assert resolve(doc, {"$ref": ref}) is not None


def test_served_document_is_the_shipped_file(app: ApiApp) -> None:
    response = app.handle("GET", "/openapi.json")
    assert response.code == 200
    assert dict(response.headers)["Content-Type"] == "application/json"
    assert response.body == DOC_PATH.read_bytes()


def test_the_document_is_package_data() -> None:
    """A non-editable install must ship it, or GET /openapi.json would 500 in production."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["package-dir"]["pgwarden.workers"] == "workers"
    assert "openapi.json" in setuptools["package-data"]["pgwarden.workers"]
