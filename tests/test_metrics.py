"""/metrics under gunicorn adds up every worker, has the figures an operator watches, and can require a token."""

import re

import requests

from conftest import SANDBOX_KEY, auth, deposit, gunicorn_relay, migrated_token, sqlite_url


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in a Prometheus exposition, or None when it is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))).strip(",") == wanted:
            return float(match.group(2))
    return None


def test_every_scrape_sees_every_workers_counts(tmp_path, sandbox):
    url = sqlite_url(tmp_path)
    token = migrated_token(url, operations=["deposit"])
    with gunicorn_relay({"DATABASE_URL": url, "PAYWALLS_API_KEY": SANDBOX_KEY, "PAYWALLS_BASE_URL": sandbox.url},
                        workers=2, threads=4) as (relay, _):
        for n in range(16):  # a new connection each: both workers take some
            requests.post(relay + "/v1/user/balance/deposit", json={"user": "acme:m", "amount": "1", "metadata": {"n": n}},
                          headers=auth(token), timeout=10).raise_for_status()
        scrapes = [requests.get(relay + "/metrics", timeout=10).text for _ in range(4)]
    for text in scrapes:
        assert sample(text, "relay_requests_total", endpoint="/v1/user/balance/deposit", status="200") == 16
        assert sample(text, "relay_outcomes_total", operation="deposit", outcome="credited") == 16
        assert sample(text, "relay_upstream_seconds_count", path="/user/balance/deposit") == 16
        assert sample(text, "relay_ambiguous_keys_open") == 0
        assert sample(text, "relay_claims_waiting") == 0
        assert sample(text, "relay_db_connections_in_use", pool="writer") is not None


def test_open_ambiguous_keys_are_counted(app, client, token, sandbox):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "status", "status": 500, "count": 50},
                  timeout=5)
    assert deposit(client, token).status_code == 502
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "relay_ambiguous_keys_open") == 1
    assert sample(text, "relay_outcomes_total", operation="deposit", outcome="ambiguous") >= 1


def test_metrics_token_when_set(make_app):
    app = make_app(RELAY_METRICS_TOKEN="metrics-" + "x" * 24)
    client = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["type"].endswith("unauthorized")
    assert client.get("/metrics", headers=auth("wrong")).status_code == 401
    allowed = client.get("/metrics", headers=auth("metrics-" + "x" * 24))
    assert allowed.status_code == 200 and "relay_requests_total" in allowed.get_data(as_text=True)
