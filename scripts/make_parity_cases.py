"""Write schemas/parity-cases.json: the behaviour table the relay's Python leg, the Zapier app (app tester) and the
n8n node (a real n8n) all run against a live relay (`paywalls-relay dev-stack --json`).

What a case expects is written here by hand (the status, the problem, the balance); what the client sends (the
body, the dedupe fields, the key, the query, a client refusal's exact text) is computed by relay/contract.py, the
Python reading of schemas/client-contract.json, so it cannot be typed wrong. tests/test_parity.py checks that
the committed file is what this script writes, and runs every case.
"""

import copy
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from relay import amounts, contract  # noqa: E402

OUT = ROOT / "schemas" / "parity-cases.json"
ALL_OPS = ["deposit", "charge", "balance", "ledger"]
U = "acme:parity_1"
BASE = {"user": U, "amount": "10", "reason": "goodwill", "reference": "in_1"}
CHARGE = {"user": U, "amount": "4", "reason": "usage", "reference": "job_1"}


def case(name, op="deposit", inputs=None, *, token=None, revoked=False, setup=None, before=(), **expect):
    return {"name": name, "op": op, "inputs": inputs if inputs is not None else dict(BASE),
            "token": {"label": f"parity: {name}", "operations": ALL_OPS, **(token or {})},
            **({"token_revoked": True} if revoked else {}), **({"setup": setup} if setup else {}),
            "before": [{"op": op_, "inputs": inputs_} for op_, inputs_ in before], "expect": expect}


def ok(balance):
    return {"status": 200, "new_balance": balance}


def refused(status, problem, **more):
    return {"status": status, "problem": problem, **more}


def with_(**changes):
    return {**BASE, **changes}


