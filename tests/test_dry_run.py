"""?dry_run=true on deposit and charge: the real call's checks and answers, and nothing moves.

A dry run authenticates, validates, checks the token's limits and caps and derives the key, then answers what the
real call would do. It claims no key, reserves nothing, sends nothing to Paywalls; the ledger says dry_run. Hostile
cases: values that are not true/false, a client key bound to other fields, the same event in flight, a cap."""

import json
import threading

import pytest

from conftest import auth, credits, deposit, key_rows, ledger_rows
from relay import caps, clock, db, ledger, tokens
from relay.models import Token

DRY = "/v1/user/balance/deposit?dry_run=true"
BODY = {"user": "acme:u1", "amount": "10.00", "metadata": {"reference": "in_1"}}


def dry(client, token_text, body=None, path=DRY, headers=None):
    return client.post(path, json=body or BODY, headers={**auth(token_text), **(headers or {})})


def usage(app, token_text):
    with app.app_context(), db.read() as session:
        token = session.get(Token, token_text[4:16])
        return caps.usage(session, token, clock.now())


def nothing_moved(app, sandbox, before_usage=None, token_text=None):
    snapshot = sandbox.state.snapshot()
    assert snapshot["deposits"] == [] and snapshot["charges"] == [] and not snapshot["calls"]
    with app.app_context(), db.read() as session:
        assert key_rows(session) == []
    if token_text:
        assert usage(app, token_text) == before_usage


def test_a_dry_run_answers_what_it_would_do_and_moves_nothing(app, client, make_token, sandbox):
    _, text = make_token(daily_cap="100", monthly_cap="1000")
    before = usage(app, text)
    answer = dry(client, text)
    assert answer.status_code == 200
    key = answer.headers["Idempotency-Key"]
    assert answer.get_json() == {"dry_run": True, "would": "credit", "idempotency_key": key,
                                 "remaining": {"today": "90", "this_month": "990"},
                                 "request": {"user": "acme:u1", "amount": "10", "metadata": {"reference": "in_1"}}}
    assert answer.headers["Idempotent-Replayed"] == "false"
    nothing_moved(app, sandbox, before, text)
    with app.app_context(), db.read() as session:
        rows = ledger_rows(session)
    assert [(r.outcome, r.operation, r.amount, r.idempotency_key, r.upstream_key) for r in rows] == \
        [("dry_run", "deposit", "10", key, None)]
    # It claimed nothing: the real call is the first, credits, and is not a replay.
    real = deposit(client, text, BODY)
    assert real.status_code == 200 and real.headers["Idempotent-Replayed"] == "false"
    assert real.headers["Idempotency-Key"] == key and len(credits(sandbox)) == 1


def test_after_the_real_call_a_dry_run_would_replay_and_adds_no_replay_row(app, client, token, sandbox):
    deposit(client, token, BODY)
    answer = dry(client, token)
    assert answer.get_json()["would"] == "replay" and answer.headers["Idempotent-Replayed"] == "false"
    assert len(credits(sandbox)) == 1 and sandbox.state.snapshot()["calls"] == {"deposit": 1}
    with app.app_context(), db.read() as session:
        assert [r.outcome for r in ledger_rows(session)] == ["credited", "dry_run"]


def test_a_charge_dry_run_would_charge_even_with_money_there(app, client, token, sandbox):
    deposit(client, token, {"user": "acme:u1", "amount": "50"})
    answer = client.post("/v1/user/charge?dry_run=true", json={"user": "acme:u1", "amount": "5"}, headers=auth(token))
    assert answer.status_code == 200 and answer.get_json()["would"] == "charge"
    assert sandbox.state.snapshot()["charges"] == [] and sandbox.state.snapshot()["balances"]["acme:u1"] == "50"


def test_dry_runs_never_appear_in_the_deposits_feed(client, token):
    dry(client, token)
    assert client.get("/v1/relay/deposits", headers=auth(token)).get_json()["data"] == []
    deposit(client, token, BODY)
    dry(client, token)
    assert [d["amount"] for d in client.get("/v1/relay/deposits", headers=auth(token)).get_json()["data"]] == ["10"]


@pytest.mark.parametrize("query", ["dry_run=1", "dry_run=yes", "dry_run=TRUE", "dry_run=True", "dry_run=",
                                   "dry_run=on", "dry_run=true%00", "dry_run=%20true", "dry_run=true&dry_run=true",
                                   "dry_run=true&dry_run=false", "dry_run=false&dry_run=true"])
def test_a_dry_run_value_that_is_not_exactly_true_or_false_moves_nothing_and_says_so(app, client, token, sandbox, query):
    answer = dry(client, token, path=f"/v1/user/balance/deposit?{query}")
    assert answer.status_code == 422
    problem = answer.get_json()
    assert problem["type"].endswith(":validation") and [e["field"] for e in problem["errors"]] == ["dry_run"]
    assert "true" in problem["errors"][0]["message"]
    nothing_moved(app, sandbox)


def test_dry_run_false_is_the_real_call(client, token, sandbox):
    answer = dry(client, token, path="/v1/user/balance/deposit?dry_run=false")
    assert answer.status_code == 200 and answer.get_json() == {"balanceFormatted": "10.00"}
    assert len(credits(sandbox)) == 1


