"""Who may call what: the internal key, the dashboard key, project API keys.

Keys are compared in constant time; project keys are looked up by their SHA-256,
so the stored hash never meets a timing-sensitive comparison. With no internal
key configured, internal endpoints refuse every call (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.config import Settings
from app.errors import NotFound, Unauthorized, Unavailable


def presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The bearer token, or the X-API-Key header when there is no bearer token."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return connection.headers.get("x-api-key") or None


def same_secret(presented: str | None, expected: str | None) -> bool:
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


async def require_internal_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for /internal routes (async: a sync guard would cost a thread hop per request)."""
    settings: Settings = connection.app.state.settings
    if not settings.internal_api_key:
        raise Unavailable("internal endpoints are disabled: INTERNAL_API_KEY is not set")
    if not same_secret(presented_token(connection), settings.internal_api_key):
        raise Unauthorized("a valid internal API key is required")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_project_key() -> str:
    return "wb_" + secrets.token_urlsafe(32)


async def require_project_reader(connection: ASGIConnection[Any, Any, Any, Any],
                                 _: BaseRouteHandler) -> None:
    """Guard for /api/v1/projects/{project_id}: the dashboard key, or that project's key.

    A key for another project, and an unknown project, both answer 404: a caller
    cannot learn which projects exist.
    """
    settings: Settings = connection.app.state.settings
    token = presented_token(connection)
    if token is None:
        raise Unauthorized("a bearer token is required")
    project_id = connection.path_params["project_id"]
    pool = connection.app.state.pool
    if same_secret(token, settings.dashboard_api_key):
        async with pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT waybill.project_exists(%s)", (project_id,))).fetchone()
        if not row or not row[0]:
            raise NotFound("no such project")
        return
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT project_id FROM waybill.project_api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL", (hash_key(token),))).fetchone()
    if row is None:
        raise Unauthorized("the token is not valid")
    if row[0] != project_id:
        raise NotFound("no such project")
