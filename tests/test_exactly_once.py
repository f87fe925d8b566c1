"""Issue 11: exactly once, whatever the combination. Each test is one case that hostile testing broke on the
relay before the money path became a state machine (relay/money.py); each runs on SQLite and PostgreSQL."""

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import (auth, create_token as new_token, credits, deposit, key_rows, ledger_rows, manual_clock,
                      needs_postgres, postgres_database)
from relay import claims, config, db, keys, money, tokens

RENEWAL = {"reason": "subscription_renewal", "reference": "in_1Q2w3E4r"}


def fault(sandbox, **spec):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json=spec, timeout=5).raise_for_status()


def charge(client, token_text, body, headers=None):
    return client.post("/v1/user/charge", json=body, headers={**auth(token_text), **(headers or {})})


def problem_type(response) -> str:
    return response.get_json()["type"].rsplit(":", 1)[-1]


def usage(app, token_id, period):
    """(settled, reserved) of a token in a period: its usage row when it has a cap, else what the ledger says was
    applied and what its calls of unknown outcome still hold (caps.ledger_usage)."""
    from datetime import datetime, timezone

    from relay import caps
    from relay.models import Token, Usage
    with app.app_context(), db.read() as session:
        if caps.capped(session.get(Token, token_id)):
            row = session.get(Usage, (token_id, period))
            return (row.settled_micros, row.reserved_micros) if row else (0, 0)
        assert session.get(Usage, (token_id, period)) is None, "a token without caps writes no usage row"
        kind, moment = period.split(":", 1)
        moment = datetime.strptime(moment, "%Y-%m-%d" if kind == "d" else "%Y-%m").replace(tzinfo=timezone.utc)
        return caps.ledger_usage(session, token_id, *caps.bounds(moment)[kind])


def money_rows(app, outcome=None):
    with app.app_context(), db.read() as session:
        return [row for row in ledger_rows(session) if row.operation in ("deposit", "charge")
                and (outcome is None or row.outcome == outcome)]


@pytest.fixture
def relay(make_app, database_url):
    """An app whose upstream gives up at once (no retries), so one fault decides one call's outcome."""
    return make_app(database_url, RELAY_UPSTREAM_RETRIES=0)


def claim_and_hold(app, token_text, body):
    """Phase 1 of a deposit, and nothing after it: a process that claimed the event, then stalled or died."""
    with app.app_context(), db.read_connection() as connection:
        token = tokens.authenticate(connection, f"Bearer {token_text}", app.extensions["relay.clock"].now())
    fingerprint = keys.fingerprint("deposit", body)
    with app.test_request_context():
        return token, money.claim_or_wait(token, "deposit", body, fingerprint, None, fingerprint, "held")


# --- one event identity per token, whatever the client sends ------------------------------------------------

def test_a_client_key_never_beats_the_token_s_dedupe_rule(relay, sandbox):
    _, text = new_token(relay, dedupe_on=["user", "metadata.reference"])
    client = relay.test_client()
    first = deposit(client, text, {"user": "acme:u1", "amount": "20", "metadata": RENEWAL},
                    headers={"Idempotency-Key": "zap-run-1"})
    assert first.status_code == 200
    # The same invoice with another amount and another client key: refused, not credited again.
    other = deposit(client, text, {"user": "acme:u1", "amount": "25", "metadata": RENEWAL},
                    headers={"Idempotency-Key": "zap-run-2"})
    assert other.status_code == 422 and problem_type(other) == "idempotency-key-reused"
    assert other.get_json()["dedupe_on"] == ["user", "metadata.reference"]
    # The same invoice with an extra metadata field, a third client key: refused as well.
    extra = deposit(client, text, {"user": "acme:u1", "amount": "20", "metadata": {**RENEWAL, "note": "x"}},
                    headers={"Idempotency-Key": "zap-run-3"})
    assert extra.status_code == 422
    assert len(credits(sandbox)) == 1


def test_the_readme_renewal_flow_through_make_zapier_and_n8n_is_one_credit(relay, sandbox):
    _, text = new_token(relay, dedupe_on=["user", "metadata.reference"], required_metadata=["reference"])
    client = relay.test_client()
    body = {"user": "acme:u1", "amount": "20", "metadata": RENEWAL}
    make = deposit(client, text, body)  # Make: no header
    zapier = deposit(client, text, body, headers={"Idempotency-Key": keys.derive_key("deposit", body)})
    n8n = deposit(client, text, body, headers={"Idempotency-Key": keys.derive_key("deposit", body, ["user", "amount"])})
    assert [r.status_code for r in (make, zapier, n8n)] == [200, 200, 200]
    assert [r.headers["Idempotent-Replayed"] for r in (make, zapier, n8n)] == ["false", "true", "true"]
    assert len(credits(sandbox)) == 1
    assert len(money_rows(relay, "credited")) == 1


