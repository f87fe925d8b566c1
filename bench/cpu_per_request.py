"""CPU per request and database round trips per request, measured so that a loaded machine barely moves them.

`make bench` measures throughput, which another process on the machine changes. This measures what one request
costs the relay itself, for comparing two versions of the code on a machine that is doing other work:

  * CPU: N requests sent one after another on one keep-alive connection (no queueing, no waiting on the GIL),
    and the user + system CPU time the relay's processes (gunicorn master and workers, production
    gunicorn.conf.py) spent meanwhile, divided by N. Fresh deposits (a new body each), then replays (bodies
    already answered). Several code trees are measured in interleaved rounds, so drifting load hits each alike;
    medians are reported. The naive proxy (bench/naive_proxy.py) is measured the same way for the ratio.
  * round trips (--strace): strace on the relay's workers during a few requests, counting the messages sent on
    the sockets to PostgreSQL's port (one per statement, commit or ping: libpq sends each in one write), plus
    fsync/fdatasync and flock calls (SQLite's flushes and the writer queue).

    .venv/bin/python bench/cpu_per_request.py --code /tmp/base --code . [--database-url postgresql://...]

Each --code is a checkout of the repository (its relay/ and gunicorn.conf.py are served from it, with this
virtualenv). The upstream is the standalone sandbox answering at once.
"""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the process helpers of make bench)

DEPOSIT = "/v1/user/balance/deposit"


def cpu_split(group: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process group."""
    user = system = 0
    for pid in bench.group_pids(group):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def body(run: str, seq: int) -> bytes:
    return json.dumps({"user": f"bench:user_{seq % 97}", "amount": "1.50",
                       "metadata": {"run": run, "seq": str(seq)}}).encode()


def cli(code: Path, env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", "from relay.cli import main; main()", *args], env=env, cwd=code,
                          check=True, capture_output=True, text=True).stdout


class Target:
    def __init__(self, name: str, port: int, auth: str, group: int, send_key: bool):
        self.name, self.port, self.auth, self.group, self.send_key = name, port, auth, group, send_key
        self.run = uuid.uuid4().hex[:8]
        self.sent = 0
        self.system_share: list[float] = []

    def post(self, conn, payload: bytes, key: str | None = None):
        headers = {"Content-Type": "application/json", "Authorization": self.auth}
        if key:
            headers["Idempotency-Key"] = key
        conn.request("POST", DEPOSIT, payload, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status} {data[:300]!r}")

    def fresh(self, n: int) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.post(conn, body(self.run + "w", self.sent), str(uuid.uuid4()) if self.send_key else None)  # warm
        before = cpu_split(self.group)
        for _ in range(n):
            self.sent += 1
            self.post(conn, body(self.run, self.sent), str(uuid.uuid4()) if self.send_key else None)
        after = cpu_split(self.group)
        spent = after[0] + after[1] - before[0] - before[1]
        self.system_share.append((after[1] - before[1]) / spent if spent else 0)
        conn.close()
        return spent * 1000 / n

    def replays(self, n: int, pool: int = 100) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for seq in range(pool):
            self.post(conn, body(self.run + "r", seq))
        before = bench.cpu_seconds(self.group)
        for i in range(n):
            self.post(conn, body(self.run + "r", i % pool))
        spent = bench.cpu_seconds(self.group) - before
        conn.close()
        return spent * 1000 / n


SEND = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(sendto|send|write|sendmsg)\((\d+)<TCP(?:v6)?:\[[^\]]*->[^\]]*:(\d+)\]>")
FLUSH = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(fsync|fdatasync|flock)\(")


def strace_counts(target: Target, n: int, replay: bool, db_port: int | None) -> dict:
    """Messages to the database, flushes and flocks per request, seen by strace on the relay's workers."""
    pids = [pid for pid in bench.group_pids(target.group) if pid != target.group]
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    prefix = target.run + ("r" if replay else "s")
    if replay:
        for seq in range(n):
            target.post(conn, body(prefix, seq))
    else:
        target.post(conn, body(prefix + "w", 0))
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-f", "-yy", "-qq", "-s", "120", "-e", "trace=sendto,send,write,sendmsg,fsync,fdatasync,flock",
                                   "-o", out.name, *sum((["-p", str(pid)] for pid in pids), [])],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        for seq in range(n):
            target.post(conn, body(prefix, seq))
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        lines = out.read().splitlines()
    conn.close()
    safe = re.sub(r"[^A-Za-z0-9]+", "-", target.name).strip("-")
    (bench.WORK / f"strace-{safe}-{'replay' if replay else 'fresh'}.txt").write_text("\n".join(lines))
    # The bulk runner's thread polls the database once a second (relay/batches.py): not the requests' work.
    runner = {line.split()[0] for line in lines if "queued" in line}
    counts = {"db_messages": 0, "fsync": 0, "flock": 0}
    for line in lines:
        if line.split()[0] in runner:
            continue
        match = SEND.match(line)
        if match and db_port and int(match.group(3)) == db_port:
            counts["db_messages"] += 1
        flush = FLUSH.match(line)
        if flush:
            counts["flock" if flush.group(1) == "flock" else "fsync"] += 1
    return {k: v / n for k, v in counts.items()}


