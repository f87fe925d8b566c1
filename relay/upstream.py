"""The Paywalls API client: one pooled requests session, bounded retries, one Idempotency-Key per call.

Every call ends in one of five transport outcomes, and only `ok` can be a success (money.py then checks
the body's documented shape). The difference between `not_applied` and `ambiguous` is what keeps money
right: only the latter may have changed a balance.

- ok: a 2xx with a JSON object body;
- rejected: a 4xx that says the call itself is wrong (final);
- not_applied: nothing reached Paywalls' books (connection refused, 401/403 on the relay's own key, 429);
- ambiguous: it may have applied (timeout, dropped connection, 5xx, 408, 409, a 2xx without a JSON object);
- redirected: a 3xx. Paywalls' API never redirects, so this is the relay's configuration (an http:// base
  URL, a proxy, a login page): nothing was applied, and it is never stored as a final answer.

Each call has a hard deadline, `RELAY_UPSTREAM_BUDGET`, that covers connecting, waiting and reading the body:
an upstream that trickles its answer byte by byte is cut off at the deadline like one that never answers.
The idempotency lease (`RELAY_LOCK_TIMEOUT`) is longer than that deadline (config.py checks it), so no
duplicate can take a key over while its call is still running.
"""

import heapq
import itertools
import json as jsonlib
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from prometheus_client import Counter
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import __version__, messages, metrics
from .config import server_threads

log = logging.getLogger("relay.upstream")

# 408 and 409 say "not now" about this very request: it may have applied, and retrying it with the same
# Idempotency-Key is how to find out.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
OPERATOR_PROBLEM_STATUS = {401, 403}  # the relay's own key was refused: not the caller's fault
MAX_MESSAGE = 300
PROBE_MAX_AGE = 30.0  # seconds a readiness verdict on the key is reused
PROBE_USER = "paywalls-relay:readiness"  # a read of this user's balance checks the key and changes nothing
CALLS = Counter("relay_upstream_calls_total", "Calls to Paywalls by final outcome", ["path", "outcome"])