def test_one_client_key_never_names_two_events(relay, sandbox):
    _, text = new_token(relay)
    client = relay.test_client()
    assert deposit(client, text, {"user": "u1", "amount": "10"}, headers={"Idempotency-Key": "k1"}).status_code == 200
    second = deposit(client, text, {"user": "u2", "amount": "10"}, headers={"Idempotency-Key": "k1"})
    assert second.status_code == 422 and problem_type(second) == "idempotency-key-reused"
    assert len(credits(sandbox)) == 1
    # The refused event was not stored either: without the key it is a new credit of its own.
    assert deposit(client, text, {"user": "u2", "amount": "10"}).status_code == 200
    assert len(credits(sandbox)) == 2


def test_concurrent_requests_with_one_client_key_and_different_fields_make_one_call(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_INFLIGHT_WAIT=0.1)
    _, text = new_token(app)
    fault(sandbox, kind="latency", seconds=0.3, count=20)

    def one(n):
        return deposit(app.test_client(), text, {"user": f"u{n}", "amount": "1"},
                       headers={"Idempotency-Key": "same-key"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(8)))
    assert statuses.count(200) == 1 and set(statuses) <= {200, 422, 409}, statuses
    assert len(credits(sandbox)) == 1


# --- reservations belong to the claim that made them ----------------------------------------------------------

def test_a_namespace_takeover_moves_the_reservation_or_is_refused(relay, sandbox):
    a_id, a = new_token(relay, namespace="shared", daily_cap="100")
    b_id, b = new_token(relay, namespace="shared", daily_cap="30")
    client = relay.test_client()
    body = {"user": "u1", "amount": "50", "metadata": {"reference": "r1"}}
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, a, body).status_code == 502  # landed, unconfirmed: A holds 50 reserved
    today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert usage(relay, a_id, today) == (0, 50_000_000)
    # B may not take it over: it would put 50 on a cap of 30. Nothing moves.
    refused = deposit(client, b, body)
    assert refused.status_code == 403 and refused.get_json()["limit"] == "daily_cap"
    assert usage(relay, a_id, today) == (0, 50_000_000) and usage(relay, b_id, today) == (0, 0)
    # With room, B takes it over and the reservation moves with it: settled on B, nothing left on A.
    c_id, c = new_token(relay, namespace="shared", daily_cap="60")
    taken = deposit(client, c, body)
    assert taken.status_code == 200 and taken.get_json() == {"balanceFormatted": "50.00"}
    assert usage(relay, c_id, today) == (50_000_000, 0)
    assert usage(relay, a_id, today) == (0, 0)
    assert len(credits(sandbox)) == 1
    assert [(row.outcome, row.token_id) for row in money_rows(relay)] == [("ambiguous", a_id), ("credited", c_id)]


def test_a_refused_takeover_moves_nothing_whichever_token_locks_first(relay, sandbox):
    """A takeover locks the two tokens' usage rows in the order of their ids, so it releases the holder's reservation
    before reserving on its own caps when its id is the higher one: a refusal then must undo that release too."""
    holder_id, holder = new_token(relay, namespace="shared", daily_cap="100")
    body = {"user": "u1", "amount": "50", "metadata": {"reference": "r1"}}
    fault(sandbox, kind="drop_after_credit")
    assert deposit(relay.test_client(), holder, body).status_code == 502
    today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lower = higher = None
    while lower is None or higher is None:  # token ids are random: one of each side of the holder's
        token_id, text = new_token(relay, namespace="shared", daily_cap="30")
        if token_id < holder_id:
            lower = lower or text
        else:
            higher = higher or text
    for claimer in (lower, higher):
        refused = deposit(relay.test_client(), claimer, body)
        assert refused.status_code == 403 and refused.get_json()["limit"] == "daily_cap"
        assert usage(relay, holder_id, today) == (0, 50_000_000)
    assert len(credits(sandbox)) == 1


