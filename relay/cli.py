"""The `paywalls-relay` command: run, sandbox, db, tokens, ledger, idempotency, bulk, webhooks."""

import functools
import getpass
import json
import os
import socket
import sys
from datetime import datetime, timedelta

import click
from flask import current_app

from . import batches, caps, claims, dates, db, deliveries, events, ledger, messages, migrate, money, tokens
from .models import utcnow

from . import audit  # token changes are audited (issue 17)
from .models import Token

DEMO_LABEL = "Sandbox demo"


@click.group()
@click.version_option(package_name="paywalls-relay")
def main():
    """Paywalls Relay: scoped, idempotent credits for Zapier, n8n, Make and any HTTP client."""


def with_appcontext(func=None, *, check_schema=True):
    """Build the app from the environment (and .env) and run the command inside it."""
    if func is None:
        return functools.partial(with_appcontext, check_schema=check_schema)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .app import create_app

        from .config import ConfigError
        try:
            app = create_app(check_schema=check_schema)
        except (ConfigError, migrate.SchemaNotCurrent) as error:
            raise click.ClickException(str(error)) from None
        with app.app_context():
            return func(*args, **kwargs)
    return wrapper


def _database_url() -> str:
    return current_app.extensions["relay.engine"].url.render_as_string(hide_password=False)


@main.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@with_appcontext(check_schema=False)
def run(host, port):
    """Migrate the database and serve the relay (in sandbox mode, with a fresh demo token)."""
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the relay logs each request as JSON itself
    migrate.upgrade(_database_url())
    settings = current_app.config["RELAY"]
    server = make_server(host, port, current_app._get_current_object(), threaded=True)
    batches.start(current_app._get_current_object())  # this process serves, so it runs bulk batches too
    deliveries.start(current_app._get_current_object())  # and delivers events to REST hooks
    url = f"http://{host}:{server.server_port}"
    from . import logs
    logs.startup(settings, _database_url(), 1, "one per request")
    click.echo(f"Paywalls Relay listening on {url}")
    _print_console(url, settings)
    if settings["SANDBOX"]:
        click.secho("SANDBOX MODE: no PAYWALLS_API_KEY, so calls go to the embedded simulated upstream. "
                    "No real balance changes.", fg="yellow", bold=True)
        _print_demo(url, _demo_token())
        if _wire_sandbox_webhooks(settings, url):
            click.echo(f"Sandbox webhooks: signed events go to {url}/v1/webhooks/paywalls (instant triggers work "
                       "with no Paywalls account).")
    else:
        click.echo(f"Upstream: {settings['PAYWALLS_BASE_URL']}")
    sys.stdout.flush()
    server.serve_forever()


def _wire_sandbox_webhooks(settings: dict, relay_url: str) -> bool:
    """Point the embedded sandbox's webhooks at this relay's intake, signed with a secret drawn for this start, as a
    Paywalls subscription would be. Not when a secret is configured already (it is someone else's), nor when the
    sandbox belongs to another process (RELAY_SANDBOX_URL)."""
    import os
    import secrets

    from . import sandbox, webhooks
    if settings.get("PAYWALLS_WEBHOOK_SECRET") or os.environ.get("RELAY_SANDBOX_URL"):
        return False
    secret = "whsec_" + secrets.token_urlsafe(24)
    settings["PAYWALLS_WEBHOOK_SECRET"] = secret
    sandbox.embedded().send_webhooks_to(relay_url + webhooks.PATH, secret)
    return True


def _demo_token() -> str:
    with db.transaction() as session:
        demo = next((t for t in tokens.all_tokens(session) if t.label == DEMO_LABEL and not t.revoked_at), None)
        if demo is None:
            demo, text = tokens.create(session, {"label": DEMO_LABEL, "operations": list(tokens.OPERATIONS),
                                                 "notes": "Created by `paywalls-relay run` in sandbox mode."})
            _audit(session, "token.created", demo.id, audit.created(demo))
            return text
        text = tokens.rotate(demo)
        _audit(session, "token.rotated", demo.id)
        return text


def _print_demo(url: str, token: str):
    click.echo(f"Demo token (all operations; a new one each start): {token}")
    click.echo("Try a deposit:")
    click.echo(f"  curl -s -X POST {url}/v1/user/balance/deposit -H 'Authorization: Bearer {token}' "
               "-H 'Content-Type: application/json' -d '{\"user\": \"acme:user_123\", \"amount\": \"10\"}'")


