"""The README's run command and the standalone servers, as real processes."""

import os
import re
import subprocess
import sys
import time

import requests

from conftest import free_port, gunicorn_relay, migrated_token, relay_env, sqlite_url

BIN = os.path.join(os.path.dirname(sys.executable), "paywalls-relay")


def start(args, env, cwd):
    return subprocess.Popen([BIN, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def read_until(process, pattern, seconds=30):
    deadline, seen = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen += line
        match = re.search(pattern, seen)
        if match:
            return match, seen
    raise AssertionError(f"{pattern!r} not printed; got:\n{seen}")


def test_run_in_sandbox_mode_prints_a_working_demo_token(tmp_path):
    port = free_port()
    process = start(["run", "--port", str(port)], relay_env({"DATABASE_URL": sqlite_url(tmp_path)}), tmp_path)
    try:
        token, printed = read_until(process, r"Demo token[^:]*: (pwr_[0-9A-Za-z]+)")
        assert f"listening on http://127.0.0.1:{port}" in printed and "SANDBOX MODE" in printed
        body = {"user": "acme:user_123", "amount": "10"}
        url = f"http://127.0.0.1:{port}/v1/user/balance/deposit"
        first = requests.post(url, json=body, headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10)
        again = requests.post(url, json=body, headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10)
        assert first.status_code == 200 and first.json() == {"balanceFormatted": "10.00"}
        assert first.headers["X-Relay-Sandbox"] == "true"
        assert again.headers["Idempotent-Replayed"] == "true"
        assert (tmp_path / "relay.db").exists()
    finally:
        process.terminate()
        process.wait(10)


def test_standalone_sandbox_requires_its_key(tmp_path):
    port = free_port()
    process = start(["sandbox", "--port", str(port), "--api-key", "sk-k"], relay_env({}), tmp_path)
    try:
        read_until(process, "Sandbox upstream listening")
        url = f"http://127.0.0.1:{port}/v1/user/balance/deposit"
        assert requests.post(url, json={"user": "u", "amount": "1"}, timeout=5).status_code == 401
        ok = requests.post(url, json={"user": "u", "amount": "1"}, headers={"Authorization": "Bearer sk-k"}, timeout=5)
        assert ok.json() == {"balanceFormatted": "1.00"}
        assert requests.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=5).json()["balances"] == {"u": "1"}
    finally:
        process.terminate()
        process.wait(10)


def test_gunicorn_in_sandbox_mode_shares_one_upstream_across_workers(tmp_path):
    url = sqlite_url(tmp_path)
    text = migrated_token(url, operations=["deposit", "balance"])
    with gunicorn_relay({"DATABASE_URL": url}, workers=2, threads=2) as (relay, _):
        headers = {"Authorization": f"Bearer {text}"}
        assert requests.get(relay + "/healthz", timeout=5).json()["sandbox"] is True
        for i in range(6):
            requests.post(relay + "/v1/user/balance/deposit", json={"user": "u", "amount": "1", "metadata": {"i": i}},
                          headers=headers, timeout=10).raise_for_status()
        balances = {requests.get(relay + "/v1/user/balance?user=u", headers=headers, timeout=10).json()["balanceFormatted"]
                    for _ in range(6)}
    assert balances == {"6.00"}