@needs_postgres
def test_two_takeovers_in_opposite_directions_do_not_deadlock(make_app, sandbox, monkeypatch):
    """Token A takes over an unconfirmed event B holds, while B takes over one A holds: each moves a reservation from
    the other's usage rows to its own. Taken in the order the claim met them, A's rows then B's against B's then A's,
    the two transactions deadlocked, and PostgreSQL answered one caller with an error after a second. Both now lock
    the two tokens' rows in one order, so one waits for the other and both take over."""
    from conftest import postgres_database
    from relay import caps
    with postgres_database() as url:
        app = make_app(url, RELAY_UPSTREAM_RETRIES=0)
        a_id, a = new_token(app, namespace="shared", daily_cap="100")
        b_id, b = new_token(app, namespace="shared", daily_cap="100")
        client = app.test_client()
        held_by_a = {"user": "u1", "amount": "10", "metadata": {"reference": "r1"}}
        held_by_b = {"user": "u2", "amount": "20", "metadata": {"reference": "r2"}}
        fault(sandbox, kind="drop_after_credit", count=2)
        assert deposit(client, a, held_by_a).status_code == 502
        assert deposit(client, b, held_by_b).status_code == 502
        # Both claims make their first move on the usage rows, then meet here before their second: the interleaving
        # that deadlocked. A claim that cannot get here (it waits for the other's rows) goes on after the timeout.
        meet, moves = threading.Barrier(2, timeout=3), threading.local()

        def meeting(real):
            def move(*args, **kwargs):
                result = real(*args, **kwargs)
                moves.count = getattr(moves, "count", 0) + 1
                if moves.count == 1:
                    try:
                        meet.wait()
                    except threading.BrokenBarrierError:
                        pass
                return result
            return move
        monkeypatch.setattr(caps, "reserve", meeting(caps.reserve))
        monkeypatch.setattr(caps, "release", meeting(caps.release))
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda call: deposit(app.test_client(), *call),
                                    [(b, held_by_a), (a, held_by_b)]))
        assert [answer.status_code for answer in answers] == [200, 200], [answer.get_json() for answer in answers]
        today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
        assert usage(app, a_id, today) == (20_000_000, 0) and usage(app, b_id, today) == (10_000_000, 0)
        assert len(credits(sandbox)) == 2
        app.extensions["relay.engine"].dispose()


# --- token edits never reopen old events ----------------------------------------------------------------------

@pytest.mark.parametrize("change", [{"namespace": "other"}, {"dedupe_on": ["user", "metadata.reference"]}])
def test_changing_a_token_s_identity_is_refused_while_it_has_keys(relay, sandbox, change):
    token_id, text = new_token(relay)
    client = relay.test_client()
    body = {"user": "u1", "amount": "10", "metadata": {"reference": "r1"}}
    assert deposit(client, text, body).status_code == 200
    admin = {"Authorization": f"Bearer {relay.config['RELAY']['RELAY_ADMIN_KEY']}"}
    refused = client.patch(f"/v1/admin/tokens/{token_id}", json=change, headers=admin)
    assert refused.status_code == 409 and problem_type(refused) == "token-identity-locked"
    assert "create a new token" in refused.get_json()["detail"]
    # Other settings still change.
    assert client.patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "500"}, headers=admin).status_code == 200
    assert deposit(client, text, body).headers["Idempotent-Replayed"] == "true"
    assert len(credits(sandbox)) == 1
    # A token with no stored keys may change freely.
    fresh_id, _ = new_token(relay)
    assert client.patch(f"/v1/admin/tokens/{fresh_id}", json=change, headers=admin).status_code == 200


def test_the_cli_refuses_the_same_identity_edit(relay, sandbox, monkeypatch):
    from click.testing import CliRunner

    from relay import cli
    token_id, text = new_token(relay)
    deposit(relay.test_client(), text, {"user": "u1", "amount": "10"})
    monkeypatch.setattr("relay.app.create_app", lambda **_: relay)
    result = CliRunner().invoke(cli.main, ["tokens", "update", token_id, "--dedupe-on", "user,metadata.reference"])
    assert result.exit_code == 2 and "would let a replay of an event already credited" in result.output
    with relay.app_context(), db.read() as session:
        assert tokens.get(session, token_id).dedupe_on == list(keys.DEFAULT_FIELDS)


def test_a_new_event_is_never_stored_under_an_identity_edited_meanwhile(relay, sandbox):
    token_id, text = new_token(relay)
    with relay.app_context(), db.read_connection() as connection:
        stale = tokens.authenticate(connection, f"Bearer {text}", datetime.now(timezone.utc))
    with relay.app_context(), db.transaction() as session:
        tokens.update_token(session, tokens.get(session, token_id), {"namespace": "moved"})
    with relay.test_request_context(), pytest.raises(Exception) as refused:
        body = {"user": "u1", "amount": "1"}
        money.perform(stale, "deposit", body, money.identify(stale, "deposit", body, None), "r")
    assert getattr(refused.value, "name", None) == "token-changed"
    assert credits(sandbox) == []


def _claim_in(app, token, body, now, holding: threading.Event, release: threading.Event):
    """Phase 1 of a deposit in its own transaction, kept open until `release`: a claim caught mid-commit."""
    fingerprint = keys.fingerprint("deposit", body)
    with app.app_context(), db.write() as connection:
        result = claims.claim(connection, token, "deposit", fingerprint, None, fingerprint, json.dumps(body),
                              1_000_000, now, 30)
        holding.set()
        assert release.wait(15)
        return result


def _edit(app, token_id, spec, holding: threading.Event | None = None, release: threading.Event | None = None):
    """A token edit as the admin API makes it (token row locked first), optionally kept open until `release`."""
    from relay.models import Token
    with app.app_context(), db.transaction() as session:
        tokens.update_token(session, session.get(Token, token_id, with_for_update=True), spec)
        if holding is not None:
            holding.set()
            assert release.wait(15)


