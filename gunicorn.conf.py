"""gunicorn settings for production: threaded workers, timeouts that fit the upstream budget."""

import os

from relay.config import from_env as _relay_config  # not `config`: gunicorn would read it as its own setting

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("RELAY_THREADS", "8"))
# A call may take RELAY_UPSTREAM_BUDGET (20 s) upstream; give it room before gunicorn kills the worker.
timeout = int(float(os.environ.get("RELAY_UPSTREAM_BUDGET", "20")) + 15)
graceful_timeout = timeout
keepalive = 5
accesslog = None  # the relay writes one JSON line per request itself
errorlog = "-"
# The same setting the app reads (relay/proxies.py), from the environment or .env: one list of trusted proxies.
forwarded_allow_ips = _relay_config()["FORWARDED_ALLOW_IPS"]


def on_starting(server):
    """Sandbox mode: one embedded upstream in the master, shared by every worker."""
    if not os.environ.get("PAYWALLS_API_KEY") and not os.environ.get("RELAY_SANDBOX_URL"):
        from relay import sandbox

        os.environ["RELAY_SANDBOX_URL"] = sandbox.ensure_embedded(None)
