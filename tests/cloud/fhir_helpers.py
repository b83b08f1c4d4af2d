"""FHIR test helpers shared by the hospital tests that need no more than these: every answer
validated by the `fhir.resources` library's model of its resourceType (R4B: the R4
technical correction), and a GET with a bearer token."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from flask.testing import FlaskClient

FHIR = "/fhir/r4"
MIME = "application/fhir+json"


def valid(body: dict[str, Any]) -> dict[str, Any]:
    """`body` validated by the library's model of its resourceType (a Bundle's entries too)."""
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    for entry in body.get("entry", []):
        valid(entry["resource"])
    return body


def fhir_get(client: FlaskClient, path: str, token: str | None, status: int) -> dict[str, Any]:
    """GET /fhir/r4/<path> with `token` (None: none): the validated answer of that status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get(path if path.startswith("http") else f"{FHIR}/{path}", headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == MIME
    return valid(response.get_json())


def fid(plaza_id: str) -> str:
    return plaza_id.replace("_", "-", 1)