@dataclass
class Outcome:
    kind: str  # ok | rejected | not_applied | ambiguous | redirected
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
        self._key_refused = False  # so a wrong key is logged at ERROR once, not on every call
        self._key_lock = threading.Lock()
        self._probe: tuple[float, str] | None = None  # (when, verdict) of the last readiness probe
        # Called with Retry-After (seconds or None) on every 429: a bulk run (relay/bulk.py) slows all its rows
        # down, not just the one that was told to wait.
        self.on_rate_limited: list = []
        self._templates: dict = {}  # (method, path) -> a PreparedRequest without key or body (_prepare)

    def note_key(self, status: int | None):
        """Paywalls' verdict on the relay's own key, from any answer: an ERROR line when it turns to refused."""
        if status is None or 300 <= status < 400 or status >= 500 or status == 429:
            return
        refused = status in OPERATOR_PROBLEM_STATUS
        with self._key_lock:
            newly = refused and not self._key_refused
            self._key_refused = refused
        if newly:
            log.error("Paywalls refused the relay's API key (HTTP %s from %s): set PAYWALLS_API_KEY to the paywall's "
                      "secret key (sk-paywalls-...) from the Paywalls dashboard and restart. Money calls fail until "
                      "then; nothing is applied.", status, self.host)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def key_verdict(self, max_age: float = PROBE_MAX_AGE) -> str:
        """accepted, refused or unknown (...): a cheap authenticated read (a balance look-up), at most one per
        `max_age` seconds per process, so readiness probes cost Paywalls nothing."""
        now = time.monotonic()
        cached = self._probe
        if cached and now - cached[0] < max_age:
            return cached[1]
        prepared = requests.Request("GET", self.base_url + "/user/balance", params={"user": PROBE_USER}, headers={
            "Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": self.user_agent}).prepare()
        try:
            response = self.session.send(prepared, timeout=(self.connect_timeout, min(self.read_timeout, 5.0)),
                                         allow_redirects=False, proxies=self.session.proxies)
            status = response.status_code
            response.close()
        except requests.RequestException as error:
            verdict = f"unknown (Paywalls unreachable: {type(error).__name__})"
        else:
            self.note_key(status)
            if status in OPERATOR_PROBLEM_STATUS:
                verdict = "refused"
            elif 300 <= status < 400:
                verdict = f"unknown (Paywalls answered {status}: check PAYWALLS_BASE_URL)"
            elif status >= 500 or status == 429:
                verdict = f"unknown (Paywalls answered {status})"
            else:
                verdict = "accepted"
        self._probe = (now, verdict)
        return verdict

    def call(self, method: str, path: str, *, json=None, params=None, idempotency_key=None) -> Outcome:
        # Prepared once for every attempt, without the session's merging (default headers, cookies, environment):
        # the relay sets every header itself, Paywalls' cookies are never sent back, and proxies were read once
        # in _session().
        prepared = self._prepare(method, path, json, params, idempotency_key)
        started = time.monotonic()
        deadline = started + self.budget
        outcome = Outcome("not_applied")
        for attempt in range(self.retries + 1):
            outcome = self._attempt(prepared, deadline, outcome)
            outcome.attempts = attempt + 1
            if outcome.status == 429:
                for listener in list(self.on_rate_limited):
                    listener(outcome.retry_after)
            wait = self._wait_before_retry(outcome, attempt, deadline)
            if wait is None:
                break
            time.sleep(wait)
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
        CALLS.labels(path, outcome.kind).inc()
        metrics.UPSTREAM_SECONDS.labels(path).observe(outcome.latency_ms / 1000)
        self.note_key(outcome.status)
        if outcome.kind == "redirected":
            log.error("Paywalls answered %s to %s %s: PAYWALLS_BASE_URL (%s) must be the API's own https:// URL",
                      outcome.status, method, path, self.base_url)
        return outcome

    def _prepare(self, method: str, path: str, json, params, idempotency_key: str | None) -> requests.PreparedRequest:
        """The request for one call. A money call copies a request prepared once per path (URL, fixed headers) and
        adds its key and body: preparing the URL and headers anew took a tenth of the relay's CPU per deposit."""
        if params is not None:
            headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": self.user_agent}
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            return requests.Request(method, self.base_url + path, headers=headers, json=json, params=params).prepare()
        template = self._templates.get((method, path))
        if template is None:
            template = requests.Request(method, self.base_url + path, headers={
                "Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": self.user_agent,
            }).prepare()
            self._templates[(method, path)] = template
        prepared = template.copy()
        if idempotency_key:
            header = ("Idempotency-Key", idempotency_key)
            requests.utils.check_header_validity(header)  # as prepare() does: no CR/LF, no leading blanks
            prepared.headers[header[0]] = header[1]
        prepared.prepare_body(None, None, json)
        return prepared

    def _attempt(self, prepared: requests.PreparedRequest, deadline, previous: Outcome) -> Outcome:
        # Once an attempt may have landed, the call stays ambiguous until a definite answer.
        maybe_landed = previous.kind == "ambiguous"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return previous
        timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
        watch = WATCHDOG.arm(deadline)
        try:
            response = self.session.send(prepared, timeout=timeout, allow_redirects=False, proxies=self.session.proxies)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as error:
            if watch.fired:
                return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
            why = "SSLError" if isinstance(error, requests.exceptions.SSLError) else "ConnectTimeout"
            return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why=why))
        except requests.ReadTimeout:
            return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
        except requests.RequestException as error:
            if watch.fired:  # cut off at the deadline, possibly mid-body
                return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
            if _refused(error):  # nothing was sent
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
            return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)
        finally:
            WATCHDOG.disarm(watch)
        if watch.fired:
            return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
        return self._classify(response, maybe_landed)

    @staticmethod
    def _failed(maybe_landed: bool, message: str) -> Outcome:
        return Outcome("ambiguous" if maybe_landed else "not_applied", message=message)

    def _classify(self, response, maybe_landed: bool) -> Outcome:
        status = response.status_code
        body = _json_object(response)
        message = _upstream_message(body, response)
        if 200 <= status < 300:
            if body is not None:
                return Outcome("ok", status, body)
            return Outcome("ambiguous", status, message=messages.UPSTREAM_NO_JSON)
        if 300 <= status < 400:
            # Not applied: a redirect is answered before any handler runs. Never final, never retried.
            return Outcome("redirected", status, body, messages.UPSTREAM_REDIRECTED.format(status=status))
        if status == 429:
            kind = "ambiguous" if maybe_landed else "not_applied"
            return Outcome(kind, status, body, messages.UPSTREAM_RATE_LIMITED, retry_after=_retry_after(response))
        if status in RETRYABLE_STATUS or status >= 500 or status < 200:
            return Outcome("ambiguous", status, body, messages.UPSTREAM_SERVER_ERROR.format(status=status, message=message),
                           retry_after=_retry_after(response))
        if status in OPERATOR_PROBLEM_STATUS:
            kind = "ambiguous" if maybe_landed else "not_applied"
            return Outcome(kind, status, body, messages.UPSTREAM_KEY_REFUSED)
        return Outcome("rejected", status, body, message)

    def _wait_before_retry(self, outcome: Outcome, attempt: int, deadline: float) -> float | None:
        if outcome.kind in ("ok", "rejected", "redirected") or attempt >= self.retries:
            return None
        if outcome.status in OPERATOR_PROBLEM_STATUS or outcome.timed_out and time.monotonic() >= deadline:
            return None
        backoff = random.uniform(0, min(4.0, 0.2 * 2**attempt))  # full jitter
        wait = max(backoff, outcome.retry_after or 0)
        if time.monotonic() + wait >= deadline - 0.05:
            return None
        return wait


