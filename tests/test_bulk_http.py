"""Bulk over HTTP (issue 18): POST /v1/relay/bulk queues a file, a runner claims it from the database under a lease
and runs it through relay/bulk.run; GET /v1/relay/bulk/<id> shows progress and the report (relay/batches.py)."""

import csv
import io
import json
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from conftest import (PG_URL, auth, base_settings, create_token, credits, gunicorn_relay, migrated_token,
                      needs_postgres, postgres_database, wait_for)
from relay import batches, db
from relay.models import BulkBatch

BULK = "/v1/relay/bulk"
CSV = "text/csv"


def csv_file(count: int, start: int = 0, amount: str = "1", reference: str = "mig") -> bytes:
    lines = ["user,amount,reason,reference"] + [f"acme:u{start + i},{amount},migration,{reference}-{start + i}"
                                                for i in range(count)]
    return ("\r\n".join(lines) + "\r\n").encode()


def post(client, token, body: bytes | str, content_type=CSV, query=""):
    return client.post(BULK + query, data=body, headers={**auth(token), "Content-Type": content_type})


def stored(app) -> list[dict]:
    with app.app_context(), db.read() as session:
        return [dict(row._mapping) for row in session.execute(select(BulkBatch.__table__))]


def drain(app) -> int:
    """Run every queued batch with a runner of this app, as a serving process's thread would."""
    runner, runs = batches.Runner(app), 0
    while runner.run_once():
        runs += 1
    return runs


def bulk_token(app, **spec):
    spec.setdefault("operations", ["deposit", "charge", "bulk"])
    return create_token(app, **spec)


# --- the endpoint ------------------------------------------------------------------------------------------------

def test_a_batch_over_http_credits_every_row_once_and_a_resend_replays(app, client, sandbox):
    _, token = bulk_token(app)
    content = csv_file(25)
    answer = post(client, token, content)
    assert answer.status_code == 202, answer.get_json()
    batch = answer.get_json()
    assert batch["state"] == "queued" and batch["rows"] == 25 and batch["queued"] is True
    assert answer.headers["Location"] == f"{BULK}/{batch['id']}" == batch["status_url"]
    assert credits(sandbox) == []  # queued, not run by the request
    assert drain(app) == 1
    done = client.get(f"{BULK}/{batch['id']}", headers=auth(token)).get_json()
    assert done["state"] == "done" and done["done"] == 25 and done["counts"] == {"credited": 25}
    assert [row["line"] for row in done["report"]] == list(range(2, 27))
    assert {row["outcome"] for row in done["report"]} == {"credited"}
    assert all(row["balance_after"] and row["idempotency_key"].startswith("bulk:file:") for row in done["report"])
    assert sorted(c["user"] for c in credits(sandbox)) == sorted(f"acme:u{i}" for i in range(25))
    # The same file again: the same batch, queued again; every row replays, nothing reaches Paywalls.
    again = post(client, token, content).get_json()
    assert again["id"] == batch["id"] and again["state"] == "queued"
    drain(app)
    replayed = client.get(f"{BULK}/{batch['id']}", headers=auth(token)).get_json()
    assert replayed["counts"] == {"replayed": 25}
    assert len(credits(sandbox)) == 25


def test_the_report_as_csv_is_spreadsheet_safe(app, client, sandbox):
    _, token = bulk_token(app)
    batch = post(client, token, csv_file(3)).get_json()
    drain(app)
    answer = client.get(f"{BULK}/{batch['id']}?format=csv", headers=auth(token))
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [(r["line"], r["user"], r["outcome"]) for r in rows] == [
        ("2", "acme:u0", "credited"), ("3", "acme:u1", "credited"), ("4", "acme:u2", "credited")]
    # A JSON array whose row fails (an amount over the token's max): the error text is user-facing, the cell is safe.
    with app.app_context(), db.transaction() as session:
        session.execute(BulkBatch.__table__.update().values(report=json.dumps(
            [{"line": 2, "user": "=HYPERLINK(\"x\")", "amount": "1", "outcome": "failed", "idempotency_key": "k",
              "balance_after": "", "error": "@SUM(A1)"}])))
    text = client.get(f"{BULK}/{batch['id']}?format=csv", headers=auth(token)).get_data(as_text=True)
    assert "'=HYPERLINK" in text and "'@SUM" in text