def profile(target: Target, prefix: str):
    """py-spy (sampling, GIL-holding threads only: where the CPU goes) on the workers while requests run."""
    pids = [pid for pid in bench.group_pids(target.group) if pid != target.group]
    safe = re.sub(r"[^A-Za-z0-9]+", "-", target.name.split("@")[-1]).strip("-")
    for kind, send in (("fresh", lambda: target.fresh(1000)), ("replay", lambda: target.replays(1000))):
        spies = [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "500", "--gil", "--format", "raw",
                                   "--output", f"{prefix}-{safe}-{kind}-{pid}.txt", "--duration", "600"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]
        time.sleep(2)
        send()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", required=True, help="a checkout to serve the relay from")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (a fresh database per tree)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strace", action="store_true", help="count round trips with strace (40 requests)")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the relay's workers during 1000 fresh deposits "
                        "and 1000 replays; raw stacks to PREFIX-<tree>-<kind>.txt")
    args = parser.parse_args()
    bench.WORK.mkdir(exist_ok=True)
    codes = [Path(c).resolve() for c in args.code]
    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        sandbox_port = bench.free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        stack.enter_context(bench.process("cpu-sandbox", bench.sandbox_command(sandbox_port), bench.clean_env(),
                                          sandbox_url + "/_sandbox/state"))
        targets = []
        if not args.no_naive:
            port = bench.free_port()
            env = bench.clean_env(NAIVE_UPSTREAM=sandbox_url, PAYWALLS_API_KEY=bench.SANDBOX_KEY)
            proc = stack.enter_context(bench.process("cpu-naive", bench.gunicorn("bench.naive_proxy:app", port),
                                                     env, f"http://127.0.0.1:{port}/healthz"))
            targets.append(Target("naive", port, f"Bearer {bench.SANDBOX_KEY}", proc.pid, send_key=True))
        db_port = None
        for i, code in enumerate(codes):
            if args.database_url:
                url = stack.enter_context(bench.postgres_database(args.database_url))
                from sqlalchemy.engine import make_url
                db_port = make_url(url).port or 5432
            else:
                url = f"sqlite:///{bench.WORK}/cpu-{uuid.uuid4().hex[:8]}.db"
            env = bench.relay_env(url, sandbox_url)
            cli(code, env, "db", "upgrade")
            token = json.loads(cli(code, env, "tokens", "create", "--label", "cpu", "--ops", "deposit", "--json"))["token"]
            port = bench.free_port()
            proc = stack.enter_context(bench.process(f"cpu-relay-{i}", bench.gunicorn("relay.app:create_app()", port),
                                                     env, f"http://127.0.0.1:{port}/healthz", cwd=code))
            targets.append(Target(f"relay@{code}", port, f"Bearer {token}", proc.pid, send_key=False))
        for target in targets:  # warm every path (imports, pools, caches)
            target.fresh(200)
        for round_ in range(args.rounds):
            for target in targets:
                row = results.setdefault(target.name, {"fresh": [], "replay": []})
                row["fresh"].append(target.fresh(args.requests))
                if target.name != "naive":
                    row["replay"].append(target.replays(args.requests))
            print(f"round {round_ + 1}: " + "; ".join(
                f"{name}: fresh {row['fresh'][-1]:.3f}" + (f" replay {row['replay'][-1]:.3f}" if row["replay"] else "")
                for name, row in results.items()), flush=True)
        if args.profile:
            for target in targets:
                if target.name != "naive":
                    profile(target, args.profile)
        traced = {}
        if args.strace:
            for target in targets:
                if target.name != "naive":
                    traced[target.name] = {"fresh": strace_counts(target, 40, False, db_port),
                                           "replay": strace_counts(target, 40, True, db_port)}
    print(f"\nCPU ms per request (median of {args.rounds} rounds of {args.requests}, one connection, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}):")
    naive = statistics.median(results["naive"]["fresh"]) if "naive" in results else None
    for name, row in results.items():
        fresh = statistics.median(row["fresh"])
        line = f"  {name}: fresh {fresh:.3f}"
        if naive and name != "naive":
            line += f" ({fresh / naive:.2f}x naive)"
        if row["replay"]:
            replay = statistics.median(row["replay"])
            line += f"; replay {replay:.3f} (fresh/replay {fresh / replay:.2f}x)"
        share = next(t.system_share for t in targets if t.name == name)
        line += f"; system {100 * statistics.median(share):.0f}% of fresh"
        print(line + f"   [fresh all: {', '.join(f'{v:.3f}' for v in row['fresh'])}]")
    for name, counts in traced.items():
        print(f"  {name}: per fresh deposit {counts['fresh']}; per replay {counts['replay']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
