"""Configuration, read once from the environment (and a .env file) into a plain dict."""

import os
import secrets
from dataclasses import dataclass

from dotenv import dotenv_values, find_dotenv

from . import proxies

DEFAULT_BASE_URL = "https://api.paywalls.ai/v1"
# Between the end of a call's hard deadline and its record retries, and a duplicate's takeover: room for clock
# skew between relay machines and for the record transaction itself.
LEASE_MARGIN = 5.0


class ConfigError(RuntimeError):
    """The relay refuses to start; the message says what to set."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    cast: type
    meaning: str


# The README's configuration table is generated from this list (see tests/test_docs.py).
SETTINGS = [
    Setting("PAYWALLS_API_KEY", None, str, "Your Paywalls secret key. Unset: sandbox mode against the embedded simulated upstream."),
    Setting("PAYWALLS_BASE_URL", DEFAULT_BASE_URL, str, "Where the Paywalls API lives."),
    Setting("DATABASE_URL", None, str, "Database URL. Default: SQLite file `instance/relay.db` under the working directory (the release step and gunicorn must start in the same one). PostgreSQL: `postgres://`, `postgresql://` or `postgresql+psycopg://user:password@host/db`."),
    Setting("RELAY_ADMIN_KEY", None, str, "Bearer key for `/v1/admin/tokens`, and the key that signs in to the operator console at `/console/`. Unset: both are off (`paywalls-relay run` in sandbox mode makes a key of its own and prints it)."),
    Setting("RELAY_ENV", "development", str, "`development` or `production` (production refuses to start without `PAYWALLS_API_KEY`)."),
    Setting("REDIS_URL", None, str, "Share rate limits across processes (`redis://127.0.0.1:6379/0`). Unset, or while Redis is unreachable (an ERROR line once a minute, and `/readyz` says so): per-process memory; no request fails because of Redis."),
    Setting("RELAY_AMOUNT_DECIMALS", 2, int, "Fraction digits accepted in `amount` (0-6)."),
    Setting("RELAY_CONNECT_TIMEOUT", 3.05, float, "Seconds to connect to Paywalls."),
    Setting("RELAY_READ_TIMEOUT", 10.0, float, "Seconds to wait for Paywalls' answer to one attempt."),
    Setting("RELAY_UPSTREAM_BUDGET", 20.0, float, "Hard limit in seconds for all attempts of one call, body read included (under Zapier's 30 s)."),
    Setting("RELAY_UPSTREAM_RETRIES", 3, int, "Retries after the first attempt on connection errors, 429 and 5xx."),
    Setting("RELAY_INFLIGHT_WAIT", 2.0, float, "Seconds a duplicate waits for the same key in flight before 409."),
    Setting("RELAY_LOCK_TIMEOUT", 30.0, float, "Lease in seconds of a call on its key; a claim left by a dead process is taken over after it. Must be at least `RELAY_UPSTREAM_BUDGET` + `RELAY_RECORD_BUDGET` + 5."),
    Setting("RELAY_RECORD_BUDGET", 5.0, float, "Seconds the relay keeps retrying to record Paywalls' answer when its database fails."),
    Setting("RELAY_BULK_CONCURRENCY", 8, int, "Rows of one bulk batch (`POST /v1/relay/bulk`) sent to Paywalls at once, per relay process running it (1-64)."),
    Setting("RELAY_BULK_LEASE", 60.0, float, "Lease in seconds of a relay process on the bulk batch it runs, renewed every few seconds; a batch left by a dead process is resumed by another after it."),
    Setting("RELAY_IDEMPOTENCY_RETENTION_DAYS", 30, int, "Days idempotency keys and answers are kept."),
    Setting("RELAY_AUTH_FAILURE_LIMIT", "20/minute", str, "Failed authentications allowed per client address."),
    Setting("RELAY_TRUST_PROXY", 0, int, "How many proxies in front set X-Forwarded-For (Heroku, Render: 1); honoured only from `FORWARDED_ALLOW_IPS`."),
    Setting("FORWARDED_ALLOW_IPS", "127.0.0.1,::1", str, "Proxy addresses or networks whose X-Forwarded-* headers are believed, by gunicorn and the relay alike (Heroku, Render: `*`). See \"Behind a proxy\"."),
    Setting("RELAY_LOG_LEVEL", "INFO", str, "Log level of the JSON request log."),
    Setting("RELAY_METRICS_TOKEN", None, str, "Bearer token `/metrics` requires. Unset: `/metrics` is open (keep it off the public internet)."),
]


def _cast(setting: Setting, raw: str):
    try:
        return setting.cast(raw)
    except ValueError:
        raise ConfigError(f"{setting.name}={raw!r} is not a valid {setting.cast.__name__}") from None


def from_env(environ=None, overrides=None) -> dict:
    """The relay's configuration; `overrides` (tests) win over the environment."""
    if environ is None:
        # A .env file in the working directory fills in what the environment does not set.
        environ = {**dotenv_values(find_dotenv(usecwd=True)), **os.environ}
    config = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        config[setting.name] = setting.default if raw in (None, "") else _cast(setting, raw)
    config.update(overrides or {})
    return _checked(config)


