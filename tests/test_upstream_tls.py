"""Paywalls is reached over https://: the upstream client's watched HTTPS connections (relay/upstream.py, which the
hook deliveries reuse) make real TLS calls. Every other upstream test uses the sandbox over http://, which is how an
HTTPS-only TypeError went unnoticed."""

from hook_receiver import Receiver, certificates
from relay import config
from relay.upstream import Upstream


def test_a_call_to_an_https_upstream_is_answered(tmp_path):
    ca, cert, key = certificates(tmp_path, "localhost")
    with Receiver(tls=(cert, key)) as paywalls:
        port = paywalls.url.rsplit(":", 1)[1]
        settings = config.from_env(environ={}, overrides={"PAYWALLS_API_KEY": "sk-test-tls",
                                                          "PAYWALLS_BASE_URL": f"https://localhost:{port}/v1"})
        upstream = Upstream(settings)
        upstream.session.verify = ca  # the test CA, instead of the public ones
        outcome = upstream.call("POST", "/user/balance/deposit", json={"user": "acme:u1", "amount": "1"},
                                idempotency_key="tls-1")
    assert (outcome.kind, outcome.status) == ("ok", 200)
    assert [item["path"] for item in paywalls.received] == ["/v1/user/balance/deposit"]
    assert paywalls.received[0]["headers"]["Authorization"] == "Bearer sk-test-tls"
