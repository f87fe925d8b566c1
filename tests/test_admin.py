"""The admin HTTP API: only RELAY_ADMIN_KEY passes, never a relay token; no listing shows a secret."""

import pytest

from conftest import auth, deposit
from relay import tokens


@pytest.fixture
def admin(app):
    return {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}


def test_create_list_get_update_rotate_revoke(client, admin, sandbox):
    created = client.post("/v1/admin/tokens", json={"label": "Zap: Stripe renewals", "operations": ["deposit", "balance"],
                                                    "max_amount": "20", "daily_cap": "2000", "user_pattern": "acme:.*",
                                                    "required_metadata": ["invoice_id"], "expires_in": "90d"},
                          headers=admin)
    assert created.status_code == 201
    body = created.get_json()
    token_id, secret_text = body["id"], body["token"]
    assert body["limits"]["required_metadata"] == ["invoice_id"] and body["expires_at"]

    listing = client.get("/v1/admin/tokens", headers=admin)
    assert [t["id"] for t in listing.get_json()["data"]] == [token_id]
    assert tokens.split(secret_text)[1] not in listing.get_data(as_text=True)
    assert "token" not in listing.get_json()["data"][0]

    shown = client.get(f"/v1/admin/tokens/{token_id}", headers=admin).get_json()
    assert shown["label"] == "Zap: Stripe renewals" and "token" not in shown

    updated = client.patch(f"/v1/admin/tokens/{token_id}", json={"max_amount": "25"}, headers=admin).get_json()
    assert updated["limits"]["max_amount"] == "25"

    rotated = client.post(f"/v1/admin/tokens/{token_id}/rotate", headers=admin).get_json()
    assert rotated["token"] != secret_text
    assert client.get("/v1/relay/me", headers=auth(secret_text)).status_code == 401
    assert client.get("/v1/relay/me", headers=auth(rotated["token"])).status_code == 200

    revoked = client.post(f"/v1/admin/tokens/{token_id}/revoke", headers=admin).get_json()
    assert revoked["status"] == "revoked"
    assert client.get("/v1/relay/me", headers=auth(rotated["token"])).status_code == 401


def test_bad_spec_is_422_naming_fields(client, admin):
    response = client.post("/v1/admin/tokens", json={"label": "x", "operations": ["refund"], "user_pattern": "(a+)+"},
                           headers=admin)
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {"operations", "user_pattern"}


def test_unknown_token_is_404(client, admin):
    assert client.get("/v1/admin/tokens/nope", headers=admin).status_code == 404


def test_relay_tokens_never_pass_the_admin_api(client, token):
    response = client.get("/v1/admin/tokens", headers=auth(token))
    assert response.status_code == 401
    assert response.get_json()["type"] == "urn:paywalls-relay:problem:unauthorized"
    assert client.post("/v1/admin/tokens", json={"label": "x"}, headers=auth(token)).status_code == 401
    assert client.get("/v1/admin/tokens").status_code == 401


def test_admin_key_is_not_a_relay_token(client, admin, sandbox):
    assert deposit(client, admin["Authorization"].split(" ", 1)[1]).status_code == 401


def test_admin_api_is_off_without_a_key(make_app):
    app = make_app(RELAY_ADMIN_KEY=None)
    response = app.test_client().get("/v1/admin/tokens", headers={"Authorization": "Bearer "})
    assert response.status_code == 404
    assert "RELAY_ADMIN_KEY" in response.get_json()["detail"]


def test_admin_show_has_usage_and_remaining_and_rotate_refuses_a_revoked_token(client, admin, sandbox):
    created = client.post("/v1/admin/tokens", json={"label": "capped", "daily_cap": "50"}, headers=admin).get_json()
    assert deposit(client, created["token"], {"user": "acme:u", "amount": "20"}).status_code == 200
    shown = client.get(f"/v1/admin/tokens/{created['id']}", headers=admin).get_json()
    assert shown["usage"] == {"today": "20", "this_month": "20"}
    assert shown["remaining"] == {"today": "30", "this_month": None}
    client.post(f"/v1/admin/tokens/{created['id']}/revoke", headers=admin)
    refused = client.post(f"/v1/admin/tokens/{created['id']}/rotate", headers=admin)
    assert refused.status_code == 409 and refused.get_json()["type"].endswith("token-not-rotatable")
    assert "token" not in refused.get_json()
