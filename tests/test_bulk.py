"""Bulk deposits and charges from a file (relay/bulk.py, `paywalls-relay bulk`): every row through the money path."""

import csv
import io
import json
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest

from conftest import SANDBOX_KEY, base_settings, create_token, credits, deposit, relay_env, wait_for
from relay import batches, bulk, migrate
from relay.app import create_app
from relay.sandbox import Server

MIGRATION = (b"user,amount,reason,reference,metadata.source\r\n"
             b"acme:alice,10,migration,old-1,billing-v1\r\n"
             b"acme:bob,2.50,migration,old-2,billing-v1\r\n"
             b"acme:carol,7,migration,old-3,billing-v1\r\n")


def read(app, content, op="deposit"):
    with app.app_context():
        return bulk.read_rows(content, op)


def go(app, token_id, content, op="deposit", **options):
    with app.app_context():
        rows, problems = bulk.read_rows(content, op)
        token = bulk.load_token(token_id)
        return bulk.run(token, op, rows, problems, bulk.batch_id(content, options.pop("batch", None)), **options)


def plan_of(app, token_id, content, op="deposit", batch=None):
    with app.app_context():
        rows, problems = bulk.read_rows(content, op)
        return bulk.plan(bulk.load_token(token_id), op, rows, problems, bulk.batch_id(content, batch))


def test_a_file_is_credited_once_and_a_rerun_replays_every_row(app, sandbox):
    token_id, _ = create_token(app)
    report = go(app, token_id, MIGRATION)
    assert [(r.line, r.user, r.amount, r.outcome) for r in report.rows] == [
        (2, "acme:alice", "10", "credited"), (3, "acme:bob", "2.5", "credited"), (4, "acme:carol", "7", "credited")]
    assert report.ok and report.rows[0].balance_after
    assert report.rows[0].idempotency_key == f"bulk:{bulk.batch_id(MIGRATION)}:2"
    again = go(app, token_id, MIGRATION)
    assert [r.outcome for r in again.rows] == ["replayed"] * 3 and again.ok
    assert len(credits(sandbox)) == 3


def lines_of(problems):
    return [(p["line"], p["field"]) for p in problems]


def test_bad_rows_are_named_by_the_files_own_line_and_field(app):
    # A BOM, `;` separators, \r\n, a quoted reason spanning two lines (the next record starts on line 4), a decimal
    # comma, a formula, a blank line, and a cell too many.
    content = ("\ufeffUser;Amount;reason;reference\r\n"
               "acme:a;10;\"two\r\nlines\";r1\r\n"
               "acme:b;1,5;;r2\r\n"
               "=HYPERLINK(\"x\");5;;r3\r\n"
               "\r\n"
               "acme:c;0;;r4\r\n"
               "acme:d;3;;r5;extra\r\n"
               "acme:e;4;;r6\r\n").encode()
    rows, problems = read(app, content)
    assert [row.line for row in rows] == [2, 4, 5, 7, 8, 9]
    assert lines_of(problems) == [(4, "amount"), (5, "user"), (7, "amount"), (8, "(row)")]
    assert rows[0].body == {"user": "acme:a", "amount": "10", "metadata": {"reason": "two\r\nlines", "reference": "r1"}}
    assert rows[-1].body["user"] == "acme:e"
    assert "decimal mark as a point" in problems[0]["message"]


def test_skip_invalid_never_skips_a_line_the_reader_could_not_split(app, sandbox):
    # After a broken quote, which lines follow is a guess: the file is refused even with --skip-invalid.
    token_id, _ = create_token(app)
    content = b'user,amount\r\nacme:a,1\r\nacme:b,"2\r\nacme:c,3\r\n'
    with pytest.raises(bulk.Refused):
        go(app, token_id, content, skip_invalid=True)
    assert credits(sandbox) == []