def test_a_json_array_and_charges(app, client, sandbox):
    _, token = bulk_token(app)
    rows = [{"user": "acme:j1", "amount": "2", "reference": "r1", "metadata": {"campaign": "spring"}},
            {"user": "acme:j2", "amount": 3, "reference": "r2"}]
    answer = post(client, token, json.dumps(rows), "application/json")
    assert answer.status_code == 202, answer.get_json()
    drain(app)
    report = client.get(answer.headers["Location"], headers=auth(token)).get_json()["report"]
    assert [(r["line"], r["outcome"]) for r in report] == [(1, "credited"), (2, "credited")]  # item numbers
    assert {c["user"]: c["metadata"].get("campaign") for c in credits(sandbox)}["acme:j1"] == "spring"
    charged = post(client, token, b"user,amount,reference\nacme:j1,1,c1\n", query="?op=charge")
    assert charged.status_code == 202 and charged.get_json()["operation"] == "charge"
    drain(app)
    outcome = client.get(charged.headers["Location"], headers=auth(token)).get_json()["report"][0]["outcome"]
    assert outcome in ("charged", "declined")


def test_bad_csv_is_refused_with_line_and_field_and_nothing_is_queued(app, client, sandbox):
    _, token = bulk_token(app)
    content = (b"user,amount,reference\r\n"
               b"acme:ok1,5,r1\r\n"
               b"acme:ok2,-3,r2\r\n"               # line 3: amount
               b"\"acme:multi\nline\",4,r3\r\n"     # a quoted field spanning lines 4-5: reported at line 4 (user)
               b"bad user@x.com,2,r4\r\n")          # line 6: user
    answer = post(client, token, content)
    assert answer.status_code == 422, answer.get_json()
    problem = answer.get_json()
    assert problem["type"].endswith(":validation")
    found = {(e["line"], e["field"]) for e in problem["errors"]}
    assert {(3, "amount"), (4, "user"), (6, "user")} <= found
    assert all(e["line"] not in (2,) for e in problem["errors"])
    assert "3 (amount)" in problem["detail"] and "6 (user)" in problem["detail"]
    assert stored(app) == [] and credits(sandbox) == []
    # skip_invalid: the valid row runs, each invalid line is in the report as invalid.
    answer = post(client, token, content, query="?skip_invalid=true")
    assert answer.status_code == 202 and answer.get_json()["skipped_invalid"] == 3
    drain(app)
    report = client.get(answer.headers["Location"], headers=auth(token)).get_json()["report"]
    assert [(r["line"], r["outcome"]) for r in report] == [(2, "credited"), (3, "invalid"), (4, "invalid"),
                                                           (6, "invalid")]
    assert [c["user"] for c in credits(sandbox)] == ["acme:ok1"]


def test_a_broken_header_is_never_skipped(app, client):
    _, token = bulk_token(app)
    answer = post(client, token, b"usr,amount\nacme:a,1\n", query="?skip_invalid=true")
    assert answer.status_code == 422
    assert {(e["line"], e["field"]) for e in answer.get_json()["errors"]} >= {(1, "usr"), (1, "user")}
    assert stored(app) == []


def test_10001_rows_are_refused_and_10000_are_taken(app, client, sandbox):
    _, token = bulk_token(app)
    refused = post(client, token, csv_file(10_001))
    assert refused.status_code == 413, refused.get_json()
    assert "10,001" in refused.get_json()["detail"] and "10,000" in refused.get_json()["detail"]
    assert stored(app) == []
    refused = post(client, token, json.dumps([{"user": f"acme:{i}", "amount": "1", "reference": str(i)}
                                              for i in range(10_001)]), "application/json")
    assert refused.status_code == 413
    taken = post(client, token, csv_file(10_000), query="?dry_run=true")
    assert taken.status_code == 200, taken.get_json()
    assert taken.get_json()["to_send"] == 10_000 and taken.get_json()["total"] == "10000"
    assert stored(app) == [] and credits(sandbox) == []


