"""`paywalls-relay dev-stack --json`: the one harness every suite (pytest, Zapier e2e, n8n e2e) starts."""

import os
import pathlib
import signal
import subprocess

import requests

from conftest import RELAY_BIN, auth, dev_stack_process, needs_postgres, postgres_database, relay_env

import pytest


def test_it_prints_one_json_line_and_serves_a_relay_on_its_sandbox(dev_stack):
    assert set(dev_stack.info) == {"relay_url", "sandbox_url", "admin_key", "sandbox_control", "database_url", "pid",
                                   "webhook_intake_url", "webhook_secret"}
    assert dev_stack.relay_url.startswith("http://127.0.0.1:") and dev_stack.sandbox_url.startswith("http://127.0.0.1:")
    assert dev_stack.info["pid"] == dev_stack.process.pid
    token = dev_stack.token(operations=["deposit", "balance"])
    answer = requests.post(dev_stack.relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=10,
                           json={"user": "acme:dev_stack_1", "amount": "3"})
    assert answer.status_code == 200 and answer.headers["X-Relay-Sandbox"] == "true"
    state = dev_stack.sandbox_state()
    assert [d["amount"] for d in state["deposits"] if d["user"] == "acme:dev_stack_1"] == ["3"]
    # The control endpoints need the printed secret: nothing else on the machine may reset or fault the sandbox.
    assert requests.get(dev_stack.sandbox_url + "/_sandbox/state", timeout=10).status_code == 403
    # The admin key is the relay's: a wrong one is refused.
    assert requests.get(dev_stack.relay_url + "/v1/admin/tokens", headers=auth("adm_wrong"), timeout=10).status_code == 401


def test_sigterm_stops_it_and_removes_its_temporary_database():
    with dev_stack_process() as stack:
        database = pathlib.Path(stack.info["database_url"].removeprefix("sqlite:///"))
        assert database.is_file()
        stack.process.send_signal(signal.SIGTERM)
        assert stack.process.wait(10) == 0
    assert not database.parent.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.relay_url + "/healthz", timeout=2)


def test_closing_stdin_stops_it():
    with dev_stack_process() as stack:
        stack.process.stdin.close()
        assert stack.process.wait(10) == 0


def test_it_never_reaches_paywalls_whatever_the_shell_says(tmp_path):
    env = relay_env({"PAYWALLS_API_KEY": "sk-paywalls-real-looking", "PAYWALLS_BASE_URL": "http://127.0.0.1:9/v1",
                     "RELAY_SANDBOX_URL": "http://127.0.0.1:9/v1"})
    with dev_stack_process(env=env) as stack:
        token = stack.token()
        answer = requests.post(stack.relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=10,
                               json={"user": "u1", "amount": "1"})
        assert answer.status_code == 200, answer.text
        assert len(stack.sandbox_state()["deposits"]) == 1


@needs_postgres
@pytest.mark.postgres
def test_it_runs_on_a_given_postgresql_database():
    with postgres_database() as url, dev_stack_process("--database-url", url) as stack:
        assert stack.info["database_url"] == url
        token = stack.token()
        answer = requests.post(stack.relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=10,
                               json={"user": "u1", "amount": "1"})
        assert answer.status_code == 200, answer.text


def test_a_database_it_cannot_use_is_refused_with_the_reason(tmp_path):
    result = subprocess.run([RELAY_BIN, "dev-stack", "--json", "--database-url", "nosuchdb://x"], env=relay_env({}),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == ""
    assert "--database-url" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_the_readme_shows_the_line_it_prints(dev_stack):
    import json
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    shown = json.loads(re.search(r"```json\n(\{\"relay_url\".*\})\n```", readme).group(1))
    assert list(shown) == list(dev_stack.info)
