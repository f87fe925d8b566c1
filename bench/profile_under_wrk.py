"""py-spy on the relay's gunicorn workers while wrk sends fresh deposits, then replays, at 16 connections (or
--connections, against a sandbox answering after --latency-ms): the whole request under the production
configuration, as `make bench` serves it.

    .venv/bin/python bench/profile_under_wrk.py [--database-url URL] [--format raw|flamegraph]
                                                 [--latency-ms MS --connections N] PREFIX

Writes PREFIX-fresh-<pid>.<txt|svg> and PREFIX-replay-<pid>.<txt|svg>, one per worker (py-spy --gil: only the
thread holding the GIL is sampled, so the shares are of CPU time; --nonblocking, so the workers are not paused).
bench/profile_shares.py reads the raw ones. Needs py-spy, a profiler outside the relay's dependencies:
`.venv/bin/pip install py-spy==0.4.3` (the version of the profiles in bench/).
"""
import argparse
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prefix")
    parser.add_argument("--database-url", help="PostgreSQL server URL (a fresh database); SQLite if absent")
    parser.add_argument("--format", default="raw", choices=("raw", "flamegraph"))
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--latency-ms", type=int, default=0, help="the sandbox answers after this delay")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    suffix = "svg" if args.format == "flamegraph" else "txt"
    bench.WORK.mkdir(exist_ok=True)
    with ExitStack() as stack:
        port = bench.free_port()
        sandbox_url = f"http://127.0.0.1:{port}"
        stack.enter_context(bench.process("profile-sandbox", bench.sandbox_command(port, args.latency_ms),
                                          bench.clean_env(), sandbox_url + "/_sandbox/state"))
        database = stack.enter_context(bench.postgres_database(args.database_url)) if args.database_url else \
            f"sqlite:///{bench.WORK}/profile-{uuid.uuid4().hex[:8]}.db"
        env = bench.relay_env(database, sandbox_url)
        bench.migrate(env)
        token = bench.new_token(env)
        run = uuid.uuid4().hex[:8]
        relay_url = stack.enter_context(bench.relay("relay", env))
        bench.wrk(relay_url, connections=args.connections, duration=3, run=run + "w", auth=f"Bearer {token}")
        http = requests.Session()  # the replay pool, as run.py's CPU scenario makes it
        for seq in range(bench.REPLAY_POOL):
            body = {"user": f"bench:user_{seq % 97}", "amount": "1.50", "metadata": {"run": run + "r", "seq": str(seq)}}
            http.post(relay_url + bench.DEPOSIT, json=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=30).raise_for_status()
        workers = [pid for pid in bench.group_pids(bench.GROUPS["relay"]) if pid != bench.GROUPS["relay"]]
        for mode, bodies in (("fresh", run + "f"), ("replay", run + "r")):
            spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--nonblocking",
                                       "--format", args.format, "--output", f"{args.prefix}-{mode}-{pid}.{suffix}",
                                       "--duration", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for pid in workers]
            time.sleep(1.5)
            result = bench.counting_cpu("relay", lambda: bench.wrk(relay_url, connections=args.connections,
                                                                   duration=args.seconds, mode=mode, run=bodies,
                                                                   auth=f"Bearer {token}"))
            for one in spies:
                one.send_signal(signal.SIGINT)
                one.wait(30)
            print(f"{mode}: {result['rps']:.0f} req/s, CPU {result['cpu_ms']:.2f} ms per request (under the profiler)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
