"""The ledger search behind the console's ledger pages (issue 17): filters, cursor pages, export of a filter, and the
link from a replayed row to the row whose answer it repeated. On SQLite and PostgreSQL (the metadata match is a
JSON function of each)."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from conftest import create_token, deposit
from relay import db, ledger
from relay.models import LedgerEntry

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


def add(app, **fields) -> int:
    """One ledger row as written at `created_at`; returns its id."""
    values = {"created_at": T0, "token_id": "tok_a", "token_label": "A", "operation": "deposit", "outcome": "credited",
              "user": "acme:1", "amount": "10", "metadata": None, "idempotency_key": None, **fields}
    values.setdefault("recorded_at", values["created_at"])
    with app.app_context(), db.transaction() as session:
        return session.execute(insert(LedgerEntry.__table__).values(**values)).inserted_primary_key[0]


def found(app, search=None, **page) -> list[int]:
    with app.app_context(), db.read() as session:
        return [entry.id for entry in ledger.page(session, search or ledger.Search(), **page).entries]


def test_each_filter_finds_exactly_its_rows(app):
    a = add(app, user="acme:1", token_id="tok_a", outcome="credited")
    b = add(app, user="acme:2", token_id="tok_a", outcome="replayed")
    c = add(app, user="acme:1", token_id="tok_b", outcome="charged", operation="charge")
    d = add(app, user="acme:1", token_id="tok_b", outcome="ambiguous", created_at=T0 + timedelta(days=2))
    assert found(app) == [d, c, b, a]
    assert found(app, ledger.Search(user="acme:1")) == [d, c, a]
    assert found(app, ledger.Search(user="acme")) == []  # exact, not a prefix
    assert found(app, ledger.Search(token_id="tok_b")) == [d, c]
    assert found(app, ledger.Search(outcomes=("replayed", "ambiguous"))) == [d, b]
    assert found(app, ledger.Search(user="acme:1", token_id="tok_b", outcomes=("charged",))) == [c]


def test_the_date_range_is_since_inclusive_until_exclusive_on_created_at(app):
    before = add(app, created_at=T0 - timedelta(microseconds=1))
    at_start = add(app, created_at=T0)
    last = add(app, created_at=T0 + timedelta(days=1) - timedelta(microseconds=1))
    at_end = add(app, created_at=T0 + timedelta(days=1), recorded_at=T0)  # recorded_at is not what is filtered
    search = ledger.Search(since=T0, until=T0 + timedelta(days=1))
    assert found(app, search) == [last, at_start]
    assert found(app, ledger.Search(since=T0)) == [at_end, last, at_start]
    assert found(app, ledger.Search(until=T0)) == [before]


def test_a_reference_finds_the_row_by_any_key_or_any_metadata_string(app):
    by_event = add(app, idempotency_key="pwk1_abc")
    by_client = add(app, client_key="zap-step-42")
    by_upstream = add(app, upstream_key="rk1_def")
    flat = add(app, metadata={"reason": "renewal", "reference": "in_1Q2w3E4r"})
    nested = add(app, metadata={"invoice": {"lines": [{"ref": "in_nested"}]}})
    odd = add(app, metadata={"reference": 'quo"te\\back ünï 😀'})
    add(app, metadata={"in_1Q2w3E4r": "a key, not a value", "n": 5})
    add(app, metadata={"reference": "in_1Q2w3E4r-other"})
    add(app, metadata=None)

    def ref(value):
        return found(app, ledger.Search(reference=value))

    assert ref("pwk1_abc") == [by_event]
    assert ref("zap-step-42") == [by_client]
    assert ref("rk1_def") == [by_upstream]
    assert ref("in_1Q2w3E4r") == [flat]  # not the row that has it as a key, nor the longer value
    assert ref("in_nested") == [nested]
    assert ref('quo"te\\back ünï 😀') == [odd]
    assert ref("in_1Q2w") == []  # exact, not a substring
    assert ref("5") == []  # strings only: a number is not a reference
    assert ref("%") == [] and ref("_") == []  # no LIKE wildcards anywhere
    assert found(app, ledger.Search(reference="in_1Q2w3E4r", user="someone else")) == []


def test_cursor_pages_walk_every_row_once_both_ways(app):
    ids = [add(app, user="acme:1" if n % 3 else "other", amount=str(n + 1)) for n in range(11)]
    search = ledger.Search(user="acme:1")
    wanted = [i for n, i in enumerate(ids) if n % 3][::-1]  # newest first
    pages, cursor = [], None
    with app.app_context(), db.read() as session:
        while True:
            page = ledger.page(session, search, before=cursor, limit=3)
            pages.append(page)
            if page.older is None:
                break
            cursor = ledger.parse_cursor(page.older)
        assert [e.id for p in pages for e in p.entries] == wanted
        assert pages[0].newer is None and all(p.newer for p in pages[1:])
        # ...and back: `after` from each page's newest row gives the page before it.
        for earlier, later in zip(pages, pages[1:]):
            back = ledger.page(session, search, after=ledger.parse_cursor(later.newer), limit=3)
            assert [e.id for e in back.entries] == [e.id for e in earlier.entries]
            assert back.older == earlier.older
        first_again = ledger.page(session, search, after=ledger.parse_cursor(pages[1].newer), limit=3)
        assert first_again.newer is None
        # A cursor past the newest row lands on the newest page, not on an empty one.
        assert [e.id for e in ledger.page(session, search, after=ids[-1] + 100, limit=3).entries] == wanted[:3]


def test_export_of_a_search_is_the_cli_writer_oldest_first_and_spreadsheet_safe(app):
    add(app, user="=cmd|' /C calc'!A0", metadata={"reference": "in_7"}, token_label="+label")
    add(app, user="acme:2", metadata={"reference": "in_8"})
    add(app, user="acme:3", metadata={"reference": "in_7"}, outcome="replayed")
    with app.app_context(), db.read() as session:
        rows = list(ledger.search_rows(session, ledger.Search(reference="in_7")))
        out = io.StringIO()
        ledger.write_export(iter(rows), out, "csv")
    assert [row["user"] for row in rows] == ["=cmd|' /C calc'!A0", "acme:3"]
    table = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert list(table[0]) == ledger.EXPORT_COLUMNS
    assert [row["user"] for row in table] == ["'=cmd|' /C calc'!A0", "acme:3"]
    assert table[0]["token_label"] == "'+label" and json.loads(table[1]["metadata"]) == {"reference": "in_7"}


def test_a_replayed_row_links_to_the_credit_it_replayed(client, app, make_token, sandbox):
    _, text = make_token()
    assert deposit(client, text).status_code == 200
    assert deposit(client, text).status_code == 200  # the same event again: answered from the stored result
    assert deposit(client, text, user="acme:user_2").status_code == 200
    with app.app_context(), db.read() as session:
        rows = list(session.query(LedgerEntry).order_by(LedgerEntry.id))
        credited, replayed, other = rows
        assert (credited.outcome, replayed.outcome, other.outcome) == ("credited", "replayed", "credited")
        assert ledger.replayed_from(session, replayed).id == credited.id
        assert ledger.replayed_from(session, credited) is None
        assert [row.id for row in ledger.replays_of(session, credited)] == [replayed.id]
        assert ledger.replays_of(session, other) == []


def test_replay_links_stay_inside_the_idempotency_scope(app):
    shared_a, _ = create_token(app, namespace="finance")
    shared_b, _ = create_token(app, namespace="finance")
    alone, _ = create_token(app)
    theirs = add(app, token_id=shared_a, idempotency_key="pwk1_same")
    mine = add(app, token_id=alone, idempotency_key="pwk1_same", outcome="credited")
    replay_in_ns = add(app, token_id=shared_b, idempotency_key="pwk1_same", outcome="replayed")
    replay_alone = add(app, token_id=alone, idempotency_key="pwk1_same", outcome="replayed")
    charge_replay = add(app, token_id=alone, idempotency_key="pwk1_same", outcome="replayed", operation="charge")
    later = add(app, token_id=alone, idempotency_key="pwk1_same")  # after a purge: a new credit for the same key
    again = add(app, token_id=alone, idempotency_key="pwk1_same", outcome="replayed")
    with app.app_context(), db.read() as session:
        def link(row_id):
            original = ledger.replayed_from(session, session.get(LedgerEntry, row_id))
            return original and original.id

        assert link(replay_in_ns) == theirs  # another token of the namespace made the credit
        assert link(replay_alone) == mine  # not the namespace's credit with the same key
        assert link(charge_replay) is None  # a deposit is not what a charge replayed
        assert link(again) == later and link(replay_alone) == mine


@pytest.mark.parametrize("cursor", ["led_0", "led_01", "led_-1", "led_x", "1", "led_99999999999999999999", " led_1"])
def test_a_cursor_not_written_by_the_relay_is_refused(cursor):
    with pytest.raises(ValueError):
        ledger.parse_cursor(cursor)


def test_a_row_whose_metadata_holds_nul_does_not_break_the_search(app, make_token, sandbox):
    """JSON metadata may carry \u0000 (PostgreSQL's json keeps it, jsonb refuses it): that row must not turn every
    reference search into a database error. It is found by its other fields."""
    from conftest import deposit as api_deposit
    _, text = make_token()
    assert api_deposit(app.test_client(), text, metadata={"reference": "a\u0000b"}).status_code == 200
    normal = add(app, metadata={"reference": "in_ok"})
    assert found(app, ledger.Search(reference="in_ok")) == [normal]
    assert len(found(app, ledger.Search(user="acme:user_1"))) == 1


def test_metadata_values_round_trip_through_json(app):
    """The match compares decoded strings, whatever escapes the stored JSON text uses."""
    value = "línea\n\t\"x\"</script>"
    row = add(app, metadata={"reference": value})
    assert found(app, ledger.Search(reference=value)) == [row]
    assert found(app, ledger.Search(reference=json.dumps(value))) == []
