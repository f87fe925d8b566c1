"""The sandbox as Paywalls' webhooks, end to end through dev-stack: a deposit through the relay makes the sandbox sign
and deliver paywall.balance.deposit.created to the relay's own intake, which stores it once; deliveries made wrong on
purpose (bad signature, stale timestamp, the same event twice) are refused or acknowledged without a second copy."""

import uuid

import requests

from conftest import auth, wait_for


def recent(stack, token, event_type=None):
    query = {"limit": 100, **({"type": event_type} if event_type else {})}
    answer = requests.get(stack.relay_url + "/v1/relay/events", params=query, headers=auth(token), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def deliveries(stack, event_id):
    return [d for d in stack.sandbox("GET", "webhooks/deliveries").json()["data"] if d.get("event_id") == event_id]


def settled(stack, event_id, count):
    """The sandbox has finished delivering `event_id` `count` times (its last attempt answered)."""
    return lambda: len([d for d in deliveries(stack, event_id) if d["status"] is not None]) >= count


def test_a_deposit_through_the_relay_comes_back_as_a_signed_paywalls_event(dev_stack):
    user = f"acme:wh_{uuid.uuid4().hex[:8]}"
    token = dev_stack.token(operations=["deposit", "charge", "events"])
    answer = requests.post(dev_stack.relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=10,
                           json={"user": user, "amount": "4"})
    assert answer.status_code == 200
    mine = lambda kind: [e for e in recent(dev_stack, token, kind) if e["data"].get("externalUserId") == user]  # noqa: E731
    wait_for(lambda: mine("paywall.balance.deposit.created"))
    [event] = mine("paywall.balance.deposit.created")
    assert event["paywallId"] == "pw_sandbox" and event["data"]["amount"] == "4"
    # Webhooks are configured (dev-stack's secret), so the relay made no paywall.* copy of its own: one event.
    assert "source" not in event
    # A charge taking the balance to zero: charge.created, charge.completed and depleted.
    requests.post(dev_stack.relay_url + "/v1/user/charge", headers=auth(token), timeout=10,
                  json={"user": user, "amount": "4"}).raise_for_status()
    wait_for(lambda: mine("paywall.balance.depleted"))
    assert len(mine("paywall.balance.charge.completed")) == 1 and len(mine("paywall.balance.charge.created")) == 1
    # A charge with nothing left: charge.failed, insufficient_funds.
    requests.post(dev_stack.relay_url + "/v1/user/charge", headers=auth(token), timeout=10,
                  json={"user": user, "amount": "1"}).raise_for_status()
    wait_for(lambda: mine("paywall.balance.charge.failed"))
    assert mine("paywall.balance.charge.failed")[0]["data"]["errorCode"] == "insufficient_funds"


def emit(stack, mode="normal", **event):
    answer = stack.sandbox("POST", "webhooks/emit", json={"type": "paywall.balance.deposit.created",
                                                           "data": {"externalUserId": "acme:emit"}, **event,
                                                           "mode": mode})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_bad_signature_and_a_stale_timestamp_are_refused_and_stored_nowhere(dev_stack):
    token = dev_stack.token(operations=["events"])
    for mode in ("bad_signature", "stale_timestamp"):
        event = emit(dev_stack, mode, id=f"evt_{mode}_{uuid.uuid4().hex[:8]}")
        wait_for(settled(dev_stack, event["id"], 1))
        # Refused with 401, which Paywalls does not retry.
        assert [d["status"] for d in deliveries(dev_stack, event["id"])] == [401]
        assert event["id"] not in [e["id"] for e in recent(dev_stack, token)]


def test_a_duplicate_delivery_is_acknowledged_and_stored_once(dev_stack):
    token = dev_stack.token(operations=["events"])
    event = emit(dev_stack, "duplicate", id=f"evt_dup_{uuid.uuid4().hex[:8]}")
    wait_for(settled(dev_stack, event["id"], 2))
    assert [d["status"] for d in deliveries(dev_stack, event["id"])] == [202, 200]
    assert [e["id"] for e in recent(dev_stack, token)].count(event["id"]) == 1


def test_an_arbitrary_event_reaches_the_relay(dev_stack):
    token = dev_stack.token(operations=["events"])
    event = emit(dev_stack, type="paywall.balance.topup.link.created", data={"externalUserId": "acme:any"},
                 id=f"evt_any_{uuid.uuid4().hex[:8]}")
    wait_for(lambda: event["id"] in [e["id"] for e in recent(dev_stack, token, "paywall.balance.topup.link.created")])


# --- the subscription API and the deliveries themselves, against a receiver started here ------------------------------

import json  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

from conftest import SANDBOX_KEY  # noqa: E402
from relay import webhooks  # noqa: E402


class Receiver:
    """An HTTP receiver answering the statuses it is given, in turn (then 200), and keeping what it got."""

    def __init__(self, statuses=()):
        self.statuses, self.got = list(statuses), []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=qs-secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def app(self, request):
        self.got.append((dict(request.headers), request.get_data()))
        return Response("", self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for one in made:
        one.server.shutdown()


def paywalls(sandbox, method, path, **kwargs):
    return requests.request(method, sandbox.url + path, headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
                            timeout=10, **kwargs)


def test_the_secret_is_shown_once_and_deliveries_are_signed_with_it(sandbox, receiver):
    target = receiver()
    made = paywalls(sandbox, "POST", "/webhooks/subscriptions",
                    json={"url": target.url, "events": ["paywall.balance.deposit.*"]})
    assert made.status_code == 201
    secret, sub_id = made.json()["secret"], made.json()["id"]
    assert secret.startswith("whsec_") and made.json()["secretSuffix"] == secret[-4:]
    assert "secret" not in paywalls(sandbox, "GET", f"/webhooks/subscriptions/{sub_id}").json()
    assert all("secret" not in s for s in paywalls(sandbox, "GET", "/webhooks/subscriptions").json()["data"])
    paywalls(sandbox, "POST", "/user/balance/deposit", json={"user": "acme:s1", "amount": "2"}).raise_for_status()
    paywalls(sandbox, "POST", "/user/charge", json={"user": "acme:s1", "amount": "1"}).raise_for_status()
    wait_for(lambda: target.got and sandbox.app.extensions["sandbox.webhooks"].idle())
    [(headers, raw)] = target.got  # the charge events do not match paywall.balance.deposit.*
    assert webhooks.verify(secret, raw, headers["X-Paywalls-Signature"])
    assert headers["X-Paywalls-Event"] == "paywall.balance.deposit.created@1"
    assert webhooks.fresh(webhooks.parse_timestamp(headers["X-Paywalls-Timestamp"]),
                          webhooks.parse_timestamp(headers["X-Paywalls-Timestamp"]))
    body = json.loads(raw)
    assert body["delivery"]["subscriptionId"] == sub_id
    assert body["event"]["data"]["externalUserId"] == "acme:s1" and body["event"]["data"]["amount"] == "2"
    # Deactivated: nothing more is delivered to it.
    assert paywalls(sandbox, "DELETE", f"/webhooks/subscriptions/{sub_id}").json()["active"] is False
    paywalls(sandbox, "POST", "/user/balance/deposit", json={"user": "acme:s1", "amount": "2"}).raise_for_status()
    wait_for(lambda: sandbox.app.extensions["sandbox.webhooks"].idle())
    assert len(target.got) == 1


def test_a_replayed_key_emits_nothing(sandbox, receiver):
    target = receiver()
    paywalls(sandbox, "POST", "/webhooks/subscriptions", json={"url": target.url, "events": ["*"]}).raise_for_status()
    for _ in range(2):
        requests.post(sandbox.url + "/user/balance/deposit", json={"user": "acme:r", "amount": "1"}, timeout=10,
                      headers={"Authorization": f"Bearer {SANDBOX_KEY}", "Idempotency-Key": "k-1"}).raise_for_status()
    wait_for(lambda: target.got and sandbox.app.extensions["sandbox.webhooks"].idle())
    assert len(target.got) == 1


def test_retried_on_500_not_on_410_and_the_log_has_no_query_string(sandbox, receiver):
    flaky, gone = receiver([500, 503]), receiver([410])
    for target in (flaky, gone):
        paywalls(sandbox, "POST", "/webhooks/subscriptions", json={"url": target.url, "events": ["*"]}).raise_for_status()
    paywalls(sandbox, "POST", "/user/balance/deposit", json={"user": "acme:t", "amount": "1"}).raise_for_status()
    wait_for(lambda: len(flaky.got) == 3 and sandbox.app.extensions["sandbox.webhooks"].idle())
    assert len(gone.got) == 1
    log = sandbox.state.snapshot()["webhook_deliveries"]
    assert sorted(d["status"] for d in log) == [200, 410, 500, 503]
    assert all("qs-secret" not in d["url"] and "?" not in d["url"] for d in log)


@pytest.mark.parametrize("body", [{}, {"url": "ftp://x"}, {"url": "https://x", "events": ["*", "a"]},
                                  {"url": "https://x", "events": "a"}, {"url": "https://x", "description": "d" * 513}])
def test_a_bad_subscription_is_refused(sandbox, body):
    assert paywalls(sandbox, "POST", "/webhooks/subscriptions", json=body).status_code == 400
    assert sandbox.state.snapshot()["subscriptions"] == []


def test_the_subscription_api_needs_the_key(sandbox):
    assert requests.get(sandbox.url + "/webhooks/subscriptions", timeout=10).status_code == 401


# --- `paywalls-relay run` (make run) and `paywalls-relay sandbox --webhook-url` wire the sandbox's webhooks -------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import free_port, relay_env, sqlite_url, stop_process  # noqa: E402

BIN = os.path.join(os.path.dirname(sys.executable), "paywalls-relay")


def read_line(process, needle, seconds=30):
    deadline, seen = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen += line
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed; got:\n{seen}")


def test_run_in_sandbox_mode_delivers_the_sandboxs_events_to_its_own_intake(tmp_path):
    port = free_port()
    process = subprocess.Popen([BIN, "run", "--port", str(port)], env=relay_env({"DATABASE_URL": sqlite_url(tmp_path)}),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        token = read_line(process, "Demo token").strip().rsplit(" ", 1)[1]
        assert "/v1/webhooks/paywalls" in read_line(process, "Sandbox webhooks")
        base = f"http://127.0.0.1:{port}"
        requests.post(base + "/v1/user/balance/deposit", json={"user": "acme:run_1", "amount": "10"},
                      headers=auth(token), timeout=10).raise_for_status()

        def listed():
            return requests.get(base + "/v1/relay/events", headers=auth(token), timeout=10).json()["data"]

        # A relay-made copy, were there one, was committed with the deposit's ledger row, before the deposit's
        # answer: so once the sandbox's event is listed, both would be.
        wait_for(lambda: listed())
        [event] = listed()
        assert event["type"] == "paywall.balance.deposit.created" and event["paywallId"] == "pw_sandbox"
        assert event["data"]["externalUserId"] == "acme:run_1"
    finally:
        stop_process(process)


def test_the_standalone_sandbox_delivers_to_webhook_url_signed_with_webhook_secret(tmp_path, receiver):
    target, port = receiver(), free_port()
    process = subprocess.Popen([BIN, "sandbox", "--port", str(port), "--webhook-url", target.url,
                                "--webhook-secret", "whsec_standalone_test"], env=relay_env({}), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        read_line(process, "Sandbox upstream listening")
        requests.post(f"http://127.0.0.1:{port}/v1/user/balance/deposit", json={"user": "acme:sa", "amount": "1"},
                      timeout=10).raise_for_status()
        wait_for(lambda: target.got)
        headers, raw = target.got[0]
        assert webhooks.verify("whsec_standalone_test", raw, headers["X-Paywalls-Signature"])
    finally:
        stop_process(process)
    refused = subprocess.run([BIN, "sandbox", "--webhook-url", target.url], env=relay_env({}), cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--webhook-secret" in refused.stderr
