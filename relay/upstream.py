"""The Paywalls API client: one pooled requests session, bounded retries, one Idempotency-Key per call.

Every call ends in one of four outcomes. The difference between `not_applied` and
`ambiguous` is what keeps money right: only the latter may have changed a balance.
"""

import json as jsonlib
import os
import random
import time
from dataclasses import dataclass, field

import requests
from prometheus_client import Counter
from requests.adapters import HTTPAdapter

from . import __version__, messages

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
OPERATOR_PROBLEM_STATUS = {401, 403}  # the relay's own key was refused: not the caller's fault
CALLS = Counter("relay_upstream_calls_total", "Calls to Paywalls by final outcome", ["path", "outcome"])


@dataclass
class Outcome:
    kind: str  # ok | rejected | not_applied | ambiguous
    status: int | None = None
    body: dict | None = None
    message: str = ""
    attempts: int = 0
    latency_ms: int = 0
    retry_after: int | None = None
    timed_out: bool = False
    extra: dict = field(default_factory=dict)


class Upstream:
    def __init__(self, config: dict):
        self.base_url = config["PAYWALLS_BASE_URL"].rstrip("/")
        self.key = config["PAYWALLS_API_KEY"]
        self.connect_timeout = config["RELAY_CONNECT_TIMEOUT"]
        self.read_timeout = config["RELAY_READ_TIMEOUT"]
        self.budget = config["RELAY_UPSTREAM_BUDGET"]
        self.retries = config["RELAY_UPSTREAM_RETRIES"]
        self.user_agent = f"paywalls-relay/{__version__}"
        if "\r" in self.key or "\n" in self.key:
            raise ValueError("PAYWALLS_API_KEY must be one line")
        self.session = _session(self.base_url)

    def call(self, method: str, path: str, *, json=None, params=None, idempotency_key=None) -> Outcome:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": self.user_agent}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        # Prepared once for every attempt, without the session's merging (default headers, cookies, environment):
        # the relay sets every header itself, Paywalls' cookies are never sent back, and proxies were read once
        # in _session().
        prepared = requests.Request(method, self.base_url + path, headers=headers, json=json, params=params).prepare()
        started = time.monotonic()
        deadline = started + self.budget
        outcome = Outcome("not_applied")
        for attempt in range(self.retries + 1):
            outcome = self._attempt(prepared, deadline, outcome)
            outcome.attempts = attempt + 1
            wait = self._wait_before_retry(outcome, attempt, deadline)
            if wait is None:
                break
            time.sleep(wait)
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
        CALLS.labels(path, outcome.kind).inc()
        return outcome

    def _attempt(self, prepared: requests.PreparedRequest, deadline, previous: Outcome) -> Outcome:
        # Once an attempt may have landed, the call stays ambiguous until a definite answer.
        maybe_landed = previous.kind == "ambiguous"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return previous
        timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
        try:
            response = self.session.send(prepared, timeout=timeout, allow_redirects=False, proxies=self.session.proxies)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            why = "SSLError" if isinstance(error, requests.exceptions.SSLError) else "ConnectTimeout"
            return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why=why))
        except requests.ReadTimeout:
            return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
        except requests.RequestException as error:
            if _refused(error):  # nothing was sent
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
            return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)
        return self._classify(response, maybe_landed)

    @staticmethod
    def _failed(maybe_landed: bool, message: str) -> Outcome:
        return Outcome("ambiguous" if maybe_landed else "not_applied", message=message)

    def _classify(self, response, maybe_landed: bool) -> Outcome:
        status = response.status_code
        body = _json_or_none(response)
        message = _upstream_message(body, response)
        if 200 <= status < 300:
            if isinstance(body, dict):
                return Outcome("ok", status, body)
            return Outcome("ambiguous", status, message=messages.UPSTREAM_NO_JSON)
        if status == 429:
            kind = "ambiguous" if maybe_landed else "not_applied"
            return Outcome(kind, status, body, messages.UPSTREAM_RATE_LIMITED, retry_after=_retry_after(response))
        if status in RETRYABLE_STATUS or status >= 500:
            return Outcome("ambiguous", status, body, messages.UPSTREAM_SERVER_ERROR.format(status=status, message=message),
                           retry_after=_retry_after(response))
        if status in OPERATOR_PROBLEM_STATUS:
            kind = "ambiguous" if maybe_landed else "not_applied"
            return Outcome(kind, status, body, messages.UPSTREAM_KEY_REFUSED)
        return Outcome("rejected", status, body, message)

    def _wait_before_retry(self, outcome: Outcome, attempt: int, deadline: float) -> float | None:
        if outcome.kind in ("ok", "rejected") or attempt >= self.retries:
            return None
        if outcome.status in OPERATOR_PROBLEM_STATUS:
            return None
        backoff = random.uniform(0, min(4.0, 0.2 * 2**attempt))  # full jitter
        wait = max(backoff, outcome.retry_after or 0)
        if time.monotonic() + wait >= deadline - 0.05:
            return None
        return wait


def _session(base_url: str) -> requests.Session:
    """One pooled session. The environment (proxies, CA bundle) is read once here rather than on
    every call, and ~/.netrc never: it could replace the Authorization header."""
    session = requests.Session()
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _refused(error) -> bool:
    text = repr(error)
    return "Connection refused" in text or "ConnectionRefusedError" in text or "NewConnectionError" in text


def _json_or_none(response):
    try:
        return jsonlib.loads(response.content)
    except ValueError:
        return None


def _upstream_message(body, response) -> str:
    if isinstance(body, dict):
        for name in ("message", "error", "detail"):
            if isinstance(body.get(name), str):
                return body[name]
    return response.reason or f"HTTP {response.status_code}"


def _retry_after(response) -> int | None:
    value = response.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None