def _checked(config: dict) -> dict:
    if config["RELAY_ENV"] not in ("development", "production"):
        raise ConfigError("RELAY_ENV must be 'development' or 'production'")
    config["SANDBOX"] = not config["PAYWALLS_API_KEY"]
    if config["SANDBOX"] and config["RELAY_ENV"] == "production":
        raise ConfigError(
            "RELAY_ENV=production needs PAYWALLS_API_KEY: refusing to start a production relay "
            "against the simulated sandbox upstream. Set PAYWALLS_API_KEY to your Paywalls secret key."
        )
    if not 0 <= config["RELAY_AMOUNT_DECIMALS"] <= 6:
        raise ConfigError("RELAY_AMOUNT_DECIMALS must be between 0 and 6")
    needed = config["RELAY_UPSTREAM_BUDGET"] + config["RELAY_RECORD_BUDGET"] + LEASE_MARGIN
    if config["RELAY_LOCK_TIMEOUT"] < needed:
        raise ConfigError(
            f"RELAY_LOCK_TIMEOUT={config['RELAY_LOCK_TIMEOUT']:g} is too short: a duplicate could take over a call that "
            f"is still running. It must be at least RELAY_UPSTREAM_BUDGET + RELAY_RECORD_BUDGET + {LEASE_MARGIN:g} s "
            f"= {needed:g} s. Raise RELAY_LOCK_TIMEOUT or lower RELAY_UPSTREAM_BUDGET.")
    try:
        proxies.allow_list(config["FORWARDED_ALLOW_IPS"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not 1 <= config["RELAY_BULK_CONCURRENCY"] <= 64:
        raise ConfigError("RELAY_BULK_CONCURRENCY must be between 1 and 64")
    if config["RELAY_BULK_LEASE"] < 2:
        raise ConfigError("RELAY_BULK_LEASE must be at least 2 seconds: the runner renews it every lease/4 seconds")
    if config["RELAY_UPSTREAM_BUDGET"] <= 0 or config["RELAY_RECORD_BUDGET"] < 0:
        raise ConfigError("RELAY_UPSTREAM_BUDGET must be positive and RELAY_RECORD_BUDGET not negative")
    if config["SANDBOX"]:
        # The embedded sandbox gets a key of its own, so the upstream path is exercised as in production.
        config["PAYWALLS_API_KEY"] = "sk-sandbox-" + secrets.token_urlsafe(16)
    return config


DEFAULT_SERVER_THREADS = 8  # the Flask dev server and tests; gunicorn.conf.py sets RELAY_SERVER_THREADS


def server_threads() -> int:
    """How many requests one process serves at once (gunicorn's threads, set by gunicorn.conf.py): the database
    and upstream pools are sized to it, so a request never waits for a pooled connection."""
    try:
        return max(1, int(os.environ.get("RELAY_SERVER_THREADS") or DEFAULT_SERVER_THREADS))
    except ValueError:
        return DEFAULT_SERVER_THREADS
