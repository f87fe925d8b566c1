"""Issue 4: replays, mismatches, races and crashes all end in exactly one credit."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import (auth, base_settings, credits, deposit, gunicorn_relay, key_rows, migrated_token,
                      needs_postgres, postgres_database, sqlite_url, wait_for)
from relay import db, tokens
from relay.keys import header_key, upstream_key

INVOICE = {"reason": "subscription_renewal", "invoice_id": "in_1"}


def test_replay_returns_the_stored_answer_with_the_header(client, token, sandbox):
    first = deposit(client, token, metadata=INVOICE)
    second = deposit(client, token, metadata=INVOICE)
    assert first.status_code == second.status_code == 200
    assert first.headers["Idempotent-Replayed"] == "false"
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["Idempotency-Key"].startswith("pwk1_")
    assert second.get_json() == first.get_json() == {"balanceFormatted": "10.00"}
    assert len(credits(sandbox)) == 1
    assert sandbox.state.snapshot()["calls"]["deposit"] == 1


def test_spellings_of_an_amount_and_metadata_order_are_one_deposit(client, token, sandbox):
    deposit(client, token, {"user": "u1", "amount": "7.5", "metadata": {"a": 1, "b": 2}})
    again = deposit(client, token, {"user": "u1", "amount": "7.50", "metadata": {"b": 2, "a": 1}})
    number = deposit(client, token, {"user": "u1", "amount": 7.5, "metadata": {"b": 2.0, "a": 1}})
    assert again.headers["Idempotent-Replayed"] == number.headers["Idempotent-Replayed"] == "true"
    assert [c["amount"] for c in credits(sandbox)] == ["7.5"]


def test_a_new_invoice_id_is_a_new_deposit(client, token, sandbox):
    deposit(client, token, metadata=INVOICE)
    deposit(client, token, metadata={**INVOICE, "invoice_id": "in_2"})
    assert len(credits(sandbox)) == 2
    assert sandbox.state.snapshot()["balances"]["acme:user_1"] == "20"


def test_same_key_with_different_fields_is_422(client, token, sandbox):
    headers = {"Idempotency-Key": "order-42"}
    assert deposit(client, token, headers=headers).status_code == 200
    response = deposit(client, token, {"user": "acme:user_1", "amount": "11"}, headers=headers)
    assert response.status_code == 422
    assert response.get_json()["type"] == "urn:paywalls-relay:problem:idempotency-key-reused"
    assert len(credits(sandbox)) == 1


def test_client_key_bare_and_quoted_are_the_same_key(client, token, sandbox):
    bare = deposit(client, token, headers={"Idempotency-Key": "evt_123"})
    quoted = deposit(client, token, headers={"Idempotency-Key": '"evt_123"'})
    assert bare.headers["Idempotency-Key"] == quoted.headers["Idempotency-Key"] == "evt_123"
    assert quoted.headers["Idempotent-Replayed"] == "true"
    assert len(credits(sandbox)) == 1


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_bad_client_keys_are_refused(value):
    from relay.messages import Problem
    with pytest.raises(Problem) as refused:
        header_key(value)
    assert refused.value.status == 422
    assert refused.value.extra["errors"][0]["field"] == "Idempotency-Key"


def test_keys_are_scoped_per_token(client, make_token, sandbox):
    _, first = make_token()
    _, second = make_token()
    deposit(client, first)
    other = deposit(client, second)
    assert other.headers["Idempotent-Replayed"] == "false"
    assert len(credits(sandbox)) == 2


def test_tokens_sharing_a_namespace_dedupe_together(client, make_token, sandbox):
    _, zapier = make_token(namespace="billing")
    _, n8n = make_token(namespace="billing")
    deposit(client, zapier, metadata=INVOICE)
    assert deposit(client, n8n, metadata=INVOICE).headers["Idempotent-Replayed"] == "true"
    assert len(credits(sandbox)) == 1


def test_token_dedupe_fields_narrow_the_key(client, make_token, sandbox):
    _, text = make_token(dedupe_on=["user", "metadata.invoice_id"])
    deposit(client, text, metadata=INVOICE)
    replay = deposit(client, text, metadata={**INVOICE, "reason": "goodwill"})
    # Same invoice, other fields: the key matches but the fingerprint does not.
    assert replay.status_code == 422
    assert len(credits(sandbox)) == 1


def test_upstream_sees_the_event_s_own_key_not_the_client_key(app, client, token, sandbox):
    first = deposit(client, token, headers={"Idempotency-Key": "evt_9"})
    sent = credits(sandbox)[0]["idempotency_key"]
    assert sent.startswith("pwr1_") and "evt_9" not in sent
    token_id = tokens.split(token)[0]
    with app.app_context(), db.read() as session:
        [row] = key_rows(session)
    assert first.headers["Idempotency-Key"] == "evt_9" and row.key.startswith("pwk1_")
    assert sent == upstream_key(token_id, row.key, 0, row.nonce)
    # Another client key for the same fields is the same event: no second call, the same upstream key.
    again = deposit(client, token, headers={"Idempotency-Key": "evt_other"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Idempotency-Key"] == "evt_other"
    assert sandbox.state.snapshot()["calls"]["deposit"] == 1


def test_credit_then_dropped_connection_then_retry_is_one_credit(make_app, make_token, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=0)
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "t"})
    client = app.test_client()
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "drop_after_credit"})
    first = deposit(client, text, metadata=INVOICE)
    assert first.status_code == 502
    assert first.get_json()["type"] == "urn:paywalls-relay:problem:upstream-ambiguous"
    assert "safe" in first.get_json()["detail"]
    assert len(credits(sandbox)) == 1  # it did land
    retry = deposit(client, text, metadata=INVOICE)
    assert retry.status_code == 200
    assert retry.get_json() == {"balanceFormatted": "10.00"}
    assert len(credits(sandbox)) == 1
    assert sandbox.state.snapshot()["calls"]["deposit"] == 2  # re-driven, absorbed upstream


def test_an_ambiguous_outcome_keeps_its_cap_reservation(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=0)
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "t", "daily_cap": "15"})
    client = app.test_client()
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "drop_after_credit"})
    assert deposit(client, text).status_code == 502
    # Another deposit of 10 would overrun the cap if the first one landed: refused.
    other = deposit(client, text, metadata={"n": 2})
    assert other.status_code == 403 and other.get_json()["remaining"] == "5"
    assert deposit(client, text).status_code == 200  # the retry re-drives within its own reservation
    assert client.get("/v1/relay/me", headers=auth(text)).get_json()["usage"]["today"] == "10"


def test_declined_charge_can_be_retried_after_a_top_up(client, token, sandbox):
    body = {"user": "u9", "amount": "5", "metadata": {"job": "render-1"}}
    first = client.post("/v1/user/charge", json=body, headers=auth(token))
    assert first.status_code == 200 and first.get_json()["success"] is False
    deposit(client, token, {"user": "u9", "amount": "10"})
    second = client.post("/v1/user/charge", json=body, headers=auth(token))
    assert second.get_json()["success"] is True
    assert second.headers["Idempotent-Replayed"] == "false"
    third = client.post("/v1/user/charge", json=body, headers=auth(token))
    assert third.headers["Idempotent-Replayed"] == "true"
    assert sandbox.state.snapshot()["balances"]["u9"] == "5"
    keys = [c["idempotency_key"] for c in sandbox.state.snapshot()["charges"]]
    assert len(keys) == 1


def test_upstream_4xx_is_final_and_replayed(client, token, sandbox):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "status", "status": 400})
    first = deposit(client, token)
    second = deposit(client, token)
    assert first.status_code == second.status_code == 400
    assert first.get_json()["type"] == "urn:paywalls-relay:problem:upstream-rejected"
    assert second.headers["Idempotent-Replayed"] == "true"
    assert sandbox.state.snapshot()["calls"]["deposit"] == 1


def test_purge_forgets_old_keys(app, client, token, sandbox):
    from datetime import timedelta

    from relay import claims
    from relay.models import utcnow
    deposit(client, token)
    with app.app_context(), db.write() as connection:
        assert claims.purge(connection, utcnow() - timedelta(days=30)) == 0
        assert claims.purge(connection, utcnow() + timedelta(seconds=1)) == 1
    assert deposit(client, token).headers["Idempotent-Replayed"] == "false"


# --- races, in real processes ---------------------------------------------------------------------------------

def slow_sandbox(sandbox, seconds=0.5, count=1):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"),
                  json={"kind": "latency", "seconds": seconds, "count": count})


def storm(url, text, body, n=50):
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        return requests.post(url + "/v1/user/balance/deposit", json=body, headers=auth(text), timeout=30)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def assert_one_credit(responses, sandbox):
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {200, 409}, statuses
    assert sum(r.headers.get("Idempotent-Replayed") == "false" for r in responses if r.status_code == 200) == 1
    assert sandbox.state.snapshot()["calls"]["deposit"] == 1
    assert len(credits(sandbox)) == 1


def test_50_concurrent_identical_deposits_make_one_upstream_call_sqlite(sandbox, tmp_path):
    url = sqlite_url(tmp_path)
    text = migrated_token(url, operations=["deposit"])
    slow_sandbox(sandbox)
    with gunicorn_relay(base_settings(url, sandbox.url), workers=2, threads=25) as (relay_url, _):
        responses = storm(relay_url, text, {"user": "u1", "amount": "10", "metadata": INVOICE})
    assert_one_credit(responses, sandbox)


@needs_postgres
def test_50_concurrent_identical_deposits_two_processes_postgres(sandbox):
    with postgres_database() as url:
        text = migrated_token(url, operations=["deposit"])
        slow_sandbox(sandbox)
        settings = base_settings(url, sandbox.url)
        with gunicorn_relay(settings, workers=1, threads=25) as (a, _), \
                gunicorn_relay(settings, workers=1, threads=25) as (b, _):
            barrier = threading.Barrier(50)

            def one(i):
                barrier.wait()
                target = a if i % 2 else b
                return requests.post(target + "/v1/user/balance/deposit", json={"user": "u1", "amount": "10"},
                                     headers=auth(text), timeout=30)

            with ThreadPoolExecutor(50) as pool:
                responses = list(pool.map(one, range(50)))
    assert_one_credit(responses, sandbox)


LEASE = 15.0


def _sigkill_then_retry(sandbox, url):
    text = migrated_token(url)
    # The lease must outlast a worker's restart, which takes several seconds on a loaded machine: the early retry
    # has to meet the dead worker's claim still fresh.
    settings = base_settings(url, sandbox.url, RELAY_LOCK_TIMEOUT=LEASE, RELAY_READ_TIMEOUT=1.0,
                             RELAY_UPSTREAM_BUDGET=1.0, RELAY_RECORD_BUDGET=0.0)
    slow_sandbox(sandbox, seconds=1.5)
    body = {"user": "u1", "amount": "10", "metadata": INVOICE}
    with gunicorn_relay(settings, workers=1, threads=4) as (relay_url, master):
        worker = _worker_pid(master.pid)
        pending = ThreadPoolExecutor(1).submit(requests.post, relay_url + "/v1/user/balance/deposit", json=body,
                                               headers=auth(text), timeout=30)
        wait_for(lambda: sandbox.state.snapshot()["calls"].get("deposit") == 1)
        claimed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)  # mid-call: the sandbox is still sleeping before it credits
        with pytest.raises(requests.RequestException):
            pending.result()
        wait_for(lambda: len(credits(sandbox)) == 1, seconds=5)  # the first attempt did land
        wait_for(lambda: _worker_pid(master.pid) not in (None, worker), seconds=15)
        early = requests.post(relay_url + "/v1/user/balance/deposit", json=body, headers=auth(text), timeout=30)
        assert time.monotonic() - claimed_at < LEASE
        assert early.status_code == 409  # the dead worker's claim is still fresh
        time.sleep(max(0.0, claimed_at + LEASE + 0.2 - time.monotonic()))
        retry = requests.post(relay_url + "/v1/user/balance/deposit", json=body, headers=auth(text), timeout=30)
    assert retry.status_code == 200, retry.text
    assert len(credits(sandbox)) == 1
    assert sandbox.state.snapshot()["calls"]["deposit"] == 2


def test_worker_killed_mid_call_then_retry_is_one_credit_sqlite(sandbox, tmp_path):
    _sigkill_then_retry(sandbox, sqlite_url(tmp_path))


@needs_postgres
def test_worker_killed_mid_call_then_retry_is_one_credit_postgres(sandbox):
    with postgres_database() as url:
        _sigkill_then_retry(sandbox, url)


def _worker_pid(master_pid: int):
    try:
        children = open(f"/proc/{master_pid}/task/{master_pid}/children").read().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def test_a_duplicate_in_flight_waits_then_gets_409_with_retry_after(make_app, sandbox):
    from werkzeug.serving import make_server
    app = make_app(RELAY_INFLIGHT_WAIT=0.3, RELAY_READ_TIMEOUT=5.0)
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "t"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1/user/balance/deposit"
    slow_sandbox(sandbox, seconds=1.5)
    try:
        first = ThreadPoolExecutor(1).submit(requests.post, url, json={"user": "u", "amount": "1"}, headers=auth(text))
        wait_for(lambda: sandbox.state.snapshot()["calls"].get("deposit") == 1)
        started = time.monotonic()
        second = requests.post(url, json={"user": "u", "amount": "1"}, headers=auth(text), timeout=10)
        waited = time.monotonic() - started
        assert second.status_code == 409 and second.headers["Retry-After"] == "1"
        assert second.json()["type"] == "urn:paywalls-relay:problem:idempotency-in-flight"
        assert second.headers["Idempotency-Key"] == first.result().headers["Idempotency-Key"]
        assert waited >= 0.3
        assert first.result().status_code == 200
        third = requests.post(url, json={"user": "u", "amount": "1"}, headers=auth(text), timeout=10)
        assert third.headers["Idempotent-Replayed"] == "true"
    finally:
        server.shutdown()
    assert len(credits(sandbox)) == 1
