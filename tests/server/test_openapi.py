"""The served app's OpenAPI document (default extensions: alerts, webhooks, dashboard).

Every /api/v1 operation needs the bearer scheme; every 4xx it lists has a `{"detail": ...}`
body schema, every 2xx JSON answer a schema; GET routes list only the errors a GET can get
(no 400 malformed JSON, no 413 oversized body); the analysis name is an enum. The error
model is checked against what the app really answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from servertest import ADMIN, AUTH

from sedmon_server.analyses import ANALYSES
from sedmon_server.api.schemas import ErrorOut
from sedmon_server.app import DEFAULT_EXTENSIONS, create_app
from sedmon_server.settings import Settings

PUBLIC = ("/healthz", "/readyz", "/metrics")
Op = tuple[str, str]  # (method, path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app `sedmon-server serve` runs (SQLite default, every default extension)."""
    home = tmp_path_factory.mktemp("openapi")
    app = create_app(Settings(home=home, admin_token=ADMIN, max_body_bytes=10_000))
    assert DEFAULT_EXTENSIONS
    yield app
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def doc(served: FastAPI) -> dict[str, Any]:
    r = TestClient(served).get("/openapi.json")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in ("get", "post", "put", "patch", "delete", "head"):
                yield method, path, op


def json_schema(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema")


def problems(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (method, path, what) the document gets wrong."""
    found = set()
    for method, path, op in operations(doc):
        for code, response in op["responses"].items():
            if code.startswith("4") and not json_schema(response):
                found.add((method, path, f"{code} without schema"))
            if method == "get" and code in ("400", "413"):
                found.add((method, path, f"GET lists {code}"))
            if (
                code.startswith("2")
                and "application/json" in response.get("content", {})
                and not json_schema(response)
            ):
                found.add((method, path, f"{code} JSON without schema"))
    return found


def test_the_alerts_and_webhooks_routes_are_in_the_document(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    assert "/api/v1/webhooks" in paths and "/api/v1/runs/{run_id}/alerts" in paths


def test_a_bearer_scheme_is_declared(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"


def test_every_api_route_requires_the_bearer_token_and_public_ones_do_not(
    doc: dict[str, Any],
) -> None:
    api = [(m, p, op) for m, p, op in operations(doc) if p.startswith("/api/v1")]
    assert len(api) >= 25
    for method, path, op in api:
        assert op.get("security") == [{"bearer": []}], (method, path)
        assert "401" in op["responses"] and "403" in op["responses"], (method, path)
    for method, path, op in operations(doc):
        if not path.startswith("/api/v1"):
            assert "security" not in op, (method, path)
    for path in PUBLIC:
        assert "security" not in doc["paths"][path]["get"]


def test_every_listed_4xx_and_2xx_json_has_a_schema_and_gets_list_no_body_errors(
    doc: dict[str, Any],
) -> None:
    assert problems(doc) == set()


def test_auth_and_not_found_errors_use_the_error_model(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        for code in ("401", "403", "404"):
            if code in op["responses"]:
                ref = json_schema(op["responses"][code])["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)
    assert "WWW-Authenticate" in doc["paths"]["/api/v1/runs"]["get"]["responses"]["401"]["headers"]
    detail = doc["components"]["schemas"]["ErrorOut"]["properties"]["detail"]
    kinds = {s.get("type") for s in detail["anyOf"]}
    assert kinds == {"string", "array"}


def test_the_analysis_name_is_an_enum_of_the_implemented_analyses(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/v1/runs/{run_id}/analysis/{name}"]["get"]
    (param,) = [p for p in op["parameters"] if p["name"] == "name"]
    ref = param["schema"]["$ref"].rsplit("/", 1)[1]
    assert doc["components"]["schemas"][ref]["enum"] == list(ANALYSES)
    assert {p["name"] for p in op["parameters"]} >= {"window", "metric", "method", "format"}
    assert "text/csv" in op["responses"]["200"]["content"]


def test_the_analysis_result_is_documented_per_analysis(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    result = schemas["AnalysisOut"]["properties"]["result"]
    refs = {s["$ref"].rsplit("/", 1)[1] for s in result["anyOf"]}
    assert refs == {
        "CouplingResult",
        "LagSweepResult",
        "PhasesResult",
        "ShiftsResult",
        "ReliabilityResult",
    }
    assert "correlation" in schemas["CouplingResult"]["required"]
    assert "change_points" in schemas["ShiftsResult"]["required"]


def test_the_error_model_matches_what_the_app_answers(served: FastAPI) -> None:
    model = TypeAdapter(ErrorOut)
    anonymous, admin = TestClient(served), TestClient(served, headers=AUTH)
    answers = [
        (401, anonymous.get("/api/v1/runs")),
        (404, admin.get("/api/v1/runs/123456789")),
        (422, admin.get("/api/v1/runs", params={"limit": "many"})),
        (422, admin.get("/api/v1/runs/1/analysis/granger")),
        (
            400,
            admin.post(
                "/api/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
            ),
        ),
        (413, admin.post("/api/v1/runs", json={"project": "p", "name": "x" * 20_000})),
    ]
    for code, r in answers:
        assert r.status_code == code, (code, r.text)
        model.validate_python(r.json())
    assert isinstance(answers[2][1].json()["detail"], list)
    assert answers[0][1].headers["www-authenticate"].startswith("Bearer")
