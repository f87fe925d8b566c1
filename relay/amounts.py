"""Money amounts: parsed with Decimal, never float; one canonical text form."""

from decimal import Decimal, InvalidOperation

# Amounts are stored as integers of millionths, so caps compare exactly in any database.
MICROS = Decimal(1_000_000)


def parse(value) -> Decimal | None:
    """The exact decimal value of a string or JSON number, or None if it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        value = repr(value)  # shortest round-trip text, as JavaScript's String(n)
    try:
        amount = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return amount if amount.is_finite() else None


def canonical(value) -> str:
    """Canonical decimal text: no exponent, sign, leading or trailing zeros ("10.00" -> "10")."""
    amount = parse(value)
    if amount is None:
        raise ValueError(f"not a decimal amount: {value!r}")
    text = format(abs(amount), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    integer, dot, fraction = text.partition(".")
    integer = integer.lstrip("0") or "0"
    return integer + dot + fraction


def fraction_digits(amount: Decimal) -> int:
    """Significant fraction digits ("2.50" has 1)."""
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent)


def to_micros(amount) -> int:
    return int(parse(amount) * MICROS)


def from_micros(micros: int | None) -> str | None:
    return None if micros is None else canonical(Decimal(micros) / MICROS)
