"""The README is tested: every command and request of Quick start, Tokens, Connect (the Make recipe), Worked flows,
Reconciliation and Troubleshooting runs here against the sandbox, as written, and what the README says it shows
is asserted. Commands and bodies are read from README.md itself, so an edit there that breaks one fails here."""

import csv
import io
import json
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time

import pytest
import requests
from click.testing import CliRunner

from conftest import free_port, relay_env
from relay import cli, ledger, messages, tokens

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = pathlib.Path(sys.executable).parent  # the venv pytest runs in, where `make run` installs paywalls-relay


# --- reading the README ---------------------------------------------------------------------------------------------

def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 4)
    return README[start:end if end > 0 else None]


def fenced(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if language is None:
                language, body = line.strip()[3:], []
            else:
                blocks.append((language, "\n".join(body) + "\n"))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def code_blocks(text: str, language: str = "sh") -> list[str]:
    return [body for lang, body in fenced(text) if lang == language]


def commands(block: str) -> list[str]:
    """Shell lines: continuations joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(re.sub(r"\s+", " ", line))
    return lines


def token_flags(flow: str) -> str:
    """The `Token: ...` options of a worked flow."""
    text = section("Worked flows")
    start = text.index(f"**{flow}")
    return re.search(r"Token:\s*`([^`]+)`", text[start:]).group(1)


def make_recipe() -> dict:
    rows = dict(re.findall(r"^\s*\| (URL|Method|Headers|Body type|Body) \| `?(.*?)`? \|$", section("Connect your no-code tool"), re.M))
    return rows


# --- running it ---------------------------------------------------------------------------------------------------

@pytest.fixture
def env(operator_env):
    return operator_env


def shell(line: str, ok=True, **values) -> str:
    """One `paywalls-relay ...` line of the README, with <placeholders> filled in; its output."""
    for name, value in values.items():
        line = line.replace(f"<{name}>", value)
    line = re.sub(r"\s*>\s*\S+$", "", line)  # `> november.csv`: the output is what lands in the file
    argv = shlex.split(line)
    assert argv[0] == "paywalls-relay", line
    result = CliRunner().invoke(cli.main, argv[1:], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, (line, result.output)
    return result.output


@pytest.fixture
def relay(env):
    from relay.app import create_app
    return create_app().test_client()


def curl(client, line: str, token: str, headers=None):
    """A README curl line, sent to the relay as curl would send it."""
    argv = shlex.split(line.replace("pwr_...", token))
    method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
    url = next(arg for arg in argv if arg.startswith("http"))
    sent = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
    data = argv[argv.index("-d") + 1] if "-d" in argv else None
    return client.open(re.sub(r"^https?://[^/]+", "", url), method=method, data=data, headers={**sent, **(headers or {})})


def create(flags: str, label: str) -> dict:
    return json.loads(shell(f"paywalls-relay tokens create --label '{label}' {flags} --json"))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- Quick start ----------------------------------------------------------------------------------------------------

def test_quick_start_run_prints_what_the_readme_shows_and_its_curl_credits_once(tmp_path):
    shown = [block for block in code_blocks(section("Quick start"), "")
             if "Paywalls Relay listening" in block][0].splitlines()
    assert commands(code_blocks(section("Quick start"))[0]) == ["make run"]
    port = free_port()
    # `make run` is the venv, then this command; here in a scratch directory, on a free port.
    process = subprocess.Popen([str(BIN / "paywalls-relay"), "run", "--port", str(port)], cwd=tmp_path,
                               env=relay_env({}), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        printed = [process.stdout.readline().rstrip("\n") for _ in shown]
        token = re.search(r"(pwr_[0-9A-Za-z]+)", "\n".join(printed)).group(1)
        admin_key = re.search(r"(admin-sandbox-[0-9A-Za-z_-]+)\)$", "\n".join(printed), re.M).group(1)
        for want, got in zip(shown, printed):
            assert got == want.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("pwr_...", token) \
                .replace("admin-sandbox-...", admin_key)
        command = shlex.split(next(line for line in printed if line.strip().startswith("curl ")).strip()) + ["-i"]
        first = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        again = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        balance = requests.get(f"http://127.0.0.1:{port}/v1/user/balance?user=acme:user_123", headers=bearer(token),
                               timeout=10).json()
    finally:
        process.terminate()
        process.wait(10)
    says = section("Quick start")
    assert '`{"balanceFormatted": "10.00"}`' in says and "`Idempotent-Replayed: true`" in says
    for answer, replayed in ((first, "false"), (again, "true")):
        head, body = answer.split("\n\n", 1)
        assert " 200 " in head.splitlines()[0] and body == '{"balanceFormatted": "10.00"}'
        assert re.search(r"^Idempotency-Key: pwk1_[0-9a-f]{64}\r?$", head, re.M | re.I)
        assert re.search(rf"^Idempotent-Replayed: {replayed}\r?$", head, re.M | re.I)
    assert balance["balanceFormatted"] == "10.00"  # and no second credit


# --- Tokens -----------------------------------------------------------------------------------------------------------

def test_the_tokens_workflow_runs_as_written(env, relay, sandbox):
    lines = commands(code_blocks(section("Tokens: one per workflow"))[0])
    assert [line.split()[2] for line in lines] == ["create", "list", "show", "update", "update", "rotate", "revoke"]
    created = shell(lines[0])
    token = re.search(r"Token:\s+(pwr_\S+)", created).group(1)
    token_id = tokens.split(token)[0]
    assert "shown once" in created  # "the token (pwr_...) is printed once"

    listed = shell(lines[1])  # status, operations, last use
    row = next(line for line in listed.splitlines() if line.startswith(token_id)).split()
    assert row[1:4] == ["active", "deposit", "never"]
    assert "Daily cap:         2000 (used 0 today, 2000 left)" in shell(lines[2], id=token_id)  # usage, what remains

    quick_start = [line.strip() for line in code_blocks(section("Quick start"), "")[0].splitlines()
                   if line.strip().startswith("curl")][0]
    refused = curl(relay, quick_start, token)
    assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "metadata.reference"
    with_reference = commands(code_blocks(section("Tokens: one per workflow"))[1])[0]
    assert curl(relay, with_reference, token).get_json() == {"balanceFormatted": "10.00"}

    shell(lines[3], id=token_id)
    shell(lines[4], id=token_id)
    limits = json.loads(shell(f"paywalls-relay tokens show {token_id} --json"))["limits"]
    assert limits["daily_cap"] == "3000" and limits["monthly_cap"] is None  # `none` removes a limit

    rotated = re.search(r"Token:\s+(pwr_\S+)", shell(lines[5], id=token_id)).group(1)
    old = curl(relay, with_reference, token)
    assert old.status_code == 401 and old.get_json()["reason"] == "invalid"  # the old one stops working now
    assert curl(relay, with_reference, rotated).status_code == 200  # same scopes (a replay of the same event)
    shell(lines[6], id=token_id)
    gone = curl(relay, with_reference, rotated)
    assert gone.status_code == 401 and gone.get_json()["reason"] == "revoked"
    refused = shell(f"paywalls-relay tokens rotate {token_id}", ok=False)
    assert "is revoked" in refused and "tokens create" in refused  # "rotate refuses a revoked ... token"
    assert len(sandbox.state.snapshot()["deposits"]) == 1


# --- Connect: the Make recipe -------------------------------------------------------------------------------------------

def test_the_make_recipe_credits_once_with_no_idempotency_key(env, relay, sandbox):
    recipe = make_recipe()
    assert recipe["Method"] == "POST" and recipe["Body type"] == "Raw, `application/json"
    token = create(token_flags("Renewal credits"), "Make: renewals")["token"]
    tokens_example = create(commands(code_blocks(section("Tokens: one per workflow"))[0])[0]
                            .split("tokens create", 1)[1].replace('--label "Zap: Stripe renewals"', ""), "Make")["token"]
    body = recipe["Body"].replace("{{user_id}}", "acme:user_9").replace("{{invoice}}", "in_1")
    path = re.sub(r"^https://relay\.example\.com", "", recipe["URL"])
    name, value = recipe["Headers"].split(": ", 1)
    answers = []
    for text in (token, token, tokens_example):  # a Make retry, then the same body through the Tokens section's token
        answers.append(relay.open(path, method=recipe["Method"], data=body, content_type="application/json",
                                  headers={name: value.replace("pwr_...", text)}))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["Idempotent-Replayed"] for a in answers[:2]] == ["false", "true"]
    assert [d["user"] for d in sandbox.state.snapshot()["deposits"]] == ["acme:user_9", "acme:user_9"]  # one per token


# --- Worked flows ---------------------------------------------------------------------------------------------------

def deposit_as_zapier(client, token, user, amount, reason, reference, key=None):
    headers = {**bearer(token), **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/user/balance/deposit", headers=headers,
                       json={"user": user, "amount": amount, "metadata": {"reason": reason, "reference": reference}})


def test_signup_bonus_flow(env, relay, sandbox):
    token = create(token_flags("Signup bonus"), "Zap: signup bonus")["token"]
    first = deposit_as_zapier(relay, token, "acme:contact_77", "5", "Signup bonus", "hs_77")
    later = deposit_as_zapier(relay, token, "acme:contact_77", "5", "Signup bonus", "hs_77")
    assert first.status_code == later.status_code == 200 and later.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.state.snapshot()["deposits"]) == 1  # "the same contact replayed later is not credited again"
    assert deposit_as_zapier(relay, token, "acme:contact_78", "6", "Signup bonus", "hs_78").status_code == 403


def test_renewal_flow_two_zaps_one_invoice_one_credit(env, relay, sandbox):
    flags = token_flags("Renewal credits")
    assert "--namespace renewals" in flags and "--dedupe-on user,metadata.reference" in flags
    zap = create(flags, "Zap: Stripe renewals")["token"]
    second = create(flags, "n8n: Stripe renewals")["token"]  # "its own token created with the same ..."
    answers = [deposit_as_zapier(relay, zap, "acme:cus_1", "30", "Subscription renewal", "in_nov", key="zap-attempt-1"),
               deposit_as_zapier(relay, zap, "acme:cus_1", "30", "Subscription renewal", "in_nov", key="zap-attempt-2"),
               deposit_as_zapier(relay, second, "acme:cus_1", "30", "Subscription renewal", "in_nov", key="n8n-run-9")]
    doubled = []
    threads = [threading.Thread(target=lambda: doubled.append(
        deposit_as_zapier(relay, zap, "acme:cus_1", "30", "Subscription renewal", "in_nov"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code == 200 for a in answers + doubled)
    assert len(sandbox.state.snapshot()["deposits"]) == 1  # "the invoice is still one credit"
    assert deposit_as_zapier(relay, zap, "acme:cus_1", "30", "Subscription renewal", "in_dec").status_code == 200
    assert len(sandbox.state.snapshot()["deposits"]) == 2  # "a new month's invoice has a new id and credits again"


def test_goodwill_flow(env, relay, sandbox):
    token = create(token_flags("Goodwill credits"), "Zap: goodwill")["token"]
    assert relay.get("/v1/user/balance?user=acme:u5", headers=bearer(token)).status_code == 200  # Find User Balance
    answers = [deposit_as_zapier(relay, token, "acme:u5", "20", "Goodwill", f"tkt_{n}").status_code for n in range(11)]
    assert answers == [200] * 10 + [403]  # "the daily cap bounds what a mistake ... can cost"
    over = deposit_as_zapier(relay, token, "acme:u5", "20", "Goodwill", "tkt_99").get_json()
    assert over["limit"] == "daily_cap" and over["remaining"] == "0"
    assert deposit_as_zapier(relay, token, "acme:u5", "21", "Goodwill", "tkt_x").get_json()["limit"] == "max_amount"


# --- Reconciliation ---------------------------------------------------------------------------------------------------

def test_reconciliation_commands_and_claims(env, relay, sandbox, monkeypatch):
    # The README exports November 2026 and "yesterday": the relay and the CLI live on 30 November 2026 here, so the
    # commands mean what they say whatever day the tests run (on the real clock this failed from 1 December on).
    from datetime import datetime, timezone

    from conftest import manual_clock
    moment = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    manual_clock(relay.application, moment)
    monkeypatch.setattr(cli, "utcnow", lambda: moment)
    token = create("--ops deposit,ledger", "Zap: finance")["token"]
    deposit_as_zapier(relay, token, "acme:u1", "20", "subscription_renewal", "in_1Q2w3E4r", key="zap-1")
    deposit_as_zapier(relay, token, "acme:u1", "20", "subscription_renewal", "in_1Q2w3E4r", key="zap-2")
    lines = commands(code_blocks(section("Reconciliation (for finance)"))[0])
    assert len(lines) == 3
    november = list(csv.DictReader(io.StringIO(shell(lines[0]))))
    assert list(november[0]) == ledger.EXPORT_COLUMNS
    assert [row["outcome"] for row in november] == ["credited", "replayed"]
    # "its rows share one idempotency_key; the first is credited, the later ones replayed"; client_key is each header
    assert november[0]["idempotency_key"] == november[1]["idempotency_key"]
    assert [row["client_key"] for row in november] == ["zap-1", "zap-2"]
    assert json.loads(november[0]["metadata"]) == {"reason": "subscription_renewal", "reference": "in_1Q2w3E4r"}
    credited = [json.loads(line) for line in shell(lines[1]).splitlines()]
    assert [row["outcome"] for row in credited] == ["credited"]
    assert [row["outcome"] for row in csv.DictReader(io.StringIO(shell(lines[2])))] == ["credited", "replayed"]
    assert "Resolved 0 stranded keys" in shell("paywalls-relay ledger resolve")
    feed = relay.get("/v1/relay/deposits?user=acme:u1&limit=10", headers=bearer(token)).get_json()
    assert [entry["metadata"]["reference"] for entry in feed["data"]] == ["in_1Q2w3E4r"]
    assert feed["data"][0]["id"].startswith("led_")


# --- Troubleshooting and the error table ---------------------------------------------------------------------------

def quoted(text: str) -> list[str]:
    return re.findall(r'\*\*"([^"]+)"\*\*', text)


def doubled_webhook_title(make_app, sandbox) -> str:
    """The second of two identical deposits while Paywalls is slow: the 409's title."""
    app = make_app(RELAY_INFLIGHT_WAIT=0.2)
    with app.app_context():
        from relay import db
        with db.transaction() as session:
            _, text = tokens.create(session, {"label": "doubled webhook"})
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "latency", "seconds": 1.5}, timeout=5)
    answers = []

    def send():
        answers.append(app.test_client().post("/v1/user/balance/deposit", json={"user": "acme:w", "amount": "3"},
                                              headers=bearer(text)))
    first = threading.Thread(target=send)
    first.start()
    deadline = time.monotonic() + 5
    while not sandbox.state.snapshot()["calls"].get("deposit") and time.monotonic() < deadline:
        time.sleep(0.02)  # the first call is at Paywalls
    send()
    first.join()
    late = [a for a in answers if a.status_code == 409]
    assert len(late) == 1 and sorted(a.status_code for a in answers) == [200, 409]
    return late[0].get_json()["title"]


