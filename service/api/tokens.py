"""``/tokens``: the caller's own API tokens: list them (no secrets) and revoke one (``condense token list|revoke``)."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify

from service.api import api, api_jobs, api_user
from service.api.params import whole_number
from service.errors import ServiceError
from storage import ApiToken


def token_view(token: ApiToken, now: float) -> dict[str, Any]:
    """A token as the API shows it: id, label, times and state, never the secret."""
    state = "revoked" if token.revoked else "expired" if token.expired(now) else "active"
    return {
        "id": token.id,
        "label": token.label,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "state": state,
    }


@api.get("/tokens")
def list_tokens() -> Any:
    """The caller's tokens, oldest first, revoked and expired ones included (marked)."""
    now = time.time()
    tokens = api_jobs().metadata.list_tokens(api_user().name)
    return jsonify({"tokens": [token_view(token, now) for token in tokens]})


@api.delete("/tokens/<token_id>")
def revoke_token(token_id: str) -> Any:
    """Revoke one of the caller's tokens (the one in use included); browsers signed in with it are signed out."""
    number = whole_number(token_id, "token_id", default=0, minimum=1)
    user = api_user()
    if not api_jobs().metadata.revoke_token(number, user_name=user.name):
        raise ServiceError(404, f"no active token {number}")
    return Response(status=204)
