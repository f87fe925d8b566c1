"""GET /v1/user/balance/topup: Paywalls' top-up link, behind the token operation `topup` and its user pattern."""

import json

from conftest import SANDBOX_KEY, auth, create_token


def topup(client, token_text, user="acme:user_1", **more):
    return client.get("/v1/user/balance/topup", query_string={"user": user, **more}, headers=auth(token_text))


def test_a_topup_token_gets_paywalls_link_for_the_user(app, sandbox):
    _, text = create_token(app, operations=["topup"])
    answer = topup(app.test_client(), text, user="acme:user_1")
    assert answer.status_code == 200
    assert answer.get_json() == {"url": "https://sandbox.paywalls.invalid/topup?user=acme%3Auser_1",
                                 "user": "acme:user_1"}
    assert sandbox.state.snapshot()["topups"] == ["acme:user_1"]


def test_the_operation_is_required(app, sandbox):
    _, text = create_token(app, operations=["deposit", "balance", "events"])
    answer = topup(app.test_client(), text)
    assert answer.status_code == 403 and answer.get_json()["limit"] == "operation"
    assert sandbox.state.snapshot()["topups"] == []


def test_the_user_pattern_applies(app, sandbox):
    _, text = create_token(app, operations=["topup"], user_pattern="acme:[a-z0-9_]+")
    client = app.test_client()
    assert topup(client, text, user="acme:ok_1").status_code == 200
    refused = topup(client, text, user="other:user_1")
    assert refused.status_code == 403 and refused.get_json()["limit"] == "user_pattern"
    assert sandbox.state.snapshot()["topups"] == ["acme:ok_1"]


def test_a_missing_user_or_an_unknown_field_names_it(app, sandbox):
    _, text = create_token(app, operations=["topup"])
    client = app.test_client()
    missing = client.get("/v1/user/balance/topup", headers=auth(text))
    assert missing.status_code == 422 and [e["field"] for e in missing.get_json()["errors"]] == ["user"]
    extra = topup(client, text, amount="5")
    assert extra.status_code == 422 and [e["field"] for e in extra.get_json()["errors"]] == ["amount"]


def test_paywalls_refusals_and_outages_are_the_relays_problems(app, sandbox):
    _, text = create_token(app, operations=["topup"])
    client = app.test_client()
    with sandbox.state.lock:
        sandbox.state.faults.append({"kind": "respond", "status": 404, "body": json.dumps({"error": "No such user"}),
                                     "endpoint": "topup", "count": 1})
    refused = topup(client, text)
    assert refused.status_code == 404 and refused.get_json()["type"].endswith("upstream-rejected")
    assert "No such user" in refused.get_json()["detail"]


def test_the_paywalls_key_never_reaches_the_caller(app, sandbox):
    _, text = create_token(app, operations=["topup"])
    client = app.test_client()
    answers = [topup(client, text), topup(client, "pwr_wrong"), client.get("/v1/user/balance/topup?user=a")]
    with sandbox.state.lock:
        sandbox.state.faults.append({"kind": "status", "status": 401, "endpoint": "topup", "count": 1})
    answers.append(topup(client, text))
    for answer in answers:
        assert SANDBOX_KEY not in answer.get_data(as_text=True)
        assert SANDBOX_KEY not in json.dumps(dict(answer.headers))
    assert answers[-1].status_code >= 500