def _authenticated(app, text):
    now = datetime.now(timezone.utc)
    with app.app_context(), db.read_connection() as connection:
        return tokens.authenticate(connection, f"Bearer {text}", now), now


def _still_waiting(future, seconds=0.6) -> bool:
    try:
        future.result(timeout=seconds)
    except TimeoutError:
        return True
    except Exception:  # noqa: BLE001 - it ended (with a refusal): it did not wait
        return False
    return False


def _edit_during_a_claim(app, token_id, text, spec) -> tuple[bool, object, Exception | None, datetime]:
    """A claim caught mid-commit, then an edit of its token: (whether the edit waited for the claim, what the claim
    returned, the edit's refusal or None, the claim's time)."""
    token, now = _authenticated(app, text)
    holding, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        claim = pool.submit(_claim_in, app, token, {"user": "u1", "amount": "1"}, now, holding, release)
        assert holding.wait(10)
        edit = pool.submit(_edit, app, token_id, spec)
        waited = _still_waiting(edit)
        release.set()
        claimed = claim.result(10)
        try:
            edit.result(10)
            refused = None
        except Exception as error:  # noqa: BLE001 - the refusal is what the test reads
            refused = error
    return waited, claimed, refused, now


def test_an_identity_edit_waits_for_a_claim_storing_the_first_key_then_is_refused(relay, sandbox):
    """Claims read their token without locking its row (no hot row for a busy token). The edit must still see the
    key a claim is committing: it waits for it, counts it, and refuses."""
    token_id, text = new_token(relay)
    waited, claimed, refused, _now = _edit_during_a_claim(relay, token_id, text, {"namespace": "moved"})
    assert waited, "the edit did not wait for the claim in flight"
    assert isinstance(claimed, claims.Claim)
    assert getattr(refused, "name", None) == "token-identity-locked"


def test_a_claim_waits_for_an_identity_edit_in_progress_then_starts_over(relay, sandbox):
    token_id, text = new_token(relay)
    token, now = _authenticated(relay, text)  # read before the edit: the old namespace
    holding, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        edit = pool.submit(_edit, relay, token_id, {"namespace": "moved"}, holding, release)
        assert holding.wait(10)
        claim = pool.submit(_claim_in, relay, token, {"user": "u1", "amount": "1"}, now, threading.Event(),
                            threading.Event())
        assert _still_waiting(claim), "the claim went ahead under an identity being changed"
        release.set()
        edit.result(10)
        with pytest.raises(Exception) as refused:
            claim.result(10)
    assert getattr(refused.value, "name", None) == "token-changed"
    with relay.app_context(), db.read() as session:
        assert key_rows(session) == []


def test_a_first_cap_counts_a_call_whose_claim_was_committing(relay, sandbox):
    token_id, text = new_token(relay)
    waited, _claimed, refused, now = _edit_during_a_claim(relay, token_id, text, {"daily_cap": "100"})
    assert waited, "the cap was set while a claim that reserved nothing was committing"
    assert refused is None
    # The call in flight holds its amount in the new cap's day, though it reserved nothing when it claimed.
    assert usage(relay, token_id, "d:" + now.strftime("%Y-%m-%d")) == (0, 1_000_000)


@pytest.mark.postgres
@needs_postgres
def test_an_edit_that_claims_in_flight_keep_waiting_gives_up_and_changes_nothing(make_app, sandbox, monkeypatch):
    from conftest import postgres_database
    monkeypatch.setattr(claims, "EDIT_WAIT", "300ms")
    with postgres_database() as url:
        app = make_app(url, RELAY_UPSTREAM_RETRIES=0)
        token_id, text = new_token(app)
        token, now = _authenticated(app, text)
        holding, release = threading.Event(), threading.Event()
        with ThreadPoolExecutor(1) as pool:
            claim = pool.submit(_claim_in, app, token, {"user": "u1", "amount": "1"}, now, holding, release)
            assert holding.wait(10)
            admin = {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}
            started = time.monotonic()
            answer = app.test_client().patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "5"}, headers=admin)
            waited = time.monotonic() - started
            release.set()
            claim.result(10)
        assert answer.status_code == 503 and problem_type(answer) == "unavailable"
        assert "Nothing was changed" in answer.get_json()["detail"] and answer.headers["Retry-After"] == "5"
        assert 0.25 < waited < 5
        with app.app_context(), db.read() as session:
            assert tokens.get(session, token_id).daily_cap_micros is None
        # Once the calls in flight have ended, the same edit goes through.
        assert app.test_client().patch(f"/v1/admin/tokens/{token_id}", json={"daily_cap": "5"},
                                       headers=admin).status_code == 200
        app.extensions["relay.engine"].dispose()


