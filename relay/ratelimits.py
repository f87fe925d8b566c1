"""Request rate limits with the `limits` library: Redis when REDIS_URL is set (shared by every
relay process), process memory otherwise, and process memory while Redis is unreachable."""

import logging
import math
import threading
import time
from contextlib import contextmanager

from limits import parse
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from . import messages

log = logging.getLogger("relay")
# Redis must answer quickly or not at all: a rate limit is not worth a slow request.
REDIS_TIMEOUTS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
RETRY_SHARED_AFTER = 5.0  # seconds on per-process limits before trying Redis again
ERROR_EVERY = 60.0  # seconds between two ERROR lines about an unreachable Redis


def _shared(url: str) -> MovingWindowRateLimiter:
    """A wrong REDIS_URL is a configuration error, refused at start (an unreachable Redis is not)."""
    from .config import ConfigError

    if not url.startswith(("redis://", "rediss://", "redis+unix://", "unix://")):
        raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0")
    try:
        return MovingWindowRateLimiter(storage_from_string(url, **REDIS_TIMEOUTS))
    except (ConfigurationError, ValueError) as error:
        raise ConfigError(f"REDIS_URL is not usable: {type(error).__name__}") from None


class RateLimits:
    def __init__(self, config: dict):
        self.memory = MovingWindowRateLimiter(storage_from_string("memory://"))
        self.shared = _shared(config["REDIS_URL"]) if config["REDIS_URL"] else None
        self.auth_failure_limit = parse(config["RELAY_AUTH_FAILURE_LIMIT"])
        self._lock = threading.Lock()
        self._shared_down_until = 0.0
        self._last_error_logged = -math.inf
        self._shared_error: str | None = None

    def _limiter(self, method: str, *args):
        """Redis when it answers; else this process's memory, so no request fails because Redis did: limits are
        then per process (looser by the number of processes) until Redis is back."""
        if self.shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                result = getattr(self.shared, method)(*args)
                self._shared_error = None
                return result
            except Exception as error:  # redis-py's and the OS's connection errors, whatever the version
                self._shared_failed(error)
        return getattr(self.memory, method)(*args)

    def _shared_failed(self, error: Exception):
        now = time.monotonic()
        with self._lock:
            self._shared_down_until = now + RETRY_SHARED_AFTER
            self._shared_error = type(error).__name__
            if now - self._last_error_logged < ERROR_EVERY:
                return
            self._last_error_logged = now
        log.error("Redis (REDIS_URL) is unreachable (%s): rate limits fall back to per-process memory until it "
                  "answers again. Check REDIS_URL and that Redis is running.", type(error).__name__)

    def status(self) -> str:
        """For /readyz: where limits are counted right now."""
        if self.shared is None:
            return "memory"
        if self._shared_error or time.monotonic() < self._shared_down_until:
            return "memory (Redis unreachable)"
        return "redis"

    def _retry_after(self, limit, *keys) -> int:
        reset_at, _remaining = self._limiter("get_window_stats", limit, *keys)
        return max(1, math.ceil(reset_at - time.time()))

    def hit(self, rate: str, *keys) -> int | None:
        """Count one request; None if allowed, else seconds until it would be."""
        limit = parse(rate)
        if self._limiter("hit", limit, *keys):
            return None
        return self._retry_after(limit, *keys)

    def auth_blocked(self, client: str) -> int | None:
        if self._limiter("test", self.auth_failure_limit, "auth-failure", client):
            return None
        return self._retry_after(self.auth_failure_limit, "auth-failure", client)

    def auth_failed(self, client: str):
        self._limiter("hit", self.auth_failure_limit, "auth-failure", client)

    @contextmanager
    def guarding_auth(self, client: str, valid_always_pass: bool = False):
        """Count a refusal raised inside against the client's failed-authentication limit; over it, answer 429.

        valid_always_pass (relay tokens): the credentials are checked first and valid ones pass whatever the count.
        Zapier, n8n Cloud and Make call from shared egress addresses, so one Zap with a wrong token would otherwise
        lock every other Zap behind the same address out. This gives a guesser no oracle worth having: a relay
        token's secret is 190 random bits. The admin key is chosen by a person and may be guessable, so it is
        blocked before it is checked: over the limit, even the right key gets 429, and a guess learns nothing."""
        if not valid_always_pass:
            wait = self.auth_blocked(client)
            if wait:
                raise messages.rate_limited(wait, "auth")
        try:
            yield
        except messages.Problem:
            wait = self.auth_blocked(client) if valid_always_pass else None
            if wait:
                raise messages.rate_limited(wait, "auth") from None
            self.auth_failed(client)
            raise
