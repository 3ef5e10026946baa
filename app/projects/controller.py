"""POST/DELETE /internal/projects/{project_id}/api-keys (CONTRACT.md section 7)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Router, delete, post
from litestar.params import FromPath

from app.auth import hash_key, new_project_key, require_internal_key
from app.errors import NotFound


@post("/{project_id:uuid}/api-keys", status_code=201)
async def issue_api_key(request: Request[Any, Any, Any], project_id: FromPath[uuid.UUID]) -> dict[str, str]:
    """Issue a key that reads this project only. The key is in this answer and nowhere else."""
    key, key_id = new_project_key(), uuid.uuid4()
    async with request.app.state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO waybill.project_api_keys (key_id, project_id, key_hash)"
            " VALUES (%s, %s, %s)", (key_id, project_id, hash_key(key)))
    return {"id": str(key_id), "key": key}


@delete("/{project_id:uuid}/api-keys/{key_id:uuid}", status_code=204)
async def revoke_api_key(request: Request[Any, Any, Any], project_id: FromPath[uuid.UUID],
                         key_id: FromPath[uuid.UUID]) -> None:
    """Revoke a key at once. Revoking twice is fine; an unknown key is a 404."""
    async with request.app.state.pool.connection() as conn:
        cursor = await conn.execute(
            "UPDATE waybill.project_api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE project_id = %s AND key_id = %s", (project_id, key_id))
        if cursor.rowcount == 0:
            raise NotFound("no such API key for this project")


router = Router(path="/internal/projects", route_handlers=[issue_api_key, revoke_api_key],
                guards=[require_internal_key], tags=["admin"])
