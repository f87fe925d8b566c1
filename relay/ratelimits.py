"""Request rate limits with the `limits` library: Redis when REDIS_URL is set (shared by every
relay process), process memory otherwise."""

import math
import time
from contextlib import contextmanager

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from . import messages


class RateLimits:
    def __init__(self, config: dict):
        self.storage = storage_from_string(config["REDIS_URL"] or "memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.auth_failure_limit = parse(config["RELAY_AUTH_FAILURE_LIMIT"])

    def _retry_after(self, limit, *keys) -> int:
        reset_at, _remaining = self.limiter.get_window_stats(limit, *keys)
        return max(1, math.ceil(reset_at - time.time()))

    def hit(self, rate: str, *keys) -> int | None:
        """Count one request; None if allowed, else seconds until it would be."""
        limit = parse(rate)
        if self.limiter.hit(limit, *keys):
            return None
        return self._retry_after(limit, *keys)

    def auth_blocked(self, client: str) -> int | None:
        if self.limiter.test(self.auth_failure_limit, "auth-failure", client):
            return None
        return self._retry_after(self.auth_failure_limit, "auth-failure", client)

    def auth_failed(self, client: str):
        self.limiter.hit(self.auth_failure_limit, "auth-failure", client)

    @contextmanager
    def guarding_auth(self, client: str):
        """Refuse a client over its failed-authentication limit; count a refusal raised inside."""
        wait = self.auth_blocked(client)
        if wait:
            raise messages.rate_limited(wait, "auth")
        try:
            yield
        except messages.Problem:
            self.auth_failed(client)
            raise