@pytest.mark.parametrize("content, expected", [
    (b"", [(1, "(file)")]),
    (b"\xef\xbb\xbf\r\n", [(1, "(file)")]),
    (b"user,amount\r\n", [(1, "(file)")]),
    (b"user,amount,refrence\r\nacme:a,1,r1\r\n", [(1, "refrence")]),
    (b"user,amount,amount\r\nacme:a,1,2\r\n", [(1, "amount")]),
    (b"user,reason\r\nacme:a,x\r\n", [(1, "amount")]),
    (b"user,amount\r\nacme:a,1\r\nacme:\xe9,2\r\n", [(3, "(file)")]),
    (b"\xff\xfeu\x00s\x00", [(1, "(file)")]),
    (b'user,amount\r\nacme:a,"1\r\n', [(2, "(row)")]),
    (b"[1, {\"user\": \"acme:a\", \"amount\": 2, \"color\": \"red\"}]", [(1, "(row)"), (2, "color")]),
    (b"{\"user\": \"acme:a\"}", [(1, "(file)")]),
    (b"user,amount,reason,metadata.Reason\r\nacme:a,1,x,y\r\n", [(2, "metadata.Reason")]),
    (b"user\tamount\r\nacme:a\t1\r\n", []),  # Excel's "Text (tab delimited)"
    (b"user,amount\nacme:a,1\n\n\nacme:b,2\n,\n", []),  # blank lines and empty rows are not rows
])
def test_files_that_are_not_what_they_should_be_are_refused_with_the_reason(app, content, expected):
    rows, problems = read(app, content)
    assert lines_of(problems) == expected
    assert all(p["message"] for p in problems)


def test_a_json_array_is_read_like_the_same_csv(app):
    content = b'[{"user": "acme:a", "amount": 10.5, "reference": "r1", "metadata": {"campaign": "bf"}}]'
    rows, problems = read(app, content)
    assert problems == []
    assert rows[0].body == {"user": "acme:a", "amount": "10.5", "metadata": {"campaign": "bf", "reference": "r1"}}


def test_the_same_credit_twice_in_one_file_is_a_problem_not_a_silent_replay(app, sandbox):
    token_id, _ = create_token(app)
    content = b"user,amount,reference\r\nacme:a,10,inv-1\r\nacme:b,5,inv-2\r\nacme:a,10,inv-1\r\n"
    plan = plan_of(app, token_id, content)
    assert lines_of(plan.problems) == [(4, "(row)")] and "line 2" in plan.problems[0]["message"]
    with pytest.raises(bulk.Refused):
        go(app, token_id, content)
    assert credits(sandbox) == []
    report = go(app, token_id, content, skip_invalid=True)
    assert [(r.line, r.outcome) for r in report.rows] == [(2, "credited"), (3, "credited"), (4, "invalid")]
    assert not report.ok and len(credits(sandbox)) == 2


def test_an_edited_file_never_credits_an_unchanged_row_again(app, sandbox):
    token_id, _ = create_token(app)
    go(app, token_id, MIGRATION)
    # Rows moved, one added, a header column renamed in case: a new content hash, so a new batch id.
    edited = (b"User,Amount,Reason,Reference,metadata.source\n"
              b"acme:dave,1,migration,old-4,billing-v1\n"
              b"acme:carol,7,migration,old-3,billing-v1\n"
              b"acme:alice,10.00,migration,old-1,billing-v1\n")
    report = go(app, token_id, edited)
    assert [(r.user, r.outcome) for r in report.rows] == [
        ("acme:dave", "credited"), ("acme:carol", "replayed"), ("acme:alice", "replayed")]
    assert sorted(c["user"] for c in credits(sandbox)) == ["acme:alice", "acme:bob", "acme:carol", "acme:dave"]


def test_an_explicit_batch_id_refuses_a_line_that_now_holds_another_row(app, sandbox):
    token_id, _ = create_token(app)
    go(app, token_id, MIGRATION, batch="migration-1")
    swapped = MIGRATION.replace(b"acme:bob,2.50", b"acme:bob,3")
    plan = plan_of(app, token_id, swapped, batch="migration-1")
    assert lines_of(plan.problems) == [(3, "(row)")] and "already used" in plan.problems[0]["message"]
    assert plan.to_replay == 2 and plan.to_send == 0
    with pytest.raises(bulk.Refused):
        go(app, token_id, swapped, batch="migration-1")
    assert len(credits(sandbox)) == 3


