"""The Python leg of schemas/parity-cases.json: every case through relay/contract.py against a live relay started
by `paywalls-relay dev-stack --json`, the harness the Zapier and n8n legs start too."""

import importlib.util
import json
import pathlib

import pytest
import requests

from relay import contract

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = json.loads((ROOT / "schemas" / "parity-cases.json").read_text(encoding="utf-8"))
CASES = TABLE["cases"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_parity_cases", ROOT / "scripts" / "make_parity_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_is_what_the_generator_writes():
    assert (ROOT / "schemas" / "parity-cases.json").read_text(encoding="utf-8") == _generator().render()


def test_the_table_covers_what_issue_14_asks():
    names = " ".join(case["name"] for case in CASES)
    presets = {case["inputs"].get("dedupe_on") or "all" for case in CASES if case["expect"]["status"] == 200}
    assert presets >= {"all", "reference", "amount_reference", "custom"}
    for topic in ("metadata clash", "blank user", "blank amount", "blank reference", "exponent", "sign", "leading dot",
                  "zero", "1.234", "dry run: would credit", "dry run: would replay", "replay of a real call"):
        assert topic in names, topic
    problems = {case["expect"]["problem"] for case in CASES} - {None}
    assert problems >= {"validation", "forbidden", "idempotency-key-reused", "unauthorized", "upstream-rejected",
                        "rate-limited", "upstream-ambiguous", "upstream-misdirected", "body-too-large"}
    limits = {case["expect"]["limit"] for case in CASES} - {None}
    assert limits == {"operation", "max_amount", "user_pattern", "daily_cap", "monthly_cap"}
    assert set(contract.contract()["client_errors"]) - {"$comment"} == \
        {case["expect"]["client_error"] for case in CASES} - {None}


def send(stack, token: str, request: contract.Request):
    headers = {"Authorization": f"Bearer {token}"}
    if request.key:
        headers["Idempotency-Key"] = request.key
    return requests.request(request.method, stack.relay_url + request.path, params=request.query, json=request.body,
                            headers=headers, timeout=30)


def money(state: dict) -> dict:
    return {name: state[name] for name in ("balances", "deposits", "charges")}


def prepare(stack, case) -> str:
    assert stack.sandbox("POST", "reset").status_code == 200
    for user, balance in case.get("setup", {}).get("balances", {}).items():
        assert stack.sandbox("PUT", f"balances/{user}", json={"balance": balance}).status_code == 200
    for fault in case.get("setup", {}).get("faults", []):
        assert stack.sandbox("POST", "faults", json=fault).status_code == 201
    created = stack.admin("POST", "", json=case["token"])
    assert created.status_code == 201, created.text
    if case.get("token_revoked"):
        assert stack.admin("POST", f"/{created.json()['id']}/revoke").status_code == 200
    return created.json()["token"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(dev_stack, case):
    expect = case["expect"]
    token = prepare(dev_stack, case)
    for earlier in case["before"]:
        send(dev_stack, token, contract.build_request(earlier["op"], earlier["inputs"]))
    before = money(dev_stack.sandbox_state())

    if expect["client_error"]:
        with pytest.raises(contract.ContractError) as refused:
            contract.build_request(case["op"], case["inputs"])
        assert (refused.value.code, refused.value.message) == (expect["client_error"], expect["message"])
        assert money(dev_stack.sandbox_state()) == before
        return

    request = contract.build_request(case["op"], case["inputs"])
    assert (request.body, request.key, request.query) == (expect["body"], expect["key"], expect["query"])
    answer = send(dev_stack, token, request)
    assert answer.status_code == expect["status"], answer.text
    body = answer.json()
    if expect["problem"]:
        assert body["type"] == "urn:paywalls-relay:problem:" + expect["problem"]
        assert body.get("limit") == expect["limit"] and body.get("reason") == expect["reason"]
        if expect["error_fields"] is not None:
            assert sorted(error["field"] for error in body["errors"]) == sorted(expect["error_fields"])
    if expect["output"] is not None:
        output = contract.step_output(request, answer.headers, body)
        assert {name: output.get(name) for name in expect["output"]} == expect["output"]
    if expect["sandbox_unchanged"]:
        assert money(dev_stack.sandbox_state()) == before
    else:
        assert money(dev_stack.sandbox_state()) != before or expect["status"] >= 400
