"""README "Events and instant triggers": its trigger table is schemas/events-contract.json, and its worked flow
(balance depleted -> email the user a top-up link) runs as written against a live dev-stack, the relay and sandbox
the Zapier and n8n suites use: a hook subscribed the way the Balance Depleted trigger subscribes, a charge that takes a
balance to zero, the event reaching the hook's target, and Get Top-up Link's call for the event's user."""

import json
import pathlib
import re
import uuid

import requests

from conftest import wait_for
from hook_receiver import Receiver

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EVENTS = json.loads((ROOT / "schemas" / "events-contract.json").read_text(encoding="utf-8"))


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 4)
    return README[start:end if end > 0 else None]


TEXT = section("Events and instant triggers")


def call(stack, token: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, stack.relay_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10,
                            **kwargs)


def test_the_trigger_table_is_the_events_contract():
    rows = re.findall(r"^\| Zapier \| \*\*([^*]+)\*\*(?: \(any source\))? \| `([a-z.*]+)`", TEXT, re.M)
    zapier = {spec["label"]: spec["event_types"] for spec in EVENTS["triggers"].values() if spec["zapier"]}
    assert {label: [event_type] for label, event_type in rows} == zapier
    n8n_row = re.search(r"^\| n8n \| \*\*Paywalls Relay Trigger\*\*, Event: (.*?) \|", TEXT, re.M).group(1)
    assert re.findall(r"\*([A-Z][A-Za-z ]+)\*", n8n_row) == [spec["n8n"]["name"] for spec in EVENTS["triggers"].values()]


def test_balance_depleted_to_a_top_up_link_as_the_readme_says(dev_stack):
    flags = re.search(r"\*\*Worked flow: balance depleted -> email the user a top-up link\.\*\* Token: `([^`]+)`",
                      TEXT).group(1).split()
    assert flags[0] == "--ops" and len(flags) == 2
    zap = dev_stack.token(label="Zap: depleted balances", operations=flags[1].split(","))
    app = dev_stack.token(label="the app's usage", operations=["deposit", "charge"])
    user = f"readme:{uuid.uuid4().hex[:12]}"
    trigger = EVENTS["triggers"]["balance_depleted"]
    with Receiver() as receiver:
        # What Zapier's Balance Depleted sends when the Zap is turned on (relay-events.js hookBody).
        hook = call(dev_stack, zap, "POST", EVENTS["hooks_path"],
                    json={"target_url": receiver.url + "/zap", "event_types": trigger["event_types"],
                          "filter": {"user": user}})
        assert hook.status_code == 201, hook.text
        try:
            assert call(dev_stack, app, "POST", "/v1/user/balance/deposit",
                        json={"user": user, "amount": "3", "metadata": {"reference": "readme_dep"}}).status_code == 200
            charged = call(dev_stack, app, "POST", "/v1/user/charge",
                           json={"user": user, "amount": "3", "metadata": {"reference": "readme_chg"}})
            assert charged.status_code == 200 and charged.json()["success"] is True
            wait_for(lambda: receiver.received, 30)
            (delivery,) = receiver.received
            event = json.loads(delivery["body"])
            assert event["type"] == "paywall.balance.depleted"
            assert event["data"]["externalUserId"] == user
            # Get Top-up Link with User = the trigger's User (data.externalUserId).
            link = call(dev_stack, zap, "GET", "/v1/user/balance/topup", params={"user": event["data"]["externalUserId"]})
            assert link.status_code == 200, link.text
            assert link.json()["url"].startswith("https://sandbox.paywalls.invalid/topup?user=")
            assert "https://sandbox.paywalls.invalid/topup?user=..." in TEXT
            # The flow's token moves no money.
            refused = call(dev_stack, zap, "POST", "/v1/user/charge", json={"user": user, "amount": "1"})
            assert refused.status_code == 403
        finally:
            assert call(dev_stack, zap, "DELETE", f"{EVENTS['hooks_path']}/{hook.json()['id']}").status_code == 200