def _print_console(url: str, settings: dict):
    if settings["RELAY_ADMIN_KEY"]:
        click.echo(f"Operator console: {url}/console/ (sign in with the value of RELAY_ADMIN_KEY)")
    elif settings["SANDBOX"]:
        from . import console
        key = console.sandbox_admin_key(current_app._get_current_object())
        click.echo(f"Operator console: {url}/console/ (sandbox admin key, a new one each start: {key})")
    else:
        click.echo(f"Operator console: off. Set RELAY_ADMIN_KEY and restart to turn it on at {url}/console/")


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--api-key", default=None, help="Require this bearer key (as Paywalls requires yours).")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Every Paywalls call waits this long first, like an internet round trip.")
@click.option("--jitter-ms", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Plus a random wait from 0 to this, drawn per call.")
@click.option("--webhook-url", default=None, help="Also deliver every event, signed, to this URL (e.g. a relay's "
              "http://127.0.0.1:8000/v1/webhooks/paywalls), besides the subscriptions made through the API.")
@click.option("--webhook-secret", default=None, envvar="SANDBOX_WEBHOOK_SECRET",
              help="The secret that signs deliveries to --webhook-url (or SANDBOX_WEBHOOK_SECRET).")
def sandbox_command(host, port, api_key, latency_ms, jitter_ms, webhook_url, webhook_secret):
    """Serve the simulated Paywalls upstream alone (for the Zapier/n8n tests and benchmarks)."""
    from .sandbox import Server

    if webhook_url and not webhook_secret:
        raise click.BadParameter("a delivery needs a secret to be signed with", param_hint="--webhook-secret")
    server = Server(host, port, api_key, latency_ms=latency_ms, jitter_ms=jitter_ms, webhook_url=webhook_url,
                    webhook_secret=webhook_secret)
    latency = f" (each call waits {latency_ms:g} ms + 0-{jitter_ms:g} ms)" if latency_ms or jitter_ms else ""
    click.echo(f"Sandbox upstream listening on {server.url}{latency}")
    sys.stdout.flush()
    server.server.serve_forever()


@main.command("dev-stack")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line with the URLs and keys (for test suites).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--database-url", default=None, help="Use this database (migrated first); default: a new SQLite file "
              "in a temporary directory, removed on exit.")
@click.option("--exit-with-stdin", is_flag=True, help="Also stop when standard input closes (the suite that started "
              "it died without a signal).")
def dev_stack(as_json, host, database_url, exit_with_stdin):
    """Start the sandbox upstream and a relay on free ports, create an admin key, print where they are, and serve
    until SIGTERM or SIGINT. The one way every test suite (pytest, the Zapier e2e, the n8n e2e) gets a live relay."""
    import logging
    import os
    import secrets
    import shutil
    import signal
    import tempfile
    import threading

    from werkzeug.serving import make_server

    from . import sandbox
    from .app import create_app
    from .config import ConfigError

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    workdir = None
    if not database_url:
        workdir = tempfile.mkdtemp(prefix="paywalls-dev-stack-")
        database_url = f"sqlite:///{os.path.join(workdir, 'relay.db')}"
    # Sandbox mode, whatever the shell says: the stack never reaches the real Paywalls.
    os.environ.pop("RELAY_SANDBOX_URL", None)
    upstream = sandbox.embedded(host)
    admin_key = "adm_" + secrets.token_urlsafe(32)
    webhook_secret = "whsec_" + secrets.token_urlsafe(24)  # the sandbox signs its events for the relay's intake
    try:
        migrate.upgrade(database_url)
        app = create_app({"DATABASE_URL": database_url, "PAYWALLS_API_KEY": None, "RELAY_ENV": "development",
                          "RELAY_ADMIN_KEY": admin_key, "PAYWALLS_WEBHOOK_SECRET": webhook_secret})
    except (ConfigError, migrate.SchemaNotCurrent) as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:  # an unknown scheme, an unreachable server: say so, not a traceback
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise click.ClickException(messages.dev_stack_database(error)) from None
    server = make_server(host, 0, app, threaded=True)
    stack = {"relay_url": f"http://{host}:{server.server_port}",
             "sandbox_url": upstream.url.removesuffix("/v1"),
             "admin_key": admin_key,
             "sandbox_control": upstream.control_secret,
             "database_url": database_url,
             "pid": os.getpid()}
    from . import webhooks
    stack["webhook_intake_url"] = stack["relay_url"] + webhooks.PATH
    stack["webhook_secret"] = webhook_secret
    upstream.send_webhooks_to(stack["webhook_intake_url"], webhook_secret)
    if as_json:
        click.echo(json.dumps(stack))
    else:
        click.echo(f"Relay:    {stack['relay_url']}  (admin key: {admin_key})")
        click.echo(f"Sandbox:  {stack['sandbox_url']}  (control: {sandbox.CONTROL_HEADER}: {upstream.control_secret})")
        click.echo(f"Database: {database_url}")
    sys.stdout.flush()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if exit_with_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True, name="stdin-watch").start()
    threading.Thread(target=server.serve_forever, daemon=True, name="relay").start()
    batches.start(app)  # the stack serves, so it runs bulk batches too
    deliveries.start(app)  # and delivers events to REST hooks
    stop.wait()
    server.shutdown()
    batches.stop(app, timeout=10)
    deliveries.stop(app, timeout=10)
    upstream.stop()
    app.extensions["relay.engine"].dispose()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


