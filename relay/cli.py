"""The `paywalls-relay` command: run, sandbox, db, tokens, ledger, idempotency."""

import functools
import json
import sys
from datetime import datetime, timedelta

import click
from flask import current_app

from . import caps, claims, db, ledger, messages, migrate, money, tokens
from .models import as_utc, utcnow

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
    url = f"http://{host}:{server.server_port}"
    click.echo(f"Paywalls Relay listening on {url}")
    if settings["SANDBOX"]:
        click.secho("SANDBOX MODE: no PAYWALLS_API_KEY, so calls go to the embedded simulated upstream. "
                    "No real balance changes.", fg="yellow", bold=True)
        _print_demo(url, _demo_token())
    else:
        click.echo(f"Upstream: {settings['PAYWALLS_BASE_URL']}")
    sys.stdout.flush()
    server.serve_forever()


def _demo_token() -> str:
    with db.transaction() as session:
        demo = next((t for t in tokens.all_tokens(session) if t.label == DEMO_LABEL and not t.revoked_at), None)
        if demo is None:
            _, text = tokens.create(session, {"label": DEMO_LABEL, "operations": list(tokens.OPERATIONS),
                                              "notes": "Created by `paywalls-relay run` in sandbox mode."})
            return text
        return tokens.rotate(demo)


def _print_demo(url: str, token: str):
    click.echo(f"Demo token (all operations; a new one each start): {token}")
    click.echo("Try a deposit:")
    click.echo(f"  curl -s -X POST {url}/v1/user/balance/deposit -H 'Authorization: Bearer {token}' "
               "-H 'Content-Type: application/json' -d '{\"user\": \"acme:user_123\", \"amount\": \"10\"}'")


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--api-key", default=None, help="Require this bearer key (as Paywalls requires yours).")
def sandbox_command(host, port, api_key):
    """Serve the simulated Paywalls upstream alone (for the Zapier/n8n tests and benchmarks)."""
    from .sandbox import Server

    server = Server(host, port, api_key)
    click.echo(f"Sandbox upstream listening on {server.url}")
    sys.stdout.flush()
    server.server.serve_forever()


# --- db -----------------------------------------------------------------------------------------------------

@main.group("db")
def db_group():
    """Database schema."""


@db_group.command("upgrade")
@with_appcontext(check_schema=False)
def db_upgrade():
    """Apply migrations up to the newest (run on every deploy)."""
    migrate.upgrade(_database_url())
    click.echo("Database is up to date.")


# --- tokens ---------------------------------------------------------------------------------------------------

@main.group("tokens")
def tokens_group():
    """Create, inspect, limit, rotate and revoke relay tokens."""


