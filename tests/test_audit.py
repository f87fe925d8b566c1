"""The admin audit log (issue 17): token changes from the console, the CLI and the admin API, with no secret."""

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from relay import audit, cli, db
from relay.models import AuditEntry


def admin(app):
    return {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}


def entries(app) -> list[AuditEntry]:
    with app.app_context(), db.read() as read:
        return list(read.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def no_secret_in(rows, *secrets):
    text = json.dumps([{"origin": r.origin, "changes": r.changes, "action": r.action, "via": r.via} for r in rows])
    for secret in secrets:
        assert secret not in text


def test_admin_api_actions_are_audited_without_secrets(app, client):
    created = client.post("/v1/admin/tokens", json={"label": "Zap A", "daily_cap": "50"}, headers=admin(app)).get_json()
    token_id = created["id"]
    assert client.patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "75", "label": "Zap A"},
                        headers=admin(app)).status_code == 200
    assert client.patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "75"}, headers=admin(app)).status_code == 200
    assert client.patch(f"/v1/admin/tokens/{token_id}", json={"disabled": True}, headers=admin(app)).status_code == 200
    rotated = client.post(f"/v1/admin/tokens/{token_id}/rotate", headers=admin(app)).get_json()
    assert client.post(f"/v1/admin/tokens/{token_id}/revoke", headers=admin(app)).status_code == 200
    assert client.post(f"/v1/admin/tokens/{token_id}/revoke", headers=admin(app)).status_code == 200
    rows = entries(app)
    assert [(r.action, r.via, r.token_id) for r in rows] == [
        ("token.created", "admin_api", token_id), ("token.updated", "admin_api", token_id),
        ("token.disabled", "admin_api", token_id), ("token.rotated", "admin_api", token_id),
        ("token.revoked", "admin_api", token_id)]  # an unchanged PATCH and a second revoke change nothing
    assert rows[0].changes["daily_cap"] == "50" and rows[0].changes["label"] == "Zap A"
    assert rows[1].changes == {"daily_cap": {"from": "50", "to": "75"}}
    assert rows[2].changes == {"disabled": {"from": False, "to": True}}
    assert all(r.origin == "127.0.0.1" for r in rows)
    no_secret_in(rows, created["token"], rotated["token"], app.config["RELAY"]["RELAY_ADMIN_KEY"])


def test_a_refused_change_leaves_no_entry(app, client):
    token_id = client.post("/v1/admin/tokens", json={"label": "Zap B"}, headers=admin(app)).get_json()["id"]
    assert client.patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "-1"}, headers=admin(app)).status_code == 422
    assert client.post("/v1/admin/tokens", json={"label": ""}, headers=admin(app)).status_code == 422
    assert [r.action for r in entries(app)] == ["token.created"]


def test_cli_actions_are_audited_with_user_and_host(operator_env):
    def run(*args):
        result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    created = json.loads(run("tokens", "create", "--label", "CLI token", "--monthly-cap", "900", "--json"))
    run("tokens", "update", created["id"], "--monthly-cap", "none", "--json")
    run("tokens", "update", created["id"], "--disable", "--json")
    run("tokens", "update", created["id"], "--enable", "--json")
    rotated = json.loads(run("tokens", "rotate", created["id"], "--json"))
    run("tokens", "revoke", created["id"], "--json")
    run("tokens", "show", created["id"], "--json")
    engine = create_engine(operator_env)
    with Session(engine) as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    engine.dispose()
    assert [(r.action, r.via) for r in rows] == [
        ("token.created", "cli"), ("token.updated", "cli"), ("token.disabled", "cli"), ("token.enabled", "cli"),
        ("token.rotated", "cli"), ("token.revoked", "cli")]
    assert rows[1].changes == {"monthly_cap": {"from": "900", "to": None}}
    assert all("@" in r.origin for r in rows)
    no_secret_in(rows, created["token"], rotated["token"])


def test_changes_keep_only_setting_names():
    """Whatever a caller passes, only token setting names get in: a secret has no setting name."""
    cleaned = audit.clean({"label": "x", "token": "pwr_secret", "secret_hash": "abc", "admin_key": "k",
                           "daily_cap": {"from": None, "to": "5"}})
    assert cleaned == {"label": "x", "daily_cap": {"from": None, "to": "5"}}
    assert audit.clean({"token": "pwr_x"}) is None


def test_a_resolve_entry_keeps_only_its_counts():
    """`ledger.resolved` keeps how many keys ended in each outcome: numbers, never a key, a body or a secret."""
    cleaned = audit.clean({"applied": 2, "ambiguous": 1, "declined": 0, "skipped": 3, "rejected": "pwr_secret",
                           "not_applied": True, "label": "x", "key": "pwk1_abc"}, "ledger.resolved")
    assert cleaned == {"applied": 2, "ambiguous": 1}
    assert audit.clean({"skipped": 4, "applied": 0}, "ledger.resolved") is None
    assert audit.resolved({"applied": 0, "skipped": 5, "unresolvable": 0}) is False
    assert audit.resolved({"unresolvable": 1}) is True


def test_cli_ledger_resolve_is_audited_when_it_sends_something(operator_env, sandbox):
    from conftest import deposit
    from relay.app import create_app

    def run(*args):
        result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    token = json.loads(run("tokens", "create", "--label", "resolve", "--json"))["token"]
    app = create_app({"RELAY_UPSTREAM_RETRIES": 0})
    sandbox.state.faults.append({"kind": "drop_after_credit", "count": 1, "endpoint": "deposit"})
    assert deposit(app.test_client(), token, user="acme:stranded", amount="7").status_code == 502
    app.extensions["relay.engine"].dispose()
    assert json.loads(run("ledger", "resolve", "--json"))["applied"] == 1
    assert json.loads(run("ledger", "resolve", "--json"))["applied"] == 0  # nothing left: no entry
    engine = create_engine(operator_env)
    with Session(engine) as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "ledger.resolved")))
    engine.dispose()
    assert [(r.via, r.changes) for r in rows] == [("cli", {"applied": 1})]
    assert "@" in rows[0].origin
    assert [d["user"] for d in sandbox.state.snapshot()["deposits"]] == ["acme:stranded"]


@pytest.mark.parametrize("via, action", [("shell", "token.created"), ("cli", "token.deleted")])
def test_unknown_via_or_action_is_a_bug(app, via, action):
    with app.app_context(), db.transaction() as write, pytest.raises(ValueError):
        audit.record(write, via, None, action)


def test_concurrent_changes_are_audited_as_a_chain(app):
    """Eight admins change one token's cap at the same moment: each entry's "from" is the "to" of the entry before,
    so the log replays to the token's final value (the row is locked before it is read)."""
    import threading
    client = app.test_client()
    token_id = client.post("/v1/admin/tokens", json={"label": "Contended", "daily_cap": "1"}, headers=admin(app)).get_json()["id"]
    start = threading.Barrier(8)
    answers = []

    def change(n):
        own = app.test_client()
        start.wait()
        answers.append(own.patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": str(100 + n)},
                                 headers=admin(app)).status_code)
    threads = [threading.Thread(target=change, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [200] * 8
    chain = [row.changes["daily_cap"] for row in entries(app) if row.action == "token.updated"]
    assert len(chain) == 8
    value = "1"
    for step in chain:
        assert step["from"] == value
        value = step["to"]
    final = client.get(f"/v1/admin/tokens/{token_id}", headers=admin(app)).get_json()["limits"]["daily_cap"]
    assert value == final
