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
