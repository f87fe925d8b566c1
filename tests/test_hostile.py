"""Issue 7, hostile input: whatever arrives, the relay answers with its documented shapes and never a 5xx.

- Schemathesis generates requests from /openapi.json (valid and invalid) for every operation, the admin API
  included (issue 12), a bounded number of examples each, and checks each answer against the document: no 5xx,
  documented status, content type, headers and body schema, plus the security headers on every answer.
- Hypothesis properties of the amount parser and of the idempotency key derivation.
- Bodies no schema describes: oversized, deeply nested, invalid UTF-8, duplicate keys, wrong types.
- A user pattern that could backtrack catastrophically is refused when a token is created.
"""

import json
import re
from decimal import Decimal

import pytest
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import auth, credits
from relay import amounts, db, keys as idempotency, openapi, tokens
from relay.app import SECURITY_HEADERS

DEPOSIT = "/v1/user/balance/deposit"
EXAMPLES_PER_OPERATION = 50


# --- Schemathesis against /openapi.json ------------------------------------------------------------------

@pytest.fixture
def hostile(make_app, sandbox):
    """A relay on SQLite with one token allowed every operation, no caps, and a second token for the admin
    calls on one token to read, change, rotate and revoke."""
    app = make_app()
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "fuzz", "operations": list(tokens.OPERATIONS)})
        target, _ = tokens.create(session, {"label": "admin target"})
        target_id = target.id
    CURRENT.app = app
    return app, text, target_id


class CurrentApp:
    """A WSGI app that forwards to the current test's relay (the schema is loaded at import time)."""
    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


CURRENT = CurrentApp()
# The document the relay serves at /openapi.json (test_openapi_document_is_what_the_relay_serves checks it).
schema = schemathesis.openapi.from_dict(openapi.document())
schema.app = CURRENT


def test_openapi_document_is_what_the_relay_serves(client):
    assert client.get("/openapi.json").get_json() == json.loads(json.dumps(openapi.document()))


@schemathesis.check
def security_headers_present(ctx, response, case):
    missing = [name for name in SECURITY_HEADERS if response.headers.get(name.lower()) is None
               and response.headers.get(name) is None]
    if missing:
        raise AssertionError(f"{case.method} {case.path} -> {response.status_code} lacks {missing}")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_openapi_operations_never_5xx_and_match_the_document(case, hostile):
    app, token, target_id = hostile
    # A valid credential on every call (the admin key on the admin API, a relay token elsewhere), so generated data
    # reaches validation and the upstream, not just auth; except where a negative case mutated the headers: it may
    # have meant to leave Authorization out.
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    admin = case.path.startswith("/v1/admin/")
    credential = app.config["RELAY"]["RELAY_ADMIN_KEY"] if admin else token
    # Calls on one token mostly name a real one, so PATCH, rotate and revoke reach their work, not just the 404.
    negative_path = case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH)
    if "token_id" in (case.path_parameters or {}) and not negative_path and hash(repr(case.body)) % 4:
        case.path_parameters["token_id"] = target_id
    # Not "schema-valid data is accepted": the relay also refuses valid-looking bodies on rules JSON Schema
    # cannot state (metadata over 4 KiB once serialized, integers past 2**53, dates outside years 1-9999 in UTC,
    # user patterns RE2 cannot run, a namespace change while keys exist). The amount's decimals are published:
    # tests/test_amount_contract.py runs deposit and charge with that check on.
    case.call_and_validate(headers=None if negative_headers else auth(credential),
                           additional_checks=[security_headers_present], excluded_checks=[positive_data_acceptance])


def test_the_schemathesis_suite_covers_every_documented_operation(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    operations = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert {("POST", DEPOSIT), ("POST", "/v1/user/charge"), ("GET", "/v1/user/balance"),
            ("GET", "/v1/relay/me"), ("GET", "/v1/relay/deposits"), ("POST", "/v1/admin/tokens"),
            ("GET", "/v1/admin/tokens"), ("GET", "/v1/admin/tokens/{token_id}"),
            ("PATCH", "/v1/admin/tokens/{token_id}"), ("POST", "/v1/admin/tokens/{token_id}/revoke"),
            ("POST", "/v1/admin/tokens/{token_id}/rotate"), ("POST", "/v1/relay/bulk"),
            ("GET", "/v1/relay/bulk/{batch_id}")} <= operations


# --- Hypothesis: amounts --------------------------------------------------------------------------------

decimals = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("999999999.999999"), places=6,
                       allow_nan=False, allow_infinity=False)


def spellings(value: Decimal):
    """Texts a client may send for one amount: trailing zeros, leading zeros, a JSON number."""
    text = amounts.canonical(value)
    return st.sampled_from([text, text + ("0" if "." in text else ".0"), "0" + text, text + ("" if "." in text else ".00")])


