"""Where an IO-bound deposit's time goes: one scenario of `make bench` (the upstream answering after a fixed
delay, N connections), with what `make bench` does not show.

    .venv/bin/python bench/waves.py LATENCY_MS CONNECTIONS [--jitter MS] [--database-url URL] [--code TREE]
                                    [--env NAME=VALUE ...]

For the relay under its production gunicorn.conf.py (from TREE, default this one), against wrk sending fresh
deposits, it prints:
  * req/s, p50 and p99, and the same load sent straight to the sandbox (`direct`);
  * CPU per request of the relay's processes, PostgreSQL's backends, the sandbox, and the whole machine;
  * the relay's own share of a request's time: the mean of relay_request_seconds minus the mean of
    relay_upstream_seconds (both from /metrics), so what wrk measures is split into Paywalls' part and the relay's;
  * PostgreSQL: new server sessions per request (pg_stat_database.sessions), and the database's backends by state
    and wait event, sampled every 20 ms.

What it showed (bench/cpu-per-deposit.md, "Waves"): with a fixed delay the callers move in waves. A whole wave is
answered at once, its callers come back at once, and their claim and record phases queue for the machine's two
CPUs, so the relay's share of each request grows with the CPU a wave needs, not with any wait of its own. With a
jitter the waves spread out and the same relay's share falls.
"""
import argparse
import collections
import os
import re
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process (a backend that exited takes its share with it: read the
    sessions count beside this)."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text()
        except OSError:
            continue
        if name.startswith("postgres"):
            total += bench.process_cpu_seconds(int(comm.parent.name))
    return total


def machine_cpu_seconds() -> float:
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def deposit_times(relay_url: str) -> dict:
    """relay_request_seconds and relay_upstream_seconds of deposits (sum and count), from /metrics."""
    found = {}
    for line in requests.get(relay_url + "/metrics", timeout=10).text.splitlines():
        match = re.match(r'relay_(request|upstream)_seconds_(sum|count)\{(?:endpoint|path)="(?:/v1)?/user/balance/'
                         r'deposit"\} (\S+)', line)
        if match:
            found[match.group(1), match.group(2)] = float(match.group(3))
    return found


def relay_share_ms(before: dict, after: dict) -> float:
    """Mean time a deposit spent in the relay minus the mean time its Paywalls call took, between two readings."""
    mean = {kind: (after[kind, "sum"] - before[kind, "sum"]) / (after[kind, "count"] - before[kind, "count"])
            for kind in ("request", "upstream")}
    return 1000 * (mean["request"] - mean["upstream"])


