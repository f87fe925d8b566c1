"""Issue 7, security: no response, header or log line of the whole test run contains a secret.

Imported by conftest.py. From the start of the session it records every answer a test receives (Flask's
test client and `requests`, so relays under gunicorn too), every line the relay's JSON log formatter
writes, and every secret that comes into being: the upstream master keys and admin keys of each relay
configuration, and every token secret minted or rotated. At the end of the session every record is
scanned; a leak fails the run and is printed. The only answers allowed to carry a token are the admin
API's and the console's create and rotate answers, which show the new token once, by design.
"""

import re
import threading

import flask.testing
import requests

from relay import config, logs, tokens

# The console's create and rotate answers are the pages that show the new token once.
CONSOLE_SHOWS_TOKEN_ONCE = re.compile(r"^/console/tokens/(new|[^/]+/rotate)$")
_lock = threading.Lock()
SECRETS: set[str] = set()
RECORDS: list[tuple[str, str]] = []  # (where it was seen, text)
SHOWS_TOKEN_ONCE = re.compile(r"^/v1/admin/tokens(/[^/]+/rotate)?/?$")
# Paywalls' (the sandbox's) answer to creating a webhook subscription shows its whsec_ secret once, by design.
SHOWS_WEBHOOK_SECRET_ONCE = re.compile(r"^/v1/webhooks/subscriptions/?$")
_installed = False


def add_secret(value):
    if isinstance(value, str) and len(value) >= 16:
        with _lock:
            SECRETS.add(value)


def record(where: str, text: str):
    with _lock:
        RECORDS.append((where, text))


def _response_text(headers, body: bytes) -> str:
    return "\n".join(f"{name}: {value}" for name, value in headers) + "\n" + body[:65536].decode("utf-8", "replace")


def install():
    global _installed
    if _installed:
        return
    _installed = True

    original_open = flask.testing.FlaskClient.open

    def open_(self, *args, **kwargs):
        response = original_open(self, *args, **kwargs)
        request = response.request
        shows_once = SHOWS_TOKEN_ONCE.match(request.path) or CONSOLE_SHOWS_TOKEN_ONCE.match(request.path)
        if not (request.method == "POST" and shows_once and response.status_code < 300):
            record(f"test client {request.method} {request.path} -> {response.status_code}",
                   _response_text(response.headers.items(), response.get_data()))
        return response

    flask.testing.FlaskClient.open = open_

    original_send = requests.Session.send

    def send(self, request, **kwargs):
        response = original_send(self, request, **kwargs)
        path = requests.utils.urlparse(request.url).path
        if not (request.method == "POST" and (SHOWS_TOKEN_ONCE.match(path) or SHOWS_WEBHOOK_SECRET_ONCE.match(path))
                and response.status_code < 300):
            record(f"HTTP {request.method} {request.url} -> {response.status_code}",
                   _response_text(response.headers.items(), response.content or b""))
        return response

    requests.Session.send = send

    original_format = logs.JsonFormatter.format

    def format_(self, log_record):
        line = original_format(self, log_record)
        record(f"log line of {log_record.name}", line)
        return line

    logs.JsonFormatter.format = format_

    original_checked = config._checked

    def checked(settings):
        settings = original_checked(settings)
        add_secret(settings.get("PAYWALLS_API_KEY"))
        add_secret(settings.get("RELAY_ADMIN_KEY"))
        add_secret(settings.get("PAYWALLS_WEBHOOK_SECRET"))
        add_secret(settings.get("RELAY_SECRET_KEY"))
        return settings

    config._checked = checked

    original_new_token, original_new_secret = tokens.new_token, tokens.new_secret_for

    def new_token():
        token_id, secret, text = original_new_token()
        add_secret(secret)
        return token_id, secret, text

    def new_secret_for(token_id):
        secret, text = original_new_secret(token_id)
        add_secret(secret)
        return secret, text

    tokens.new_token, tokens.new_secret_for = new_token, new_secret_for

    from relay import webhooks
    original_seal = webhooks.seal

    def seal(settings, secret):  # every webhook secret the relay stores
        add_secret(secret)
        return original_seal(settings, secret)

    webhooks.seal = seal


# Secrets are scanned for by their first WINDOW characters: one regex alternation of thousands of secrets over
# every record took tens of minutes at the end of a full run. A secret made of word characters can only stand
# inside a run of word characters, so only those runs are looked into, window by window, against a hash set.
WINDOW = 16
_RUN = re.compile(r"[A-Za-z0-9_\-]{%d,}" % WINDOW)


def leaks(records=None, secrets=None) -> list[str]:
    """Each record that contains a secret, described without printing the secret itself."""
    with _lock:
        records = list(RECORDS if records is None else records)
        secrets = set(SECRETS if secrets is None else secrets)
    if not secrets:
        return []
    by_prefix: dict[str, list[str]] = {}
    others = []  # secrets with other characters: the plain alternation, for the few there are
    for secret in secrets:
        if _RUN.fullmatch(secret):
            by_prefix.setdefault(secret[:WINDOW], []).append(secret)
        else:
            others.append(secret)
    pattern = re.compile("|".join(re.escape(s) for s in sorted(others, key=len, reverse=True))) if others else None
    found = []
    for where, text in records:
        hit = _first_hit(text, by_prefix, pattern)
        if hit:
            secret, offset = hit
            found.append(f"{where}: contains a secret ({secret[:4]}...) at offset {offset}")
    return found


def _first_hit(text: str, by_prefix: dict, pattern) -> tuple[str, int] | None:
    for run in _RUN.finditer(text):
        word, start = run.group(0), run.start()
        for i in range(len(word) - WINDOW + 1):
            for secret in by_prefix.get(word[i:i + WINDOW], ()):
                if word.startswith(secret, i):
                    return secret, start + i
    match = pattern.search(text) if pattern else None
    return (match.group(0), match.start()) if match else None


# --- hooks, imported into conftest.py ------------------------------------------------------------------------

def pytest_sessionstart(session):
    install()


def pytest_sessionfinish(session, exitstatus):
    found = leaks()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["SECRET LEAK: these answers or log lines of the test run contain the master key, an admin key "
                 "or a token secret:", *found[:50]]
        if reporter:
            reporter.write_sep("=", "secret leak check failed", red=True)
            for line in lines:
                reporter.write_line(line)
        else:
            print("\n".join(lines))
        session.exitstatus = 1