def scope_options(func):
    options = [
        click.option("--label", help="What this token is for, e.g. 'Zap: Stripe renewals'."),
        click.option("--notes", help="Free text for operators."),
        click.option("--ops", help="Allowed operations: deposit,charge,balance,ledger (default: deposit)."),
        click.option("--max-amount", help="Largest amount per call."),
        click.option("--daily-cap", help="Largest total per UTC day."),
        click.option("--monthly-cap", help="Largest total per calendar month (UTC)."),
        click.option("--user-pattern", help="Regular expression the whole user id must match."),
        click.option("--require-metadata", multiple=True, help="Metadata key every call must carry (repeatable)."),
        click.option("--expires-in", help="Relative expiry: 30s, 12h, 90d."),
        click.option("--expires-at", help="Absolute expiry, ISO 8601."),
        click.option("--rate-limit", help="Requests per period, e.g. 60/minute."),
        click.option("--dedupe-on", help="Fields the idempotency key derives from (default user,amount,metadata)."),
        click.option("--namespace", help="Share idempotency keys with other tokens of this namespace."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(options: dict) -> dict:
    names = {"ops": "operations", "require_metadata": "required_metadata"}
    spec = {}
    for option, value in options.items():
        if value in (None, ()):
            continue
        spec[names.get(option, option)] = list(value) if isinstance(value, tuple) else value
    return spec


def _fail(error: tokens.SpecError):
    for item in error.errors:
        click.echo(f"error: {item['message']}", err=True)
    sys.exit(2)


def _show(described: dict, as_json: bool, token_text: str | None = None):
    if as_json:
        click.echo(json.dumps({**described, **({"token": token_text} if token_text else {})}))
        return
    for name in ("id", "label", "status", "operations", "expires_at", "created_at", "last_used_at"):
        click.echo(f"{name:>16}: {described[name]}")
    for name, value in described["limits"].items():
        click.echo(f"{name:>16}: {value}")
    if token_text:
        click.secho(f"\n           token: {token_text}", bold=True)
        click.echo("Copy it now: it is shown once and stored only as a hash.")


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
    except tokens.SpecError as error:
        _fail(error)
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
    click.echo(f"{'ID':<14}{'STATUS':<10}{'OPERATIONS':<28}{'LAST USED':<22}LABEL")
    for item in described:
        click.echo(f"{item['id']:<14}{item['status']:<10}{','.join(item['operations']):<28}"
                   f"{item['last_used_at'] or '-':<22}{item['label']}")


def _with_token(token_id: str, change):
    with db.transaction() as session:
        token = tokens.get(session, token_id)
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
    if as_json:
        click.echo(json.dumps({**described, **usage}))
        return
    _show(described, False)
    click.echo(f"{'used today':>16}: {usage['usage']['today']} (remaining {usage['remaining']['today']})")
    click.echo(f"{'used this month':>16}: {usage['usage']['this_month']} (remaining {usage['remaining']['this_month']})")


@tokens_group.command("update")
@click.argument("token_id")
@scope_options
@click.option("--disable/--enable", "disabled", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_update(token_id, as_json, **options):
    """Change a token's scopes; the secret stays the same."""
    try:
        described, _ = _with_token(token_id, lambda session, token: tokens.update_token(session, token, _spec(options)))
    except tokens.SpecError as error:
        _fail(error)
    except messages.Problem as problem:
        click.echo(f"error: {problem.detail}", err=True)
        sys.exit(2)
    _show(described, as_json)


@tokens_group.command("revoke")
@click.argument("token_id")
@with_appcontext
def tokens_revoke(token_id):
    """Stop a token from working, from its next request on."""
    _with_token(token_id, lambda session, token: tokens.revoke(token))
    click.echo(f"Token {token_id} revoked.")


@tokens_group.command("rotate")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def tokens_rotate(token_id, as_json):
    """Give a token a new secret with the same scopes; the old secret stops working."""
    described, text = _with_token(token_id, lambda session, token: tokens.rotate(token))
    _show(described, as_json, text)


# --- ledger and idempotency -------------------------------------------------------------------------------------

def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return as_utc(moment)


@main.group("ledger")
def ledger_group():
    """The record of every operation the relay performed."""


@ledger_group.command("export")
@click.option("--since", required=True, help="Start (inclusive), ISO date or date-time, UTC unless an offset is given.")
@click.option("--until", help="End (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--outcome", "outcomes", multiple=True,
              help="Only these outcomes (credited, charged, declined, rejected, failed, ambiguous, replayed, read).")
@with_appcontext
def ledger_export(since, until, fmt, outcomes):
    """Write ledger entries to stdout, oldest first, for reconciliation."""
    with db.read() as session:
        ledger.write_export(ledger.export_rows(session, _date(since), _date(until), outcomes), sys.stdout, fmt)


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


@main.group("idempotency")
def idempotency_group():
    """Stored idempotency keys and answers."""


@idempotency_group.command("purge")
@click.option("--older-than-days", type=int, default=None, help="Default: RELAY_IDEMPOTENCY_RETENTION_DAYS.")
@with_appcontext
def idempotency_purge(older_than_days):
    """Forget finished events older than the retention period.

    Keys in flight, open or ambiguous, and keys holding a cap reservation, are never removed. The same fields sent
    after that are a new call (with a new upstream key), credited again and recorded as such.
    """
    days = older_than_days if older_than_days is not None else current_app.config["RELAY"]["RELAY_IDEMPOTENCY_RETENTION_DAYS"]
    with db.write() as connection:
        removed = claims.purge(connection, utcnow() - timedelta(days=days))
    click.echo(f"Removed {removed} idempotency keys older than {days} days.")


if __name__ == "__main__":
    main()
