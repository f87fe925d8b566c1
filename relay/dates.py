"""Every date a person types (the feed's `since`, a token's `expires_at`, `ledger export --since/--until`) is read
here, by one function, so all of them refuse the same things the same way.

Refused: anything but ASCII ISO 8601 (a date, or a date-time with an optional offset), and moments that exist only
in their own offset: 0001-01-01T00:00:00+01:00 is before year 1 in UTC and 9999-12-31T23:59:59-01:00 after
year 9999, which no Python datetime, and so no comparison or database column, can hold.
"""

import re
from datetime import datetime, timezone

EXAMPLE = "2026-11-01 or 2026-11-01T00:00:00Z"
# ASCII digits only: fromisoformat alone takes some non-ASCII digits, and a trailing newline must not pass.
ISO_8601 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                      r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?")


class DateError(ValueError):
    """Why a text is not a usable date; the message completes "<field> ..."."""


def parse(text) -> datetime:
    """An aware UTC datetime from an ISO 8601 date or date-time (UTC unless an offset is given), or DateError."""
    if not isinstance(text, str) or not ISO_8601.fullmatch(text):
        raise DateError(f"must be an ISO 8601 date or date-time, e.g. {EXAMPLE}")
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        raise DateError(f"is not a calendar date or time of day; use e.g. {EXAMPLE}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise DateError("falls outside the years 0001-9999 once converted to UTC") from None
