"""Instructions per fresh deposit and per replay: the relay's own user-space work, counted, not timed.

CPU time moves with whatever else the machine runs (the cache, hyper-threads, frequency); an instruction count
does not. This runs the relay in one process under valgrind (cachegrind, no cache simulation) and sends it
deposits through Flask's test client (so gunicorn's share is not in the figure), against the standalone sandbox in
another process (not counted). Three runs per code tree:

    A: `low` fresh deposits           B: `high` fresh deposits           C: `low` fresh deposits, then `replays`

    instructions per fresh deposit = (B - A) / (high - low)        per replay = (C - A) / replays

so start-up, imports and the first requests cancel out. Kernel work (fsync, sockets) is not counted: valgrind
sees user space only.

    .venv/bin/python bench/instructions_per_request.py --code /tmp/base --code . [--database-url postgresql://...]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_per_request as cpu  # noqa: E402
import run as bench  # noqa: E402

# Run inside valgrind, from the code tree being measured (its relay/ is imported first).
CLIENT = r'''
import json, os, sys
fresh, replays = int(sys.argv[1]), int(sys.argv[2])
from relay.app import create_app
import logging
app = create_app()
for handler in logging.getLogger("relay").handlers:
    handler.setStream(open(os.devnull, "w"))  # every line is formatted and written, to nowhere
client = app.test_client()
headers = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"], "Content-Type": "application/json"}
run = os.environ["BENCH_RUN"]
def send(seq):
    body = json.dumps({"user": f"bench:user_{seq % 97}", "amount": "1.50", "metadata": {"run": run, "seq": str(seq)}})
    answer = client.post("/v1/user/balance/deposit", data=body, headers=headers)
    assert answer.status_code == 200, answer.data
for seq in range(fresh):
    send(seq)
for i in range(replays):
    send(i % min(fresh, 50))
'''


def instructions(code: Path, env: dict, fresh: int, replays: int) -> int:
    with tempfile.NamedTemporaryFile(suffix=".cg") as out:
        done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out.name}",
                               sys.executable, "-c", CLIENT, str(fresh), str(replays)],
                              env={**env, "BENCH_RUN": uuid.uuid4().hex[:8], "PYTHONHASHSEED": "0"}, cwd=code,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        return int(match.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", required=True)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (a fresh database per tree)")
    parser.add_argument("--low", type=int, default=60)
    parser.add_argument("--high", type=int, default=260)
    parser.add_argument("--replays", type=int, default=200)
    args = parser.parse_args()
    bench.WORK.mkdir(exist_ok=True)
    rows = []
    with ExitStack() as stack:
        port = bench.free_port()
        sandbox_url = f"http://127.0.0.1:{port}"
        stack.enter_context(bench.process("ir-sandbox", bench.sandbox_command(port), bench.clean_env(),
                                          sandbox_url + "/_sandbox/state"))
        for code in (Path(c).resolve() for c in args.code):
            if args.database_url:
                url = stack.enter_context(bench.postgres_database(args.database_url))
            else:
                url = f"sqlite:///{bench.WORK}/ir-{uuid.uuid4().hex[:8]}.db"
            env = bench.relay_env(url, sandbox_url)
            cli = lambda *a: cpu.cli(code, env, *a)  # noqa: E731
            cli("db", "upgrade")
            env["BENCH_TOKEN"] = json.loads(cli("tokens", "create", "--label", "ir", "--ops", "deposit", "--json"))["token"]
            a = instructions(code, env, args.low, 0)
            b = instructions(code, env, args.high, 0)
            c = instructions(code, env, args.low, args.replays)
            fresh, replay = (b - a) / (args.high - args.low), (c - a) / args.replays
            rows.append((code, fresh, replay))
            print(f"{code}: {fresh / 1e6:.2f} M instructions per fresh deposit, {replay / 1e6:.2f} M per replay "
                  f"(runs: {a:,} / {b:,} / {c:,})", flush=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\n{database}, instructions per request (relay process, Flask test client, user space):")
    base = rows[0]
    for code, fresh, replay in rows:
        vs = f" ({fresh / base[1] - 1:+.1%} fresh, {replay / base[2] - 1:+.1%} replay vs the first)" if code != base[0] else ""
        print(f"  {code}: fresh {fresh / 1e6:.2f} M, replay {replay / 1e6:.2f} M, fresh/replay "
              f"{fresh / replay:.2f}x{vs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
