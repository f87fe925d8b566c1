"""Scoped relay tokens: the format, how they are stored and checked, what each may do, and its caps.

A token looks like `pwr_` + 12-char public id + 32-char secret + 6-char CRC32 checksum, all
base62, so a double click selects it whole and a scanner can recognise it offline. Only the
SHA-256 of the secret is stored; it is shown once, at creation or rotation.
"""

import hashlib
import hmac
import math
import re
import secrets
import unicodedata
import zlib
from re import _constants as sre_constants  # the regex parser, to vet user patterns
from re import _parser as sre_parse
from datetime import datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace

from limits import parse
import re2
from sqlalchemy import bindparam, select, update

from . import amounts, caps, claims, dates, keys, messages, validation
from .messages import field_error
from .models import Token, as_utc, utcnow

PREFIX = "pwr_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH, SECRET_LENGTH, CHECKSUM_LENGTH = 12, 32, 6  # 32 base62 chars = 190 bits of secret
TOKEN_LENGTH = len(PREFIX) + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
TOKEN_RE = re.compile(rf"^{PREFIX}[0-9A-Za-z]{{{ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH}}}$")
OPERATIONS = ("deposit", "charge", "balance", "ledger", "bulk", "events", "topup")
MAX_PATTERN_LENGTH = 200
DURATION_RE = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


# --- format --------------------------------------------------------------------------------------

def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def new_token() -> tuple[str, str, str]:
    """(public id, secret, token text)."""
    token_id, secret = _random(ID_LENGTH), _random(SECRET_LENGTH)
    body = PREFIX + token_id + secret
    return token_id, secret, body + _checksum(body)


def new_secret_for(token_id: str) -> tuple[str, str]:
    secret = _random(SECRET_LENGTH)
    body = PREFIX + token_id + secret
    return secret, body + _checksum(body)