# --- the hard deadline ---------------------------------------------------------------------------------------
# requests' read timeout bounds each wait for a byte, not the whole answer. The watchdog holds the deadline of
# every call in flight and shuts the call's socket down when it passes, which ends any read at once.

_calling = threading.local()


class _Watch:
    __slots__ = ("deadline", "sock", "fired", "done")

    def __init__(self, deadline: float):
        self.deadline, self.sock, self.fired, self.done = deadline, None, False, False


class _Watchdog:
    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list = []
        self._order = itertools.count()
        self._pid = None

    def arm(self, deadline: float) -> _Watch:
        watch = _Watch(deadline)
        _calling.watch = watch
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (gunicorn forks workers)
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, daemon=True, name="upstream-watchdog").start()
            # The watchdog sleeps until the earliest deadline: only an earlier one needs it now. Every call has the
            # same budget, so that is rarely the case, and a call no longer wakes a second thread (a thread switch
            # and a GIL hand-over per call). Finished watches are dropped when their deadline comes round.
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if earliest is None or deadline < earliest:
                self._cond.notify()
        return watch

    def disarm(self, watch: _Watch):
        with self._cond:
            watch.done = True
            watch.sock = None  # it stays in the heap until its deadline: keep no socket alive with it
        _calling.watch = None

    def _run(self):
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, watch = heapq.heappop(self._heap)
                watch.fired = True
                sock = watch.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


WATCHDOG = _Watchdog()


def _note_socket(connection):
    # The socket itself, not the connection: http.client drops conn.sock when the answer says
    # "Connection: close", while the response goes on reading from the same socket.
    watch = getattr(_calling, "watch", None)
    if watch is not None:
        watch.sock = connection.sock


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args, **kwargs):
        try:
            return super().request(*args, **kwargs)
        finally:
            _note_socket(self)


class _WatchedHTTPSConnection(HTTPSConnection):
    # Its own method, not _WatchedHTTPConnection's: a zero-argument super() there names _WatchedHTTPConnection,
    # which an HTTPS connection is not, so every https:// call (Paywalls itself) raised TypeError.
    def request(self, *args, **kwargs):
        try:
            return super().request(*args, **kwargs)
        finally:
            _note_socket(self)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connections the watchdog can cut (also through an HTTP proxy)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are their own classes
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def _session(base_url: str) -> requests.Session:
    """One pooled session. The environment (proxies, CA bundle) is read once here rather than on
    every call, and ~/.netrc never: it could replace the Authorization header."""
    session = requests.Session()
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    # One kept-alive connection per thread that may call at once: beyond pool_maxsize urllib3 would open and
    # discard a connection per call (a TLS handshake each, in production).
    adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=max(64, server_threads()))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _refused(error) -> bool:
    text = repr(error)
    return "Connection refused" in text or "ConnectionRefusedError" in text or "NewConnectionError" in text


def _json_object(response) -> dict | None:
    """The body when it is a JSON object, else None: an array, a string, HTML, or NaN and Infinity (which the
    relay could not pass on as JSON) are never a Paywalls answer."""
    try:
        body = jsonlib.loads(response.content, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _upstream_message(body, response) -> str:
    if isinstance(body, dict):
        for name in ("message", "error", "detail"):
            if isinstance(body.get(name), str):
                return body[name][:MAX_MESSAGE]
    return (response.reason or f"HTTP {response.status_code}")[:MAX_MESSAGE]


def _retry_after(response) -> int | None:
    value = response.headers.get("Retry-After", "")
    return min(int(value), 3600) if value.isascii() and value.isdigit() else None  # "²".isdigit() is True