@settings(max_examples=300, deadline=None)
@given(decimals)
def test_canonical_amount_round_trips(value):
    text = amounts.canonical(value)
    assert Decimal(text) == value                   # same value
    assert amounts.canonical(text) == text          # a fixed point
    assert amounts.parse(text) == value
    assert not re.search(r"[eE+\-]", text)         # no exponent, no sign
    assert text == "0" or not text.startswith("0") or text.startswith("0.")
    assert "." not in text or not text.endswith(("0", "."))
    assert amounts.from_micros(amounts.to_micros(text)) == text


@settings(max_examples=200, deadline=None)
@given(decimals.flatmap(lambda value: st.tuples(st.just(value), spellings(value))))
def test_every_spelling_of_an_amount_has_one_canonical_form(pair):
    value, spelling = pair
    assert amounts.canonical(spelling) == amounts.canonical(value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_amount_parsing_never_raises(value):
    parsed = amounts.parse(value)
    assert parsed is None or parsed.is_finite()


# --- Hypothesis: key derivation -------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
                         st.text(max_size=12))
metadata = st.dictionaries(st.text(min_size=1, max_size=8), st.recursive(
    json_scalars, lambda children: st.dictionaries(st.text(min_size=1, max_size=5), children, max_size=3), max_leaves=6),
    max_size=6)
users = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
bodies = st.fixed_dictionaries({"user": users, "amount": decimals.map(amounts.canonical), "metadata": metadata})


def reordered(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    return value


@settings(max_examples=200, deadline=None)
@given(bodies, st.sampled_from(["deposit", "charge"]))
def test_derivation_ignores_key_order(body, op):
    assert idempotency.derive_key(op, body) == idempotency.derive_key(op, reordered(body))
    assert idempotency.derive_key(op, body) == idempotency.derive_key(op, json.loads(json.dumps(body)))


@settings(max_examples=200, deadline=None)
@given(bodies, decimals.flatmap(spellings))
def test_derivation_reads_the_amount_canonically(body, spelling):
    respelled = {**body, "amount": spelling}
    same = amounts.canonical(spelling) == amounts.canonical(body["amount"])
    assert (idempotency.derive_key("deposit", body) == idempotency.derive_key("deposit", respelled)) == same


@settings(max_examples=200, deadline=None)
@given(bodies, bodies, st.sampled_from(["user", "amount", "metadata"]))
def test_different_dedupe_field_values_give_different_keys(first, second, field):
    assume(reordered(first[field]) != reordered(second[field]) and
           (field != "amount" or Decimal(first["amount"]) != Decimal(second["amount"])))
    changed = {**first, field: second[field]}
    assert idempotency.derive_key("deposit", first) != idempotency.derive_key("deposit", changed)
    # A field left out of the token's dedupe fields no longer changes the key.
    others = [name for name in idempotency.DEFAULT_FIELDS if name != field]
    assert idempotency.derive_key("deposit", first, others) == idempotency.derive_key("deposit", changed, others)


@settings(max_examples=100, deadline=None)
@given(bodies)
def test_the_operation_is_part_of_the_key(body):
    assert idempotency.derive_key("deposit", body) != idempotency.derive_key("charge", body)


# --- bodies no schema describes ---------------------------------------------------------------------------

def post_raw(client, token, data: bytes, content_type="application/json"):
    return client.post(DEPOSIT, data=data, headers={**auth(token), "Content-Type": content_type})


def problem(response, status: int, name: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"] == f"urn:paywalls-relay:problem:{name}" and body["status"] == status
    return body


def test_oversized_body_is_413_before_anything_is_parsed(client, token, sandbox):
    padding = "x" * (17 * 1024)
    problem(post_raw(client, token, json.dumps({"user": "u1", "amount": "1", "metadata": {"p": padding}}).encode()),
            413, "body-too-large")
    # Larger than any buffer a proxy would give it: still a clean 413.
    problem(post_raw(client, token, b"{" + b" " * (2 * 1024 * 1024) + b"}"), 413, "body-too-large")
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
def test_deeply_nested_json_is_a_400_not_a_crash(client, token, sandbox, depth, opener, closer):
    data = (opener * depth + "1" + closer * depth).encode()
    if len(data) > 16 * 1024:
        problem(post_raw(client, token, data), 413, "body-too-large")
    else:
        problem(post_raw(client, token, data), 400, "malformed-body")
    nested_metadata = '{"user": "u1", "amount": "1", "metadata": ' + '{"a":' * 900 + "1" + "}" * 900 + "}"
    assert post_raw(client, token, nested_metadata.encode()).status_code in (400, 422)
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("data", [b'{"user": "\xff\xfe", "amount": "1"}', b'\xef\xbb\xbf{"user": "u1", "amount": "1"}',
                                  b'{"user": "u\xc3", "amount": "1"}', b"\x00\x00\x00{"])
def test_invalid_utf8_is_400(client, token, sandbox, data):
    problem(post_raw(client, token, data), 400, "malformed-body")
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("data", [b'{"user": "u1", "amount": "1", "amount": "1000"}',
                                  b'{"user": "u1", "amount": "1", "metadata": {"k": 1, "k": 2}}',
                                  b'{"user": "u1", "user": "u2", "amount": "1"}'])
def test_duplicate_keys_are_refused_not_resolved(client, token, sandbox, data):
    body = problem(post_raw(client, token, data), 400, "malformed-body")
    assert "twice" in body["detail"]
    assert credits(sandbox) == []


@pytest.mark.parametrize("data", [b"", b"null", b"[]", b'"text"', b"1e999999", b'{"user": "u1", "amount": NaN}',
                                  b'{"user": "u1", "amount": Infinity}', b'{"user": "u1", "amount": 1e400}',
                                  b"{'user': 'u1'}", b'{"user": "u1", "amount": "1"} trailing', b"\x1f\x8b\x08\x00"])
def test_garbage_bodies_are_4xx(client, token, sandbox, data):
    response = post_raw(client, token, data)
    assert 400 <= response.status_code < 500, (data, response.status_code)
    assert response.mimetype == "application/problem+json"
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/jsonx", ""])
def test_bodies_that_are_not_json_are_415(client, token, content_type):
    response = post_raw(client, token, b'{"user": "u1", "amount": "1"}', content_type)
    problem(response, 415, "unsupported-media-type")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_5xx(client, token, data):
    response = post_raw(client, token, data)
    assert response.status_code < 500
    assert response.mimetype in ("application/json", "application/problem+json")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(st.one_of(json_scalars, st.floats()), lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.sampled_from(["user", "amount", "metadata", "x"]), children,
                                                    max_size=4)), max_leaves=10))