def split(text: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed token, or None; no database needed."""
    if not TOKEN_RE.fullmatch(text or ""):
        return None
    body, checksum = text[:-CHECKSUM_LENGTH], text[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    rest = body[len(PREFIX):]
    return rest[:ID_LENGTH], rest[ID_LENGTH:]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- authentication --------------------------------------------------------------------------------

def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


_BY_ID = select(Token.__table__).where(Token.__table__.c.id == bindparam("tid"))


def authenticate(session, header: str | None, now: datetime) -> Token:
    """The token behind an Authorization header, or a 401 Problem saying why not."""
    text = bearer(header)
    if text is None:
        raise messages.unauthorized("missing")
    parts = split(text)
    if parts is None:
        raise messages.unauthorized("malformed")
    row = session.execute(_BY_ID, {"tid": parts[0]}).one_or_none()
    # The token's columns as plain attributes: the request path only reads them, and building a
    # (detached) ORM instance cost more than the query.
    token = None if row is None else SimpleNamespace(**row._mapping)
    # Unknown id and wrong secret give the same answer, so a guesser learns nothing.
    if token is None or not hmac.compare_digest(token.secret_hash, hash_secret(parts[1])):
        raise messages.unauthorized("invalid")
    if token.revoked_at is not None:
        raise messages.unauthorized("revoked")
    if token.disabled:
        raise messages.unauthorized("disabled")
    if token.expires_at is not None and as_utc(token.expires_at) <= now:
        raise messages.unauthorized("expired")
    return token


# SKIP LOCKED: when another call on the token is recording its use right now, this one leaves it at that, instead
# of queueing on the token's row until that call commits (PostgreSQL: every call in flight at the minute's turn
# waited on one Lock:transactionid, make bench).
_TOUCH = update(Token.__table__).where(Token.__table__.c.id == select(Token.__table__.c.id).where(
    Token.__table__.c.id == bindparam("tid")).with_for_update(key_share=True, skip_locked=True).scalar_subquery()) \
    .values(last_used_at=bindparam("now"))


def touch(session, token: Token, now: datetime):
    """Record use at most once a minute, so a busy token does not write on every call."""
    if token.last_used_at is None or now - as_utc(token.last_used_at) > timedelta(minutes=1):
        session.execute(_TOUCH, {"tid": token.id, "now": now})


# --- scopes ---------------------------------------------------------------------------------------------

def require_operation(token: Token, operation: str):
    if operation not in token.operations:
        raise messages.operation_not_granted(operation, token.operations)


def authorize_money(token: Token, operation: str, body: dict):
    """Per-call limits of a deposit or charge; caps are reserved later, atomically."""
    require_operation(token, operation)
    micros = amounts.to_micros(body["amount"])
    if token.max_amount_micros is not None and micros > token.max_amount_micros:
        raise messages.over_max_amount(body["amount"], amounts.from_micros(token.max_amount_micros))
    authorize_user(token, body["user"])
    metadata = body.get("metadata") or {}
    missing = [key for key in token.required_metadata if not present(metadata.get(key))]
    if missing:
        raise messages.validation([field_error(f"metadata.{key}", messages.required_metadata(key)) for key in missing])


# Unicode categories that show as nothing: format characters (zero-width space, joiners, BOM), controls, separators.
INVISIBLE_CATEGORIES = {"Cf", "Cc", "Zs", "Zl", "Zp"}


def present(value) -> bool:
    """A required metadata value: text with something visible in it, or a finite number. Not a boolean, a list,
    an object, or blanks (" ", "\n", a zero-width space), which satisfy "required" in name only."""
    if isinstance(value, str):
        return any(not char.isspace() and unicodedata.category(char) not in INVISIBLE_CATEGORIES for char in value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def user_allowed(token: Token, user: str) -> bool:
    return not token.user_pattern or _linear(token.user_pattern).fullmatch(user) is not None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the admin's 422, not a line on stderr
# Matching stays linear in the user id, but a pattern such as .{0,1000}.{0,1000}... compiles to a program big enough
# to take seconds to build in every worker. 1 MiB holds any pattern of 200 characters a person would write.
_RE2_OPTIONS.max_mem = 1 << 20


@lru_cache(maxsize=1024)
def _linear(pattern: str):
    """The pattern compiled for RE2, whose matching time grows linearly with the user id whatever the pattern: Python's
    engine backtracks, and a pattern as plain as [a-z]+:[a-z0-9]*[a-z0-9]*[a-z0-9]* can take seconds per id."""
    return re2.compile(pattern, options=_RE2_OPTIONS)


def authorize_user(token: Token, user: str):
    if not user_allowed(token, user):
        raise messages.user_not_allowed(user)


# --- creating and describing ------------------------------------------------------------------------------

class SpecError(ValueError):
    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def parse_duration(text: str) -> timedelta:
    match = DURATION_RE.fullmatch(text.strip())
    if not match:
        raise ValueError("use a number and a unit: 30s, 15m, 12h or 90d")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def check_user_pattern(pattern: str) -> str:
    """Refuse patterns that are too long or could backtrack catastrophically (ReDoS)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as error:
        raise ValueError(f"is not a valid regular expression ({error})") from None
    try:
        _linear(pattern)
    except re2.error as error:
        why = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"cannot run on the linear-time matcher, RE2 ({why}): it has no back-references or "
                         "look-arounds and refuses patterns that expand too large; e.g. acme:[A-Za-z0-9_]+") from None
    # RE2 alone keeps matching linear; nested repeats are still refused, as before RE2, to keep patterns readable.
    if _risky(parsed, inside_repeat=False):
        raise ValueError("could be very slow to match (a repeated group containing another repeat, an "
                         "alternation or a back-reference); simplify it, e.g. acme:[A-Za-z0-9_]+")
    return pattern


def _risky(parsed, inside_repeat: bool) -> bool:
    for op, arg in parsed:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)):
            if inside_repeat:
                return True
            if _risky(arg[2], inside_repeat=True):
                return True
        elif op == sre_constants.GROUPREF:
            return True
        elif op == sre_constants.BRANCH:
            if inside_repeat:
                return True
            if any(_risky(branch, inside_repeat) for branch in arg[1]):
                return True
        elif op == sre_constants.SUBPATTERN:
            if _risky(arg[-1], inside_repeat):
                return True
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if _risky(arg[1], inside_repeat):
                return True
    return False


def _amount_micros(value) -> int | None:
    """Schema-checked already (a positive decimal below 1,000,000,000); refused here: digits past the millionth, the
    smallest unit a limit is stored in, which a JSON number can carry (0.0000001 would silently become 0)."""
    if value in (None, ""):
        return None
    amount = amounts.parse(value)
    if amount is None or amount <= 0:
        raise ValueError("must be a positive decimal, e.g. 25 or 2.50")
    if amounts.fraction_digits(amount) > 6:
        raise ValueError("has digits below 0.000001, the smallest unit a limit can hold")
    return amounts.to_micros(amount)