def test_troubleshooting_messages_are_what_the_relay_sends(env, relay, sandbox, make_app):
    said = quoted(section("Troubleshooting"))
    token_info = create("--ops deposit --daily-cap 5", "troubleshooting")
    token, token_id = token_info["token"], token_info["id"]
    sent = {}
    capped = relay.post("/v1/user/balance/deposit", json={"user": "acme:t", "amount": "6"}, headers=bearer(token))
    sent["daily cap"] = capped.get_json()["title"]
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "status", "status": 500, "count": 20}, timeout=5)
    sent["did not confirm"] = relay.post("/v1/user/balance/deposit", json={"user": "acme:t", "amount": "1"},
                                         headers=bearer(token)).get_json()["title"]
    requests.post(sandbox.url.replace("/v1", "/_sandbox/reset"), timeout=5)
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "respond", "status": 302, "body": "",
                                                                          "headers": {"Location": "/login"}}, timeout=5)
    sent["misdirected"] = relay.post("/v1/user/balance/deposit", json={"user": "acme:t", "amount": "2"},
                                     headers=bearer(token)).get_json()["title"]
    wrong_key = make_app(PAYWALLS_API_KEY="sk-paywalls-wrong-0123456789abcdef").test_client()
    with wrong_key.application.app_context():
        from relay import db
        with db.transaction() as session:
            _, other = tokens.create(session, {"label": "wrong key"})
    sent["own API key"] = wrong_key.post("/v1/user/balance/deposit", json={"user": "acme:t", "amount": "1"},
                                         headers=bearer(other)).get_json()["detail"]
    shell("paywalls-relay tokens update <id> --daily-cap 10", id=token_id)  # "Raise it with tokens update <id> --daily-cap"
    assert "Daily cap:         10" in shell("paywalls-relay tokens show <id>", id=token_id)
    shell(f"paywalls-relay tokens revoke {token_id}")
    sent["revoked"] = relay.post("/v1/user/balance/deposit", json={"user": "acme:t", "amount": "1"},
                                 headers=bearer(token)).get_json()["detail"]
    sent["in progress"] = doubled_webhook_title(make_app, sandbox)
    sent["record"] = messages.outcome_unrecorded().title  # provoked in tests/test_faults.py (the database fails)

    assert said[0] == "The relay token was revoked / has expired / is not valid"
    for phrase in ("The relay token was revoked", "The relay token has expired", "The relay token is not valid"):
        assert any(detail.startswith(phrase) for detail in messages.UNAUTHORIZED.values()), phrase
    assert sent["revoked"].startswith("The relay token was revoked")
    assert said[1] == sent["daily cap"]
    assert said[2] == sent["in progress"]
    assert said[3] == sent["did not confirm"]
    assert said[4] == sent["record"]
    assert said[5] == sent["misdirected"]
    assert sent["own API key"].startswith(said[6])
    assert len(said) == 7


