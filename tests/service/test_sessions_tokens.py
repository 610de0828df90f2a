"""Server-side web sessions (the cookie holds a session id, sign-out ends it, it expires), API tokens that expire
and can be listed and revoked through the API and ``condense token list|revoke``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.cli import main
from service.context import SESSION_ID_KEY
from tests.service.conftest import ApiFixture, service_env


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def _sign_in(api: ApiFixture, token: str):
    client = api.app.test_client()
    page = client.get("/sign-in").get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": _csrf(page), "token": token})
    assert response.status_code == 303
    return client


def _cookie(api: ApiFixture, client) -> str:
    return client.get_cookie("condense_session").value


def test_the_cookie_carries_a_session_id_not_the_token(api: ApiFixture) -> None:
    token = api.jobs.metadata.create_token("alice", "browser")
    client = _sign_in(api, token)
    raw = _cookie(api, client)
    data = api.app.session_interface.get_signing_serializer(api.app).loads(raw)
    assert token not in raw and token not in str(data)
    assert data[SESSION_ID_KEY].startswith("cds_")


def test_sign_out_ends_the_session_server_side(api: ApiFixture) -> None:
    client = _sign_in(api, api.jobs.metadata.create_token("alice"))
    stolen = _cookie(api, client)
    assert client.get("/jobs").status_code == 200
    page = client.get("/jobs").get_data(as_text=True)
    assert client.post("/sign-out", data={"csrf_token": _csrf(page)}).status_code == 303
    replay = api.app.test_client()
    replay.set_cookie("condense_session", stolen)
    assert replay.get("/jobs").status_code == 303  # the old cookie no longer signs anyone in
    assert replay.get("/api/v1/jobs").status_code == 401


def test_sessions_expire(api: ApiFixture) -> None:
    client = _sign_in(api, api.jobs.metadata.create_token("alice"))
    assert client.get("/api/v1/jobs").status_code == 200
    with api.jobs.metadata.engine.begin() as conn:
        conn.execute(sa.text("UPDATE web_sessions SET expires_at = 0"))
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/jobs").status_code == 303


def test_tokens_are_listed_and_revoked_through_the_api(api: ApiFixture) -> None:
    spare = api.jobs.metadata.create_token("alice", "spare", expires_in_s=3600)
    listed = api.client.get("/api/v1/tokens", headers=api.alice).get_json()["tokens"]
    assert [row["state"] for row in listed] == ["active", "active"]
    assert "spare" in [row["label"] for row in listed] and all("token" not in row for row in listed)
    spare_id = next(row["id"] for row in listed if row["label"] == "spare")
    assert listed[-1]["expires_at"] is not None
    # bob cannot revoke alice's token
    assert api.client.delete(f"/api/v1/tokens/{spare_id}", headers=api.bob).status_code == 404
    assert api.client.delete(f"/api/v1/tokens/{spare_id}", headers=api.alice).status_code == 204
    assert api.client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {spare}"}).status_code == 401
    states = {
        row["id"]: row["state"] for row in api.client.get("/api/v1/tokens", headers=api.alice).get_json()["tokens"]
    }
    assert states[spare_id] == "revoked"
    assert api.client.delete("/api/v1/tokens/１", headers=api.alice).status_code == 400


def test_token_cli_creates_lists_and_revokes(tmp_path: Path, monkeypatch, capsys) -> None:
    for name, value in service_env(tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    assert main(["user", "add", "carol"]) == 0
    capsys.readouterr()
    assert main(["token", "create", "carol", "--label", "ci", "--expires-days", "1"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("cdn_")
    assert main(["token", "list", "carol", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["label"], row["state"]) for row in rows] == [("ci", "active")] and rows[0]["expires_at"]
    assert main(["token", "revoke", str(rows[0]["id"]), "carol"]) == 0
    assert main(["token", "list", "carol"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", str(rows[0]["id"]), "carol"]) != 0
    assert "no active token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["token", "revoke"])