def _rate_limit(value) -> str | None:
    if value in (None, ""):
        return None
    try:
        limit = parse(value)
    except ValueError:
        raise ValueError("use a count per period, e.g. 60/minute or 1000/hour") from None
    if limit.amount < 1:  # 0/minute would lock the token out for good
        raise ValueError("must allow at least 1 request per period, e.g. 60/minute")
    return value


def _raise(message):
    raise ValueError(message)


def _none_if_blank(value):
    return None if value in (None, "") else value


# Each setting's schema (schemas/token-settings.json) has checked its type and shape first; these read the
# checked value into its column and refuse what a schema cannot say.
FIELD_PARSERS = {
    "label": lambda v: v.strip() or _raise("must not be only blanks, e.g. 'Zap: Stripe renewals'"),
    "notes": _none_if_blank,
    "operations": lambda v: sorted(set(v), key=OPERATIONS.index),
    "max_amount": _amount_micros,
    "daily_cap": _amount_micros,
    "monthly_cap": _amount_micros,
    "user_pattern": lambda v: None if v in (None, "") else check_user_pattern(v),
    "required_metadata": list,
    "rate_limit": _rate_limit,
    "dedupe_on": list,
    "namespace": _none_if_blank,
    "disabled": lambda v: v,
    "feed": lambda v: "all" if v == "all" else None,  # None: the token's own namespace, or its own deposits
}
COLUMN = {"max_amount": "max_amount_micros", "daily_cap": "daily_cap_micros", "monthly_cap": "monthly_cap_micros"}
DEFAULTS = {"operations": ["deposit"], "required_metadata": [], "dedupe_on": "default"}
SETTINGS_SCHEMA = "token-settings.json"


def _expires_at(spec: dict, now: datetime) -> datetime | None:
    if spec.get("expires_in"):
        return now + parse_duration(spec["expires_in"])
    if spec.get("expires_at"):
        return dates.parse(spec["expires_at"])
    return None


def _schema_errors(spec: dict) -> list[dict]:
    """One error per setting the schema refuses, named by the setting (not "operations.0") and saying the fix."""
    errors = {}
    for error in validation.schema_errors(SETTINGS_SCHEMA, spec):
        name = error["field"].split(".")[0]
        message = messages.SETTING_HINTS.get(name) or messages.not_a_setting(name)
        errors.setdefault(name, field_error(name, message))
    return list(errors.values())


def parse_spec(spec: dict, now: datetime, creating: bool) -> dict:
    """Column values from token settings (admin JSON, or CLI options made into the same object), checked against
    schemas/token-settings.json, or SpecError naming each bad field."""
    if not isinstance(spec, dict):
        raise SpecError([field_error("", "Send the token settings as a JSON object.")])
    errors = _schema_errors(spec)
    if spec.get("expires_in") and "expires_at" in spec and not any(e["field"] == "expires_at" for e in errors):
        errors.append(field_error("expires_at", messages.EXPIRY_TWICE))  # which would win is a guess
    if creating and "label" not in spec:
        errors.append(field_error("label", "label is required, e.g. 'Zap: Stripe renewals'"))
    refused = {error["field"] for error in errors}
    values = {}
    for name, parser in FIELD_PARSERS.items():
        if name not in spec or name in refused:
            continue
        try:
            values[COLUMN.get(name, name)] = parser(spec[name])
        except ValueError as error:
            errors.append(field_error(name, f"{name} {error}"))
    try:
        if ("expires_in" in spec or "expires_at" in spec) and not refused & {"expires_in", "expires_at"}:
            values["expires_at"] = _expires_at(spec, now)
    except ValueError as error:
        field = "expires_in" if spec.get("expires_in") else "expires_at"
        errors.append(field_error(field, f"{field} {error}"))
    if errors:
        raise SpecError(errors)
    if creating:
        for name, default in DEFAULTS.items():
            values.setdefault(name, list(keys.DEFAULT_FIELDS) if default == "default" else list(default))
    return values