def test_the_error_table_lists_what_the_code_sends():
    table = re.findall(r"^\| ([0-9x, ]+) \| `([a-z-]+)` \| (.*) \|$", section("What each error means"), re.M)
    source = (ROOT / "relay" / "messages.py").read_text()
    sent = set(re.findall(r'Problem\(\s*(\d+|status),\s*"([a-z-]+)"', source))
    for statuses, name, _ in table:
        assert any(kind == name for _, kind in sent), name
        for status in re.findall(r"\d{3}", statuses):
            assert (status, name) in sent or ("status", name) in sent, (status, name)
    assert {name for _, name, _ in table} >= {kind for _, kind in sent} - {"http", "not-found", "method-not-allowed",
                                                                          "internal"}
    reasons = re.findall(r"`([a-z]+)`", dict((name, text) for _, name, text in table)["unauthorized"].split("says why:")[1])
    assert [r for r in reasons if r in messages.UNAUTHORIZED] == list(messages.UNAUTHORIZED)
    limits = re.findall(r"`([a-z_]+)`", dict((name, text) for _, name, text in table)["forbidden"].split("says which")[1])
    assert set(limits[:5]) == set(re.findall(r'limit="([a-z_]+)"', source)) | {"daily_cap", "monthly_cap"}


# --- Dry run --------------------------------------------------------------------------------------------------------

def test_the_dry_run_curl_answers_what_the_readme_shows_and_moves_nothing(env, relay, sandbox):
    text = section("Dry run: try a step without moving money")
    line = commands(code_blocks(text)[0])[0]
    shown = json.loads(code_blocks(text, "json")[0])
    token = create("--ops deposit", "dry run")["token"]
    answer = curl(relay, line, token)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["idempotency_key"].startswith("pwk1_") and shown["idempotency_key"] == "pwk1_..."
    assert {**body, "idempotency_key": "pwk1_..."} == shown
    assert sandbox.state.snapshot()["deposits"] == []
    for value in ("1", "yes", "TRUE"):  # "Only true and false are values"
        refused = curl(relay, line.replace("dry_run=true", f"dry_run={value}"), token)
        assert refused.status_code == 422 and refused.get_json()["errors"][0]["field"] == "dry_run"
    assert "dry_run" in shell("paywalls-relay ledger export --since today --outcome dry_run")
