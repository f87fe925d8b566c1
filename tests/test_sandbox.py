"""The standalone sandbox's latency setting (make bench's IO-bound scenario)."""

import threading
import time

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.sandbox import Server, create_sandbox_app


def timed_deposit(client, key: str) -> float:
    started = time.monotonic()
    answer = client.post("/v1/user/balance/deposit", json={"user": "u1", "amount": "1"},
                         headers={"Idempotency-Key": key})
    assert answer.status_code == 200
    return time.monotonic() - started


def test_every_call_waits_the_latency_plus_at_most_the_jitter():
    client = create_sandbox_app(latency_ms=120, jitter_ms=60).test_client()
    waits = [timed_deposit(client, f"k{n}") for n in range(5)]
    assert all(0.12 <= wait < 0.12 + 0.06 + 0.1 for wait in waits), waits
    # The control endpoints are the test harness, not Paywalls: never delayed.
    started = time.monotonic()
    assert client.get("/_sandbox/state").status_code == 200
    assert time.monotonic() - started < 0.1


def test_no_latency_by_default():
    client = create_sandbox_app().test_client()
    assert timed_deposit(client, "k") < 0.1


def test_concurrent_calls_wait_in_parallel_not_in_turn():
    server = Server(latency_ms=300).start()
    import requests

    durations = []

    def call(n):
        started = time.monotonic()
        requests.post(server.url + "/user/balance/deposit", json={"user": "u1", "amount": "1"},
                      headers={"Idempotency-Key": f"p{n}"}, timeout=10).raise_for_status()
        durations.append(time.monotonic() - started)

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=call, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(durations) == 10 and time.monotonic() - started < 1.5  # 10 in turn would take 3 s
        assert server.state.calls["deposit"] == 10
    finally:
        server.stop()


@pytest.mark.parametrize("option", ["--latency-ms", "--jitter-ms"])
def test_negative_latency_is_refused(option):
    result = CliRunner().invoke(main, ["sandbox", option, "-5"])
    assert result.exit_code == 2 and "-5" in result.output
