"""Point 5 of the core: every bad input class gets a problem+json naming the field; nothing reaches Paywalls."""

import json

import pytest

from conftest import auth

DEPOSIT = "/v1/user/balance/deposit"


def post_raw(client, token, data, content_type="application/json"):
    return client.post(DEPOSIT, data=data, headers={**auth(token), "Content-Type": content_type})


def assert_problem(response, status, name):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"] == f"urn:paywalls-relay:problem:{name}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def field_errors(body) -> dict:
    return {error["field"]: error for error in body["errors"]}


@pytest.mark.parametrize("user", ["", "has space", "me@example.com", "x" * 129, "émile", "a/b"])
def test_bad_user_names_the_field(client, token, sandbox, user):
    body = assert_problem(client.post(DEPOSIT, json={"user": user, "amount": "1"}, headers=auth(token)), 422, "validation")
    error = field_errors(body)["user"]
    assert error["pointer"] == "/user"
    assert "user" in error["message"]
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("amount", ["0", "0.00", "-5", "+5", "1e3", "abc", "", "10,5", "$10", "1000000000",
                                    " 10", "10.", ".5", 0, -1, True, None, [], {}, 1e12])
def test_bad_amount_names_the_field(client, token, sandbox, amount):
    body = assert_problem(client.post(DEPOSIT, json={"user": "u1", "amount": amount}, headers=auth(token)),
                          422, "validation")
    assert "positive decimal" in field_errors(body)["amount"]["message"]
    assert sandbox.state.snapshot()["calls"] == {}


def test_too_many_decimals_says_how_many(client, token):
    body = assert_problem(client.post(DEPOSIT, json={"user": "u1", "amount": "1.005"}, headers=auth(token)),
                          422, "validation")
    assert "more than 2 decimal places" in field_errors(body)["amount"]["message"]


def test_decimals_follow_configuration(make_app, make_token):
    app = make_app(RELAY_AMOUNT_DECIMALS=3)
    with app.app_context():
        pass
    from relay import db, tokens
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "t"})
    response = app.test_client().post(DEPOSIT, json={"user": "u1", "amount": "1.005"}, headers=auth(text))
    assert response.status_code == 200


def test_json_number_amount_is_taken_at_its_literal_value(client, token, sandbox):
    response = post_raw(client, token, b'{"user": "u1", "amount": 2.50}')
    assert response.status_code == 200
    assert sandbox.state.snapshot()["deposits"][0]["amount"] == "2.5"


def test_missing_required_fields(client, token):
    body = assert_problem(client.post(DEPOSIT, json={}, headers=auth(token)), 422, "validation")
    assert set(field_errors(body)) == {"user", "amount"}
    assert field_errors(body)["amount"]["pointer"] == "/amount"


def test_unknown_field_is_rejected_with_a_hint(client, token, sandbox):
    body = assert_problem(client.post(DEPOSIT, json={"user": "u1", "ammount": "1"}, headers=auth(token)),
                          422, "validation")
    assert "ammount is not a field" in field_errors(body)["ammount"]["message"]
    assert sandbox.state.snapshot()["calls"] == {}


def test_an_unknown_key_of_a_nested_object_is_named_with_its_path():
    """Unknown keys were looked for at the top level only: a nested object's own (a hook's filter.usr, meant as
    filter.user) found none there, no error was reported, and the body passed with the filter ignored."""
    from relay import validation
    errors = validation.schema_errors("hook-request.json",
                                      {"target_url": "https://example.com/", "filter": {"usr": "acme:u1"}})
    assert [error["field"] for error in errors] == ["filter.usr"]
    assert "filter.usr is not a field of filter" in errors[0]["message"] and "user" in errors[0]["message"]
    top = validation.schema_errors("hook-request.json", {"target_url": "https://example.com/", "filtr": {}})
    assert [error["field"] for error in top] == ["filtr"]
    assert validation.schema_errors("hook-request.json", {"target_url": "https://example.com/",
                                                          "filter": {"user": "acme:u1"}}) == []


@pytest.mark.parametrize("metadata", ["x", [1], 5])
def test_metadata_must_be_an_object(client, token, metadata):
    body = assert_problem(client.post(DEPOSIT, json={"user": "u1", "amount": "1", "metadata": metadata},
                                      headers=auth(token)), 422, "validation")
    assert "metadata" in field_errors(body)


def test_metadata_over_4_kib(client, token):
    body = assert_problem(client.post(DEPOSIT, json={"user": "u1", "amount": "1", "metadata": {"n": "x" * 4100}},
                                      headers=auth(token)), 422, "validation")
    assert "4 KiB" in field_errors(body)["metadata"]["message"]


def test_metadata_unsafe_integer(client, token):
    body = assert_problem(post_raw(client, token, b'{"user":"u1","amount":"1","metadata":{"id":12345678901234567890}}'),
                          422, "validation")
    assert "metadata.id" in field_errors(body)


def test_body_over_16_kib_is_413(client, token, sandbox):
    response = post_raw(client, token, json.dumps({"user": "u1", "amount": "1", "metadata": {"a": "x" * 17000}}))
    assert_problem(response, 413, "body-too-large")
    assert sandbox.state.snapshot()["calls"] == {}


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'"text"', b"null", b'{"user": "u1",', b"\xff\xfe{}"])
def test_non_json_or_non_object_is_400(client, token, data):
    assert_problem(post_raw(client, token, data), 400, "malformed-body")


def test_duplicate_keys_are_400(client, token):
    body = assert_problem(post_raw(client, token, b'{"user": "u1", "amount": "1", "amount": "100"}'), 400, "malformed-body")
    assert "amount" in body["detail"]


def test_deep_nesting_is_refused(client, token):
    deep = b'{"user":"u1","amount":"1","metadata":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    response = post_raw(client, token, deep)
    assert response.status_code in (400, 413)
    assert response.mimetype == "application/problem+json"


def test_form_encoded_body_is_415(client, token):
    response = client.post(DEPOSIT, data={"user": "u1", "amount": "1"}, headers=auth(token))
    body = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in body["detail"]


def test_balance_query_is_validated(client, token, sandbox):
    body = assert_problem(client.get("/v1/user/balance?user=a%20b", headers=auth(token)), 422, "validation")
    assert "user" in field_errors(body)
    body = assert_problem(client.get("/v1/user/balance", headers=auth(token)), 422, "validation")
    assert "user" in field_errors(body)
    assert sandbox.state.snapshot()["calls"] == {}