# --- a lease that cannot be stolen -----------------------------------------------------------------------------

def test_the_relay_refuses_a_lock_timeout_shorter_than_the_call(tmp_path):
    with pytest.raises(config.ConfigError, match="RELAY_LOCK_TIMEOUT"):
        config.from_env({}, {"RELAY_LOCK_TIMEOUT": 2.0, "RELAY_UPSTREAM_BUDGET": 4.0})
    with pytest.raises(config.ConfigError):
        config.from_env({"RELAY_LOCK_TIMEOUT": "24", "RELAY_UPSTREAM_BUDGET": "20"})


def test_a_trickled_answer_is_cut_off_at_the_budget(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0, RELAY_UPSTREAM_BUDGET=1.0, RELAY_READ_TIMEOUT=0.9)
    _, text = new_token(app)
    fault(sandbox, kind="trickle", interval=0.3)  # each byte well within the read timeout
    started = time.monotonic()
    response = deposit(app.test_client(), text)
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and problem_type(response) == "upstream-ambiguous"
    assert elapsed < 2.5, elapsed  # the whole trickle takes 8.7 s
    assert len(credits(sandbox)) == 1  # it landed before the trickle began
    retry = deposit(app.test_client(), text)
    assert retry.status_code == 200 and len(credits(sandbox)) == 1


def test_a_stale_owner_s_outcome_is_never_recorded_over_a_newer_claim(relay, sandbox):
    token_id, text = new_token(relay)
    clock = manual_clock(relay)
    body = {"user": "u1", "amount": "10"}
    token, stale = claim_and_hold(relay, text, body)
    with relay.test_request_context():
        clock.advance(31)  # the first owner stalls past its lease; a duplicate takes the key over
        fresh = money.claim_or_wait(token, "deposit", body, stale.key, None, stale.key, "r2")
        assert fresh.lease == stale.lease + 1 and fresh.upstream_key == stale.upstream_key
        outcome = money.upstream().call("POST", "/user/balance/deposit", json=body, idempotency_key=fresh.upstream_key)
        assert money.record(token, "deposit", body, fresh, outcome, None, "r2")[0] == 200
        # The stale owner's (identical) answer arrives late: it is not recorded, and nothing settles twice.
        status, text_ = money.record(token, "deposit", body, stale, outcome, None, "r1")
    assert status == 503 and json.loads(text_)["type"].endswith("outcome-unrecorded")
    assert [row.outcome for row in money_rows(relay)] == ["credited"]
    today = "d:" + clock.now().strftime("%Y-%m-%d")
    assert usage(relay, token_id, today) == (10_000_000, 0)


# --- the record survives the database ---------------------------------------------------------------------------

def test_a_failed_record_is_retried_then_left_for_ledger_resolve(make_app, database_url, sandbox, monkeypatch):
    from sqlalchemy.exc import OperationalError
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0, RELAY_RECORD_BUDGET=1.0)
    token_id, text = new_token(app, daily_cap="100")
    clock = manual_clock(app)
    real_end = claims.end_attempt
    failures = {"left": 2}

    def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))
        return real_end(*args, **kwargs)

    monkeypatch.setattr(claims, "end_attempt", flaky)
    client = app.test_client()
    # Two failures, then the retry within RELAY_RECORD_BUDGET records it.
    assert deposit(client, text, metadata={"n": 1}).status_code == 200
    # The database stays down past the budget: the caller hears "may have applied", the key keeps its lease.
    failures["left"] = 1000
    lost = deposit(client, text, metadata={"n": 2})
    assert lost.status_code == 503 and problem_type(lost) == "outcome-unrecorded"
    assert len(credits(sandbox)) == 2 and len(money_rows(app, "credited")) == 1
    failures["left"] = 0
    # Nobody retries. After the lease, `ledger resolve` re-sends the same upstream key and records the credit.
    with app.test_request_context():
        assert money.resolve()["applied"] == 0  # still within its lease: not stranded yet
        clock.advance(31)
        assert money.resolve()["applied"] == 1
    assert len(credits(sandbox)) == 2 and len(money_rows(app, "credited")) == 2
    today = "d:" + clock.now().strftime("%Y-%m-%d")
    assert usage(app, token_id, today) == (20_000_000, 0)
    with app.app_context(), db.read() as session:
        assert {row.state for row in key_rows(session)} == {"done"}
    replay = deposit(client, text, metadata={"n": 2})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.status_code == 200