def test_a_dry_run_answers_what_the_real_call_would_and_queues_nothing(app, client, sandbox):
    _, token = bulk_token(app)
    content = b"user,amount,reference\nacme:a,5,r1\nacme:a,2.5,r2\nacme:b,1,r3\nacme:c,oops,r4\n"
    refused = post(client, token, content, query="?dry_run=true")
    assert refused.status_code == 422 and [(e["line"], e["field"]) for e in refused.get_json()["errors"]] == [(5, "amount")]
    answer = post(client, token, content, query="?dry_run=true&skip_invalid=true")
    assert answer.status_code == 200
    plan = answer.get_json()
    assert plan["dry_run"] is True and plan["totals"] == {"acme:a": "7.5", "acme:b": "1"} and plan["total"] == "8.5"
    assert [(p["line"], p["field"]) for p in plan["problems"]] == [(5, "amount")] and plan["to_send"] == 3
    assert plan["batch_id"].startswith("file:") and plan["refusal"] is None
    assert stored(app) == [] and credits(sandbox) == []
    _, capped = bulk_token(app, label="capped", daily_cap="5")
    assert post(client, capped, content, query="?dry_run=true&skip_invalid=true").status_code == 403
    # A JSON body must be an array; a file of only invalid rows has nothing to run, even with skip_invalid.
    assert post(client, token, "{}", "application/json", "?dry_run=true").status_code == 422
    assert post(client, token, "[1, 2]", "application/json", "?skip_invalid=true").status_code == 422
    assert stored(app) == []


def test_a_file_over_the_cap_is_refused_before_any_credit(app, client, sandbox):
    _, token = bulk_token(app, daily_cap="50")
    answer = post(client, token, csv_file(6, amount="10"))  # 60 > 50; every row alone fits
    assert answer.status_code == 403, answer.get_json()
    assert answer.get_json()["limit"] == "daily_cap"
    assert stored(app) == [] and credits(sandbox) == []
    assert post(client, token, csv_file(5, amount="10")).status_code == 202
    # A row over the per-call maximum or outside the user pattern is that line's problem, as its own call's would be.
    _, strict = bulk_token(app, label="strict", max_amount="5", user_pattern="acme:[a-z0-9]+")
    answer = post(client, strict, b"user,amount,reference\nacme:ok,5,r1\nacme:big,10,r2\nother:x,1,r3\n")
    assert answer.status_code == 422
    assert [(e["line"], e["field"]) for e in answer.get_json()["errors"]] == [(3, "amount"), (4, "user")]


def test_the_bulk_operation_and_the_rows_operation_are_both_needed(app, client):
    _, deposit_only = create_token(app, operations=["deposit"])
    answer = post(client, deposit_only, csv_file(1))
    assert answer.status_code == 403 and answer.get_json()["limit"] == "operation"
    _, bulk_only = create_token(app, operations=["bulk"])
    answer = post(client, bulk_only, csv_file(1))
    assert answer.status_code == 403 and answer.get_json()["limit"] == "operation"
    _, deposits = create_token(app, operations=["bulk", "deposit"])
    assert post(client, deposits, csv_file(1), query="?op=charge").status_code == 403
    assert stored(app) == []


def test_another_tokens_batch_is_not_found_and_queries_are_checked(app, client):
    _, owner = bulk_token(app)
    _, other = bulk_token(app, label="other")
    batch = post(client, owner, csv_file(1)).get_json()
    assert client.get(f"{BULK}/{batch['id']}", headers=auth(other)).status_code == 404
    assert client.get(f"{BULK}/blk_nope", headers=auth(owner)).status_code == 404
    assert client.get(f"{BULK}/{batch['id']}?format=xml", headers=auth(owner)).status_code == 422
    assert post(client, owner, csv_file(1), query="?op=refund").status_code == 422
    assert post(client, owner, csv_file(1), query="?op=deposit&op=charge").status_code == 422
    assert post(client, owner, csv_file(1), query="?dry_run=1").status_code == 422
    assert post(client, owner, csv_file(1), query="?surprise=1").status_code == 422
    assert post(client, owner, csv_file(1), content_type="application/x-www-form-urlencoded").status_code == 415
    assert post(client, owner, "\ufeffuser;amount;reference\r\nacme:semi;1;s1\r\n".encode("utf-8"),
                query="?batch_id=semi-1").status_code == 202


