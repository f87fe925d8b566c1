"""The console's ledger pages through Flask's test client (issue 17): search and its field errors, cursor pages, a row
with every stored field and the replay link, CSV and JSONL export of the current search (the `ledger export`
writer), and the ambiguous view with its Resolve button."""

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from conftest import SANDBOX_KEY, create_token, deposit, needs_postgres, postgres_database
from relay import cli, db, ledger
from relay.models import AuditEntry, LedgerEntry

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in(app):
    """A test client signed in to the console the way a browser is: the sign-in form, its CSRF token, the key."""
    client = app.test_client()
    page = client.get("/console/sign-in")
    token = CSRF.search(page.get_data(as_text=True)).group(1)
    answer = client.post("/console/sign-in", data={"csrf_token": token,
                                                   "admin_key": app.config["RELAY"]["RELAY_ADMIN_KEY"]})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def csrf_of(client, path: str) -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def add(app, **fields) -> int:
    values = {"created_at": datetime(2026, 11, 3, 12, tzinfo=timezone.utc), "token_id": "tok_a", "token_label": "A",
              "operation": "deposit", "outcome": "credited", "user": "acme:1", "amount": "10", **fields}
    values.setdefault("recorded_at", values["created_at"])
    with app.app_context(), db.transaction() as session:
        return session.execute(insert(LedgerEntry.__table__).values(**values)).inserted_primary_key[0]


def row_ids(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/console/ledger/(led_\d+)"', html)


def field_error(html: str, name: str) -> str | None:
    found = re.search(rf'<p class="error" id="{name}-error">(.*?)</p>', html, re.S)
    return unescape(found.group(1)) if found else None


# --- the search page -------------------------------------------------------------------------------------------------

def test_the_ledger_needs_sign_in(app):
    answer = app.test_client().get("/console/ledger?user=acme:1")
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]
    for path in ("/console/ledger/export?format=csv", "/console/ledger/ambiguous", "/console/ledger/led_1"):
        assert app.test_client().get(path).status_code == 302, path
    assert app.test_client().post("/console/ledger/resolve").status_code in (302, 400)


def test_search_filters_and_pages_through_the_rows(app):
    client = signed_in(app)
    ids = [add(app, user="acme:1" if n % 2 else "acme:2", amount=str(n + 1)) for n in range(120)]
    mine = [f"led_{i}" for n, i in enumerate(ids) if n % 2][::-1]
    first = client.get("/console/ledger?user=acme:1&outcome=credited")
    html = first.get_data(as_text=True)
    assert first.status_code == 200 and row_ids(html) == mine[:50]
    older = unescape(re.search(r'<a href="([^"]+)" rel="next">Older rows</a>', html).group(1))
    assert "user=acme:1" in older and "outcome=credited" in older and "before=led_" in older
    second = client.get(older).get_data(as_text=True)
    assert row_ids(second) == mine[50:60]
    assert 'rel="next"' not in second  # the last page
    newer = unescape(re.search(r'<a href="([^"]+)" rel="prev">Newer rows</a>', second).group(1))
    assert row_ids(client.get(newer).get_data(as_text=True)) == mine[:50]
    assert row_ids(client.get("/console/ledger?user=nobody").get_data(as_text=True)) == []
    assert "No ledger row matches" in client.get("/console/ledger?user=nobody").get_data(as_text=True)


@needs_postgres
def test_times_are_utc_whatever_the_database_sessions_time_zone(make_app):
    """PostgreSQL answers timestamptz in the session's TimeZone: the pages and the search stay UTC."""
    from sqlalchemy import create_engine, text
    with postgres_database() as url:
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as connection:
            name = connection.execute(text("SELECT current_database()")).scalar()
            connection.execute(text(f'ALTER DATABASE "{name}" SET timezone TO \'Pacific/Kiritimati\''))
        app = make_app(url)
        row = add(app, created_at=datetime(2026, 11, 3, 23, 30, tzinfo=timezone.utc))
        client = signed_in(app)
        html = client.get("/console/ledger?from=2026-11-03&to=2026-11-03").get_data(as_text=True)
        assert row_ids(html) == [f"led_{row}"] and "2026-11-03 23:30:00" in html
        assert "2026-11-03T23:30:00Z" in client.get(f"/console/ledger/led_{row}").get_data(as_text=True)
        app.extensions["relay.engine"].dispose()


