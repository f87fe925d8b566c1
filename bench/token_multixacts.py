"""One uncapped token against 16 on PostgreSQL: multixacts created per fresh deposit.

Until 2026-11-30 every claim read its token's row FOR KEY SHARE (claims._check_identity), so that a token edit
waited for the claims in flight. A row lock is written on the row itself: when claims of one token overlap,
PostgreSQL records their lockers in a new multixact and rewrites the tuple's xmax, a write on the token's heap page
per claim. With the load spread over 16 tokens the claims rarely overlap on one row. Claims now read the row
unlocked (the rare edits that must exclude them lock the keys table: claims.hold_new_claims); run this on a tree
from before and after to compare. The figure is the growth of mxid_age(datminmxid)
(multixacts created in the database) divided by the deposits made, at 16 connections (Python threads, not wrk).

    .venv/bin/python bench/token_multixacts.py <code tree> postgresql://postgres@127.0.0.1:5432/test
"""
import json
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_per_request as cpu  # noqa: E402
import run as bench  # noqa: E402

code, pg = Path(sys.argv[1]).resolve(), sys.argv[2]
bench.WORK.mkdir(exist_ok=True)
with ExitStack() as stack:
    port = bench.free_port(); sandbox_url = f"http://127.0.0.1:{port}"
    stack.enter_context(bench.process("mx-sandbox", bench.sandbox_command(port), bench.clean_env(), sandbox_url + "/_sandbox/state"))
    url = stack.enter_context(bench.postgres_database(pg))
    env = bench.relay_env(url, sandbox_url)
    cpu.cli(code, env, "db", "upgrade")
    toks = [json.loads(cpu.cli(code, env, "tokens", "create", "--label", f"t{i}", "--ops", "deposit", "--json"))["token"] for i in range(16)]
    rport = bench.free_port()
    stack.enter_context(bench.process("mx-relay", bench.gunicorn("relay.app:create_app()", rport), env, f"http://127.0.0.1:{rport}/healthz", cwd=code))
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    def mx():
        with eng.connect() as c:
            return c.execute(text("SELECT mxid_age(datminmxid) FROM pg_database WHERE datname = current_database()")).scalar()
    relay_url = f"http://127.0.0.1:{rport}"
    import threading, http.client, time
    def load(auths, seconds):
        run = uuid.uuid4().hex[:8]; count = [0]; stop = time.monotonic() + seconds
        def worker(i):
            conn = http.client.HTTPConnection("127.0.0.1", rport, timeout=30); n = 0
            while time.monotonic() < stop:
                n += 1
                conn.request("POST", "/v1/user/balance/deposit", json.dumps({"user": f"u{n % 97}", "amount": "1.50", "metadata": {"run": run, "w": i, "n": n}}),
                             {"Authorization": "Bearer " + auths[(i + n) % len(auths)], "Content-Type": "application/json"})
                r = conn.getresponse(); r.read(); assert r.status == 200
                count[0] += 1
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        [t.start() for t in ts]; [t.join() for t in ts]
        return {"requests": count[0], "rps": count[0] / seconds}
    load(toks[:1], 2)
    for label, auths in (("one token", toks[:1]), ("16 tokens", toks), ("one token", toks[:1]), ("16 tokens", toks)):
        before = mx()
        r = load(auths, 5)
        after = mx()
        print(f"{label}: {r['requests']} deposits, {r['rps']:.0f}/s, multixacts created {after - before} ({(after - before) / max(1, r['requests']):.2f} per deposit)", flush=True)
    eng.dispose()