def test_the_same_file_posted_at_once_by_four_callers_is_one_batch(app, sandbox):
    _, token = bulk_token(app)
    content, answers = csv_file(5), []
    barrier = threading.Barrier(4)

    def send():
        barrier.wait()
        answers.append(post(app.test_client(), token, content))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.get_json()["id"] for a in answers}) == 1 and len(stored(app)) == 1
    assert drain(app) == 1 and len(credits(sandbox)) == 5


def test_a_batch_id_names_one_file(app, client):
    _, token = bulk_token(app)
    first = post(client, token, csv_file(2), query="?batch_id=spring-2026")
    assert first.status_code == 202 and first.get_json()["batch_key"] == "spring-2026"
    again = post(client, token, csv_file(3), query="?batch_id=spring-2026")
    assert again.status_code == 422 and again.get_json()["type"].endswith(":idempotency-key-reused")
    assert len(stored(app)) == 1


def test_a_file_over_the_upload_limit_is_413(app, client, monkeypatch):
    _, token = bulk_token(app)
    monkeypatch.setattr(batches, "MAX_UPLOAD_BYTES", 64 * 1024)
    answer = post(client, token, b"user,amount\n" + b"acme:x,1\n" * 20_000)
    assert answer.status_code == 413
    # The rest of the API keeps its own 16 KiB limit.
    assert client.post("/v1/user/balance/deposit", data=b"{" + b" " * 20_000 + b"}",
                       headers={**auth(token), "Content-Type": "application/json"}).status_code == 413


# --- the runner ----------------------------------------------------------------------------------------------------

def test_only_serving_processes_start_a_runner(app, make_app, operator_env):
    from click.testing import CliRunner

    from relay.cli import main
    assert "relay.bulk_runner" not in app.extensions
    assert CliRunner().invoke(main, ["tokens", "list"]).exit_code == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("relay-bulk")]


def test_a_restarted_runner_resumes_a_half_done_batch_with_one_credit_per_row(app, client, sandbox):
    from conftest import manual_clock
    _, token = bulk_token(app)
    clock = manual_clock(app)
    batch = post(client, token, csv_file(20)).get_json()
    # Runner A claims the batch and credits the first 10 rows, then its process dies: no report, the lease stays.
    with app.app_context():
        with db.write() as connection:
            held = batches.claim(connection, "A", clock.now(), app.config["RELAY"]["RELAY_BULK_LEASE"])
        assert held is not None
        row = stored(app)[0]
        half = b"\r\n".join(row["content"].encode().split(b"\r\n")[:11]) + b"\r\n"
        from relay import bulk
        rows, problems = bulk.read_rows(half, "deposit")
        bulk.run(bulk.load_token(row["token_id"]), "deposit", rows, problems, row["batch_key"])
    assert len(credits(sandbox)) == 10
    # Another runner finds nothing to do while A's lease holds...
    assert batches.Runner(app).run_once() is False
    # ...and resumes the batch once it ran out.
    clock.advance(app.config["RELAY"]["RELAY_BULK_LEASE"] + 1)
    runner = batches.Runner(app)
    assert runner.run_once() is True
    done = client.get(f"{BULK}/{batch['id']}", headers=auth(token)).get_json()
    assert done["state"] == "done" and done["counts"] == {"replayed": 10, "credited": 10}
    assert sorted(c["user"] for c in credits(sandbox)) == sorted(f"acme:u{i}" for i in range(20))
    assert stored(app)[0]["lease"] == 2
    # A's lease is fenced: it can neither renew nor write its report over B's.
    with app.app_context(), db.write() as connection:
        assert batches.renew(connection, held, clock.now(), 60, None) is False
        assert batches.finish(connection, held, clock.now(), {}, []) is False