CASES = [
    # --- dedupe presets ------------------------------------------------------------------------------------------
    case("preset all (default)", inputs=with_(dedupe_on=None), **ok("10.00")),
    case("preset reference", inputs=with_(dedupe_on="reference"), **ok("10.00")),
    case("preset amount_reference", inputs=with_(dedupe_on="amount_reference"), **ok("10.00")),
    case("preset custom", inputs=with_(dedupe_on="custom", custom_dedupe_fields=" user , metadata.plan,",
                                       extra_metadata={"plan": "pro"}), **ok("10.00")),
    case("custom fields ignored unless custom", inputs=with_(dedupe_on="all", custom_dedupe_fields="nonsense field"),
         **ok("10.00")),
    case("custom fields empty", inputs=with_(dedupe_on="custom", custom_dedupe_fields=" , ")),
    case("custom field with a space", inputs=with_(dedupe_on="custom", custom_dedupe_fields="user, metadata. reference")),
    case("unknown preset", inputs=with_(dedupe_on="everything")),
    # --- metadata merge ------------------------------------------------------------------------------------------
    case("metadata clash: a reference row", inputs=with_(extra_metadata={"reference": "in_2"})),
    case("metadata clash: a reason row, same value", inputs=with_(extra_metadata={" reason ": "goodwill"})),
    case("metadata: a reason row when Reason is empty", inputs=with_(reason="", extra_metadata={"reason": "promo"}),
         **ok("10.00")),
    case("metadata: rows trimmed, empty values dropped",
         inputs=with_(extra_metadata={" plan ": " pro ", "campaign": "", "note": "  ", "empty": None}), **ok("10.00")),
    case("metadata clash ignores ASCII case", inputs=with_(extra_metadata={"Reference": "in_2"})),
    case("metadata: n8n rows", inputs=with_(extra_metadata=[{"key": "plan", "value": "pro"}, {"key": "", "value": ""}]),
         **ok("10.00")),
    case("metadata: n8n rows repeating a key", inputs=with_(extra_metadata=[{"key": "plan", "value": "a"},
                                                                           {"key": "plan", "value": "b"}])),
    case("metadata: not rows", inputs=with_(extra_metadata="plan=pro")),
    case("metadata: a blank key with a value", inputs=with_(extra_metadata={"  ": "x"})),
    case("metadata: two rows one key once trimmed", inputs=with_(extra_metadata={"plan": "a", "plan ": "b"})),
    case("metadata over 4 KiB", inputs=with_(extra_metadata={"note": "x" * 4200}),
         **refused(422, "validation", error_fields=["metadata"])),
    case("body over 16 KiB", inputs=with_(extra_metadata={f"n{i}": "x" * 1000 for i in range(17)}),
         **refused(413, "body-too-large")),
    # --- blank fields --------------------------------------------------------------------------------------------
    case("blank reference", inputs=with_(reference="  ")),
    case("absent reference", inputs={k: v for k, v in BASE.items() if k != "reference"}),
    case("blank user", inputs=with_(user="  "), **refused(422, "validation", error_fields=["user"])),
    case("blank amount", inputs=with_(amount=""), **refused(422, "validation", error_fields=["amount"])),
    case("blank reason is left out", inputs=with_(reason=""), **ok("10.00")),
    case("user and amount are trimmed", inputs=with_(user=f"  {U}\t", amount=" 10.50 "), **ok("10.50")),
    # --- amounts -------------------------------------------------------------------------------------------------
    case("amount exponent 1.5e2", inputs=with_(amount="1.5e2"), **refused(422, "validation", error_fields=["amount"])),
    case("amount sign -3", inputs=with_(amount="-3"), **refused(422, "validation", error_fields=["amount"])),
    case("amount leading dot .5", inputs=with_(amount=".5"), **refused(422, "validation", error_fields=["amount"])),
    case("amount zero", inputs=with_(amount="0"), **refused(422, "validation", error_fields=["amount"])),
    case("amount 1.234 on a 2-decimal relay", inputs=with_(amount="1.234"),
         **refused(422, "validation", error_fields=["amount"])),
    case("amount as a number", inputs=with_(amount=2.5), **ok("2.50")),
    case("amount 10.50 answers canonical 10.5", inputs=with_(amount="10.50"), **ok("10.50")),
    case("user as a number is its text", inputs=with_(user=12345), **ok("10.00")),
    case("user as a list", inputs=with_(user=["acme:a", "acme:b"])),
    case("user with an email", inputs=with_(user="bob@example.com"), **refused(422, "validation", error_fields=["user"])),
    # --- token limits and other problems -------------------------------------------------------------------------
    case("forbidden: operation", token={"operations": ["charge"]}, **refused(403, "forbidden", limit="operation")),
    case("forbidden: max_amount", token={"max_amount": "5"}, **refused(403, "forbidden", limit="max_amount")),
    case("forbidden: user_pattern", token={"user_pattern": "other:.*"}, **refused(403, "forbidden", limit="user_pattern")),
    case("forbidden: daily_cap", token={"daily_cap": "15"}, before=[("deposit", with_(reference="in_0"))],
         **refused(403, "forbidden", limit="daily_cap")),
    case("forbidden: monthly_cap", token={"monthly_cap": "5"}, **refused(403, "forbidden", limit="monthly_cap")),
    case("required metadata missing", token={"required_metadata": ["invoice_id"]},
         **refused(422, "validation", error_fields=["metadata.invoice_id"])),
    case("idempotency-key-reused: same reference, other amount", inputs=with_(dedupe_on="reference", amount="12"),
         before=[("deposit", with_(dedupe_on="reference"))], **refused(422, "idempotency-key-reused")),
    case("unauthorized: revoked token", revoked=True, **refused(401, "unauthorized", reason="revoked")),
    case("rate-limited", token={"rate_limit": "1/minute"}, before=[("deposit", with_(reference="in_0"))],
         **refused(429, "rate-limited")),
    case("upstream-rejected", setup={"faults": [{"kind": "status", "status": 400, "endpoint": "deposit"}]},
         **refused(400, "upstream-rejected")),
    case("upstream-ambiguous (a 2xx without the documented body)",
         setup={"faults": [{"kind": "respond", "status": 200, "body": "{}", "apply": True, "endpoint": "deposit"}]},
         **refused(502, "upstream-ambiguous")),
    case("upstream-misdirected", setup={"faults": [{"kind": "respond", "status": 302, "body": "",
                                                    "headers": {"Location": "https://login.example/"},
                                                    "endpoint": "deposit"}]},
         **refused(502, "upstream-misdirected")),
    # --- replays, charges ----------------------------------------------------------------------------------------
    case("replay of a real call", before=[("deposit", dict(BASE))], status=200, new_balance="10.00", replayed=True),
    case("charge", "charge", dict(CHARGE), setup={"balances": {U: "20"}}, status=200, success=True),
    case("charge declined (balance too low)", "charge", dict(CHARGE), status=200, success=False),
    case("charge replayed", "charge", dict(CHARGE), setup={"balances": {U: "20"}}, before=[("charge", dict(CHARGE))],
         status=200, success=True, replayed=True),
    # --- dry run -------------------------------------------------------------------------------------------------
    case("dry run: would credit", inputs=with_(dry_run=True), status=200, would="credit"),
    case("dry run: would replay", inputs=with_(dry_run=True), before=[("deposit", dict(BASE))], status=200,
         would="replay"),
    case("dry run: would charge", "charge", {**CHARGE, "dry_run": True}, status=200, would="charge"),
    case("dry run: text true", inputs=with_(dry_run="true"), status=200, would="credit"),
    case("dry run: text false is a real call", inputs=with_(dry_run="false"), **ok("10.00")),
    case("dry run: text On", inputs=with_(dry_run=" On "), status=200, would="credit"),
    case("dry run: neither true nor false", inputs=with_(dry_run="maybe")),
    case("dry run: remaining under caps", inputs=with_(dry_run=True), token={"daily_cap": "25", "monthly_cap": "100"},
         before=[("deposit", with_(reference="in_0"))], status=200, would="credit",
         remaining={"today": "5", "this_month": "80"}),
    case("dry run: over max_amount", inputs=with_(dry_run=True), token={"max_amount": "5"},
         **refused(403, "forbidden", limit="max_amount")),
    case("dry run: over the daily cap", inputs=with_(dry_run=True), token={"daily_cap": "15"},
         before=[("deposit", with_(reference="in_0"))], **refused(403, "forbidden", limit="daily_cap")),
    case("dry run: bad amount", inputs=with_(dry_run=True, amount="-3"),
         **refused(422, "validation", error_fields=["amount"])),
    case("dry run: key reused", inputs=with_(dry_run=True, dedupe_on="reference", amount="12"),
         before=[("deposit", with_(dedupe_on="reference"))], **refused(422, "idempotency-key-reused")),
    case("dry run: revoked token", inputs=with_(dry_run=True), revoked=True,
         **refused(401, "unauthorized", reason="revoked")),
]