def test_a_record_that_waits_too_long_for_a_pooled_connection_is_retried(make_app, database_url, sandbox,
                                                                          monkeypatch):
    """Every pooled connection busy past the pool's timeout is no DBAPIError, but after the call to Paywalls it is the
    same thing: retried within RELAY_RECORD_BUDGET, not answered with a 500 and left for `ledger resolve`."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0, RELAY_RECORD_BUDGET=1.0)
    _, text = new_token(app)
    real_end = claims.end_attempt
    failures = {"left": 2}

    def busy(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise PoolTimeout("QueuePool limit of size 20 overflow 0 reached, connection timed out, timeout 15.00")
        return real_end(*args, **kwargs)

    monkeypatch.setattr(claims, "end_attempt", busy)
    answer = deposit(app.test_client(), text)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert failures["left"] == 0 and len(credits(sandbox)) == 1 and len(money_rows(app, "credited")) == 1


@needs_postgres
def test_a_deposit_that_finds_every_pooled_connection_busy_is_a_503_and_calls_no_one(make_app, sandbox, monkeypatch):
    """A real pool of one connection, held: the deposit waits out the pool's timeout, answers 503 with Retry-After
    (safe to retry: nothing was claimed), and Paywalls is not called."""
    monkeypatch.setattr(db, "PG_POOL_SIZE", 1)
    monkeypatch.setattr(db, "PG_POOL_TIMEOUT", 0.3)
    with postgres_database() as url:
        app = make_app(url)
        _, text = new_token(app)
        with app.app_context(), db.engine().connect() as held:
            held.exec_driver_sql("SELECT 1")
            answer = deposit(app.test_client(), text)
        assert answer.status_code == 503 and problem_type(answer) == "unavailable", answer.get_data(as_text=True)
        assert answer.headers["Retry-After"] == "5"
        assert credits(sandbox) == []
        again = deposit(app.test_client(), text)  # the connection is back: the retry credits, once
        assert again.status_code == 200 and len(credits(sandbox)) == 1


def test_ledger_resolve_from_the_cli(make_app, database_url, sandbox, monkeypatch):
    from click.testing import CliRunner

    from relay import cli
    app = make_app(database_url, RELAY_UPSTREAM_RETRIES=0)
    _, text = new_token(app)
    fault(sandbox, kind="drop_after_credit")
    assert deposit(app.test_client(), text).status_code == 502
    monkeypatch.setattr("relay.app.create_app", lambda **_: app)
    result = CliRunner().invoke(cli.main, ["ledger", "resolve", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["applied"] == 1
    assert [row.outcome for row in money_rows(app)] == ["ambiguous", "credited"]
    assert len(credits(sandbox)) == 1


@pytest.mark.parametrize("answer", [{"balanceFormatted": {"amount": "10"}}, {"balanceFormatted": "9" * 65},
                                    {"weird": 1}, {}, [{"balanceFormatted": "10.00"}], "10.00", None,
                                    '{"balanceFormatted": "10.00", "rate": NaN}'])
def test_a_2xx_without_the_documented_shape_may_have_applied(relay, sandbox, answer):
    token_id, text = new_token(relay)
    raw = answer if isinstance(answer, str) and answer.startswith("{") else json.dumps(answer)
    fault(sandbox, kind="respond", status=200, body=raw, apply=True,
          headers={"Content-Type": "application/json"})
    client = relay.test_client()
    response = deposit(client, text)
    assert response.status_code == 502 and problem_type(response) == "upstream-ambiguous"
    assert [row.outcome for row in money_rows(relay)] == ["ambiguous"]
    # A retry re-sends the same upstream key; Paywalls answers from its store and nothing is credited twice.
    retry = deposit(client, text)
    assert retry.status_code == 200 and retry.get_json() == {"balanceFormatted": "10.00"}
    assert len(credits(sandbox)) == 1 and len(money_rows(relay, "credited")) == 1


@pytest.mark.parametrize("answer", [{"success": "false"}, {"success": "true"}, {"success": 0}, {"message": "ok"}])
def test_a_charge_declines_or_succeeds_only_on_a_boolean(relay, sandbox, answer):
    _, text = new_token(relay)
    client = relay.test_client()
    deposit(client, text, {"user": "u1", "amount": "10"})
    fault(sandbox, kind="respond", status=200, body=json.dumps(answer), apply=False, endpoint="charge",
          headers={"Content-Type": "application/json"})
    response = charge(client, text, {"user": "u1", "amount": "4"})
    assert response.status_code == 502 and problem_type(response) == "upstream-ambiguous"
    assert money_rows(relay)[-1].outcome == "ambiguous"
    assert sandbox.state.snapshot()["balances"]["u1"] == "10"


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_may_have_applied_and_are_not_final(relay, sandbox, status):
    _, text = new_token(relay)
    fault(sandbox, kind="respond", status=status, body='{"error": "try again"}', apply=True,
          headers={"Content-Type": "application/json"})
    client = relay.test_client()
    first = deposit(client, text)
    assert first.status_code == 502 and problem_type(first) == "upstream-ambiguous"
    assert deposit(client, text).status_code == 200
    assert len(credits(sandbox)) == 1


@pytest.mark.parametrize("status,body", [(302, ""), (301, "<html>Moved</html>"), (307, "")])
def test_an_upstream_redirect_is_a_configuration_error_never_a_stored_answer(relay, sandbox, caplog, status, body):
    token_id, text = new_token(relay, daily_cap="100")
    fault(sandbox, kind="respond", status=status, body=body, headers={"Location": "https://elsewhere.invalid/v1"})
    client = relay.test_client()
    with caplog.at_level(logging.ERROR, logger="relay.upstream"):
        first = deposit(client, text)
    assert first.status_code == 502 and problem_type(first) == "upstream-misdirected"
    assert "PAYWALLS_BASE_URL" in first.get_json()["detail"] and "Location" not in first.headers
    assert any("PAYWALLS_BASE_URL" in record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR)
    assert credits(sandbox) == []
    today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert usage(relay, token_id, today) == (0, 0)  # released
    second = deposit(client, text)  # once fixed, the same call goes through: nothing was stored as final
    assert second.status_code == 200 and second.headers["Idempotent-Replayed"] == "false"
    assert len(credits(sandbox)) == 1


def test_a_balance_error_answered_with_a_json_array_is_a_clean_4xx(relay, sandbox):
    _, text = new_token(relay)
    fault(sandbox, kind="respond", status=400, body='["user is invalid"]', endpoint="balance",
          headers={"Content-Type": "application/json"})
    response = relay.test_client().get("/v1/user/balance?user=u1", headers=auth(text))
    assert response.status_code == 400 and problem_type(response) == "upstream-rejected"


# --- purge never rewrites history ----------------------------------------------------------------------------

def test_after_purge_the_same_fields_are_a_new_call_and_the_ledger_says_so(relay, sandbox):
    _, text = new_token(relay)
    client = relay.test_client()
    assert deposit(client, text).status_code == 200
    with relay.app_context(), db.write() as connection:
        assert claims.purge(connection, datetime.now(timezone.utc) + timedelta(seconds=1)) == 1
    again = deposit(client, text)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "false"
    sent = [c["idempotency_key"] for c in credits(sandbox)]
    assert len(sent) == 2 and sent[0] != sent[1]  # a genuinely new call, not one Paywalls answers from its store
    assert len(money_rows(relay, "credited")) == len(credits(sandbox)) == 2


def test_purge_never_touches_open_ambiguous_or_in_flight_keys(relay, sandbox):
    token_id, text = new_token(relay, daily_cap="100")
    client = relay.test_client()
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, text, metadata={"n": "ambiguous"}).status_code == 502
    fault(sandbox, kind="status", status=401)
    assert deposit(client, text, metadata={"n": "open"}).status_code == 502
    with relay.app_context(), db.write() as connection:
        assert claims.purge(connection, datetime.now(timezone.utc) + timedelta(days=1)) == 0
    today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert usage(relay, token_id, today) == (0, 10_000_000)  # the ambiguous key's reservation is intact
    assert deposit(client, text, metadata={"n": "ambiguous"}).status_code == 200
    assert len(credits(sandbox)) == 1 and usage(relay, token_id, today) == (10_000_000, 0)


def test_purge_racing_replays_gives_no_500_and_a_truthful_ledger(make_app, database_url, sandbox):
    app = make_app(database_url, RELAY_INFLIGHT_WAIT=2.0)
    _, text = new_token(app)
    stop = threading.Event()
    statuses = []

    def replays():
        client = app.test_client()
        while not stop.is_set():
            statuses.append(deposit(client, text, {"user": "u1", "amount": "1", "metadata": {"n": len(statuses) % 3}})
                            .status_code)

    def purges():
        while not stop.is_set():
            with app.app_context(), db.write() as connection:
                claims.purge(connection, datetime.now(timezone.utc) + timedelta(seconds=1))

    workers = [threading.Thread(target=replays) for _ in range(3)] + [threading.Thread(target=purges)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)  # a bounded run; what is checked is what happened in it, not its length
    stop.set()
    for worker in workers:
        worker.join(10)
    assert statuses and set(statuses) <= {200, 409}, sorted(set(statuses))
    assert len(money_rows(app, "credited")) == len(credits(sandbox))


# --- a clock the tests control ---------------------------------------------------------------------------------

def test_a_call_retried_after_midnight_counts_and_is_dated_in_the_day_it_was_reserved(relay, sandbox):
    token_id, text = new_token(relay, daily_cap="100", monthly_cap="1000")
    clock = manual_clock(relay, datetime(2026, 11, 30, 23, 59, 50, tzinfo=timezone.utc))
    client = relay.test_client()
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, text).status_code == 502
    clock.advance(20)  # 2026-12-01 00:00:10
    assert deposit(client, text).status_code == 200
    assert usage(relay, token_id, "m:2026-11") == (10_000_000, 0)
    assert usage(relay, token_id, "d:2026-11-30") == (10_000_000, 0)
    assert usage(relay, token_id, "m:2026-12") == (0, 0)
    credited = money_rows(relay, "credited")[0]
    assert credited.created_at.strftime("%Y-%m-%d") == "2026-11-30"
    assert credited.recorded_at.strftime("%Y-%m-%d") == "2026-12-01"
    me = client.get("/v1/relay/me", headers=auth(text)).get_json()
    assert me["usage"] == {"today": "0", "this_month": "0"} and me["remaining"]["today"] == "100"


def test_token_expiry_follows_the_clock(relay, sandbox):
    _, text = new_token(relay, expires_in="1h")
    clock = manual_clock(relay)
    client = relay.test_client()
    assert deposit(client, text).status_code == 200
    clock.advance(3601)
    expired = deposit(client, text, metadata={"n": 2})
    assert expired.status_code == 401 and expired.get_json()["reason"] == "expired"


def test_the_lease_expires_by_the_clock_not_by_sleeping(relay, sandbox):
    _, text = new_token(relay)
    clock = manual_clock(relay)
    body = {"user": "u1", "amount": "10"}
    claim_and_hold(relay, text, body)  # its process dies holding the claim
    client = relay.test_client()
    held = deposit(client, text, body)
    assert held.status_code == 409 and held.headers["Retry-After"] == "1"
    clock.advance(31)
    assert deposit(client, text, body).status_code == 200
    assert len(credits(sandbox)) == 1


@pytest.mark.parametrize("retry_after", ["\u00b2", "1e3", "-1", "99999999999999999999"])
def test_an_odd_retry_after_from_paywalls_is_ignored_not_a_crash(relay, sandbox, retry_after):
    _, text = new_token(relay)
    fault(sandbox, kind="respond", status=503, body="{}", headers={"Retry-After": retry_after})
    response = deposit(relay.test_client(), text)
    assert response.status_code == 502 and problem_type(response) == "upstream-ambiguous"


def test_tokens_of_one_namespace_must_dedupe_on_the_same_fields(relay, sandbox):
    new_token(relay, namespace="billing", dedupe_on=["user", "metadata.reference"])
    admin = {"Authorization": f"Bearer {relay.config['RELAY']['RELAY_ADMIN_KEY']}"}
    client = relay.test_client()
    refused = client.post("/v1/admin/tokens", json={"label": "n8n", "namespace": "billing"}, headers=admin)
    assert refused.status_code == 409 and problem_type(refused) == "namespace-rule-differs"
    assert "--dedupe-on user,metadata.reference" in refused.get_json()["detail"]
    same = client.post("/v1/admin/tokens", json={"label": "n8n", "namespace": "billing",
                                                 "dedupe_on": ["metadata.reference", "user"]}, headers=admin)
    assert same.status_code == 201
    other_id, _ = new_token(relay)
    moved = client.patch(f"/v1/admin/tokens/{other_id}", json={"namespace": "billing"}, headers=admin)
    assert moved.status_code == 409 and problem_type(moved) == "namespace-rule-differs"


def test_one_client_key_through_two_tokens_of_a_namespace_is_one_credit(relay, sandbox):
    _, zapier = new_token(relay, namespace="shared", dedupe_on=["user", "metadata.reference"])
    _, n8n = new_token(relay, namespace="shared", dedupe_on=["user", "metadata.reference"])
    client = relay.test_client()
    body = {"user": "u1", "amount": "10", "metadata": {"reference": "r1"}}
    key = keys.derive_key("deposit", body)
    assert deposit(client, zapier, body, headers={"Idempotency-Key": key}).status_code == 200
    again = deposit(client, n8n, body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert len(credits(sandbox)) == 1


@pytest.mark.parametrize("then", [{"kind": "status", "status": 401}, {"kind": "rate_limit", "retry_after": 9},
                                  {"kind": "respond", "status": 302, "body": ""},
                                  {"kind": "status", "status": 400}])
def test_a_retry_that_is_not_applied_never_settles_an_event_that_may_have_landed(relay, sandbox, then):
    token_id, text = new_token(relay, daily_cap="25")
    client = relay.test_client()
    fault(sandbox, kind="drop_after_credit")
    assert deposit(client, text).status_code == 502  # it landed; the answer was lost
    fault(sandbox, **then)
    retry = deposit(client, text)
    assert retry.status_code == 502 and problem_type(retry) == "upstream-ambiguous"
    assert "earlier attempt" in retry.get_json()["detail"]
    today = "d:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert usage(relay, token_id, today) == (0, 10_000_000)  # still reserved: the cap still counts it
    assert deposit(client, text, metadata={"n": 2}).status_code == 200
    assert deposit(client, text, metadata={"n": 3}).status_code == 403  # 10 + 10 + 10 > 25
    assert deposit(client, text).status_code == 200  # Paywalls answers for it at last
    assert len(credits(sandbox)) == 2 and len(money_rows(relay, "credited")) == 2
