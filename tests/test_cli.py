"""The `paywalls-relay` command: tokens, ledger export, purge, db upgrade, and refusing a bad config."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import deposit, sqlite_url
from relay import cli, migrate


@pytest.fixture
def env(operator_env):
    return operator_env


def run(*args, ok=True):
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_tokens_lifecycle(env):
    created = json.loads(run("tokens", "create", "--label", "Zap: Stripe renewals", "--ops", "deposit,balance",
                             "--max-amount", "25", "--daily-cap", "500", "--monthly-cap", "5000",
                             "--user-pattern", "acme:.*", "--require-metadata", "invoice_id",
                             "--require-metadata", "reason", "--expires-in", "90d", "--rate-limit", "60/minute",
                             "--dedupe-on", "user,metadata.invoice_id", "--json").output)
    assert created["token"].startswith("pwr_") and created["id"] in created["token"]
    assert created["limits"] == {"max_amount": "25", "daily_cap": "500", "monthly_cap": "5000",
                                 "user_pattern": "acme:.*", "required_metadata": ["invoice_id", "reason"],
                                 "rate_limit": "60/minute", "dedupe_on": ["user", "metadata.invoice_id"]}
    listed = run("tokens", "list", "--json").output
    assert created["id"] in listed and created["token"] not in listed
    assert "Zap: Stripe renewals" in run("tokens", "list").output
    shown = run("tokens", "show", created["id"]).output
    assert "Daily cap:         500 (used 0 today, 500 left)" in shown and created["token"] not in shown
    updated = json.loads(run("tokens", "update", created["id"], "--max-amount", "30", "--json").output)
    assert updated["limits"]["max_amount"] == "30"
    rotated = run("tokens", "rotate", created["id"], "--json").output
    assert json.loads(rotated)["token"] != created["token"]
    assert "revoked" in run("tokens", "revoke", created["id"]).output
    assert json.loads(run("tokens", "show", created["id"], "--json").output)["status"] == "revoked"


def test_bad_options_exit_non_zero_with_the_reason(env):
    result = run("tokens", "create", "--label", "x", "--user-pattern", "(a+)+", ok=False)
    assert result.exit_code == 2 and "slow to match" in result.output
    result = run("tokens", "create", "--label", "x", "--expires-in", "soon", ok=False)
    assert result.exit_code == 2 and "30s" in result.output
    assert run("tokens", "revoke", "missing", ok=False).exit_code == 1


def test_ledger_export_csv_and_jsonl(env, sandbox):
    from relay.app import create_app
    app = create_app()
    token = json.loads(run("tokens", "create", "--label", "finance test", "--json").output)["token"]
    client = app.test_client()
    deposit(client, token, {"user": "acme:u1", "amount": "20", "metadata": {"invoice_id": "in_1"}})
    deposit(client, token, {"user": "acme:u1", "amount": "20", "metadata": {"invoice_id": "in_1"}})  # replay
    deposit(client, token, {"user": "acme:u2", "amount": "5.5", "metadata": {"invoice_id": "in_2"}})
    rows = list(csv.DictReader(io.StringIO(run("ledger", "export", "--since", "2020-01-01").output)))
    assert [(r["user"], r["amount"], r["outcome"]) for r in rows] == [
        ("acme:u1", "20", "credited"), ("acme:u1", "20", "replayed"), ("acme:u2", "5.5", "credited")]
    assert json.loads(rows[0]["metadata"]) == {"invoice_id": "in_1"}
    assert rows[0]["idempotency_key"] == rows[1]["idempotency_key"]
    lines = run("ledger", "export", "--since", "2020-01-01", "--format", "jsonl", "--outcome", "credited").output
    entries = [json.loads(line) for line in lines.splitlines()]
    assert [e["metadata"]["invoice_id"] for e in entries] == ["in_1", "in_2"]
    assert run("ledger", "export", "--since", "2999-01-01").output.count("\n") == 1  # header only


def test_idempotency_purge(env):
    assert "Removed 0 idempotency keys older than 30 days" in run("idempotency", "purge").output


def test_db_upgrade_creates_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "fresh"))
    os.makedirs(tmp_path / "fresh")
    monkeypatch.delenv("PAYWALLS_API_KEY", raising=False)
    assert "up to date" in run("db", "upgrade").output
    assert "[]" in run("tokens", "list", "--json").output


def test_production_without_a_key_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYWALLS_", "RELAY_"))}
    env.update(RELAY_ENV="production", DATABASE_URL=sqlite_url(tmp_path))
    result = subprocess.run([sys.executable, "-m", "relay.cli", "db", "upgrade"], env=env, capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "RELAY_ENV=production needs PAYWALLS_API_KEY" in result.stderr


def test_the_default_database_is_instance_relay_db_in_the_working_directory(tmp_path, monkeypatch):
    from relay.app import create_app
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PAYWALLS_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert "up to date" in run("db", "upgrade").output
    assert (tmp_path / "instance" / "relay.db").is_file()
    app = create_app({"REDIS_URL": None})  # would refuse an unmigrated file: it is the same one
    assert app.extensions["relay.engine"].url.database == str(tmp_path / "instance" / "relay.db")


def test_commands_refuse_an_unmigrated_database_and_say_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path))
    monkeypatch.delenv("PAYWALLS_API_KEY", raising=False)
    result = run("tokens", "list", ok=False)
    assert result.exit_code == 1 and "run `paywalls-relay db upgrade`" in result.output


def test_tokens_list_is_an_aligned_table(env):
    run("tokens", "create", "--label", "a")
    run("tokens", "create", "--label", "a much longer label", "--ops", "deposit,charge,balance,ledger")
    lines = run("tokens", "list").output.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OPERATIONS", "LAST", "USED", "LABEL"]
    starts = {line.index(word) for line, word in zip(lines[1:], ["active", "active"])}
    assert len(starts) == 1 and lines[0].index("STATUS") in starts  # every row's column starts where its title does
    assert lines[0].index("LABEL") == lines[1].rindex(" a") + 1 == lines[2].index("a much")


def test_tokens_show_speaks_plain_words(env):
    token_id = json.loads(run("tokens", "create", "--label", "Helpdesk", "--ops", "deposit,balance", "--max-amount", "20",
                              "--daily-cap", "200", "--json").output)["id"]
    shown = run("tokens", "show", token_id).output
    for line in ("May:               deposit, balance", "Per call:          at most 20",
                 "Daily cap:         200 (used 0 today, 200 left)", "Monthly cap:       none", "Users:             any user",
                 "Required metadata: none", "Expires:           never", "Last used:         never"):
        assert line in shown
    assert "None" not in shown and "[" not in shown


def test_none_clears_a_cap_and_metadata_keys_are_added_or_removed(env):
    token_id = json.loads(run("tokens", "create", "--label", "x", "--daily-cap", "5", "--require-metadata", "reason",
                              "--json").output)["id"]
    cleared = json.loads(run("tokens", "update", token_id, "--daily-cap", "none", "--rate-limit", "NONE", "--json").output)
    assert cleared["limits"]["daily_cap"] is None and cleared["limits"]["rate_limit"] is None
    added = json.loads(run("tokens", "update", token_id, "--add-required-metadata", "reference", "--json").output)
    assert added["limits"]["required_metadata"] == ["reason", "reference"]
    removed = json.loads(run("tokens", "update", token_id, "--remove-required-metadata", "reason", "--json").output)
    assert removed["limits"]["required_metadata"] == ["reference"]
    replaced = run("tokens", "update", token_id, "--require-metadata", "invoice_id").output
    assert "replaced the list" in replaced and "Required metadata: invoice_id" in replaced
    both = run("tokens", "update", token_id, "--require-metadata", "a", "--add-required-metadata", "b", ok=False)
    assert both.exit_code == 2 and "replaces the whole list" in both.output


def test_rotate_refuses_a_revoked_or_expired_token(env):
    revoked = json.loads(run("tokens", "create", "--label", "r", "--json").output)["id"]
    run("tokens", "revoke", revoked)
    result = run("tokens", "rotate", revoked, ok=False)
    assert result.exit_code == 2 and "is revoked" in result.output and "tokens create" in result.output
    assert "pwr_" not in result.output
    expired = json.loads(run("tokens", "create", "--label", "e", "--expires-at", "2020-01-01T00:00:00Z", "--json").output)["id"]
    result = run("tokens", "rotate", expired, ok=False)
    assert result.exit_code == 2 and "is expired" in result.output and "--expires-in" in result.output


def test_ledger_export_outcomes_and_dates_are_validated(env, sandbox):
    from relay.app import create_app
    token = json.loads(run("tokens", "create", "--label", "finance", "--json").output)["token"]
    client = create_app().test_client()
    deposit(client, token, {"user": "acme:u1", "amount": "20"})
    deposit(client, token, {"user": "acme:u1", "amount": "20"})
    both = run("ledger", "export", "--since", "yesterday", "--outcome", "credited,replayed", "--json").output
    assert [json.loads(line)["outcome"] for line in both.splitlines()] == ["credited", "replayed"]
    repeated = run("ledger", "export", "--since", "today", "--outcome", "credited", "--outcome", "replayed", "--json")
    assert repeated.output == both
    typo = run("ledger", "export", "--since", "2026-11-01", "--outcome", "credit", ok=False)
    assert typo.exit_code == 2 and "unknown outcome 'credit'" in typo.output and "credited" in typo.output
    bad_date = run("ledger", "export", "--since", "last week", ok=False)
    assert bad_date.exit_code == 2 and "Traceback" not in bad_date.output and "2026-11-01T09:30:00Z" in bad_date.output


def test_every_command_that_reports_speaks_json(env):
    token_id = json.loads(run("tokens", "create", "--label", "j", "--json").output)["id"]
    assert json.loads(run("tokens", "revoke", token_id, "--json").output)["status"] == "revoked"
    assert json.loads(run("idempotency", "purge", "--json").output) == {"removed": 0, "older_than_days": 30,
                                                                         "bulk_batches_removed": 0,
                                                                         "hook_deliveries_removed": 0,
                                                                         "events_removed": 0}
    assert json.loads(run("db", "upgrade", "--json").output) == {"revision": migrate.head()}


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://relay:sekret-password@127.0.0.1:1/relay")  # nothing on port 1
    monkeypatch.delenv("PAYWALLS_API_KEY", raising=False)
    for args in (("db", "upgrade"), ("tokens", "list")):
        result = run(*args, ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "The database (postgresql at 127.0.0.1:1/relay) cannot be reached" in result.output
        assert "Check DATABASE_URL" in result.output and "sekret" not in result.output