NULL_EXPECT = {"client_error": None, "message": None, "body": None, "key": None, "query": {}, "status": None,
               "problem": None, "limit": None, "reason": None, "error_fields": None, "output": None,
               "sandbox_unchanged": False}


def _canonical(amount) -> str:
    return amounts.canonical(amount)


def expectation(item: dict) -> dict:
    typed = item["expect"]
    expect = copy.deepcopy(NULL_EXPECT)
    try:
        request = contract.build_request(item["op"], item["inputs"])
    except contract.ContractError as error:
        assert not typed, f"{item['name']}: a client refusal expects nothing else"
        expect.update(client_error=error.code, message=error.message, sandbox_unchanged=True)
        return expect
    assert "status" in typed, f"{item['name']}: expects a status"
    expect.update(body=request.body, fields=request.fields, key=request.key, query=request.query,
                  status=typed["status"])
    for name in ("problem", "limit", "reason", "error_fields"):
        expect[name] = typed.get(name)
    if typed["status"] >= 400:
        expect["sandbox_unchanged"] = request.dry_run or typed["status"] in (401, 403, 413, 422, 429)
        return expect
    common = {"user": request.body["user"], "amount": _canonical(request.body["amount"]),
              "idempotency_key": request.key, "sandbox": True}
    if request.dry_run:
        expect["output"] = {**common, "dry_run": True, "replayed": False, "would": typed["would"],
                            "remaining": typed.get("remaining", {"today": None, "this_month": None})}
        expect["sandbox_unchanged"] = True
    elif item["op"] == "deposit":
        expect["output"] = {**common, "dry_run": False, "replayed": typed.get("replayed", False),
                            "new_balance": typed["new_balance"]}
    else:
        expect["output"] = {**common, "dry_run": False, "replayed": typed.get("replayed", False),
                            "success": typed["success"]}
    expect["sandbox_unchanged"] = expect["sandbox_unchanged"] or bool(typed.get("replayed"))
    return expect


def build() -> dict:
    names = [item["name"] for item in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    cases = []
    for item in CASES:
        for earlier in item["before"]:
            contract.build_request(earlier["op"], earlier["inputs"])  # a setup call must itself be sendable
        cases.append({key: value for key, value in item.items() if key != "expect"} | {"expect": expectation(item)})
    return {
        "$comment": "Generated by scripts/make_parity_cases.py from relay/contract.py; do not edit by hand. "
                    "Described in schemas/README.md.",
        "version": 1,
        "relay": {"RELAY_AMOUNT_DECIMALS": 2, "start": "paywalls-relay dev-stack --json"},
        "protocol": [
            "Run each case on its own: reset the sandbox (POST {sandbox_url}/_sandbox/reset with the "
            "X-Sandbox-Control header set to sandbox_control), then apply setup.balances (PUT "
            "/_sandbox/balances/<user> {\"balance\": ...}) and setup.faults (POST /_sandbox/faults, each object as it is).",
            "Create the case's token with the admin API (POST {relay_url}/v1/admin/tokens, Bearer admin_key, body = "
            "token); when token_revoked is true, revoke it (POST /v1/admin/tokens/<id>/revoke) before any call.",
            "Make each call of before[] through the client exactly as the case's own call (their answers are not "
            "checked), then snapshot GET /_sandbox/state, then run the case's step.",
            "expect.client_error: the client refuses before calling the relay, with expect.message exactly; "
            "nothing is sent. Otherwise the client sends expect.body (JSON) with expect.query, and an "
            "Idempotency-Key header equal to expect.key, or none when expect.key is null.",
            "expect.status, problem (the name after urn:paywalls-relay:problem:), limit, reason (401) and "
            "error_fields (the errors[].field of a 422 validation, in any order) are the relay's answer.",
            "expect.output (null for a refusal) is a subset of the step's output: every key it names must be equal.",
            "expect.sandbox_unchanged: the sandbox's balances, deposits and charges after the step equal the snapshot.",
        ],
        "cases": cases,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {len(CASES)} parity cases to {OUT}")