def create(session, spec: dict, now: datetime | None = None) -> tuple[Token, str]:
    now = now or utcnow()
    values = parse_spec(spec, now, creating=True)
    token_id, secret, text = new_token()
    values.setdefault("disabled", False)  # may be in the settings: {"disabled": false} is a valid one
    _one_rule_per_namespace(session, values.get("namespace"), values["dedupe_on"], token_id)
    token = Token(id=token_id, secret_hash=hash_secret(secret), created_at=now, **values)
    session.add(token)
    return token, text


def _one_rule_per_namespace(session, namespace: str | None, dedupe_on: list, token_id: str):
    """Tokens share a namespace so that one event arriving through two tools is one credit: that holds only when
    they derive the same event key from it, so every token of a namespace has the same dedupe fields."""
    if not namespace:
        return
    others = session.execute(select(Token.id, Token.dedupe_on).where(Token.namespace == namespace,
                                                                     Token.id != token_id)).all()
    differing = [other.id for other in others if frozenset(other.dedupe_on) != frozenset(dedupe_on)]
    if differing:
        raise messages.namespace_rule_differs(namespace, others[0].dedupe_on, differing)


IDENTITY = ("namespace", "dedupe_on")  # what decides which stored event a request is


def _identity(name: str, value):
    # The order of the dedupe fields does not change the key they derive (schemas/idempotency.md).
    return frozenset(value or []) if name == "dedupe_on" else value


def update_token(session, token: Token, spec: dict, now: datetime | None = None) -> Token:
    """Change a token's settings. Its namespace and dedupe fields decide which stored event a request is, so
    they change only while the token's scope holds no keys: otherwise a replay of an event already credited
    would be a new event, and credited again."""
    values = parse_spec(spec, now or utcnow(), creating=False)
    changing = [name for name in IDENTITY if name in values and _identity(name, values[name]) != _identity(name, getattr(token, name))]
    first_cap = not caps.capped(token) and (values.get("daily_cap_micros") is not None
                                            or values.get("monthly_cap_micros") is not None)
    if changing or first_cap:
        # No claim stores a key under the old identity after the count below, and none that read the token uncapped
        # is still writing when its usage rows are rebuilt.
        claims.hold_new_claims(session.connection())
        session.refresh(token, with_for_update=True)
    if changing:
        count, newest = claims.stored_keys(session.connection(), keys.scope_of(token))
        if count:
            raise messages.identity_locked(token.id, changing, count, iso(newest))
        _one_rule_per_namespace(session, values.get("namespace", token.namespace),
                                values.get("dedupe_on", token.dedupe_on), token.id)
    if first_cap and not caps.capped(token):
        # Its calls reserved nothing until now: its usage rows start from the ledger and the calls in flight.
        caps.start_capping(session.connection(), token, now or utcnow())
    for column, value in values.items():
        setattr(token, column, value)
    return token


def rotate(token: Token, now: datetime | None = None) -> str:
    """A new secret; refused for a revoked or expired token, whose new secret would be refused too."""
    status = describe(token, now)["status"]
    if status in ("revoked", "expired"):
        raise messages.not_rotatable(token.id, status)
    secret, text = new_secret_for(token.id)
    token.secret_hash = hash_secret(secret)
    return text


def revoke(token: Token, now: datetime | None = None):
    token.revoked_at = token.revoked_at or now or utcnow()


def get(session, token_id: str) -> Token | None:
    return session.get(Token, token_id)


def all_tokens(session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.created_at)))


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def describe(token: Token, now: datetime | None = None) -> dict:
    """Everything about a token except its secret."""
    now = now or utcnow()
    status = "revoked" if token.revoked_at else "disabled" if token.disabled else \
        "expired" if token.expires_at and as_utc(token.expires_at) <= now else "active"
    return {
        "id": token.id,
        "label": token.label,
        "notes": token.notes,
        "status": status,
        "operations": token.operations,
        "limits": {
            "max_amount": amounts.from_micros(token.max_amount_micros),
            "daily_cap": amounts.from_micros(token.daily_cap_micros),
            "monthly_cap": amounts.from_micros(token.monthly_cap_micros),
            "user_pattern": token.user_pattern,
            "required_metadata": token.required_metadata,
            "rate_limit": token.rate_limit,
            "dedupe_on": token.dedupe_on,
        },
        "namespace": token.namespace,
        "feed": token.feed or "own",
        "expires_at": iso(token.expires_at),
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }
