"""Issue 15: a token without caps writes no shared usage row on the money path; its usage comes from the
ledger and from its calls whose outcome is unknown. Capped tokens keep their atomic reservations. Each test runs
on SQLite and PostgreSQL."""

import requests
from sqlalchemy import select

from conftest import auth, create_token as new_token, deposit, needs_postgres, postgres_database
from relay import db, tokens
from relay.models import Token, Usage


def fault(sandbox, **spec):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json=spec, timeout=5).raise_for_status()


def usage_rows(app, token_id):
    with app.app_context(), db.read() as session:
        return [(row.period[0], row.settled_micros, row.reserved_micros)
                for row in session.scalars(select(Usage).where(Usage.token_id == token_id).order_by(Usage.period))]


def me(client, text) -> dict:
    return client.get("/v1/relay/me", headers=auth(text)).get_json()


def test_an_uncapped_token_writes_no_usage_row_and_still_shows_its_usage(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0)
    token_id, text = new_token(app)
    client = app.test_client()
    assert deposit(client, text, amount="10", metadata={"n": "1"}).status_code == 200
    assert deposit(client, text, amount="2.5", metadata={"n": "2"}).status_code == 200
    assert deposit(client, text, amount="2.5", metadata={"n": "2"}).headers["Idempotent-Replayed"] == "true"
    fault(sandbox, kind="status", status=400)  # rejected: nothing applied, nothing counted
    assert deposit(client, text, amount="7", metadata={"n": "3"}).status_code == 400
    assert usage_rows(app, token_id) == []
    shown = me(client, text)
    assert shown["usage"] == {"today": "12.5", "this_month": "12.5"}
    assert shown["remaining"] == {"today": None, "this_month": None}

    # A call that may have landed (the connection dropped after Paywalls credited) still counts.
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, text, amount="5", metadata={"n": "4"}).status_code == 502
    assert me(client, text)["usage"] == {"today": "17.5", "this_month": "17.5"}
    assert usage_rows(app, token_id) == []
    # Its retry confirms it: counted once, not twice.
    assert deposit(client, text, amount="5", metadata={"n": "4"}).status_code == 200
    assert me(client, text)["usage"] == {"today": "17.5", "this_month": "17.5"}


def test_a_capped_token_still_reserves_in_its_usage_rows(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0)
    token_id, text = new_token(app, daily_cap="20")
    client = app.test_client()
    assert deposit(client, text, amount="15", metadata={"n": "1"}).status_code == 200
    assert usage_rows(app, token_id) == [("d", 15_000_000, 0), ("m", 15_000_000, 0)]
    assert deposit(client, text, amount="6", metadata={"n": "2"}).status_code == 403


def test_a_first_cap_starts_from_what_the_ledger_and_the_calls_in_doubt_already_used(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0)
    token_id, text = new_token(app)
    client = app.test_client()
    assert deposit(client, text, amount="10", metadata={"n": "1"}).status_code == 200
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, text, amount="4", metadata={"n": "2"}).status_code == 502  # ambiguous: 4 held
    with app.app_context(), db.transaction() as session:
        tokens.update_token(session, session.get(Token, token_id), {"daily_cap": "16"})
    assert usage_rows(app, token_id) == [("d", 10_000_000, 4_000_000), ("m", 10_000_000, 4_000_000)]
    assert me(client, text)["remaining"]["today"] == "2"
    # 10 applied + 4 in doubt + 3 would pass the cap of 16.
    refused = deposit(client, text, amount="3", metadata={"n": "3"})
    assert refused.status_code == 403
    assert deposit(client, text, amount="2", metadata={"n": "4"}).status_code == 200
    assert me(client, text)["usage"]["today"] == "16"


@needs_postgres
def test_recording_a_token_s_use_never_waits_for_another_call_doing_it(make_app):
    """Every call in flight at the minute's turn records the token's use: on PostgreSQL they queued on the token's
    row (Lock:transactionid). Now a call that finds the row being touched leaves it to that call."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import text

    with postgres_database() as url:
        app = make_app(url)
        token_id, _ = new_token(app)
        engine = app.extensions["relay.engine"]
        stale = type("T", (), {"id": token_id, "last_used_at": datetime.now(timezone.utc) - timedelta(hours=1)})
        with engine.connect() as first, engine.connect() as second:
            first.begin()
            tokens.touch(first, stale, datetime.now(timezone.utc))
            second.begin()
            second.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting would raise instead of hanging
            tokens.touch(second, stale, datetime.now(timezone.utc))
            second.commit()
            first.commit()