class Backends:
    """pg_stat_activity every 20 ms, and the database's sessions counter before and after."""

    def __init__(self, database_url: str):
        from sqlalchemy import create_engine, text
        self.engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                    isolation_level="AUTOCOMMIT")
        self.text = text
        self.states, self.samples, self.stop = collections.Counter(), 0, threading.Event()

    def sessions(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(self.text(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")).scalar()

    def sample(self):
        query = self.text("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with self.engine.connect() as connection:
            while not self.stop.wait(0.02):
                self.samples += 1
                self.states.update(tuple(row) for row in connection.execute(query))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("latency_ms", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("--jitter", type=int, default=0, help="the sandbox adds a random 0..JITTER ms")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--database-url", help="PostgreSQL server URL (a fresh database); SQLite if absent")
    parser.add_argument("--code", type=Path, default=bench.ROOT, help="the code tree the relay runs from")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the relay's environment")
    args = parser.parse_args()
    bench.WORK.mkdir(exist_ok=True)
    with ExitStack() as stack:
        port = bench.free_port()
        sandbox_url = f"http://127.0.0.1:{port}"
        bench.GROUPS["sandbox"] = stack.enter_context(bench.process(
            "waves-sandbox", bench.sandbox_command(port, args.latency_ms, args.jitter), bench.clean_env(),
            sandbox_url + "/_sandbox/state")).pid
        sandbox = bench.Sandbox(sandbox_url)
        if args.database_url:
            database_url = stack.enter_context(bench.postgres_database(args.database_url))
        else:
            database_url = stack.enter_context(bench.sqlite_database("waves"))
        env = bench.relay_env(database_url, sandbox_url)
        env.update(dict(pair.split("=", 1) for pair in args.env))
        bench.migrate(env)
        token = bench.new_token(env)
        run = uuid.uuid4().hex[:8]
        relay_port = bench.free_port()
        relay_url = f"http://127.0.0.1:{relay_port}"
        bench.GROUPS["relay"] = stack.enter_context(bench.process(
            "waves-relay", bench.gunicorn("relay.app:create_app()", relay_port), env, relay_url + "/healthz",
            cwd=args.code.resolve())).pid
        bench.wrk(relay_url, connections=args.connections, duration=2, run=run + "w", auth=f"Bearer {token}")
        sandbox.reset()
        direct = bench.wrk(sandbox_url, connections=args.connections, duration=args.duration, run=run + "d",
                           auth=f"Bearer {bench.SANDBOX_KEY}", send_key=True)
        sandbox.reset()
        times = deposit_times(relay_url)
        backends = Backends(database_url) if args.database_url else None
        sampler = threading.Thread(target=backends.sample) if backends else None
        sessions = backends.sessions() if backends else 0
        if sampler:
            sampler.start()
        workers = {pid: bench.process_cpu_seconds(pid) for pid in bench.group_pids(bench.GROUPS["relay"])}
        before = (bench.cpu_seconds(bench.GROUPS["relay"]), postgres_cpu_seconds(),
                  bench.cpu_seconds(bench.GROUPS["sandbox"]), machine_cpu_seconds())
        relayed = bench.wrk(relay_url, connections=args.connections, duration=args.duration, run=run + "r",
                            auth=f"Bearer {token}")
        after = (bench.cpu_seconds(bench.GROUPS["relay"]), postgres_cpu_seconds(),
                 bench.cpu_seconds(bench.GROUPS["sandbox"]), machine_cpu_seconds())
        workers = sorted(bench.process_cpu_seconds(pid) - spent for pid, spent in workers.items())
        if sampler:
            backends.stop.set()
            sampler.join()
            time.sleep(0.5)
            sessions = backends.sessions() - sessions
        n = relayed["requests"]
        print(f"{'PostgreSQL' if args.database_url else 'SQLite'}, upstream {args.latency_ms} ms + 0..{args.jitter} ms, "
              f"{args.connections} connections, {args.duration:g} s")
        for name, result in (("direct", direct), ("relay", relayed)):
            print(f"  {name:7} {result['rps']:7.0f} req/s  p50 {result['p50_us'] / 1000:7.1f} ms  "
                  f"p99 {result['p99_us'] / 1000:7.1f} ms  non-2xx {bench.non_2xx(result)}")
        print(f"  relay/direct {relayed['rps'] / direct['rps']:.2f}x, p99 {relayed['p99_us'] / direct['p99_us']:.2f}x")
        cpu = [1000 * (b - a) / n for a, b in zip(before, after)]
        print(f"  CPU ms per request: relay {cpu[0]:.2f}, PostgreSQL {cpu[1]:.2f}, sandbox {cpu[2]:.2f}, "
              f"whole machine {cpu[3]:.2f}")
        print(f"  the relay's CPU by process (s): {', '.join(f'{seconds:.2f}' for seconds in workers)} "
              "(sorted; keep-alive connections stay with the worker that accepted them)")
        print(f"  the relay's share of a request (its time minus Paywalls'): "
              f"{relay_share_ms(times, deposit_times(relay_url)):.1f} ms")
        if backends:
            print(f"  new PostgreSQL sessions: {sessions} ({sessions / n:.3f} per request)")
            print(f"  backends by state and wait, mean per sample ({backends.samples} samples):")
            for (state, kind, event), count in backends.states.most_common(6):
                print(f"    {count / backends.samples:6.2f}  {state} {kind or ''} {event or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