def test_a_runner_stopped_gracefully_hands_its_batch_back(app, client, sandbox):
    """gunicorn's worker_exit: the rows in flight finish, the batch is queued again at once (no lease to wait out),
    and the next runner finishes it with one credit per row."""
    _, token = bulk_token(app)
    sandbox.app.extensions["sandbox.latency"] = (0.1, 0)
    try:
        batch = post(client, token, csv_file(200)).get_json()
        runner = batches.start(app)
        wait_for(lambda: len(credits(sandbox)) >= 8, 20)
        batches.stop_all(timeout=20)
        assert not runner.thread.is_alive()
        row = stored(app)[0]
        assert row["state"] == "queued" and row["lease_until"] is None and 8 <= len(credits(sandbox)) < 200
    finally:
        sandbox.app.extensions["sandbox.latency"] = (0, 0)
        batches._runners.clear()
        app.extensions.pop("relay.bulk_runner", None)
    assert drain(app) == 1
    done = client.get(f"{BULK}/{batch['id']}", headers=auth(token)).get_json()
    assert done["counts"].get("credited", 0) + done["counts"].get("replayed", 0) == 200
    assert sorted(c["user"] for c in credits(sandbox)) == sorted(f"acme:u{i}" for i in range(200))


def test_idempotency_purge_forgets_finished_batches_only(app, client, sandbox):
    from relay import clock
    _, token = bulk_token(app)
    post(client, token, csv_file(2))
    drain(app)
    post(client, token, csv_file(1, start=50))  # queued: never purged
    with app.app_context(), db.write() as connection:
        assert batches.purge(connection, clock.now() - timedelta(days=1)) == 0
        assert batches.purge(connection, clock.now() + timedelta(seconds=1)) == 1
    assert [row["state"] for row in stored(app)] == ["queued"]


def test_a_token_edited_mid_batch_runs_the_rest_under_its_new_settings(app, client, sandbox):
    """Rows planned under the old settings would meet token-changed (or miss a new limit): the runner hands the batch
    back and the next claim plans what is left under the new settings, as the rest of HTTP calls would be."""
    from relay import tokens
    token_id, token = bulk_token(app)
    sandbox.app.extensions["sandbox.latency"] = (0.05, 0)
    try:
        batch = post(client, token, csv_file(300)).get_json()
        runner = batches.Runner(app)
        worker = threading.Thread(target=runner.run_once)
        worker.start()
        wait_for(lambda: len(credits(sandbox)) >= 10, 20)
        with app.app_context(), db.transaction() as session:
            tokens.get(session, token_id).max_amount_micros = 500_000  # 0.5: every row of 1 is now over it
        worker.join(30)
        assert stored(app)[0]["state"] == "queued"  # handed back, not finished under the old settings
        sent = len(credits(sandbox))
        assert drain(app) == 1
    finally:
        sandbox.app.extensions["sandbox.latency"] = (0, 0)
    done = client.get(f"{BULK}/{batch['id']}", headers=auth(token)).get_json()
    assert done["state"] == "done" and "(amount)" in done["error"] and "not sent" in done["error"]
    assert len(credits(sandbox)) == sent < 300


def test_a_revoked_token_stops_its_batch(app, client, sandbox):
    from relay import tokens
    token_id, token = bulk_token(app)
    batch = post(client, token, csv_file(3)).get_json()
    with app.app_context(), db.transaction() as session:
        tokens.revoke(tokens.get(session, token_id))
    drain(app)
    with app.app_context(), db.read() as session:
        row = batches.find(session, tokens.get(session, token_id), batch["id"])
    assert row["state"] == "done" and "revoked" in row["error"] and credits(sandbox) == []


