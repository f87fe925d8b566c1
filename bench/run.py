"""`make bench`: the relay against the same requests sent straight to the sandbox upstream and through a
naive pass-through proxy, under load from wrk (not the code under test), on 127.0.0.1 only.

Everything runs as separate processes: the standalone sandbox upstream, the naive proxy and the relay, the
last two under gunicorn with the relay's production gunicorn.conf.py. For each database (SQLite, and
PostgreSQL when RELAY_TEST_DATABASE_URL is set) it measures, in one run:

  * fresh deposits (a new idempotency key each) at 1 and 16 connections: direct, naive, relay;
  * replays (the same fields again) through the relay at 16 connections;
  * a duplicate storm: one deposit sent once by each of 100 concurrent connections (1 upstream call).

It prints one table, writes it to bench/results.md, and exits 1 if a target is missed.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
LUA = BENCH / "deposit.lua"
DEPOSIT = "/v1/user/balance/deposit"
SANDBOX_KEY = "sk-bench-" + uuid.uuid4().hex
STORM_CONNECTIONS = 100
REPLAY_POOL = 256
CLI = [sys.executable, "-c", "from relay.cli import main; main()"]

# The targets of issue 7 (ratios, since machines are noisy).
MAX_ADDED_P50_MS = 2.0
MIN_FRESH_VS_NAIVE = 0.75
MIN_REPLAY_VS_FRESH = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**more) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PAYWALLS_", "RELAY_", "DATABASE_URL", "WEB_CONCURRENCY", "NAIVE_"))}
    env.update({k: str(v) for k, v in more.items() if v is not None})
    return env


def wait_until(url: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up; see the logs in {WORK}")


@contextmanager
def process(name: str, command: list[str], env: dict, health_url: str):
    log = open(WORK / f"{name}.log", "wb")
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_until(health_url)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def gunicorn(app: str, port: int, *extra: str) -> list[str]:
    """The production configuration (gunicorn.conf.py), bound to loopback only."""
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", *extra, app]


def sandbox_command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        # Its state is in memory, so one process; threads for concurrency.
        return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                "--worker-class", "gthread", "--threads", "32", "--keep-alive", "5", "--log-level", "warning",
                f"relay.sandbox:create_sandbox_app({SANDBOX_KEY!r})"]
    return [*CLI, "sandbox", "--host", "127.0.0.1", "--port", str(port),
            "--api-key", SANDBOX_KEY]


# --- wrk ------------------------------------------------------------------------------------------------------

def wrk(url: str, *, connections: int, duration: float, mode: str = "fresh", auth: str, run: str,
        send_key: bool = False, threads: int | None = None) -> dict:
    threads = threads or min(connections, 2)
    env = dict(os.environ, BENCH_MODE=mode, BENCH_AUTH=auth, BENCH_PATH=DEPOSIT, BENCH_RUN=run,
               BENCH_SEND_KEY="1" if send_key else "0", BENCH_POOL=str(REPLAY_POOL),
               BENCH_PER_THREAD=str(connections // threads))
    command = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
               "--timeout", "10s", "-s", str(LUA), url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result = json.loads(line.split(" ", 1)[1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def check_all_ok(result: dict, what: str):
    errors = {k: v for k, v in result["errors"].items() if v}
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    if errors or bad or not result["requests"]:
        raise RuntimeError(f"{what}: not every answer was 200: errors={errors} statuses={result['statuses']}")


class Sandbox:
    """The standalone sandbox's control endpoints (a new connection each time: no idle keep-alive to go stale)."""

    def __init__(self, url: str):
        self.url = url

    def deposit_calls(self) -> int:
        return requests.get(self.url + "/_sandbox/state", timeout=30).json()["calls"].get("deposit", 0)

    def reset(self):
        time.sleep(1)  # requests still in flight when the last wrk run stopped land first
        requests.post(self.url + "/_sandbox/reset", timeout=30).raise_for_status()


# --- the relay under test ---------------------------------------------------------------------------------------

def relay_env(database_url: str, sandbox_url: str) -> dict:
    return clean_env(PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox_url + "/v1", DATABASE_URL=database_url,
                     RELAY_ENV="production")


