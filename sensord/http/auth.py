"""The bearer token that every mutation over HTTP needs: `[http] token_file`."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from aiohttp import web


def read_token(token_file: Path | None) -> str | None:
    return token_file.read_text(encoding="utf-8").strip() if token_file else None


def authorize(request: web.Request, token: str | None) -> None:
    """403 while no token is configured (mutations are off), 401 on a missing or wrong one."""
    if token is None:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "mutations are disabled: set [http] token_file"}),
            content_type="application/json",
        )
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "missing or wrong bearer token"}),
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
