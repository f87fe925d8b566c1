"""A simulated Paywalls upstream: the three balance endpoints, Idempotency-Key handling, and
fault injection that tests drive through /_sandbox/*. It also acts as Paywalls' webhooks: subscriptions
(/v1/webhooks/subscriptions, a whsec_ secret shown once) and signed deliveries of the balance events
(sandbox_webhooks.py) to every active subscription and to a statically configured URL.

It runs embedded (sandbox mode: no PAYWALLS_API_KEY) or standalone (`paywalls-relay sandbox`).
State lives in memory, so one sandbox is one process.
"""

import contextlib
import hmac
import json
import os
import random
import secrets
import socket
import threading
import time
from collections import defaultdict
from decimal import Decimal
from urllib.parse import quote

from flask import Flask, Response, abort, jsonify, request
from werkzeug.serving import make_server

from . import amounts, sandbox_webhooks

# status: answer `status` before doing anything; rate_limit: 429 with Retry-After; latency: wait `seconds` first;
# drop_after_credit: apply it, then drop the connection; respond: answer `status` with the raw `body` (and
# `headers`), after applying it when `apply` is true (odd 2xx shapes, redirects); trickle: apply it, then send
# the answer one byte every `interval` seconds.
FAULT_KINDS = {"status", "rate_limit", "latency", "drop_after_credit", "respond", "trickle"}
TOPUP_MESSAGE = "Insufficient balance: {user} needs to top up. Authorize or top up at https://sandbox.paywalls.invalid/topup?user={user}"
TOPUP_URL = "https://sandbox.paywalls.invalid/topup?user={user}"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.balances = defaultdict(Decimal)
        self.deposits, self.charges, self.faults = [], [], []
        self.calls = defaultdict(int)
        self.answers = {}  # Idempotency-Key -> (status, body), as Paywalls retains keys
        self.key_locks = defaultdict(threading.Lock)
        self.bad_auth = 0
        self.topups = []  # users a top-up link was asked for
        # Webhook subscriptions and delivery attempts (sandbox_webhooks.py); the static target survives a reset.
        self.subscriptions = {}
        self.deliveries = []
        self.webhook_target = getattr(self, "webhook_target", None)

    def take_fault(self, endpoint: str):
        with self.lock:
            for fault in self.faults:
                if fault.get("endpoint") in (None, endpoint) and fault["count"] > 0:
                    fault["count"] -= 1
                    return dict(fault)
        return None

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "balances": {user: amounts.canonical(b) for user, b in self.balances.items()},
                "deposits": list(self.deposits),
                "charges": list(self.charges),
                "calls": dict(self.calls),
                "faults": [f for f in self.faults if f["count"] > 0],
                "bad_auth": self.bad_auth,
                "topups": list(self.topups),
                "subscriptions": [sandbox_webhooks.public(s) for s in self.subscriptions.values()],
                "webhook_deliveries": list(self.deliveries),
            }


def formatted(balance: Decimal) -> str:
    return f"{balance:.2f}" if balance == balance.quantize(Decimal("0.01")) else amounts.canonical(balance)


CONTROL_HEADER = "X-Sandbox-Control"