def _same_problem(a, b):
    strip = lambda body: {k: v for k, v in body.items() if k != "request_id"}  # noqa: E731
    assert (a.status_code, strip(a.get_json())) == (b.status_code, strip(b.get_json()))


def test_a_client_key_bound_to_other_fields_is_refused_as_the_real_call_is(app, client, token, sandbox):
    deposit(client, token, BODY, headers={"Idempotency-Key": "zap-step-1"})
    other = {**BODY, "amount": "12"}
    dry_answer = dry(client, token, other, headers={"Idempotency-Key": "zap-step-1"})
    real_answer = deposit(client, token, other, headers={"Idempotency-Key": "zap-step-1"})
    assert dry_answer.status_code == 422 and dry_answer.get_json()["type"].endswith(":idempotency-key-reused")
    _same_problem(dry_answer, real_answer)
    assert len(credits(sandbox)) == 1


def test_an_event_reused_under_a_narrowed_token_is_refused_as_the_real_call_is(client, make_token, sandbox):
    _, text = make_token(dedupe_on=["user", "metadata.reference"])
    deposit(client, text, BODY)
    other = {**BODY, "amount": "12"}
    _same_problem(dry(client, text, other), deposit(client, text, other))


@pytest.mark.parametrize("limit, spec, status", [
    ("max_amount", {"max_amount": "5"}, 403), ("user_pattern", {"user_pattern": "other:.*"}, 403),
    ("operation", {"operations": ["charge"]}, 403), ("daily_cap", {"daily_cap": "5"}, 403),
    ("monthly_cap", {"monthly_cap": "5"}, 403)])
def test_a_token_limit_refuses_a_dry_run_as_it_refuses_the_real_call(app, client, make_token, sandbox, limit, spec, status):
    _, text = make_token(**spec)
    dry_answer = dry(client, text)
    assert dry_answer.status_code == status and dry_answer.get_json()["limit"] == limit
    nothing_moved(app, sandbox)
    _same_problem(dry_answer, deposit(client, text, BODY))


def test_over_a_partly_used_cap_a_dry_run_says_what_remains_and_reserves_nothing(app, client, make_token, sandbox):
    _, text = make_token(daily_cap="25")
    deposit(client, text, {**BODY, "metadata": {"reference": "in_0"}})
    for _ in range(3):  # dry runs reserve nothing: they can be repeated, and the real call still fits
        assert dry(client, text).get_json()["remaining"] == {"today": "5", "this_month": None}
    assert deposit(client, text, BODY).status_code == 200
    over = dry(client, text, {**BODY, "metadata": {"reference": "in_2"}})
    assert over.status_code == 403 and over.get_json()["remaining"] == "5"
    _same_problem(over, deposit(client, text, {**BODY, "metadata": {"reference": "in_2"}}))


def test_a_dry_run_while_the_same_event_is_in_flight_waits_as_the_real_call_would(make_app, make_token_on, sandbox):
    app = make_app(RELAY_INFLIGHT_WAIT=0.3)
    _, text = make_token_on(app)
    client = app.test_client()
    sandbox.state.faults.append({"kind": "latency", "seconds": 1.5, "count": 1, "endpoint": "deposit"})
    first = {}
    thread = threading.Thread(target=lambda: first.setdefault("answer", deposit(app.test_client(), text, BODY)))
    thread.start()
    try:
        from conftest import wait_for
        wait_for(lambda: sandbox.state.snapshot()["calls"].get("deposit") == 1)
        during = dry(client, text)
        assert during.status_code == 409 and during.get_json()["type"].endswith(":idempotency-in-flight")
        assert "Retry-After" in during.headers
    finally:
        thread.join()
    assert first["answer"].status_code == 200
    assert dry(client, text).get_json()["would"] == "replay"
    assert len(credits(sandbox)) == 1


def test_a_dry_run_on_an_unconfirmed_event_would_resend_and_keeps_its_reservation(app, client, make_token, sandbox):
    _, text = make_token(daily_cap="100")
    sandbox.state.faults.append({"kind": "respond", "status": 200, "body": "{}", "apply": True, "count": 1,
                                 "endpoint": "deposit"})
    assert deposit(client, text, BODY).status_code == 502
    held = usage(app, text)
    answer = dry(client, text)
    assert answer.status_code == 200 and answer.get_json()["would"] == "credit"
    assert answer.get_json()["remaining"] == {"today": "90", "this_month": None}  # the reservation it keeps
    assert usage(app, text) == held
    with app.app_context(), db.read() as session:
        assert [row.state for row in key_rows(session)] == ["ambiguous"]


def test_a_dry_run_with_a_bad_body_gets_the_real_validation_problem(app, client, token, sandbox):
    bad = {"user": "bob@example.com", "amount": "1.234"}
    _same_problem(dry(client, token, bad), deposit(client, token, bad))
    nothing_moved(app, sandbox)


def test_the_ledger_export_lists_dry_runs_under_their_own_outcome(app, client, token):
    dry(client, token)
    deposit(client, token, BODY)
    with app.app_context(), db.read() as session:
        assert [r.outcome for r in ledger_rows(session)] == ["dry_run", "credited"]
    assert "dry_run" in ledger.OUTCOMES
