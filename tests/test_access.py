"""Access matrix over every route: who gets in, who gets 401 or 404, and what changes.

Routes are read from the application itself, so a new route that forgets its
guard fails here: every /internal route takes only the internal key, every
/api/v1/projects/{id} route only the dashboard key or that project's own key.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import DASHBOARD_KEY, INTERNAL_KEY
from tests.factories import event

OPEN = {"/health", "/ready", "/metrics", "/api/v1/plans", "/api/v1/estimate"}


def routes(client: Any) -> list[tuple[str, str]]:
    found = []
    for route in client.app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods:
                if method != "OPTIONS" and not route.path.startswith("/schema"):
                    found.append((method, route.path))
    return sorted(found)


def concrete(path: str, project_id: str) -> str:
    return (path.replace("{project_id:uuid}", project_id)
                .replace("{key_id:uuid}", str(uuid.uuid4())))


def call(client: Any, method: str, path: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: Any = {"plan": "pro"} if path.endswith("/subscription") else \
        {"amount_cents": 100, "reason": "test"} if path.endswith("/credits") else \
        {"events": [event()]} if path.endswith("/batch") else event()
    return client.request(method, path, headers=headers,
                          json=body if method in ("POST", "PUT") else None)


@pytest.fixture
def keys(client: Any) -> dict[str, Any]:
    """Two projects that exist (each has sent an event and holds a key), one revoked key."""
    projects = [str(uuid.uuid4()), str(uuid.uuid4())]
    issued = {}
    for project in projects:
        assert client.post("/internal/events", json=event(project_id=project),
                           headers={"Authorization": f"Bearer {INTERNAL_KEY}"}).status_code == 201
        issued[project] = client.post(f"/internal/projects/{project}/api-keys",
                                      headers={"Authorization": f"Bearer {INTERNAL_KEY}"}).json()
    revoked = client.post(f"/internal/projects/{projects[0]}/api-keys",
                          headers={"Authorization": f"Bearer {INTERNAL_KEY}"}).json()
    assert client.delete(f"/internal/projects/{projects[0]}/api-keys/{revoked['id']}",
                         headers={"Authorization": f"Bearer {INTERNAL_KEY}"}).status_code == 204
    return {"a": projects[0], "b": projects[1], "key_a": issued[projects[0]]["key"],
            "key_b": issued[projects[1]]["key"], "revoked": revoked["key"]}


def test_every_route_is_classified(client):
    for _, path in routes(client):
        assert (path in OPEN or path.startswith("/internal/")
                or path.startswith("/api/v1/projects/{project_id:uuid}/")
                or path == "/webhooks/stripe"), f"unclassified route {path}: add it to this matrix"


def test_internal_routes_take_only_the_internal_key(client, keys):
    for method, path in routes(client):
        if not path.startswith("/internal/"):
            continue
        url = concrete(path, keys["a"])
        for token in (None, "wrong", DASHBOARD_KEY, keys["key_a"], keys["revoked"]):
            response = call(client, method, url, token)
            assert response.status_code == 401, (method, path, token, response.status_code)
        assert call(client, method, url, INTERNAL_KEY).status_code not in (401, 403), (method, path)


def test_project_routes_take_the_dashboard_key_or_that_projects_key(client, keys):
    for method, path in routes(client):
        if not path.startswith("/api/v1/projects/"):
            continue
        url_a, url_b = concrete(path, keys["a"]), concrete(path, keys["b"])
        for token in (None, "wrong", INTERNAL_KEY, keys["revoked"]):
            assert call(client, method, url_a, token).status_code == 401, (path, token)
        assert call(client, method, url_a, keys["key_a"]).status_code == 200, path
        assert call(client, method, url_a, DASHBOARD_KEY).status_code == 200, path
        # Another project's key and a project that does not exist look the same.
        assert call(client, method, url_b, keys["key_a"]).status_code == 404, path
        missing = concrete(path, str(uuid.uuid4()))
        assert call(client, method, missing, DASHBOARD_KEY).status_code == 404, path


def test_open_routes_need_no_key(client):
    assert client.get("/health").status_code == 200
    assert client.get("/api/v1/plans").status_code == 200
    assert client.get("/schema/openapi.json").status_code == 200


def test_keys_are_stored_hashed(client, keys, db):
    stored = db.execute("SELECT key_hash FROM waybill.project_api_keys").fetchall()
    assert stored and all(keys["key_a"].encode() not in bytes(h) for (h,) in stored)
    dump = db.execute("SELECT string_agg(t::text, '') FROM waybill.project_api_keys t").fetchone()[0]
    assert keys["key_a"] not in dump and keys["key_b"] not in dump


def test_webhook_without_a_valid_signature_changes_nothing(client, db):
    before = db.execute("SELECT count(*) FROM waybill.stripe_webhook_events").fetchone()[0]
    for headers in ({}, {"Stripe-Signature": "t=1,v1=deadbeef"}):
        response = client.post("/webhooks/stripe", content=b'{"id": "evt_1", "type": "invoice.paid"}',
                               headers={"content-type": "application/json", **headers})
        assert response.status_code in (400, 503)
    assert db.execute("SELECT count(*) FROM waybill.stripe_webhook_events").fetchone()[0] == before