# --- db -----------------------------------------------------------------------------------------------------

@main.group("db")
def db_group():
    """Database schema."""


@db_group.command("upgrade")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext(check_schema=False)
def db_upgrade(as_json):
    """Apply migrations up to the newest (run on every deploy; concurrent runs wait for each other)."""
    try:
        migrate.upgrade(_database_url())
    except migrate.SchemaNotCurrent as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps({"revision": migrate.head()}))
        return
    click.echo("Database is up to date.")


# --- tokens ---------------------------------------------------------------------------------------------------

@main.group("tokens")
def tokens_group():
    """Create, inspect, limit, rotate and revoke relay tokens."""


def scope_options(func):
    options = [
        click.option("--label", help="What this token is for, e.g. 'Zap: Stripe renewals'."),
        click.option("--notes", help="Free text for operators."),
        click.option("--ops", help="Allowed operations: deposit,charge,balance,ledger,bulk,events,topup (default: deposit)."),
        click.option("--max-amount", help="Largest amount per call; none removes it."),
        click.option("--daily-cap", help="Largest total per UTC day; none removes it."),
        click.option("--monthly-cap", help="Largest total per calendar month (UTC); none removes it."),
        click.option("--user-pattern", help="Regular expression the whole user id must match."),
        click.option("--require-metadata", multiple=True,
                     help="Metadata key every call must carry (repeatable). On update it replaces the whole list."),
        click.option("--expires-in", help="Relative expiry: 30s, 12h, 90d."),
        click.option("--expires-at", help="Absolute expiry, ISO 8601."),
        click.option("--rate-limit", help="Requests per period, e.g. 60/minute; none removes it."),
        click.option("--dedupe-on", help="Fields the idempotency key derives from (default user,amount,metadata)."),
        click.option("--namespace", help="Share idempotency keys with other tokens of this namespace."),
        click.option("--feed", type=click.Choice(["own", "all"]),
                     help="Deposits feed of a ledger token: own (its namespace's, or its own; default) or all workflows'."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


LIST_OPTIONS = ("operations", "dedupe_on")  # typed as comma-separated text, lists in schemas/token-settings.json
CLEARABLE = ("max_amount", "daily_cap", "monthly_cap", "rate_limit", "user_pattern", "expires_at", "namespace")


def _spec(options: dict) -> dict:
    """The options as the settings object the admin API takes, so both are checked by one schema."""
    names = {"ops": "operations", "require_metadata": "required_metadata"}
    spec = {}
    for option, value in options.items():
        if value in (None, ()):
            continue
        name = names.get(option, option)
        if name in CLEARABLE and isinstance(value, str) and value.strip().lower() == "none":
            value = None  # `--daily-cap none` removes the limit: null in the settings object
        elif name in LIST_OPTIONS:
            value = [item.strip() for item in value.split(",") if item.strip()]
        spec[name] = list(value) if isinstance(value, tuple) else value
    return spec


def _fail(error: tokens.SpecError):
    options = {"operations": "ops", "required_metadata": "require-metadata"}
    for item in error.errors:
        option = "--" + options.get(item["field"], item["field"].replace("_", "-"))
        click.echo(f"error: {option}: {item['message']}", err=True)
    sys.exit(2)


def _show(described: dict, as_json: bool, token_text: str | None = None, usage: dict | None = None):
    if as_json:
        click.echo(json.dumps({**described, **(usage or {}), **({"token": token_text} if token_text else {})}))
        return
    for name, value in plain_lines(described, usage):
        click.echo(f"{name + ':':<19}{value}")
    if token_text:
        click.secho(f"\n{'Token:':<19}{token_text}", bold=True)
        click.echo("Copy it now: it is shown once and stored only as a hash.")


def plain_lines(described: dict, usage: dict | None = None) -> list[tuple[str, str]]:
    """A token in plain words, for people: what it may do, for whom, how much, until when."""
    limits = described["limits"]

    def cap(name, period, label):
        if limits[name] is None:
            return "none"
        if usage is None:
            return limits[name]
        return f"{limits[name]} (used {usage['usage'][period]} {label}, {usage['remaining'][period]} left)"

    dedupe = limits["dedupe_on"]
    return [
        ("Token", f"{described['id']}  \"{described['label']}\""),
        ("Status", described["status"] + (f" since {described['revoked_at']}" if described.get("revoked_at") else "")),
        ("May", ", ".join(described["operations"])),
        ("Per call", f"at most {limits['max_amount']}" if limits["max_amount"] else "no maximum"),
        ("Daily cap", cap("daily_cap", "today", "today")),
        ("Monthly cap", cap("monthly_cap", "this_month", "this month")),
        ("Users", f"only ids matching {limits['user_pattern']}" if limits["user_pattern"] else "any user"),
        ("Required metadata", ", ".join(limits["required_metadata"]) or "none"),
        ("Rate limit", limits["rate_limit"] or "none"),
        ("One event is", "the same " + " and ".join(dedupe)),
        ("Shares events", f"with tokens in namespace {described['namespace']}" if described["namespace"]
         else "with no other token"),
        ("Deposits feed", FEED_WORDS.get(described.get("feed") or "own", described.get("feed") or "own")
         if "ledger" in described["operations"] else "no (no ledger operation)"),
        ("Expires", described["expires_at"] or "never"),
        ("Created", described["created_at"]),
        ("Last used", described["last_used_at"] or "never"),
    ] + ([("Notes", described["notes"])] if described.get("notes") else [])


FEED_WORDS = {"own": "its own deposits (its namespace's when it has one)", "all": "every workflow's deposits"}


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns as wide as their widest cell, two spaces apart."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


@tokens_group.command("create")
@scope_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with id and token).")
@with_appcontext
def tokens_create(as_json, **options):
    """Create a token. Its secret is printed once."""
    try:
        with db.transaction() as session:
            token, text = tokens.create(session, _spec(options))
            described = tokens.describe(token)
            _audit(session, "token.created", token.id, audit.created(token))
    except tokens.SpecError as error:
        _fail(error)
    except messages.Problem as problem:
        click.echo(f"error: {problem.detail}", err=True)
        sys.exit(2)
    _show(described, as_json, text)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_list(as_json):
    """All tokens, without secrets."""
    with db.read() as session:
        described = [tokens.describe(t) for t in tokens.all_tokens(session)]
    if as_json:
        click.echo(json.dumps(described))
        return
    click.echo(table([[item["id"], item["status"], ",".join(item["operations"]), item["last_used_at"] or "never",
                        item["label"]] for item in described], ["ID", "STATUS", "OPERATIONS", "LAST USED", "LABEL"]))


def cli_origin() -> str:
    """Who ran the command, for the audit log: the operating-system user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _audit(session, action: str, token_id: str, changes: dict | None = None):
    audit.record(session, "cli", cli_origin(), action, token_id, changes)


def _with_token(token_id: str, change):
    with db.transaction() as session:
        # Locked first, so a change made at the same moment elsewhere is audited with true "from" values.
        token = session.get(Token, token_id, with_for_update=True)
        if token is None:
            click.echo(f"error: no token with id {token_id}", err=True)
            sys.exit(1)
        result = change(session, token)
        return tokens.describe(token), result


@tokens_group.command("show")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_show(token_id, as_json):
    """One token with its usage today and this month."""
    described, usage = _with_token(token_id, lambda session, token: caps.usage(session, token, utcnow()))
    _show(described, as_json, usage=usage)


@tokens_group.command("update")
@click.argument("token_id")
@scope_options
@click.option("--add-required-metadata", "add_metadata", multiple=True, help="Add a required metadata key (repeatable).")
@click.option("--remove-required-metadata", "remove_metadata", multiple=True,
              help="Stop requiring a metadata key (repeatable).")
@click.option("--disable/--enable", "disabled", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_update(token_id, as_json, add_metadata, remove_metadata, **options):
    """Change a token's scopes; the secret stays the same. Limits given as none are removed."""
    if options["require_metadata"] and (add_metadata or remove_metadata):
        raise click.UsageError("--require-metadata replaces the whole list; use it alone, or use "
                               "--add-required-metadata / --remove-required-metadata")

    def change(session, token):
        spec = _spec(options)
        if add_metadata or remove_metadata:
            current = [key for key in token.required_metadata if key not in remove_metadata]
            spec["required_metadata"] = current + [key for key in add_metadata if key not in current]
        before = audit.settings_of(token)
        tokens.update_token(session, token, spec)
        changes = audit.changed(before, audit.settings_of(token))
        if changes:
            _audit(session, audit.update_action(changes), token.id, changes)
    try:
        described, _ = _with_token(token_id, change)
    except tokens.SpecError as error:
        _fail(error)
    except messages.Problem as problem:
        click.echo(f"error: {problem.detail}", err=True)
        sys.exit(2)
    if options["require_metadata"] and not as_json:
        click.echo("Note: --require-metadata replaced the list of required metadata keys "
                   "(--add-required-metadata adds one).")
    _show(described, as_json)


@tokens_group.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_revoke(token_id, as_json):
    """Stop a token from working, from its next request on."""
    def revoke(session, token):
        if token.revoked_at is None:
            _audit(session, "token.revoked", token.id)
        tokens.revoke(token)
    described, _ = _with_token(token_id, revoke)
    if as_json:
        click.echo(json.dumps(described))
        return
    click.echo(f"Token {token_id} revoked.")


@tokens_group.command("rotate")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_rotate(token_id, as_json):
    """Give a token a new secret with the same scopes; the old secret stops working."""
    try:
        def rotate(session, token):
            text = tokens.rotate(token)
            _audit(session, "token.rotated", token.id)
            return text
        described, text = _with_token(token_id, rotate)
    except messages.Problem as problem:
        click.echo(f"error: {problem.detail}", err=True)
        sys.exit(2)
    _show(described, as_json, text)


# --- ledger and idempotency -------------------------------------------------------------------------------------

class Moment(click.ParamType):
    """An ISO 8601 date or date-time (UTC unless it carries an offset), or today / yesterday (UTC midnight). Parsed by
    dates.parse, the one parser of every typed date, which refuses what it cannot represent."""
    name = "date"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        word = value.strip().lower()
        if word in ("today", "yesterday"):
            midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
            return midnight - timedelta(days=1 if word == "yesterday" else 0)
        try:
            return dates.parse(value.strip())
        except dates.DateError as error:
            self.fail(f"{error} Write 2026-11-01, 2026-11-01T09:30:00Z or 2026-11-01T10:30:00+01:00 (UTC unless an "
                      "offset is given), or today or yesterday.", param, ctx)


def _outcomes(values: tuple[str, ...]) -> list[str]:
    chosen = [item.strip() for value in values for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in ledger.OUTCOMES]
    if unknown:
        raise click.BadParameter(f"unknown outcome {', '.join(map(repr, unknown))}; choose from "
                                 f"{', '.join(ledger.OUTCOMES)} (repeat --outcome or separate them with commas)",
                                 param_hint="--outcome")
    return chosen


@main.group("ledger")
def ledger_group():
    """The record of every operation the relay performed."""


@ledger_group.command("export")
@click.option("--since", required=True, type=Moment(),
              help="Start (inclusive): 2026-11-01, 2026-11-01T09:30:00Z, today or yesterday; UTC unless an offset is given.")
@click.option("--until", type=Moment(), help="End (exclusive), written as --since.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The same as --format jsonl.")
@click.option("--outcome", "outcomes", multiple=True,
              help="Only these outcomes, repeated or comma-separated: credited, charged, declined, rejected, failed, "
                   "ambiguous, replayed, read.")
@with_appcontext
def ledger_export(since, until, fmt, as_json, outcomes):
    """Write ledger entries to stdout, oldest first, for reconciliation."""
    chosen = _outcomes(outcomes)
    with db.read() as session:
        ledger.write_export(ledger.export_rows(session, since, until, chosen), sys.stdout, "jsonl" if as_json else fmt)


@ledger_group.command("resolve")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many keys per run.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@with_appcontext
def ledger_resolve(limit, as_json):
    """Complete every call whose outcome is unknown and that nobody is retrying.

    Ambiguous keys, and keys left in flight past RELAY_LOCK_TIMEOUT (a crash, or a database failure after Paywalls
    answered), are sent again with their own upstream Idempotency-Key, so Paywalls applies each at most once, and
    what it answers is recorded in the ledger and the caps. Run it on a schedule, e.g. every 10 minutes.
    """
    counts = money.resolve(limit)
    audit.record_resolve("cli", cli_origin(), counts)
    if as_json:
        click.echo(json.dumps(counts))
        return
    handled = sum(counts[name] for name in money.OUTCOMES)
    click.echo(f"Resolved {handled} stranded keys: " + ", ".join(f"{counts[name]} {name.replace('_', ' ')}"
                                                             for name in money.OUTCOMES))
    if counts["ambiguous"]:
        click.echo(f"{counts['ambiguous']} are still ambiguous (Paywalls did not confirm); run it again later.")
    if counts["unresolvable"]:
        click.echo(f"{counts['unresolvable']} were stored before request bodies were kept and need a person: "
                   "export the ledger with --outcome ambiguous and check them in the Paywalls dashboard.")


@main.group("bulk")
def bulk_group():
    """Deposits or charges from a CSV or JSON file, each row through the same exactly-once path as an HTTP call."""


def _bulk_command(op: str):
    applied = {"deposit": "credited", "charge": "charged"}[op]

    @bulk_group.command(op)
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
    @click.option("--token-id", required=True, help="The token whose limits, caps, namespace and dedupe rule apply.")
    @click.option("--batch-id", default=None, help="Name the batch (default: file: + the hash of the file's bytes). "
                  "It is part of each row's Idempotency-Key, bulk:<batch id>:<line>, never of the event.")
    @click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 64),
                  help="Calls to Paywalls in flight at once (a 429 halves it and pauses the run).")
    @click.option("--dry-run", is_flag=True, help="Check every row and the caps against the file's total; send nothing.")
    @click.option("--skip-invalid", is_flag=True, help="Send the valid rows of a file with invalid ones (reported "
                  "invalid) instead of refusing it.")
    @click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Write one CSV row per input line: outcome, key, balance after, error.")
    @click.option("--retry-for", type=click.FloatRange(min=0), default=None,
                  help="Seconds to keep retrying a row whose outcome is unknown (default: RELAY_LOCK_TIMEOUT + 10).")
    @click.option("--dedupe-on", hidden=True, default=None)
    @with_appcontext
    def command(file, token_id, batch_id, concurrency, dry_run, skip_invalid, report_path, retry_for, dedupe_on):
        if dedupe_on is not None:
            raise click.UsageError(messages.BULK_NO_DEDUPE_ON)
        _bulk(op, applied, file, token_id, batch_id, concurrency, dry_run, skip_invalid, report_path, retry_for)

    command.__doc__ = (f"{op.capitalize()} every row of FILE (CSV: user, amount, reason, reference, metadata.<key>; "
                       f"or a JSON array). Rerunning the same file after a crash or Ctrl-C sends only the rows not yet "
                       f"{applied}. Exit 0 only when every row is {applied} or replayed.")
    return command


