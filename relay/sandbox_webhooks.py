"""The sandbox as Paywalls' webhooks: subscriptions, and signed deliveries of the balance events.

Paywalls' side, as its docs describe it: POST/GET /v1/webhooks/subscriptions, GET/DELETE
/v1/webhooks/subscriptions/{id} (the whsec_ secret is returned once, at creation; later reads show secretSuffix),
GET /v1/webhooks/logs. Each event is delivered as `{"delivery": {...}, "event": {...}}` with X-Paywalls-Event
(type@version), X-Paywalls-Signature (hex HMAC-SHA256 of the raw body keyed with the secret's UTF-8 bytes, as
webhooks.sign) and X-Paywalls-Timestamp (ISO 8601), from a thread after the API call has answered, retried a few
times on anything but a 2xx (not on 400/401/403/404/410/422, as Paywalls).

Tests and dev-stack drive it through /_sandbox/webhooks/*: a static target (the relay's own intake), an arbitrary
event, and deliveries made wrong on purpose (a bad signature, a stale timestamp, the same event twice).
"""

import fnmatch
import json
import queue
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import requests
from flask import abort, jsonify, request

from . import amounts
from .webhooks import sign

NO_RETRY = {400, 401, 403, 404, 410, 422}  # Paywalls does not retry these answers
RETRY_PAUSES = (0.2, 0.5, 1.0)  # then given up: a sandbox's retries are quick, not Paywalls' hours
TIMEOUT = 5.0
MODES = ("normal", "bad_signature", "stale_timestamp", "duplicate")
PAYWALL_ID = "pw_sandbox"


def now_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public(subscription: dict) -> dict:
    """A subscription as Paywalls shows it after creation: without its secret."""
    return {key: value for key, value in subscription.items() if key != "secret"}