def test_the_to_day_is_included_and_from_after_to_is_refused(app):
    client = signed_in(app)
    day = datetime(2026, 11, 3, tzinfo=timezone.utc)
    inside = add(app, created_at=day + timedelta(hours=23, minutes=59, seconds=59))
    add(app, created_at=day + timedelta(days=1))
    add(app, created_at=day - timedelta(microseconds=1))
    html = client.get("/console/ledger?from=2026-11-03&to=2026-11-03").get_data(as_text=True)
    assert row_ids(html) == [f"led_{inside}"]
    spaced = client.get("/console/ledger?outcome=credited,%20replayed&from=2026-11-03&to=2026-11-03")
    assert spaced.status_code == 200 and row_ids(spaced.get_data(as_text=True)) == [f"led_{inside}"]
    refused = client.get("/console/ledger?from=2026-11-04&to=2026-11-03")
    assert refused.status_code == 400
    assert field_error(refused.get_data(as_text=True), "to") == "To must be on or after From."


@pytest.mark.parametrize("query, field, says", [
    ("from=2026-13-01", "from", "is not a calendar date"),
    ("to=yesterday", "to", "must be an ISO 8601 date"),
    ("from=2026-11-01T25:00", "from", "is not a calendar date or time of day"),
    ("to=%EF%BC%92026-11-01", "to", "must be an ISO 8601 date"),
    ("outcome=credited&outcome=stolen", "outcome", "Unknown outcome 'stolen'"),
    ("user=" + "u" * 129, "user", "at most 128 characters"),
])
def test_bad_search_input_is_a_400_with_the_error_beside_its_field(app, query, field, says):
    client = signed_in(app)
    add(app)
    answer = client.get("/console/ledger?" + query)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert says in (field_error(html, field) or ""), html
    assert row_ids(html) == []  # no rows for a search that could not be read
    assert 'aria-invalid="true"' in html or field == "outcome"  # a fieldset names its error with aria-describedby


@pytest.mark.parametrize("query", ["user=a%00b", "ref=%00", "token=tok%00", "user=%C0%AF", "ref=%ED%A0%80",
                                   "user=" + "%F0%9F%98%80" * 40, "outcome=%00", "from=2026-11-01%00",
                                   "ref=' OR 1=1 --", "user=%0D%0Aacme", "before=led_1%00", "to=9999-12-31",
                                   "from=0001-01-01&to=0001-01-01", "to=9999-12-31T23:59:59-01:00"])
def test_odd_bytes_in_a_search_never_reach_the_database_as_an_error(app, query):
    """NUL (which PostgreSQL text cannot hold), invalid UTF-8, control characters, SQL: a clear page, never a 500."""
    client = signed_in(app)
    add(app)
    answer = client.get("/console/ledger?" + query)
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)[:300]
    assert answer.headers["Content-Type"].startswith("text/html")
    export = client.get("/console/ledger/export?format=csv&" + query)
    assert export.status_code in (200, 400)
    if answer.status_code == 200 and "from=" not in query and "to=" not in query:
        assert row_ids(answer.get_data(as_text=True)) == []  # none of these is the stored row's value


@pytest.mark.parametrize("cursor", ["led_0", "led_x", "42", "led_99999999999999999999"])
def test_a_page_link_that_is_not_a_row_id_is_refused(app, cursor):
    client = signed_in(app)
    answer = client.get(f"/console/ledger?before={cursor}")
    assert answer.status_code == 400 and "is not a ledger row id" in answer.get_data(as_text=True)


def test_markup_in_stored_values_is_shown_as_text(app):
    client = signed_in(app)
    add(app, token_label='<script>alert(1)</script>', metadata={"reference": '"><img src=x onerror=alert(1)>'})
    html = client.get("/console/ledger").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- one row ----------------------------------------------------------------------------------------------------------

def test_a_row_shows_every_stored_field(app):
    client = signed_in(app)
    row = add(app, metadata={"reference": "in_42", "nested": {"a": [1, 2]}}, idempotency_key="pwk1_abc",
              client_key="zap-1", upstream_key="rk1_up", upstream_status=200, latency_ms=87,
              balance_formatted="$10.00", request_id="req_xyz", amount_micros=10_000_000,
              recorded_at=datetime(2026, 11, 3, 12, 0, 5, tzinfo=timezone.utc))
    html = client.get(f"/console/ledger/led_{row}").get_data(as_text=True)
    for column in LedgerEntry.__table__.columns:
        assert f'id="field-{column.name}"' in html, column.name
    for value in ("pwk1_abc", "zap-1", "rk1_up", "87", "$10.00", "req_xyz", "10000000", "2026-11-03T12:00:05",
                  "&#34;in_42&#34;", "tok_a"):
        assert value in html, value
    assert client.get("/console/ledger/led_999999").status_code == 404
    assert client.get("/console/ledger/led_0").status_code == 404
    assert client.get("/console/ledger/..%2f..%2fetc").status_code == 404