def _bulk(op, applied, file, token_id, batch_id, concurrency, dry_run, skip_invalid, report_path, retry_for):
    import signal
    import threading

    from . import bulk

    with open(file, "rb") as stream:
        content = stream.read()
    try:
        token = bulk.load_token(token_id)
        batch = bulk.batch_id(content, batch_id)
        rows, problems = bulk.read_rows(content, op)
        if dry_run:
            plan = bulk.plan(token, op, rows, problems, batch)
            _print_plan(plan, applied)
            sys.exit(0 if plan.ok else 1)
        stop = threading.Event()

        def interrupted(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            click.echo("\n" + messages.BULK_STOPPING, err=True)

        previous = signal.signal(signal.SIGINT, interrupted)
        progress = _BulkProgress(len(rows), applied)
        try:
            report = bulk.run(token, op, rows, problems, batch, concurrency=concurrency, on_progress=progress,
                              stop_event=stop, skip_invalid=skip_invalid, retry_for=retry_for)
        finally:
            signal.signal(signal.SIGINT, previous)
            progress.close()
    except bulk.Refused as refused:
        _print_plan(refused.plan, applied)
        raise click.ClickException(refused.reason) from None
    except messages.Problem as refusal:
        errors = " ".join(error["message"] for error in refusal.extra.get("errors", []))
        raise click.ClickException(f"{refusal.detail} {errors}".strip()) from None
    if report_path:
        with open(report_path, "w", newline="", encoding="utf-8") as out:
            report.write_csv(out)
    counts = report.counts
    click.echo(messages.BULK_SUMMARY.format(batch=report.batch_id, rows=len(report.rows), seconds=report.seconds,
                                            counts=", ".join(f"{counts[name]} {name}" for name in bulk.OUTCOMES
                                                             if counts[name] or name in (applied, "replayed"))))
    if counts["replayed"]:
        click.echo(messages.BULK_ALREADY_DONE.format(count=counts["replayed"]))
    if report.pauses:
        click.echo(messages.BULK_SLOWED.format(count=len(report.pauses)))
    for row in report.unknown():
        click.echo(messages.BULK_UNKNOWN_ROW.format(line=row.line, error=row.error, key=row.idempotency_key))
    if report.unknown():
        click.echo(messages.BULK_UNKNOWN_AFTER)
    if report.stopped:
        click.echo(messages.BULK_STOPPED_EARLY)
    if report_path:
        click.echo(f"Report: {report_path}")
    sys.exit(0 if report.ok else 1)


def _print_plan(plan, applied: str):
    for item in plan.problems:
        click.echo(f"line {item['line']}, {item['field']}: {item['message']}")
    if plan.totals:
        click.echo("Total per user:")
        for user, total in sorted(plan.totals.items()):
            click.echo(f"  {user}\t{total}")
    click.echo(messages.BULK_WOULD_SEND.format(rows=plan.to_send, total=plan.total, done=plan.to_replay,
                                               busy=messages.BULK_IN_FLIGHT.format(count=plan.in_flight)
                                               if plan.in_flight else ""))
    if plan.problems:
        click.echo(messages.BULK_PROBLEM_LINES.format(count=len(plan.invalid_lines)))
    if plan.refusal is not None:
        click.echo(f"Refused: {plan.refusal.detail}")
    elif plan.remaining and any(value is not None for value in plan.remaining.values()):
        left = [f"{label} {plan.remaining[name]}" for name, label in (("today", "today"), ("this_month", "this month"))
                if plan.remaining[name] is not None]
        click.echo(f"Caps left after it: {', '.join(left)}.")


class _BulkProgress:
    """A bar on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self, total: int, applied: str):
        import time
        self.time, self.applied, self.total = time, applied, total
        self.started = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="row", file=sys.stderr)

    def __call__(self, report, row):
        counts, now = report.counts, self.time.monotonic()
        failed = sum(counts[name] for name in ("declined", "invalid", "failed", "ambiguous", "skipped"))
        done = len(report.rows)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({self.applied: counts[self.applied], "replayed": counts["replayed"],
                                  "failed": failed}, refresh=False)
        elif now - self.last >= 2 or done == self.total:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            click.echo(messages.BULK_PROGRESS.format(done=done, total=self.total, applied=counts[self.applied],
                                                     label=self.applied, replayed=counts["replayed"], failed=failed,
                                                     rate=rate), err=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


for _op in ("deposit", "charge"):
    _bulk_command(_op)


@main.group("idempotency")
def idempotency_group():
    """Stored idempotency keys and answers."""


@idempotency_group.command("purge")
@click.option("--older-than-days", type=click.IntRange(min=0), default=None,
              help="Default: RELAY_IDEMPOTENCY_RETENTION_DAYS.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def idempotency_purge(older_than_days, as_json):
    """Forget finished events (and finished bulk batches and hook deliveries) older than the retention period.

    Keys in flight, open or ambiguous, and keys holding a cap reservation, are never removed. The same fields sent
    after that are a new call (with a new upstream key), credited again and recorded as such.
    """
    days = older_than_days if older_than_days is not None else current_app.config["RELAY"]["RELAY_IDEMPOTENCY_RETENTION_DAYS"]
    with db.write() as connection:
        removed = claims.purge(connection, utcnow() - timedelta(days=days))
        batches_removed = batches.purge(connection, utcnow() - timedelta(days=days))
        deliveries_removed = deliveries.purge(connection, utcnow() - timedelta(days=days))
        events_removed = events.purge(connection, utcnow() - timedelta(days=days))
    if as_json:
        click.echo(json.dumps({"removed": removed, "older_than_days": days, "bulk_batches_removed": batches_removed,
                               "hook_deliveries_removed": deliveries_removed, "events_removed": events_removed}))
        return
    click.echo(f"Removed {removed} idempotency keys older than {days} days, {batches_removed} finished bulk batches, "
               f"{deliveries_removed} finished hook deliveries (with their delivery log) and {events_removed} "
               "fanned-out events.")


# --- webhooks: Paywalls' events into the relay ------------------------------------------------------------------------

@main.group("webhooks")
def webhooks_group():
    """Paywalls webhook subscriptions that deliver to this relay (POST /v1/webhooks/paywalls)."""


def _event_types(text: str | None) -> list[str]:
    from . import webhooks
    names = [part.strip() for part in (text or "").split(",") if part.strip()] or list(webhooks.DEFAULT_EVENTS)
    if len(names) > webhooks.MAX_EVENTS or ("*" in names and len(names) > 1):
        raise click.BadParameter("give at most 50 event names or patterns, or * alone", param_hint="--events")
    return names


@webhooks_group.command("subscribe")
@click.option("--url", required=True, help="This relay's intake as Paywalls reaches it: "
              "https://relay.example.com/v1/webhooks/paywalls")
@click.option("--events", "event_types", default=None,
              help="Comma-separated event names or patterns (default: paywall.balance.*); * for every event.")
@click.option("--description", default=None, help="Shown in Paywalls' dashboard (up to 512 characters).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def webhooks_subscribe(url, event_types, description, as_json):
    """Register this relay with Paywalls' webhooks. The whsec_ secret Paywalls returns is stored encrypted and never
    shown; the relay verifies every delivery with it."""
    from urllib.parse import urlsplit

    from . import webhooks
    parts = urlsplit(url)
    settings = current_app.config["RELAY"]
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise click.BadParameter("must be the relay's full URL, e.g. https://relay.example.com/v1/webhooks/paywalls",
                                 param_hint="--url")
    if parts.scheme != "https" and not settings["SANDBOX"]:
        raise click.BadParameter("Paywalls delivers only to https:// URLs", param_hint="--url")
    if description is not None and len(description) > 512:
        raise click.BadParameter("is longer than 512 characters", param_hint="--description")
    names = _event_types(event_types)
    try:
        with db.transaction() as session:
            described = webhooks.subscribe(session, settings, url, names, description, utcnow())
    except webhooks.RegistrationError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(described))
        return
    click.echo(f"Registered Paywalls webhook subscription {described['id']}: {', '.join(described['events'])} "
               f"-> {described['url']}")
    click.echo(f"Its secret (ending {described['secret']}) is stored encrypted; deliveries signed with it are accepted.")
    if not parts.path.rstrip("/").endswith(webhooks.PATH):
        click.secho(f"Note: the relay takes deliveries at {webhooks.PATH}; check the URL's path.", fg="yellow")
    if settings["RELAY_EVENTS_FROM_RELAY"] == "auto":
        click.echo("Paywalls now sends deposit, charge and depleted events for every source, so the relay stops "
                   "making its own paywall.* events (RELAY_EVENTS_FROM_RELAY=auto); relay.* events continue.")


@webhooks_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def webhooks_list(as_json):
    """The subscriptions this relay registered (secrets shown only by their last 4 characters), and whether Paywalls
    still has them active."""
    from . import webhooks
    with db.read() as session:
        ours, others, problem = webhooks.list_subscriptions(session)
    if as_json:
        click.echo(json.dumps({"subscriptions": ours, "elsewhere": others, "paywalls_error": problem}))
        return
    if not ours:
        click.echo("No subscriptions registered by this relay. `paywalls-relay webhooks subscribe --url "
                   "https://<relay>/v1/webhooks/paywalls` makes one.")
    else:
        click.echo(table([[item["id"], "active" if item["active"] else "deactivated",
                           {True: "active", False: "inactive", None: "?"}[item.get("paywalls_active")]
                           if "paywalls_active" in item else "?", item["secret"], ",".join(item["events"] or []),
                           item["url"]] for item in ours],
                         ["ID", "HERE", "AT PAYWALLS", "SECRET", "EVENTS", "URL"]))
    if others:
        click.echo(f"\nAt Paywalls but not registered by this relay ({len(others)}): "
                   + ", ".join(f"{o['id']} -> {o['url']}" for o in others))
    if problem:
        click.echo(f"\n{problem}", err=True)


@webhooks_group.command("unsubscribe")
@click.argument("subscription_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def webhooks_unsubscribe(subscription_id, as_json):
    """Deactivate a subscription at Paywalls and stop accepting deliveries signed with its secret."""
    from . import webhooks
    try:
        with db.transaction() as session:
            described = webhooks.unsubscribe(session, subscription_id, utcnow())
    except webhooks.RegistrationError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(described))
        return
    gone = " (Paywalls no longer knew it)" if described["paywalls_answer"] == 404 else ""
    click.echo(f"Unsubscribed {described['id']}{gone}: its deliveries are no longer accepted.")


if __name__ == "__main__":
    main()