def test_a_row_identical_to_an_earlier_http_call_is_its_replay(app, client, sandbox):
    token_id, token_text = create_token(app)
    deposit(client, token_text, {"user": "acme:alice", "amount": "10",
                                 "metadata": {"reason": "migration", "reference": "old-1", "source": "billing-v1"}})
    report = go(app, token_id, MIGRATION)
    assert [r.outcome for r in report.rows] == ["replayed", "credited", "credited"]
    assert len(credits(sandbox)) == 3


def test_a_file_over_a_cap_is_refused_before_the_first_credit(app, sandbox):
    token_id, _ = create_token(app, daily_cap="19")
    plan = plan_of(app, token_id, MIGRATION)  # 19.5 in all
    assert plan.refusal is not None and plan.total == "19.5"
    with pytest.raises(bulk.Refused) as refused:
        go(app, token_id, MIGRATION)
    assert "daily cap" in refused.value.reason
    assert credits(sandbox) == []


def test_a_resumed_run_is_checked_against_what_it_still_has_to_send(app, sandbox):
    token_id, _ = create_token(app, daily_cap="20")
    first = MIGRATION.rsplit(b"\r\n", 2)[0] + b"\r\n"  # alice and bob: 12.5 of the cap
    go(app, token_id, first)
    plan = plan_of(app, token_id, MIGRATION)
    assert (plan.to_send, plan.to_replay, plan.total, plan.refusal) == (1, 2, "7", None)
    assert plan.remaining["today"] == "0.5"
    assert go(app, token_id, MIGRATION).ok


def test_token_limits_are_row_problems(app, sandbox):
    token_id, _ = create_token(app, max_amount="5", user_pattern="acme:[a-z]+", required_metadata=["source"])
    content = b"user,amount,metadata.source\r\nacme:a,6,x\r\nother:b,1,x\r\nacme:c,1,\r\nacme:d,1,y\r\n"
    plan = plan_of(app, token_id, content)
    assert lines_of(plan.problems) == [(2, "amount"), (3, "user"), (4, "metadata.source")]
    assert plan.to_send == 1


def test_charges_report_declines_and_the_run_is_not_ok(app, sandbox):
    token_id, _ = create_token(app)
    sandbox.state.balances["acme:rich"] = 100
    report = go(app, token_id, b"user,amount,reference\r\nacme:rich,10,c1\r\nacme:poor,10,c2\r\n", op="charge")
    assert [(r.line, r.outcome) for r in report.rows] == [(2, "charged"), (3, "declined")]
    assert not report.ok