@needs_postgres
@pytest.mark.postgres
def test_two_relay_processes_on_postgres_never_run_one_batch_at_once(make_app, sandbox):
    """Two apps (two engines, as two processes have) poll one PostgreSQL database at once: each batch is claimed by
    exactly one runner (lease 1) and every row is credited once."""
    with postgres_database() as url:
        first, second = make_app(url, RELAY_BULK_CONCURRENCY=4), make_app(url, RELAY_BULK_CONCURRENCY=4)
        _, token = bulk_token(first)
        client = first.test_client()
        ids = [post(client, token, csv_file(15, start=100 * n, reference=f"b{n}")).get_json()["id"] for n in range(6)]
        runners = [batches.Runner(first), batches.Runner(second), batches.Runner(first), batches.Runner(second)]
        # Claims racing at the same instant: SKIP LOCKED hands each batch to one of them.
        barrier = threading.Barrier(len(runners))

        def work(runner):
            barrier.wait()
            while runner.run_once():
                pass

        threads = [threading.Thread(target=work, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        rows = stored(first)
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert [r["lease"] for r in rows] == [1] * 6 and {r["state"] for r in rows} == {"done"}
        assert sum(r.claims for r in runners) == 6
        assert len({r.owner for r in runners}) == 4
        users = [c["user"] for c in credits(sandbox)]
        assert len(users) == 90 and len(set(users)) == 90


@needs_postgres
@pytest.mark.postgres
def test_claims_skip_locked_batches_on_postgres(make_app):
    with postgres_database() as url:
        first, second = make_app(url), make_app(url)
        _, token = bulk_token(first)
        client = first.test_client()
        post(client, token, csv_file(1, reference="x"))
        post(client, token, csv_file(1, reference="y"))
        with first.app_context(), db.engine().connect() as holding:
            # One process holds the first batch's row locked mid-claim; the other takes the second, without waiting.
            with holding.begin():
                query = select(BulkBatch.__table__.c.id).order_by(BulkBatch.__table__.c.created_at).limit(1) \
                    .with_for_update()
                locked = holding.execute(query).scalar_one()
                with second.app_context(), db.write() as connection:
                    from relay import clock
                    connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")  # a claim that waits fails
                    held = batches.claim(connection, "B", clock.now(), 60)
                assert held is not None and held.batch_id != locked


def test_a_runner_killed_mid_batch_is_resumed_by_another_process(tmp_path, sandbox_server):
    """SIGKILL the relay (gunicorn, its runner thread mid-batch) and start another on the same database: it resumes
    the batch after the lease, and the sandbox holds exactly one credit per row."""
    with sandbox_server.state.lock:
        sandbox_server.state.reset()
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    token = migrated_token(url, operations=["deposit", "bulk"])
    settings = base_settings(url, sandbox_server.url, RELAY_BULK_LEASE=3, RELAY_BULK_CONCURRENCY=2,
                             RELAY_UPSTREAM_BUDGET=3, RELAY_RECORD_BUDGET=1, RELAY_LOCK_TIMEOUT=9)
    sandbox_server.app.extensions["sandbox.latency"] = (0.05, 0)  # rows take a while: the kill lands mid-batch
    try:
        with gunicorn_relay(settings, log_path=tmp_path / "first.log") as (relay_url, process):
            answer = requests.post(relay_url + BULK, data=csv_file(60), timeout=10,
                                   headers={**auth(token), "Content-Type": CSV})
            assert answer.status_code == 202, answer.text
            status = relay_url + answer.json()["status_url"]
            wait_for(lambda: requests.get(status, headers=auth(token), timeout=5).json()["done"] >= 15, 30)
            _kill_tree(process.pid)
            process.wait(10)
        half = len(credits(sandbox_server))
        assert 10 <= half < 60
        with gunicorn_relay(settings, log_path=tmp_path / "second.log") as (relay_url, _process):
            status = relay_url + answer.json()["status_url"]
            wait_for(lambda: requests.get(status, headers=auth(token), timeout=5).json()["state"] == "done", 90)
            done = requests.get(status, headers=auth(token), timeout=5).json()
    finally:
        sandbox_server.app.extensions["sandbox.latency"] = (0, 0)
    assert done["counts"].get("credited", 0) + done["counts"].get("replayed", 0) == 60, done["counts"]
    assert done["counts"].get("replayed", 0) >= 10  # resumed: the rows credited before the kill replay
    users = [c["user"] for c in credits(sandbox_server)]
    assert sorted(users) == sorted(f"acme:u{i}" for i in range(60))


def _kill_tree(pid: int):
    """SIGKILL gunicorn's master and its workers: no graceful exit, no worker_exit hook."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    os.kill(pid, signal.SIGKILL)
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
