"""Usage bars and the credits-per-day chart, drawn as SVG geometry on the server.

Every size is an SVG attribute (never a style attribute), so the CSP needs no 'unsafe-inline' and the page needs
no chart library. Each figure carries its numbers as text too (aria-label and a table), for screen readers."""

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import func, select

from .. import amounts
from ..db import dialect_name
from ..models import LedgerEntry

BAR_WIDTH = 200


def bar(used_micros: int, cap_micros: int | None) -> dict:
    """A usage bar: used against the cap (no cap: no bar, just the number)."""
    used = amounts.from_micros(used_micros)
    if cap_micros is None:
        return {"used": used, "cap": None, "width": 0, "percent": None, "level": "none"}
    fraction = min(1.0, used_micros / cap_micros) if cap_micros else 1.0
    percent = int(round(used_micros * 100 / cap_micros)) if cap_micros else 100
    level = "full" if used_micros >= cap_micros else "high" if fraction >= 0.8 else "ok"
    return {"used": used, "cap": amounts.from_micros(cap_micros), "width": round(fraction * BAR_WIDTH, 1),
            "percent": percent, "level": level, "left": amounts.from_micros(max(0, cap_micros - used_micros))}


def micros(value: str | None) -> int:
    return amounts.to_micros(value) if value is not None else 0


def credits_per_day(session, token_id: str, today: date, days: int = 30) -> list[tuple[date, int]]:
    """The amounts credited to users through a token on each of the last `days` UTC days, today included."""
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    if dialect_name(session) == "postgresql":
        day = func.date(func.timezone("UTC", LedgerEntry.created_at))
    else:
        day = func.date(LedgerEntry.created_at)
    rows = session.execute(
        select(day, func.sum(LedgerEntry.amount_micros))
        .where(LedgerEntry.token_id == token_id, LedgerEntry.outcome == "credited", LedgerEntry.created_at >= since)
        .group_by(day)).all()
    by_day = {(d if isinstance(d, date) else date.fromisoformat(str(d))): int(total or 0) for d, total in rows}
    return [(first + timedelta(days=n), by_day.get(first + timedelta(days=n), 0)) for n in range(days)]


CHART = {"width": 620, "height": 180, "left": 56, "bottom": 28, "top": 10}


def _nice_ceiling(value: int) -> int:
    """A round top for the axis (1, 2 or 5 times a power of ten, in whole units) above `value` micros."""
    if value <= 0:
        return 1_000_000
    unit = 1_000_000
    while True:
        for step in (1, 2, 5):
            if step * unit >= value:
                return step * unit
        unit *= 10


def chart(series: list[tuple[date, int]]) -> dict:
    """Bars of a per-day series, with a y axis of three labelled lines."""
    width, height = CHART["width"], CHART["height"]
    plot_w = width - CHART["left"] - 8
    plot_h = height - CHART["bottom"] - CHART["top"]
    top = _nice_ceiling(max((v for _, v in series), default=0))
    slot = plot_w / max(1, len(series))
    bars = []
    for index, (day, value) in enumerate(series):
        h = round(value / top * plot_h, 1)
        bars.append({"x": round(CHART["left"] + index * slot + 1, 1), "y": round(CHART["top"] + plot_h - h, 1),
                     "w": round(max(1.0, slot - 2), 1), "h": h, "day": day.isoformat(),
                     "amount": amounts.from_micros(value), "label": index % 5 == 0 or index == len(series) - 1})
    grid = [{"y": round(CHART["top"] + plot_h - plot_h * share, 1), "label": amounts.from_micros(int(top * share))}
            for share in (0, 0.5, 1)]
    total = sum(v for _, v in series)
    return {"bars": bars, "grid": grid, "total": amounts.from_micros(total), **CHART, "plot_h": plot_h,
            "axis_y": CHART["top"] + plot_h, "right": width - 8,
            "summary": f"Credits per day over the last {len(series)} days: {amounts.from_micros(total)} in all"}