def prepare_database(env: dict) -> str:
    """Migrate, and create a deposit-only token; returns its text."""
    subprocess.run([*CLI, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    made = subprocess.run([*CLI, "tokens", "create", "--label", "bench", "--ops", "deposit", "--json"],
                          env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(made.stdout)["token"]


@contextmanager
def postgres_database(server_url: str):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1)
                   if server_url.startswith("postgresql://") else server_url)
    name = "relay_bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def median_result(results: list[dict]) -> dict:
    """Each figure's median over the rounds (the machines this runs on are noisy)."""
    merged = {"rounds": len(results), "requests": sum(r["requests"] for r in results)}
    for key in ("rps", "p50_us", "p90_us", "p99_us", "max_us", "cpu_ms"):
        if all(key in r for r in results):
            merged[key] = statistics.median(r[key] for r in results)
    return merged


# The process group of each path's own server: the sandbox for "direct", the proxy, the relay.
GROUPS: dict[str, int] = {}


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every process in a process group (the gunicorn master and its workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def counting_cpu(name: str, result_of) -> dict:
    """Run a measurement and add the CPU its path's own server spent per answered request."""
    before = cpu_seconds(GROUPS[name])
    result = result_of()
    result["cpu_ms"] = (cpu_seconds(GROUPS[name]) - before) * 1000 / max(1, result["requests"])
    return result


def one_run(sandbox: Sandbox, url: str, name: str, connections: int, duration: float, run: str, **who) -> dict:
    sandbox.reset()
    result = counting_cpu(name, lambda: wrk(url, connections=connections, duration=duration, run=run, **who))
    check_all_ok(result, f"{name} at {connections}")
    calls = sandbox.deposit_calls()
    # wrk stops with requests in flight: they may reach the upstream without being counted.
    if not result["requests"] <= calls <= result["requests"] + connections:
        raise RuntimeError(f"{name}: {result['requests']} answers but {calls} upstream calls")
    return result


def measure(database: str, database_url: str, sandbox: Sandbox, naive_url: str, duration: float, rounds: int) -> dict:
    env = relay_env(database_url, sandbox.url)
    token = prepare_database(env)
    port = free_port()
    relay_url = f"http://127.0.0.1:{port}"
    run = uuid.uuid4().hex[:8]
    upstream = {"auth": f"Bearer {SANDBOX_KEY}", "send_key": True}
    relay = {"auth": f"Bearer {token}"}
    targets_ = (("direct", sandbox.url, upstream), ("naive", naive_url, upstream), ("relay", relay_url, relay))
    rows = {}
    with process(f"relay-{database}", gunicorn("relay.app:create_app()", port), env, relay_url + "/healthz") as relay_proc:
        GROUPS["relay"] = relay_proc.pid
        print(f"[{database}] warming up", flush=True)
        for _name, url, who in targets_:
            wrk(url, connections=16, duration=2, run=run + "w", **who)

        # Fresh deposits: direct, naive and relay interleaved, round after round.
        for connections in (1, 16):
            results = {name: [] for name, _url, _who in targets_}
            for round_ in range(rounds):
                for name, url, who in targets_:
                    results[name].append(one_run(sandbox, url, name, connections, duration,
                                                 f"{run}{name}{connections}r{round_}", **who))
            for name, _url, _who in targets_:
                rows[(name, connections)] = result = median_result(results[name])
                each = ", ".join(f"{r['rps']:.0f}" for r in results[name])
                print(f"[{database}] {name:6} c={connections:<3} {result['rps']:8.0f} req/s  "
                      f"p50 {result['p50_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms "
                      f"(median of {rounds}: {each} req/s)",
                      flush=True)

        # Replays: the same fields again, answered from the relay's store without calling Paywalls.
        http = requests.Session()
        for seq in range(REPLAY_POOL):
            body = {"user": f"bench:user_{seq % 97}", "amount": "1.50", "metadata": {"run": run + "r", "seq": str(seq)}}
            answer = http.post(relay_url + DEPOSIT, json=body, headers={"Authorization": relay["auth"]}, timeout=30)
            answer.raise_for_status()
        sandbox.reset()
        replays = []
        for _round in range(rounds):
            result = counting_cpu("relay", lambda: wrk(relay_url, connections=16, duration=duration, mode="replay",
                                                       run=run + "r", **relay))
            check_all_ok(result, "replays")
            replays.append(result)
        if sandbox.deposit_calls() != 0:
            raise RuntimeError("replays reached the upstream")
        rows[("replay", 16)] = result = median_result(replays)
        print(f"[{database}] replay c=16  {result['rps']:8.0f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms", flush=True)

        # The duplicate storm: one deposit, sent once by each of 100 concurrent connections; a new one each round.
        storms = []
        for round_ in range(rounds):
            sandbox.reset()
            result = wrk(relay_url, connections=STORM_CONNECTIONS, duration=4, mode="storm", run=f"{run}s{round_}",
                         **relay)
            check_all_ok(result, "storm")
            result["upstream_calls"] = sandbox.deposit_calls()
            storms.append(result)
            print(f"[{database}] storm c=100  {result['requests']} answers, {result['upstream_calls']} upstream "
                  f"call(s), p99 {result['p99_us'] / 1000:.2f} ms", flush=True)
        rows[("storm", STORM_CONNECTIONS)] = {
            **median_result(storms), "requests": min(r["requests"] for r in storms),
            "upstream_calls": max(r["upstream_calls"] for r in storms), "p99_us": max(r["p99_us"] for r in storms),
            "all_calls": [r["upstream_calls"] for r in storms]}
    return rows


# --- the report -------------------------------------------------------------------------------------------------

def targets(rows: dict) -> list[tuple[str, str, bool]]:
    added = (rows[("relay", 1)]["p50_us"] - rows[("direct", 1)]["p50_us"]) / 1000
    fresh_ratio = rows[("relay", 16)]["rps"] / rows[("naive", 16)]["rps"]
    replay_ratio = rows[("replay", 16)]["rps"] / rows[("relay", 16)]["rps"]
    storm = rows[("storm", STORM_CONNECTIONS)]
    return [
        (f"added p50 at 1 connection <= {MAX_ADDED_P50_MS:g} ms over direct", f"{added:.2f} ms", added <= MAX_ADDED_P50_MS),
        (f"fresh deposits >= {MIN_FRESH_VS_NAIVE:g}x naive at 16 connections", f"{fresh_ratio:.2f}x",
         fresh_ratio >= MIN_FRESH_VS_NAIVE),
        (f"replays >= {MIN_REPLAY_VS_FRESH:g}x fresh at 16 connections", f"{replay_ratio:.2f}x",
         replay_ratio >= MIN_REPLAY_VS_FRESH),
        ("storm of 100 identical deposits: exactly 1 upstream call", ", ".join(map(str, storm["all_calls"])),
         all(calls == 1 for calls in storm["all_calls"]) and storm["requests"] == STORM_CONNECTIONS),
    ]


def table(database: str, rows: dict) -> list[str]:
    ms = lambda us: f"{us / 1000:.2f}"  # noqa: E731
    direct = {c: rows[("direct", c)]["p50_us"] for c in (1, 16)}
    lines = []
    labels = {"direct": "direct to sandbox", "naive": "naive proxy", "relay": "relay, fresh keys",
              "replay": "relay, replays", "storm": "relay, duplicate storm"}
    for (name, connections), r in rows.items():
        added = f"+{ms(r['p50_us'] - direct[connections])}" if name in ("naive", "relay") else ""
        extra = (f"{r['rounds']} storms of {STORM_CONNECTIONS} identical deposits: upstream calls "
                 f"{', '.join(map(str, r['all_calls']))}; p99 is the worst storm's") if name == "storm" else ""
        rps = "" if name == "storm" else f"{r['rps']:.0f}"
        cpu = f"{r['cpu_ms']:.2f}" if "cpu_ms" in r else ""
        lines.append(f"| {database} | {labels[name]} | {connections} | {rps} | {ms(r['p50_us'])} | {ms(r['p99_us'])} "
                     f"| {added} | {cpu} | {extra} |")
    return lines


def report(results: dict, settings: dict) -> tuple[str, bool]:
    lines = ["# Benchmark results", "",
             "Written by `make bench` (bench/run.py); the README quotes these figures.", "",
             f"- date: {settings['date']}",
             f"- machine: {settings['cpus']} CPUs ({settings['cpu_model']}), {settings['platform']}, Python {settings['python']}",
             f"- load generator: {settings['wrk']}, bodies from bench/deposit.lua; each figure is the median of "
             f"{settings['rounds']} interleaved runs of {settings['duration']:g} s (direct, naive, relay in turn)",
             f"- sandbox upstream: standalone, {settings['sandbox']}; naive proxy and relay: gunicorn with "
             "gunicorn.conf.py (gthread, 2 workers x 8 threads), all on 127.0.0.1",
             "- 'added p50' is the p50 minus the direct p50 at the same number of connections",
             "- 'CPU ms/req' is the CPU time (user + system) the path's own server spent per answered request: the "
             "sandbox for direct, the proxy alone for naive, the relay alone for the relay (the sandbox's share of "
             "those requests is in the direct row); every process shares the machine's CPUs", "",
             "| database | path | connections | req/s | p50 ms | p99 ms | added p50 ms | CPU ms/req | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for database, rows in results.items():
        lines += table(database, rows)
    lines += ["", "## Targets", "", "| database | target | measured | met |", "|---|---|---:|---|"]
    all_met = True
    for database, rows in results.items():
        for what, value, met in targets(rows):
            all_met &= met
            lines.append(f"| {database} | {what} | {value} | {'yes' if met else '**NO**'} |")
    lines += ["", f"All targets met: {'yes' if all_met else '**NO**'}", ""]
    return "\n".join(lines), all_met


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per fresh/replay measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement (medians reported)")
    parser.add_argument("--sandbox", choices=["gunicorn", "werkzeug"], default="gunicorn",
                        help="how the standalone sandbox upstream is served")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="which to run; postgres needs RELAY_TEST_DATABASE_URL")
    parser.add_argument("--out", default=str(BENCH / "results.md"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: run bench/setup.sh (make bench does)", file=sys.stderr)
        return 2
    WORK.mkdir(exist_ok=True)
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    pg_url = os.environ.get("RELAY_TEST_DATABASE_URL")
    if "postgres" in databases and not pg_url:
        print("RELAY_TEST_DATABASE_URL is not set: PostgreSQL skipped", flush=True)
        databases.remove("postgres")

    settings = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "cpu_model": cpu_model(), "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(), "duration": args.duration, "rounds": args.rounds,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip() or "wrk",
        "sandbox": "gunicorn 1 worker x 32 threads" if args.sandbox == "gunicorn" else "werkzeug threaded server",
    }
    results = {}
    with ExitStack() as stack:
        sandbox_port, naive_port = free_port(), free_port()
        sandbox_url, naive_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{naive_port}"
        GROUPS["direct"] = stack.enter_context(process("sandbox", sandbox_command(args.sandbox, sandbox_port),
                                                       clean_env(), sandbox_url + "/_sandbox/state")).pid
        # PAYWALLS_API_KEY is set so gunicorn.conf.py does not start an embedded sandbox for the proxy.
        naive_env = clean_env(NAIVE_UPSTREAM=sandbox_url, PAYWALLS_API_KEY=SANDBOX_KEY)
        GROUPS["naive"] = stack.enter_context(process("naive", gunicorn("bench.naive_proxy:app", naive_port),
                                                      naive_env, naive_url + "/healthz")).pid
        sandbox = Sandbox(sandbox_url)
        for database in databases:
            if database == "sqlite":
                path = WORK / f"relay-{uuid.uuid4().hex[:8]}.db"
                try:
                    results["SQLite"] = measure("sqlite", f"sqlite:///{path}", sandbox, naive_url, args.duration,
                                                 args.rounds)
                finally:
                    for suffix in ("", "-wal", "-shm", ".writer-lock"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
            elif database == "postgres":
                with postgres_database(pg_url) as url:
                    results["PostgreSQL"] = measure("postgres", url, sandbox, naive_url, args.duration, args.rounds)
            else:
                raise SystemExit(f"unknown database {database!r}")

    text, all_met = report(results, settings)
    Path(args.out).write_text(text)
    print()
    print(text)
    print(f"Written to {os.path.relpath(args.out, ROOT)}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
