"""The Paywalls API client: one connection pool, bounded retries, one Idempotency-Key per call.

Every call ends in one of four outcomes. The difference between `not_applied` and
`ambiguous` is what keeps money right: only the latter may have changed a balance.
"""

import http.client
import json as jsonlib
import os
import random
import select
import socket
import ssl
import threading
import time
from collections import namedtuple
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from prometheus_client import Counter
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError,
                                SSLError)

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
        # Not requests: it costs about three times the CPU per call (measured for bench/results.md).
        # Proxies and the CA bundle come from the environment as requests would find them, read once;
        # ~/.netrc is not read (it could replace the Authorization header with other credentials).
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") \
            or requests.utils.DEFAULT_CA_BUNDLE_PATH
        scheme = self.base_url.split("://", 1)[0]
        proxy = requests.utils.get_environ_proxies(self.base_url).get(scheme)
        pools = {"num_pools": 4, "maxsize": 64, "block": False, "ca_certs": ca_bundle, "cert_reqs": "CERT_REQUIRED"}
        self.manager = urllib3.ProxyManager(proxy, **pools) if proxy else urllib3.PoolManager(**pools)
        self.base_path = urllib3.util.parse_url(self.base_url).path or ""
        self.user_agent = f"paywalls-relay/{__version__}"
        if "\r" in self.key or "\n" in self.key:
            raise ValueError("PAYWALLS_API_KEY must be one line")
        # Without a proxy, calls go over the relay's own kept-alive connections (see _Connections).
        self.connections = None if proxy else _Connections(self.base_url, ca_bundle)

    def call(self, method: str, path: str, *, json=None, params=None, idempotency_key=None) -> Outcome:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": self.user_agent}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        started = time.monotonic()
        deadline = started + self.budget
        outcome = Outcome("not_applied")
        for attempt in range(self.retries + 1):
            outcome = self._attempt(method, path, headers, json, params, deadline, outcome)
            outcome.attempts = attempt + 1
            wait = self._wait_before_retry(outcome, attempt, deadline)
            if wait is None:
                break
            time.sleep(wait)
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
        CALLS.labels(path, outcome.kind).inc()
        return outcome

    def _attempt(self, method, path, headers, json, params, deadline, previous: Outcome) -> Outcome:
        # Once an attempt may have landed, the call stays ambiguous until a definite answer.
        maybe_landed = previous.kind == "ambiguous"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return previous
        timeout = urllib3.Timeout(connect=min(self.connect_timeout, remaining), read=min(self.read_timeout, remaining))
        query = "?" + urlencode(params) if params else ""
        body = None
        if json is not None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        if self.connections is not None:
            return self._attempt_direct(method, self.base_path + path + query, headers, body, timeout, maybe_landed)
        try:
            # Through a proxy: urllib3. retries=False: one attempt here, redirects not followed.
            response = self.manager.urlopen(method, self.base_url + path + query, body=body, headers=headers,
                                            timeout=timeout, retries=False, redirect=False)
        except NewConnectionError as error:  # a subclass of ConnectTimeoutError: first
            if _refused(error):
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
            return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)
        except (ConnectTimeoutError, SSLError) as error:
            why = "ConnectTimeout" if isinstance(error, ConnectTimeoutError) else "SSLError"
            return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why=why))
        except ReadTimeoutError:
            return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
        except (HTTPError, OSError) as error:
            if _refused(error):
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
            return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)
        return self._classify(response, maybe_landed)

    def _attempt_direct(self, method, target, headers, body, timeout, maybe_landed: bool) -> Outcome:
        """One attempt on a kept-alive connection. Until the request is written nothing can have
        landed; after that, a failure is ambiguous. The same outcomes as the urllib3 path."""
        sock = self.connections.take()
        if sock is None:
            try:
                sock = self.connections.connect(timeout.connect_timeout)
            except ssl.SSLError:
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="SSLError"))
            except TimeoutError:
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="ConnectTimeout"))
            except OSError as error:
                if _refused(error):
                    return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
                return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)  # e.g. a name that did not resolve
        try:
            sock.settimeout(timeout.read_timeout)
            sock.sendall(self.connections.request(method, target, headers, body))
            response = http.client.HTTPResponse(sock, method=method)
            response.begin()
            data = response.read()
        except TimeoutError:
            sock.close()
            return Outcome("ambiguous", message=messages.UPSTREAM_TIMEOUT, timed_out=True)
        except (OSError, http.client.HTTPException) as error:
            sock.close()
            if _refused(error):
                return self._failed(maybe_landed, messages.UPSTREAM_CONNECT_FAILED.format(why="connection refused"))
            return Outcome("ambiguous", message=messages.UPSTREAM_DROPPED)
        if response.will_close:
            sock.close()
        else:
            self.connections.give_back(sock)
        return self._classify(_Answer(response.status, response.reason, data, response.msg), maybe_landed)

    @staticmethod
    def _failed(maybe_landed: bool, message: str) -> Outcome:
        return Outcome("ambiguous" if maybe_landed else "not_applied", message=message)

    def _classify(self, response, maybe_landed: bool) -> Outcome:
        status = response.status
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


_Answer = namedtuple("_Answer", "status reason data headers")


class _Connections:
    """Kept-alive HTTP/1.1 connections to the upstream host, most recently used first.

    Each request is written in one piece and its answer parsed by http.client: about 40% less CPU and
    0.25 ms less per call than urllib3 here (bench/results.md). A connection the server has closed
    while idle is noticed (readable before use) and replaced, as urllib3 does.
    """

    def __init__(self, base_url: str, ca_bundle: str, maxsize: int = 64):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.context = ssl.create_default_context(cafile=ca_bundle) if self.https else None
        self.idle, self.lock, self.maxsize = [], threading.Lock(), maxsize

    def connect(self, timeout: float):
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def take(self):
        with self.lock:
            while self.idle:
                sock = self.idle.pop()
                if not _readable(sock):
                    return sock
                sock.close()  # the server closed it (or sent something unasked): not reusable
        return None

    def give_back(self, sock):
        with self.lock:
            if len(self.idle) < self.maxsize:
                self.idle.append(sock)
                return
        sock.close()

    def request(self, method: str, target: str, headers: dict, body: bytes | None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity",
                 *(f"{name}: {value}" for name, value in headers.items())]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _readable(sock) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _refused(error) -> bool:
    text = repr(error)
    return "Connection refused" in text or "ConnectionRefusedError" in text or "NewConnectionError" in text


def _json_or_none(response):
    try:
        return jsonlib.loads(response.data)
    except ValueError:
        return None


def _upstream_message(body, response) -> str:
    if isinstance(body, dict):
        for name in ("message", "error", "detail"):
            if isinstance(body.get(name), str):
                return body[name]
    return response.reason or f"HTTP {response.status}"


def _retry_after(response) -> int | None:
    value = response.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None