def test_a_replayed_row_links_to_the_credit_it_replayed_and_back(app, make_token, sandbox):
    api = app.test_client()
    _, token = make_token()
    assert deposit(api, token).status_code == 200
    assert deposit(api, token).status_code == 200
    with app.app_context(), db.read() as session:
        credited, replayed = (entry.id for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)))
    client = signed_in(app)
    html = client.get(f"/console/ledger/led_{replayed}").get_data(as_text=True)
    assert f'repeated the answer of\n  <a href="/console/ledger/led_{credited}">led_{credited}</a>' in html
    back = client.get(f"/console/ledger/led_{credited}").get_data(as_text=True)
    assert f'<a href="/console/ledger/led_{replayed}">led_{replayed}</a>' in back
    assert "repeated the answer of" not in back


# --- export -----------------------------------------------------------------------------------------------------------

def test_export_is_the_cli_export_of_the_same_filter(app, operator_env, monkeypatch):
    """Byte for byte what `ledger export` writes for the same dates and outcome: the same writer."""
    client = signed_in(app)
    add(app, user="-acme:formula", metadata={"reference": "in_1"})
    add(app, user="acme:2", outcome="replayed", created_at=datetime(2026, 11, 5, tzinfo=timezone.utc))
    add(app, user="acme:3", created_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    add(app, user="acme:4", outcome="failed")
    answer = client.get("/console/ledger/export?format=csv&from=2026-11-01&to=2026-11-30&outcome=credited,replayed")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="ledger-\d{8}T\d{6}Z\.csv"', answer.headers["Content-Disposition"])
    table = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True), newline="")))
    assert [row["user"] for row in table] == ["'-acme:formula", "acme:2"]  # oldest first, spreadsheet-safe
    # The CLI on the same database, same filter.
    monkeypatch.setenv("DATABASE_URL", app.config["RELAY"]["DATABASE_URL"])
    monkeypatch.setenv("PAYWALLS_API_KEY", SANDBOX_KEY)
    result = CliRunner().invoke(cli.main, ["ledger", "export", "--since", "2026-11-01", "--until", "2026-12-01",
                                           "--outcome", "credited,replayed"])
    assert result.exit_code == 0, result.output
    assert answer.get_data() == result.stdout_bytes


def test_jsonl_export_of_a_reference_search(app):
    client = signed_in(app)
    add(app, user="acme:1", metadata={"invoice": {"id": "in_9"}})
    add(app, user="acme:2", idempotency_key="in_9")
    add(app, user="acme:3", metadata={"invoice": {"id": "in_99"}})
    answer = client.get("/console/ledger/export?format=jsonl&ref=in_9")
    assert answer.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    rows = [json.loads(line) for line in answer.get_data(as_text=True).splitlines()]
    assert [row["user"] for row in rows] == ["acme:1", "acme:2"]
    assert list(rows[0]) == ledger.EXPORT_COLUMNS


def test_export_refuses_an_unknown_format_and_a_bad_filter(app):
    client = signed_in(app)
    assert client.get("/console/ledger/export?format=xlsx").status_code == 400
    bad = client.get("/console/ledger/export?format=csv&from=not-a-date")
    assert bad.status_code == 400 and "must be an ISO 8601 date" in bad.get_data(as_text=True)
    assert bad.headers["Content-Type"].startswith("text/html")


def test_an_empty_export_is_the_header_alone(app):
    client = signed_in(app)
    answer = client.get("/console/ledger/export?format=csv&user=nobody")
    assert answer.get_data(as_text=True) == ",".join(ledger.EXPORT_COLUMNS) + "\r\n"


# --- calls with an unknown outcome ------------------------------------------------------------------------------------

def strand(app, sandbox, token: str, user: str) -> None:
    """A deposit whose outcome the relay never learnt: Paywalls credits it and the connection drops before the answer
    arrives (what a timeout leaves). The relay answers 502 upstream-ambiguous and nobody retries."""
    sandbox.state.faults.append({"kind": "drop_after_credit", "count": 1, "endpoint": "deposit"})
    answer = deposit(app.test_client(), token, user=user, amount="7")
    assert answer.status_code == 502 and answer.get_json()["type"].endswith("upstream-ambiguous"), answer.get_json()


