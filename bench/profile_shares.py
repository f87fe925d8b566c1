"""Shares of a py-spy profile (raw format, `py-spy record --gil --format raw`) by named piece of the request path.

    .venv/bin/python bench/profile_shares.py bench/profile-fresh-deposit-sqlite.txt

A frame's share is the fraction of GIL-holding samples with that frame anywhere on the stack (inclusive), so the
rows overlap: read each as "this piece and everything it calls". The pieces are the relay's phases and the
libraries under them; bench/results.md reads them.
"""
import re
import sys
from collections import Counter

PIECES = [
    ("whole request: gunicorn worker thread", "ThreadWorker.handle "),
    ("  gunicorn: HTTP parsing", "Parser.__next__ "),
    ("  Flask: request in, response out", "Flask.wsgi_app "),
    ("    Flask: after_request (headers, request log, metrics)", "Flask.process_response "),
    ("    relay: money_call, HTTP to answer", "money_call "),
    ("      authenticate the token (one SELECT)", "authenticated "),
    ("      validate the body (jsonschema)", "money_body "),
    ("      derive the event key (fingerprint)", "identify "),
    ("      claim: phase 1 transaction", "claim_or_wait "),
    ("      call Paywalls (requests)", "Upstream.call "),
    ("      record: phase 3 transaction", "record (relay/money.py)"),
    ("        the relay's own event (hooks, triggers)", "from_ledger "),
    ("      the answer (werkzeug Response)", "answer (relay/api.py)"),
    ("  any SQLAlchemy statement execution", "Connection.execute "),
    ("  any SQLAlchemy connection checkout and return", "Engine.connect "),
    ("  SQLite writer queue and group commit (db.write)", "write (relay/db.py)"),
    ("gunicorn main loop (accept, keep-alive, dispatch)", "ThreadWorker.wait_for_and_dispatch_events "),
    ("hooks worker thread (fan-out, deliveries)", "Worker.run_forever (relay/deliveries.py)"),
    ("bulk runner thread (idle poll)", "Runner.run_forever "),
]


def shares(paths: list[str]) -> tuple[int, Counter]:
    found, total = Counter(), 0
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                stack, _, count = line.rstrip().rpartition(" ")
                if not stack:
                    continue
                total += int(count)
                frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
                for label, prefix in PIECES:
                    if any(frame.startswith(prefix) for frame in frames):
                        found[label] += int(count)
    return total, found


if __name__ == "__main__":
    total, found = shares(sys.argv[1:])
    print(f"{total} GIL-holding samples")
    for label, _prefix in PIECES:
        print(f"{100 * found[label] / max(1, total):5.1f}%  {label}")
