"""The published amount rule (OpenAPI, from RELAY_AMOUNT_DECIMALS) and the relay agree, for text and numbers.

Schemathesis reported "schema-valid request rejected" on deposit and charge (e.g. "amount": 589959504.9082555):
the document allowed any number while the relay refuses more fraction digits than RELAY_AMOUNT_DECIMALS.
Both directions are attacked here: every amount the published schema admits is accepted, and every amount the
relay accepts is admitted."""

import copy
import json
import re
from decimal import Decimal

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode

from conftest import create_token

RELAY_DECIMALS = [0, 2, 6]


@pytest.fixture(params=RELAY_DECIMALS, ids=lambda d: f"decimals={d}")
def relay(request, make_app, sandbox):
    app = make_app(RELAY_AMOUNT_DECIMALS=request.param)
    _, token = create_token(app)
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    return request.param, client, token, document


def accepted(client, token, amount, op="deposit") -> bool:
    """Whether the relay takes this amount (a dry run: the same validation, and nothing moves)."""
    path = {"deposit": "/v1/user/balance/deposit", "charge": "/v1/user/charge"}[op]
    answer = client.post(f"{path}?dry_run=true", data=json.dumps({"user": "acme:u1", "amount": amount}),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert answer.status_code in (200, 422), answer.get_data(as_text=True)
    if answer.status_code == 422:
        assert [e["field"] for e in answer.get_json()["errors"]] == ["amount"], answer.get_json()
    return answer.status_code == 200


def published_amounts(document, op):
    path = {"deposit": "/v1/user/balance/deposit", "charge": "/v1/user/charge"}[op]
    operation = schemathesis.openapi.from_dict(document)[path]["POST"]
    return operation.as_strategy(generation_mode=GenerationMode.POSITIVE).map(lambda case: case.body["amount"])


@pytest.mark.parametrize("op", ["deposit", "charge"])
def test_every_amount_the_published_schema_admits_is_accepted(relay, op):
    decimals, client, token, document = relay

    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(published_amounts(document, op))
    def check(amount):
        assert accepted(client, token, amount, op), f"published schema admits {amount!r}, relay refuses it"

    check()


def _admitted(document, amount) -> bool:
    """The published amount rule, read with decimal arithmetic: multipleOf means the decimal value, as the relay
    reads a JSON number's literal (a float-based validator would call 0.07 no multiple of 0.01)."""
    text, number = document["components"]["schemas"]["amount"]["anyOf"]
    if isinstance(amount, str):
        return Draft202012Validator(text).is_valid(amount)
    value, step = Decimal(repr(amount) if isinstance(amount, float) else amount), Decimal(str(number["multipleOf"]))
    return 0 < value <= Decimal(str(number["maximum"])) and value % step == 0


literals = st.builds(lambda whole, fraction, zeros: whole + ("." + fraction + "0" * zeros if fraction or zeros else ""),
                     st.from_regex(r"0|[1-9][0-9]{0,9}", fullmatch=True), st.from_regex(r"[0-9]{0,7}", fullmatch=True),
                     st.integers(0, 3))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.parametrize("decimals", RELAY_DECIMALS)
def test_an_amount_is_admitted_exactly_when_the_relay_accepts_it(make_app, sandbox, decimals, data):
    app = make_app(RELAY_AMOUNT_DECIMALS=decimals)
    _, token = create_token(app)
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    for _ in range(20):
        literal = data.draw(literals)
        as_number = json.loads(literal, parse_float=float)
        for amount in (literal, as_number):
            assert _admitted(document, amount) == accepted(client, token, amount), (amount, decimals)


@pytest.mark.parametrize("amount", ["589959504.9082555", "1.234", "0.001"])
def test_the_amount_schemathesis_found_is_refused_by_the_schema_now(relay, amount):
    decimals, _client, _token, document = relay
    number = json.loads(amount, parse_float=float)
    if Decimal(amount).as_tuple().exponent < -decimals:
        assert not _admitted(document, number) and not _admitted(document, amount)


def test_the_rule_is_in_words_too(relay):
    decimals, _, _, document = relay
    assert f"RELAY_AMOUNT_DECIMALS={decimals}" in document["components"]["schemas"]["amount"]["description"]
    pattern = document["components"]["schemas"]["amount"]["anyOf"][0]["pattern"]
    assert "(?=" not in pattern and re.search(pattern, "12") and not re.search(pattern, "12\n".strip() + ".")


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(st.one_of(st.text(alphabet=' \t"\\ab~!#\x7f\u00e9', max_size=8),
                 # Long quoted keys: the escapes count as one character each. (Runs that mix \\ and \" past 255
                 # characters are where a regex and the relay's two replaces could count differently.)
                 st.integers(250, 262).flatmap(lambda n: st.text(alphabet=' \\a', min_size=n, max_size=n))
                 .map(lambda inner: f'"{inner}"')))
def test_the_published_idempotency_key_rule_is_the_relays(value):
    """The header's schema admits a key exactly when the relay takes it (schemathesis sent 'schema-valid' keys with
    control characters, which the relay refuses)."""
    from relay import keys, messages, openapi
    try:
        keys.header_key(value)
        taken = True
    except messages.Problem:
        taken = False
    assert bool(re.search(openapi.IDEMPOTENCY_KEY_PATTERN, value)) == taken


# --- schemathesis: no schema-valid deposit or charge is refused ----------------------------------------------------

from schemathesis.core.parameters import ParameterLocation  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from relay import openapi as openapi_module  # noqa: E402


class _Current:
    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


_CURRENT = _Current()
# A copy: openapi.document() is cached, and tests/test_hostile.py hands the same object to schemathesis too.
_money_schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi_module.document())).include(
    path_regex=r"^/v1/user/(balance/deposit|charge)$")
_money_schema.app = _CURRENT


@_money_schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_schema_valid_money_call_refused(case, make_app, sandbox):
    """st run --checks all reported "schema-valid request rejected" on deposit and charge for amounts with more
    decimals than the relay takes. Here every check runs, positive data acceptance included. The Idempotency-Key
    header is left out of positive cases: schemathesis sends one key with many bodies, which the relay refuses by
    design (422 idempotency-key-reused: a key names one operation); tests/test_dry_run.py and test_idempotency.py
    cover keys."""
    app = make_app()
    _, token = create_token(app)
    _CURRENT.app = app
    # A negative case on the headers may mean to leave Authorization out (as in tests/test_hostile.py).
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    if not negative_headers:
        (case.headers or {}).pop("Idempotency-Key", None)
    case.call_and_validate(headers=None if negative_headers else {"Authorization": f"Bearer {token}"},
                           additional_checks=[positive_data_acceptance])