@pytest.fixture
def unretried(make_app, database_url):
    """A relay that does not retry a dropped answer itself: the ambiguity reaches the ledger."""
    return make_app(database_url, RELAY_UPSTREAM_RETRIES=0)


def test_ambiguous_calls_are_listed_with_what_to_do_and_resolved_from_the_console(unretried, sandbox):
    app = unretried
    _, token = create_token(app, label="Zap: renewals")
    strand(app, sandbox, token, "acme:stranded")
    client = signed_in(app)
    html = client.get("/console/ledger/ambiguous").get_data(as_text=True)
    assert "acme:stranded" in html and "Zap: renewals" in html and "paywalls-relay ledger resolve" in html
    assert "Resolve now" in html
    answer = client.post("/console/ledger/resolve", data={"csrf_token": csrf_of(client, "/console/ledger/ambiguous")})
    assert answer.status_code == 302
    after = client.get("/console/ledger/ambiguous").get_data(as_text=True)
    assert "Resolved 1 key: 1 applied" in after
    assert "acme:stranded" not in after and "Nothing to do" in after
    # Re-sent with its own upstream key: Paywalls had applied it once, and it stays once.
    assert [d["user"] for d in sandbox.state.snapshot()["deposits"]] == ["acme:stranded"]
    with app.app_context(), db.read() as session:
        outcomes = [row.outcome for row in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))]
    assert outcomes == ["ambiguous", "credited"]
    # It sent a money call: the audit log says who, from where, and what came of it.
    with app.app_context(), db.read() as session:
        entries = list(session.scalars(select(AuditEntry)))
    resolved = [entry for entry in entries if entry.action == "ledger.resolved"]
    assert [(entry.via, entry.origin, entry.token_id, entry.changes) for entry in resolved] == [
        ("console", "127.0.0.1", None, {"applied": 1})]
    # A second click finds nothing stranded: nothing is sent, and nothing is added to the log.
    client.post("/console/ledger/resolve", data={"csrf_token": csrf_of(client, "/console/ledger/ambiguous")})
    with app.app_context(), db.read() as session:
        assert [entry.action for entry in session.scalars(select(AuditEntry))].count("ledger.resolved") == 1
    assert "ledger.resolved" in client.get("/console/audit?action=ledger.resolved").get_data(as_text=True)


def test_resolve_without_the_csrf_token_is_refused_and_resolves_nothing(unretried, sandbox):
    app = unretried
    _, token = create_token(app)
    strand(app, sandbox, token, "acme:stranded")
    client = signed_in(app)
    answer = client.post("/console/ledger/resolve", data={})
    assert answer.status_code == 400
    with app.app_context(), db.read() as session:
        assert [row.outcome for row in session.scalars(select(LedgerEntry))] == ["ambiguous"]
    assert "acme:stranded" in client.get("/console/ledger/ambiguous").get_data(as_text=True)


def test_a_key_stored_without_its_request_is_marked_for_a_person(app, make_token, sandbox):
    """Keys stored before request bodies were kept cannot be re-sent: the page and Resolve now say so."""
    from relay.models import IdempotencyKey
    token_id, _ = make_token(label="Old Zap")
    now = datetime.now(timezone.utc)
    with app.app_context(), db.transaction() as session:
        session.add(IdempotencyKey(scope=token_id, key="pwk1_" + "0" * 64, fingerprint="pwk1_" + "0" * 64,
                                   token_id=token_id, operation="deposit", state="ambiguous", lease=1, generation=0,
                                   nonce="n", request_body=None, reserved_micros=0, reserved_periods=[],
                                   reserved_token_id=token_id, reserved_at=now, created_at=now, locked_at=now))
    client = signed_in(app)
    html = client.get("/console/ledger/ambiguous").get_data(as_text=True)
    assert "needs a person" in html and "Old Zap" in html
    client.post("/console/ledger/resolve", data={"csrf_token": csrf_of(client, "/console/ledger/ambiguous")})
    after = client.get("/console/ledger/ambiguous").get_data(as_text=True)
    assert "1 was stored before request bodies were kept and need a person" in after
    assert "needs a person" in after  # still listed: nothing was sent
    assert sandbox.state.snapshot()["deposits"] == []