def create_sandbox_app(api_key: str | None = None, control_secret: str | None = None, latency_ms: float = 0,
                       jitter_ms: float = 0, webhook_url: str | None = None, webhook_secret: str | None = None) -> Flask:
    """`control_secret`: the /_sandbox/* endpoints (faults, reset, balances) require it in X-Sandbox-Control.
    The embedded sandbox makes one per start, so nothing else on the machine can tamper with it.

    `latency_ms` (plus a random 0..`jitter_ms`): how long every Paywalls call waits before it is handled, as an
    internet round trip does (make bench's IO-bound scenario). It waits holding no lock, so concurrent calls
    overlap as they would on the real network; the `latency` fault adds to it for one call."""
    if latency_ms < 0 or jitter_ms < 0:
        raise ValueError("latency_ms and jitter_ms must not be negative")
    app = Flask("paywalls-sandbox")
    state = State()
    if webhook_url:
        state.webhook_target = {"url": webhook_url, "secret": webhook_secret or ""}
    app.extensions["sandbox.state"] = state
    emitter = sandbox_webhooks.Emitter(state)
    app.extensions["sandbox.webhooks"] = emitter
    app.extensions["sandbox.latency"] = (latency_ms / 1000, jitter_ms / 1000)

    def round_trip():
        latency, jitter = app.extensions["sandbox.latency"]
        if latency or jitter:
            time.sleep(latency + (random.uniform(0, jitter) if jitter else 0))

    @app.before_request
    def check_key():
        if request.path.startswith("/_sandbox"):
            presented = request.headers.get(CONTROL_HEADER, "")
            if control_secret and not hmac.compare_digest(presented.encode(), control_secret.encode()):
                return jsonify(error=f"The sandbox's control endpoints need its {CONTROL_HEADER} secret"), 403
            return None
        if api_key and request.headers.get("Authorization") != f"Bearer {api_key}":
            with state.lock:
                state.bad_auth += 1
            return jsonify(error="Invalid API key"), 401
        round_trip()
        return None

    def drop_connection():
        sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        return "", 204

    def trickle(data: bytes, interval: float):
        def chunks():
            for byte in data:
                time.sleep(interval)
                yield bytes([byte])
        return Response(chunks(), 200, {"Content-Length": str(len(data))}, mimetype="application/json")

    def money_call(endpoint: str, apply):
        with state.lock:
            state.calls[endpoint] += 1
        fault = state.take_fault(endpoint)
        if fault and fault["kind"] == "status":
            return jsonify(error=f"Simulated upstream error {fault['status']}"), fault["status"]
        if fault and fault["kind"] == "rate_limit":
            return jsonify(error="Too many requests"), 429, {"Retry-After": str(fault.get("retry_after", 1))}
        body = request.get_json(silent=True) or {}
        user, amount = body.get("user") or request.headers.get("X-Paywall-User"), body.get("amount")
        if not user or amounts.parse(amount) is None or amounts.parse(amount) <= 0:
            return jsonify(error="user and a positive amount are required"), 400
        if fault and fault["kind"] == "respond" and not fault.get("apply"):
            return fault.get("body", ""), fault["status"], fault.get("headers", {})
        key = request.headers.get("Idempotency-Key")
        with state.key_locks[key] if key else contextlib.nullcontext():
            if fault and fault["kind"] == "latency":
                time.sleep(fault.get("seconds", 1))
            if key and key in state.answers:
                status, answer = state.answers[key]
                return jsonify(answer), status
            with state.lock:
                answer = apply(user, amounts.parse(amount), body.get("metadata"), key)
                if key:
                    state.answers[key] = (200, answer)
                balance = state.balances[user]
            # Paywalls' webhooks for what just happened, delivered from a thread after this answer (never for a
            # replayed key: nothing happened again).
            emitter.balance_events(endpoint, user, amounts.parse(amount), answer, balance)
            if fault and fault["kind"] == "drop_after_credit":
                return drop_connection()
            if fault and fault["kind"] == "respond":
                return fault.get("body", ""), fault["status"], fault.get("headers", {})
            if fault and fault["kind"] == "trickle":
                return trickle(json.dumps(answer).encode(), fault.get("interval", 0.5))
            return jsonify(answer), 200

    @app.post("/v1/user/balance/deposit")
    def deposit():
        def apply(user, amount, metadata, key):
            state.balances[user] += amount
            state.deposits.append({"user": user, "amount": amounts.canonical(amount), "metadata": metadata,
                                   "idempotency_key": key})
            return {"balanceFormatted": formatted(state.balances[user])}
        return money_call("deposit", apply)

    @app.post("/v1/user/charge")
    def charge():
        def apply(user, amount, metadata, key):
            if state.balances[user] < amount:
                return {"success": False, "message": TOPUP_MESSAGE.format(user=user)}
            state.balances[user] -= amount
            state.charges.append({"user": user, "amount": amounts.canonical(amount), "metadata": metadata,
                                  "idempotency_key": key})
            return {"success": True, "message": "Charged"}
        return money_call("charge", apply)

    @app.get("/v1/user/balance")
    def balance():
        with state.lock:
            state.calls["balance"] += 1
        fault = state.take_fault("balance")
        if fault and fault["kind"] == "respond":
            return fault.get("body", ""), fault["status"], fault.get("headers", {})
        if fault and fault["kind"] == "status":
            return jsonify(error=f"Simulated upstream error {fault['status']}"), fault["status"]
        if fault and fault["kind"] == "latency":
            time.sleep(fault.get("seconds", 1))
        user = request.args.get("user") or request.headers.get("X-Paywall-User")
        if not user:
            return jsonify(error="user is required"), 400
        with state.lock:
            value = state.balances[user]
        return jsonify(balance=str(int(value * amounts.MICROS)), balanceFormatted=formatted(value))

    @app.get("/v1/user/balance/topup")
    def topup():
        with state.lock:
            state.calls["topup"] += 1
        fault = state.take_fault("topup")
        if fault and fault["kind"] == "respond":
            return fault.get("body", ""), fault["status"], fault.get("headers", {})
        if fault and fault["kind"] == "status":
            return jsonify(error=f"Simulated upstream error {fault['status']}"), fault["status"]
        user = request.args.get("user") or request.headers.get("X-Paywall-User")
        if not user:
            return jsonify(error="user is required"), 400
        with state.lock:
            state.topups.append(user)
        return jsonify(url=TOPUP_URL.format(user=quote(user, safe="")), user=user)

    sandbox_webhooks.register(app, state, emitter)

    @app.get("/_sandbox/state")
    def get_state():
        return jsonify(state.snapshot())

    @app.post("/_sandbox/reset")
    def reset():
        with state.lock:
            state.reset()
        return jsonify(ok=True)

    @app.post("/_sandbox/faults")
    def add_fault():
        fault = request.get_json(force=True)
        if fault.get("kind") not in FAULT_KINDS:
            abort(400, f"kind must be one of {sorted(FAULT_KINDS)}")
        fault.setdefault("count", 1)
        with state.lock:
            state.faults.append(fault)
        return jsonify(fault), 201

    @app.put("/_sandbox/balances/<user>")
    def set_balance(user):
        value = amounts.parse((request.get_json(force=True) or {}).get("balance"))
        if value is None:
            abort(400, "balance must be a decimal")
        with state.lock:
            state.balances[user] = value
        return jsonify(user=user, balance=amounts.canonical(value))

    return app