def test_arbitrary_json_never_5xx(client, token, value):
    response = post_raw(client, token, json.dumps(value).encode())
    assert response.status_code < 500, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("header", ["x" * 300, "caf\u00e9", "a\tb", ""])
def test_bad_idempotency_key_headers_are_422(client, token, header):
    response = client.post(DEPOSIT, json={"user": "u1", "amount": "1"},
                           headers={**auth(token), "Idempotency-Key": header.encode("utf-8").decode("latin-1")})
    body = problem(response, 422, "validation")
    assert body["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("query", ["user=" + "a" * 500, "user=%00", "user=%FF%FE", "user=a&user=b", "", "user=a%20b"])
def test_hostile_balance_queries_are_4xx(client, token, query):
    response = client.get("/v1/user/balance?" + query, headers=auth(token))
    assert 400 <= response.status_code < 500 or response.status_code == 200


# --- regular-expression bombs -----------------------------------------------------------------------------

REGEX_BOMBS = ["(a+)+$", "(a*)*b", "(a|aa)+", "(a|a?)+", "(.*a){12}", "^(([a-z])+.)+[A-Z]([a-z])+$",
               r"(\w+\s?)+$", "(x+x+)+y", r"(a|b|ab)*c", r"(\1a)", "((a+))+", "(?:a+){2,}b"]


@pytest.mark.parametrize("pattern", REGEX_BOMBS)
def test_regex_bomb_user_pattern_is_refused_by_the_admin_api(make_app, pattern):
    app = make_app()
    admin = {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}
    response = app.test_client().post("/v1/admin/tokens", json={"label": "t", "user_pattern": pattern}, headers=admin)
    body = problem(response, 422, "validation")
    assert body["errors"][0]["field"] == "user_pattern"


@pytest.mark.parametrize("pattern", ["acme:[A-Za-z0-9_]+", "acme:user_[0-9]{1,9}", "(acme|beta):[a-z0-9]+",
                                     "tenant_[0-9]+:.*"])
def test_plain_user_patterns_are_accepted(make_app, pattern):
    app = make_app()
    admin = {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}
    response = app.test_client().post("/v1/admin/tokens", json={"label": "t", "user_pattern": pattern}, headers=admin)
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("cursor", ["led_49175634479678869376580", "led_9223372036854775808", "led_\u0661\u0662",
                                    "led_-1", "led_", "x" * 200])
def test_hostile_cursors_are_422_not_500(client, token, cursor):
    response = client.get("/v1/relay/deposits", query_string={"cursor": cursor}, headers=auth(token))
    body = problem(response, 422, "validation")
    assert body["errors"][0]["field"] == "cursor"
