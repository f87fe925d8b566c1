"""The relay's sense of time, injected so lock expiry, token expiry and cap rollover are tested without sleeping.

Wall-clock time (`now`) dates rows and picks cap periods; monotonic time (`monotonic`, `sleep`) bounds waits.
The app holds one Clock in `app.extensions["relay.clock"]`; tests swap in a ManualClock.
"""

import threading
import time
from datetime import datetime, timedelta, timezone

from flask import current_app


class Clock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float):
        time.sleep(seconds)


class ManualClock(Clock):
    """A clock that moves only when told to. `sleep` advances it instead of waiting."""

    def __init__(self, start: datetime):
        self._now = start
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float):
        self.advance(seconds)

    def advance(self, seconds: float):
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def set(self, moment: datetime):
        with self._lock:
            self._mono += max(0.0, (moment - self._now).total_seconds())
            self._now = moment


def current() -> Clock:
    return current_app.extensions["relay.clock"]


def now() -> datetime:
    return current_app.extensions["relay.clock"].now()