class Server:
    """A sandbox served from a background thread (embedded mode and tests)."""

    def __init__(self, host="127.0.0.1", port=0, api_key=None, control_secret=None, latency_ms=0, jitter_ms=0,
                 webhook_url=None, webhook_secret=None):
        self.control_secret = control_secret
        self.app = create_sandbox_app(api_key, control_secret, latency_ms, jitter_ms, webhook_url, webhook_secret)
        self.server = make_server(host, port, self.app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="sandbox")

    @property
    def state(self) -> State:
        return self.app.extensions["sandbox.state"]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.app.extensions["sandbox.webhooks"].stop()

    def send_webhooks_to(self, url: str | None, secret: str | None = None):
        """Deliver every event also to `url`, signed with `secret` (dev-stack: the relay's own intake)."""
        with self.state.lock:
            self.state.webhook_target = {"url": url, "secret": secret or ""} if url else None


_embedded: Server | None = None
_embedded_lock = threading.Lock()


def ensure_embedded(api_key: str) -> str:
    """The URL of this process's embedded sandbox, started once (or inherited from a gunicorn master)."""
    if os.environ.get("RELAY_SANDBOX_URL"):
        return os.environ["RELAY_SANDBOX_URL"]
    return embedded().url


def embedded(host: str = "127.0.0.1") -> Server:
    """This process's embedded sandbox, started on first use on a free port of `host`, with a control secret
    drawn for this start (`paywalls-relay dev-stack` hands it to the test suites)."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            _embedded = Server(host, 0, api_key=None, control_secret=secrets.token_urlsafe(24)).start()
        return _embedded