def matches(patterns: list[str], event_type: str) -> bool:
    return any(pattern == "*" or fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def _where(url: str) -> str:
    """A target for the delivery log: scheme, host and path; never the query string, which may carry a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Emitter:
    """Events in a queue, delivered by one thread, so an API answer never waits for a webhook."""

    def __init__(self, state):
        self.state = state
        self.queue = queue.Queue()
        self.thread = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # --- what happened -> events --------------------------------------------------------------------------------

    def balance_events(self, endpoint: str, user: str, amount, answer: dict, balance):
        data = {"walletUserId": f"wu_{user}", "externalUserId": user, "amount": amounts.canonical(amount),
                "currency": "USD", "source": "api", "activityId": "act_" + secrets.token_hex(8)}
        if endpoint == "deposit":
            self.emit("paywall.balance.deposit.created", data)
        elif answer.get("success") is True:
            self.emit("paywall.balance.charge.created", data)
            self.emit("paywall.balance.charge.completed", data)
            if balance == 0:
                self.emit("paywall.balance.depleted", {"walletUserId": data["walletUserId"], "externalUserId": user,
                                                       "balance": "0", "currency": "USD"})
        else:
            self.emit("paywall.balance.charge.failed", {**data, "errorCode": "insufficient_funds",
                                                        "message": answer.get("message")})

    def emit(self, event_type: str, data: dict, event_id: str | None = None, mode: str = "normal") -> dict:
        event = {"id": event_id or "evt_" + secrets.token_hex(12), "paywallId": PAYWALL_ID, "ownerUserId": "usr_sandbox",
                 "type": event_type, "version": "1", "createdAt": now_iso(), "status": "pending", "attempts": 0,
                 "data": data}
        self._start()
        self.queue.put((event, mode))
        return event

    # --- delivering ---------------------------------------------------------------------------------------------------

    def _start(self):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.stopping.clear()
                self.thread = threading.Thread(target=self._run, daemon=True, name="sandbox-webhooks")
                self.thread.start()

    def stop(self):
        self.stopping.set()
        self.queue.put(None)

    def idle(self) -> bool:
        return self.queue.unfinished_tasks == 0

    def _targets(self, event_type: str) -> list[dict]:
        with self.state.lock:
            targets = [{"url": s["url"], "secret": s["secret"], "subscription": s["id"],
                        "headers": s.get("customHeaders") or {}}
                       for s in self.state.subscriptions.values() if s["active"] and matches(s["events"], event_type)]
            static = self.state.webhook_target
            if static and static.get("url"):
                targets.append({"url": static["url"], "secret": static["secret"], "subscription": None, "headers": {}})
        return targets

    def _run(self):
        session = requests.Session()
        while not self.stopping.is_set():
            item = self.queue.get()
            try:
                if item is None:
                    return
                event, mode = item
                for target in self._targets(event["type"]):
                    self._deliver(session, target, event, mode)
            except Exception as error:  # a sandbox thread must not die on one odd event
                with self.state.lock:
                    self.state.deliveries.append({"error": type(error).__name__})
            finally:
                self.queue.task_done()

    def _deliver(self, session, target: dict, event: dict, mode: str):
        times = 2 if mode == "duplicate" else 1  # the same event id twice, as a retried delivery would be
        for copy in range(times):
            delivery = {"id": "dlv_" + secrets.token_hex(8), "subscriptionId": target["subscription"],
                        "attempt": copy + 1}
            for attempt, pause in enumerate((0.0, *RETRY_PAUSES), start=1):
                if pause:
                    time.sleep(pause)
                delivery["attempt"] = attempt
                status, error = self._post(session, target, {"delivery": delivery, "event": event}, mode)
                with self.state.lock:
                    self.state.deliveries.append({"event_id": event["id"], "type": event["type"], "mode": mode,
                                                  "url": _where(target["url"]), "attempt": attempt, "status": status,
                                                  "error": error, "subscription": target["subscription"]})
                if status is not None and (200 <= status < 300 or status in NO_RETRY):
                    break

    def _post(self, session, target: dict, body: dict, mode: str):
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        signature = sign(target["secret"], raw)
        if mode == "bad_signature":
            signature = sign(target["secret"] + "-wrong", raw)
        moment = datetime.now(timezone.utc) - (timedelta(minutes=10) if mode == "stale_timestamp" else timedelta(0))
        headers = {**target["headers"], "Content-Type": "application/json",
                   "User-Agent": "paywalls-sandbox-webhooks/1",
                   "X-Paywalls-Event": f"{body['event']['type']}@{body['event']['version']}",
                   "X-Paywalls-Signature": signature, "X-Paywalls-Timestamp": now_iso(moment)}
        try:
            response = session.post(target["url"], data=raw, headers=headers, timeout=TIMEOUT, allow_redirects=False)
            return response.status_code, None
        except requests.RequestException as error:
            return None, type(error).__name__


# --- the HTTP side --------------------------------------------------------------------------------------------------

SUBSCRIPTIONS = "/v1/webhooks/subscriptions"


def _problem(message: str, status: int = 400):
    return jsonify(error=message), status


def register(app, state, emitter: Emitter):
    @app.before_request
    def webhooks_fault():
        """The fault list (/_sandbox/faults, endpoint "webhooks") reaches the subscription API too."""
        if not request.path.startswith("/v1/webhooks/"):
            return None
        fault = state.take_fault("webhooks")
        if fault and fault["kind"] == "status":
            return jsonify(error=f"Simulated upstream error {fault['status']}"), fault["status"]
        if fault and fault["kind"] == "respond":
            return fault.get("body", ""), fault["status"], fault.get("headers", {})
        return None

    @app.post(SUBSCRIPTIONS)
    def create_subscription():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _problem("Send a JSON object: {url, events, description?, customHeaders?, secret?}")
        url, kinds = body.get("url"), body.get("events") or ["*"]
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return _problem("url must be an http(s) URL")
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) and k for k in kinds) \
                or ("*" in kinds and len(kinds) > 1):
            return _problem("events must be a list of event names or patterns, or [\"*\"] alone")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 512):
            return _problem("description must be text of at most 512 characters")
        headers = body.get("customHeaders") or {}
        if not isinstance(headers, dict) or len(headers) > 10:
            return _problem("customHeaders must be an object of at most 10 headers")
        secret = body.get("secret") or "whsec_" + secrets.token_urlsafe(24)
        subscription = {"id": "wh_" + secrets.token_hex(8), "url": url, "events": kinds, "description": description,
                        "customHeaders": headers, "active": True, "createdAt": now_iso(), "secret": secret,
                        "secretSuffix": secret[-4:]}
        with state.lock:
            state.subscriptions[subscription["id"]] = subscription
        return jsonify(subscription), 201  # the only answer that shows the secret

    @app.get(SUBSCRIPTIONS)
    def list_subscriptions():
        with state.lock:
            return jsonify(data=[public(s) for s in state.subscriptions.values()])

    @app.get(SUBSCRIPTIONS + "/<subscription_id>")
    def get_subscription(subscription_id):
        with state.lock:
            subscription = state.subscriptions.get(subscription_id)
        if subscription is None:
            return _problem("no such subscription", 404)
        return jsonify(public(subscription))

    @app.delete(SUBSCRIPTIONS + "/<subscription_id>")
    def delete_subscription(subscription_id):
        with state.lock:
            subscription = state.subscriptions.get(subscription_id)
            if subscription is None:
                return _problem("no such subscription", 404)
            subscription["active"] = False
        return jsonify(public(subscription))

    @app.get("/v1/webhooks/logs")
    def webhook_logs():
        limit = min(int(request.args.get("limit", "100")) if request.args.get("limit", "").isdigit() else 100, 100)
        with state.lock:
            logs = [d for d in state.deliveries if "event_id" in d]
        if request.args.get("eventType"):
            logs = [d for d in logs if d["type"] == request.args["eventType"]]
        return jsonify(data=logs[-limit:][::-1])

    # --- control: tests and dev-stack ---------------------------------------------------------------------------

    @app.put("/_sandbox/webhooks/target")
    def set_target():
        body = request.get_json(force=True) or {}
        with state.lock:
            state.webhook_target = {"url": body["url"], "secret": body.get("secret") or ""} if body.get("url") else None
        return jsonify(target=None if not body.get("url") else {"url": _where(body["url"])})

    @app.post("/_sandbox/webhooks/emit")
    def emit():
        """Emit one event to every target: {type, data?, id?, mode?}; mode bad_signature, stale_timestamp or
        duplicate (the same event id delivered twice) delivers it wrong on purpose."""
        body = request.get_json(force=True) or {}
        if not isinstance(body.get("type"), str) or not body["type"]:
            abort(400, "type is required, e.g. paywall.balance.deposit.created")
        mode = body.get("mode", "normal")
        if mode not in MODES:
            abort(400, f"mode must be one of {list(MODES)}")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        event = emitter.emit(body["type"], data, event_id=body.get("id"), mode=mode)
        return jsonify(event), 202

    @app.get("/_sandbox/webhooks/deliveries")
    def deliveries():
        with state.lock:
            return jsonify(data=list(state.deliveries), idle=emitter.idle())