def test_the_report_has_one_spreadsheet_safe_row_per_line(app, sandbox):
    token_id, _ = create_token(app)
    content = b"user,amount,reference\r\n-acme,1,r1\r\nacme:b,x,r2\r\n"
    report = go(app, token_id, content, skip_invalid=True)
    out = io.StringIO()
    report.write_csv(out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [list(r.values())[:5] for r in table] == [
        ["2", "'-acme", "1", "credited", f"bulk:{bulk.batch_id(content)}:2"],
        ["3", "acme:b", "x", "invalid", ""]]
    assert table[0]["balance_after"] == "1.00" and table[1]["error"].startswith("amount:")


def test_a_stop_request_finishes_the_calls_in_flight_and_skips_the_rest(app, sandbox):
    token_id, _ = create_token(app)
    content = b"user,amount\r\n" + b"".join(b"acme:u%d,1\r\n" % i for i in range(40))
    stop = threading.Event()

    def progress(report, row):
        if len(report.rows) == 5:
            stop.set()

    report = go(app, token_id, content, concurrency=2, on_progress=progress, stop_event=stop)
    counts = report.counts
    assert report.stopped and counts["skipped"] > 0 and counts["credited"] + counts["skipped"] == 40
    assert len(credits(sandbox)) == counts["credited"]


def test_paywalls_429_pauses_the_whole_run(app, sandbox):
    token_id, _ = create_token(app)
    sandbox.state.faults.append({"kind": "rate_limit", "retry_after": 2, "count": 1, "endpoint": "deposit"})
    content = b"user,amount\r\n" + b"".join(b"acme:u%d,1\r\n" % i for i in range(30))
    report = go(app, token_id, content, concurrency=4)
    assert report.ok and len(credits(sandbox)) == 30
    assert len(report.pauses) == 1
    paused_at, seconds = report.pauses[0]
    assert seconds == 2
    # No row started while the run was paused (rows already in flight finished).
    assert [r.line for r in report.rows if paused_at < r.started < paused_at + seconds - 0.05] == []
    assert report.seconds >= 2


# --- the command, killed halfway and run again ---------------------------------------------------------------------

ROWS = 240


@pytest.fixture
def slow_sandbox():
    """A sandbox of this test's own whose every call takes 50 ms, as over the internet."""
    server = Server(api_key=SANDBOX_KEY, latency_ms=50).start()
    yield server
    server.stop()


def bulk_cli(env, *args):
    return subprocess.Popen([sys.executable, "-m", "relay.cli", "bulk", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_run_killed_halfway_and_run_again_credits_each_row_exactly_once(database_url, slow_sandbox, tmp_path, how):
    # A lease short enough that the rerun takes over the killed run's claims within the test.
    settings = base_settings(database_url, slow_sandbox.url, RELAY_UPSTREAM_BUDGET=2, RELAY_RECORD_BUDGET=1,
                             RELAY_LOCK_TIMEOUT=8)
    env = relay_env(settings)
    migrate.upgrade(database_url)
    setup = create_app(settings)
    token_id, _ = create_token(setup, operations=["deposit"])
    setup.extensions["relay.engine"].dispose()
    path = tmp_path / "migration.csv"
    path.write_bytes(b"user,amount,reference\r\n" + b"".join(b"acme:u%d,1,m-%d\r\n" % (i, i) for i in range(ROWS)))
    state = slow_sandbox.state

    first = bulk_cli(env, "deposit", str(path), "--token-id", token_id, "--concurrency", "4")
    wait_for(lambda: len(state.deposits) >= ROWS // 3, seconds=60)
    first.send_signal(how)
    out, err = first.communicate(timeout=30)
    assert first.returncode != 0
    landed = len(state.deposits)
    assert 0 < landed < ROWS, "the kill did not land halfway"
    if how == signal.SIGINT:  # a clean stop: what was in flight finished, the rest is skipped
        assert "Stopping" in err and "run the same file again" in out.lower() and "skipped" in out

    report = tmp_path / "report.csv"
    second = bulk_cli(env, "deposit", str(path), "--token-id", token_id, "--concurrency", "4", "--report", str(report))
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, out + err
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    outcomes = Counter(row["outcome"] for row in rows)
    assert len(rows) == ROWS and set(outcomes) <= {"credited", "replayed"} and outcomes["replayed"] >= landed - 4
    assert f"{outcomes['replayed']} rows were already done" in out
    assert f"bulk: {ROWS}/{ROWS} rows" in err and "rows/s" in err  # not a terminal: plain progress lines
    # Exactly one credit per row in the sandbox's own books, whatever the kill left in flight.
    users = Counter(deposit["user"] for deposit in state.deposits)
    assert len(state.deposits) == ROWS and set(users.values()) == {1}
    assert {state.balances[f"acme:u{i}"] for i in range(ROWS)} == {1}


# --- the README's worked migration, run as written ------------------------------------------------------------------

def test_the_readmes_worked_migration_runs_as_written(operator_env, sandbox):
    from click.testing import CliRunner

    from relay import cli
    from test_readme import code_blocks, commands, fenced, section

    text = section("Bulk credits")
    create, runs = (commands(block) for block in code_blocks(text))
    invoke = lambda line: CliRunner().invoke(cli.main, shlex.split(line)[1:], catch_exceptions=False)  # noqa: E731
    created = invoke(create[0] + " --json")
    assert created.exit_code == 0, created.output
    token_id = json.loads(created.output)["id"]
    pathlib.Path("balances.csv").write_text(code_blocks(text, "csv")[0], encoding="utf-8")
    results = [invoke(line.replace("$TOKEN_ID", token_id)) for line in runs]
    assert [result.exit_code for result in results] == [0, 0, 0], [result.output for result in results]
    shown = [body for language, body in fenced(text) if language == "text"][0]
    assert results[0].output == shown
    assert "3 credited, 0 replayed" in results[1].output and "0 credited, 3 replayed" in results[2].output
    assert [row["outcome"] for row in csv.DictReader(open("migrated.csv", encoding="utf-8"))] == ["replayed"] * 3
    assert sorted((c["user"], c["amount"]) for c in credits(sandbox)) == [
        ("acme:user_1", "120"), ("acme:user_2", "35.5"), ("acme:user_3", "8")]


def test_the_dry_run_command_lists_bad_rows_by_line_and_sends_nothing(operator_env, sandbox, tmp_path):
    from click.testing import CliRunner

    from relay import cli

    invoke = lambda *args: CliRunner().invoke(cli.main, list(args), catch_exceptions=False)  # noqa: E731
    token_id = json.loads(invoke("tokens", "create", "--label", "promo", "--ops", "deposit", "--json").output)["id"]
    path = tmp_path / "promo.csv"
    path.write_bytes(b"user;amount;reason\r\nacme:a;5;promo\r\nacme:b;1,5;promo\r\nacme:c;-1;promo\r\nacme:a;2;promo\r\n")
    result = invoke("bulk", "deposit", str(path), "--token-id", token_id, "--dry-run")
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        line for line in result.output.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in result.output.splitlines() if line.startswith("line ")] == [
        "line 3, amount", "line 4, amount"]
    assert "  acme:a\t7" in result.output and "Would send 2 rows (7 in all)" in result.output
    refused = invoke("bulk", "deposit", str(path), "--token-id", token_id)
    assert refused.exit_code == 1 and "2 line(s) have problems; nothing was sent" in refused.output
    assert credits(sandbox) == []
    bad = invoke("bulk", "deposit", str(path), "--token-id", token_id, "--batch-id", "no spaces")
    assert bad.exit_code == 1 and "A batch id is 1-40 characters" in bad.output


def test_an_ambiguous_row_is_retried_within_the_run_and_listed_if_still_unknown(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=0)  # every dropped answer reaches the bulk run itself
    token_id, _ = create_token(app)
    content = b"user,amount,reference\r\nacme:a,10,r1\r\n"
    sandbox.state.faults.append({"kind": "drop_after_credit", "count": 1, "endpoint": "deposit"})
    report = go(app, token_id, content, retry_for=30)
    row = report.rows[0]
    assert (row.outcome, row.attempts) == ("credited", 2) and row.balance_after == "10.00"
    assert [c["user"] for c in credits(sandbox)] == ["acme:a"]  # re-sent with its own key: credited once

    sandbox.state.faults.append({"kind": "drop_after_credit", "count": 1, "endpoint": "deposit"})
    unknown = go(app, token_id, b"user,amount,reference\r\nacme:b,10,r2\r\n", retry_for=0)
    assert [(r.line, r.outcome) for r in unknown.unknown()] == [(2, "ambiguous")] and not unknown.ok
    assert go(app, token_id, b"user,amount,reference\r\nacme:b,10,r2\r\n").rows[0].outcome == "credited"
    assert sorted(c["user"] for c in credits(sandbox)) == ["acme:a", "acme:b"]


def test_dedupe_on_is_the_tokens_and_the_command_says_so(operator_env, tmp_path):
    from click.testing import CliRunner

    from relay import cli

    path = tmp_path / "f.csv"
    path.write_bytes(MIGRATION)
    result = CliRunner().invoke(cli.main, ["bulk", "deposit", str(path), "--token-id", "x", "--dedupe-on", "user"])
    assert result.exit_code == 2 and "--dedupe-on is the token's setting" in result.output


def test_the_plan_and_the_report_as_json(app, sandbox):
    token_id, _ = create_token(app)
    plan = batches.plan_json(plan_of(app, token_id, MIGRATION))
    assert (plan["to_send"], plan["total"], plan["problems"], plan["refusal"]) == (3, "19.5", [], None)
    report = go(app, token_id, MIGRATION).as_dict()
    assert report["counts"]["credited"] == 3 and report["ok"] and report["rows"][1] == {
        "line": 3, "user": "acme:bob", "amount": "2.5", "outcome": "credited",
        "idempotency_key": f"bulk:{bulk.batch_id(MIGRATION)}:3", "balance_after": "2.50", "error": ""}
    json.dumps(report)


def test_two_runs_of_one_file_at_once_credit_each_row_once(app, sandbox):
    token_id, _ = create_token(app)
    content = b"user,amount,reference\r\n" + b"".join(b"acme:u%d,1,r%d\r\n" % (i, i) for i in range(60))
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(go(app, token_id, content, concurrency=4)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(reports) == 2 and all(report.ok for report in reports)
    assert sum(report.counts["credited"] for report in reports) == 60
    assert sorted(c["user"] for c in credits(sandbox)) == sorted(f"acme:u{i}" for i in range(60))


def test_planning_twice_then_running_gives_the_same_problems(app, sandbox):
    token_id, _ = create_token(app, max_amount="5")
    content = b"user,amount,reference\r\nacme:a,1,r1\r\nacme:b,9,r2\r\nacme:a,1,r1\r\nacme:c,x,r3\r\n"
    with app.app_context():
        rows, problems = bulk.read_rows(content)
        token, batch = bulk.load_token(token_id), bulk.batch_id(content)
        first = bulk.plan(token, "deposit", rows, problems, batch)
        second = bulk.plan(token, "deposit", rows, problems, batch)
        assert first.problems == second.problems and lines_of(second.problems) == [
            (3, "amount"), (4, "(row)"), (5, "amount")]
        report = bulk.run(token, "deposit", rows, problems, batch, skip_invalid=True)
    assert [r.outcome for r in report.rows] == ["credited", "invalid", "invalid", "invalid"]
    assert [r.error.count(":") >= 1 for r in report.rows[1:]] == [True] * 3 and report.rows[1].error.startswith("amount:")


def test_a_corrected_amount_is_refused_when_the_token_dedupes_on_the_reference(app, sandbox):
    token_id, _ = create_token(app, dedupe_on=["user", "metadata.reference"])
    go(app, token_id, MIGRATION)
    corrected = MIGRATION.replace(b"acme:bob,2.50", b"acme:bob,3")
    plan = plan_of(app, token_id, corrected)
    assert lines_of(plan.problems) == [(3, "(row)")] and "already handled with other values" in plan.problems[0]["message"]
    with pytest.raises(bulk.Refused):
        go(app, token_id, corrected)
    # And two lines with one reference are one event, whatever their amounts.
    twice = b"user,amount,reference\r\nacme:x,1,r9\r\nacme:x,2,r9\r\n"
    assert lines_of(plan_of(app, token_id, twice).problems) == [(3, "(row)")]
    assert sorted(c["amount"] for c in credits(sandbox)) == ["10", "2.5", "7"]


def test_an_unexpected_error_in_one_row_is_retried_and_does_not_end_the_run(app, sandbox, monkeypatch):
    from relay import money

    token_id, _ = create_token(app)
    real, failures = money.perform, []

    def flaky(token, op, body, identity, request_id):
        if body["user"] == "acme:bob" and not failures:
            failures.append(1)
            raise RuntimeError("a bug")
        return real(token, op, body, identity, request_id)

    monkeypatch.setattr(money, "perform", flaky)
    report = go(app, token_id, MIGRATION, retry_for=30)
    assert [(r.user, r.outcome, r.attempts) for r in report.rows] == [
        ("acme:alice", "credited", 1), ("acme:bob", "credited", 2), ("acme:carol", "credited", 1)]
    assert len(credits(sandbox)) == 3
