"""`make bench`: the relay against the same requests sent straight to the sandbox upstream and through a
naive pass-through proxy, under load from wrk (not the code under test), on 127.0.0.1 only.

Everything runs as separate processes: standalone sandbox upstreams (one answering at once, one each for the
IO-bound latencies), the naive proxy and the relay, the last two under gunicorn with the relay's production
gunicorn.conf.py and no tuning variables. For each database (SQLite, and PostgreSQL when
RELAY_TEST_DATABASE_URL is set) it measures, in one run:

  * CPU: fresh deposits (a new idempotency key each) at 1 and 16 connections, direct, naive and relay
    interleaved, with the CPU each path's own server spent per request; replays at 16 connections; a storm
    of 100 identical deposits (exactly 1 upstream call);
  * IO-bound: the upstream answering after 300 ms (64 connections), 1000 ms (128), 100 ms (64 and 256):
    direct, the naive proxy (for reference: what a pass-through with no safety work keeps up with on this
    machine) and the relay, and the relay's total RSS at 256 connections;
  * PostgreSQL: one token against the same load spread over 16 tokens (uncapped, then capped), sampling
    pg_stat_activity for Lock:transactionid waits;
  * two relay processes on one database: fresh deposits through both, and the storm split across them;
  * bulk (issue 18): 10,000 rows through POST /v1/relay/bulk against a sandbox answering after 50 ms, against wrk
    sending the same concurrency (8) straight to it; then 10,000 more whose relay is SIGKILLed mid-batch and
    replaced: exactly 10,000 credits must reach the sandbox.

It prints one table with the issue 15 targets, writes it to bench/results.md, and exits 1 if a target is missed.
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
import threading
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

# The targets of issue 15 (ratios measured in one run, since machines are noisy).
# (delay ms, extra random delay up to ms, connections, a target?). A fixed delay sends callers in waves: every answer
# of a wave comes back at once and queues for the CPUs together, the worst case for the relay's tail. An internet
# round trip varies; the row with a random 0-100 ms (the same 300 ms on average) shows that case, and is no target.
IO_SCENARIOS = [(300, 0, 64, True), (1000, 0, 128, True), (250, 100, 64, False), (100, 0, 64, False),
                (100, 0, 256, False)]
MIN_IO_VS_DIRECT = 0.9
MAX_IO_P99_VS_DIRECT = 1.2
MAX_CPU_VS_NAIVE = {"SQLite": 1.5, "PostgreSQL": 2.0}
MAX_ADDED_P50_OVER_NAIVE_MS = 1.0  # SQLite
MIN_ONE_TOKEN_VS_SIXTEEN = 0.9
MIN_REPLAY_VS_FRESH = 3.0
SANDBOX_THREADS = 1024  # the upstream must never be what limits the direct column


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
def process(name: str, command: list[str], env: dict, health_url: str, cwd: Path = ROOT):
    log = open(WORK / f"{name}.log", "wb")
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
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


def sandbox_command(port: int, latency_ms: int = 0, jitter_ms: int = 0) -> list[str]:
    # Its state is in memory, so one process; threads so that every waiting call has one. gthread keeps
    # worker_connections - threads connections alive, and none at its default of 1000 connections: every call,
    # direct or from the relay, then opened a new TCP connection, which Paywalls (HTTP/1.1 keep-alive) does not ask.
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "gthread", "--threads", str(SANDBOX_THREADS), "--keep-alive", "5",
            "--worker-connections", str(SANDBOX_THREADS + 2048),
            "--backlog", "2048", "--log-level", "warning",
            f"relay.sandbox:create_sandbox_app({SANDBOX_KEY!r}, latency_ms={latency_ms}, jitter_ms={jitter_ms})"]


# --- wrk ------------------------------------------------------------------------------------------------------

def wrk_start(url: str, *, connections: int, duration: float, mode: str = "fresh", auth: str, run: str,
              send_key: bool = False, threads: int | None = None, auths: list[str] | None = None):
    threads = threads or min(connections, 2)
    env = dict(os.environ, BENCH_MODE=mode, BENCH_AUTH=auth, BENCH_PATH=DEPOSIT, BENCH_RUN=run,
               BENCH_SEND_KEY="1" if send_key else "0", BENCH_POOL=str(REPLAY_POOL),
               BENCH_PER_THREAD=str(connections // threads), BENCH_AUTHS="|".join(auths or []))
    command = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
               "--timeout", "30s", "-s", str(LUA), url]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_result(proc, duration: float) -> dict:
    stdout, stderr = proc.communicate(timeout=duration + 90)
    line = next((l for l in stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout}\n{stderr}")
    result = json.loads(line.split(" ", 1)[1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def wrk(url: str, *, duration: float, **options) -> dict:
    return wrk_result(wrk_start(url, duration=duration, **options), duration)


def non_2xx(result: dict) -> int:
    return sum(v for k, v in result["statuses"].items() if not k.startswith("2")) + \
        sum(v for k, v in result["errors"].items() if k != "status")


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


# --- processes ------------------------------------------------------------------------------------------------

def relay_env(database_url: str, sandbox_url: str) -> dict:
    return clean_env(PAYWALLS_API_KEY=SANDBOX_KEY, PAYWALLS_BASE_URL=sandbox_url + "/v1", DATABASE_URL=database_url,
                     RELAY_ENV="production")


def new_token(env: dict, ops: str = "deposit", **limits) -> str:
    extra = [part for name, value in limits.items() for part in (f"--{name.replace('_', '-')}", str(value))]
    made = subprocess.run([*CLI, "tokens", "create", "--label", "bench", "--ops", ops, *extra, "--json"],
                          env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(made.stdout)["token"]


def migrate(env: dict):
    subprocess.run([*CLI, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)


@contextmanager
def sqlite_database(name: str):
    """A SQLite database file under bench/.work, removed afterwards with the relay's files beside it."""
    path = WORK / f"{name}-{uuid.uuid4().hex[:8]}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm", ".writer-lock", ".migrate-lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


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


@contextmanager
def relay(name: str, env: dict):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(name, gunicorn("relay.app:create_app()", port), env, url + "/healthz") as proc:
        GROUPS[name] = proc.pid
        yield url


def median_result(results: list[dict]) -> dict:
    """Each figure's median over the rounds (the machines this runs on are noisy); answers and errors are summed
    (one non-2xx in any round counts), the peak memory is the highest."""
    merged = {"rounds": len(results), "requests": sum(r["requests"] for r in results),
              "each": [{k: r[k] for k in ("rps", "p99_us") if k in r} for r in results]}
    for key in ("rps", "p50_us", "p90_us", "p99_us", "max_us", "cpu_ms"):
        if all(key in r for r in results):
            merged[key] = statistics.median(r[key] for r in results)
    for key in ("statuses", "errors"):
        if all(key in r for r in results):
            merged[key] = {}
            for r in results:
                for name, count in r[key].items():
                    merged[key][name] = merged[key].get(name, 0) + count
    if all("rss_mb" in r for r in results):
        merged["rss_mb"] = max(r["rss_mb"] for r in results)
    return merged


# The process group of each path's own server: the sandbox for "direct", the proxy, the relay.
GROUPS: dict[str, int] = {}


def group_pids(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:
            pids.append(int(stat.parent.name))
    return pids


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every process in a process group (the gunicorn master and its workers)."""
    return sum(process_cpu_seconds(pid) for pid in group_pids(group))


def rss_mb(group: int) -> float:
    total = 0
    for pid in group_pids(group):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


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


def say(database: str, what: str, result: dict, extra: str = ""):
    cpu = f"  CPU {result['cpu_ms']:.2f} ms/req" if "cpu_ms" in result else ""
    print(f"[{database}] {what:34} {result.get('rps', 0):8.0f} req/s  p50 {result['p50_us'] / 1000:8.2f} ms  "
          f"p99 {result['p99_us'] / 1000:8.2f} ms{cpu} {extra}", flush=True)


# --- the scenarios --------------------------------------------------------------------------------------------

def cpu_scenario(database: str, env: dict, sandbox: Sandbox, naive_url: str, duration: float, rounds: int) -> dict:
    """Upstream answering at once: what each path costs in CPU, and the latency it adds."""
    token = new_token(env)
    run = uuid.uuid4().hex[:8]
    rows = {}
    upstream = {"auth": f"Bearer {SANDBOX_KEY}", "send_key": True}
    with relay("relay", env) as relay_url:
        paths = (("direct", sandbox.url, upstream), ("naive", naive_url, upstream),
                 ("relay", relay_url, {"auth": f"Bearer {token}"}))
        print(f"[{database}] warming up", flush=True)
        for _name, url, who in paths:
            wrk(url, connections=16, duration=2, run=run + "w", **who)
        for connections in (1, 16):
            results = {name: [] for name, _url, _who in paths}
            for round_ in range(rounds):
                for name, url, who in paths:
                    results[name].append(one_run(sandbox, url, name, connections, duration,
                                                 f"{run}{name}{connections}r{round_}", **who))
            for name, _url, _who in paths:
                rows[(name, connections)] = median_result(results[name])
                say(database, f"{name} fresh c={connections}", rows[(name, connections)])

        # Replays: the same fields again, answered from the relay's store without calling Paywalls.
        http = requests.Session()
        for seq in range(REPLAY_POOL):
            body = {"user": f"bench:user_{seq % 97}", "amount": "1.50", "metadata": {"run": run + "r", "seq": str(seq)}}
            http.post(relay_url + DEPOSIT, json=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=30).raise_for_status()
        sandbox.reset()
        replays = []
        for _round in range(rounds):
            result = counting_cpu("relay", lambda: wrk(relay_url, connections=16, duration=duration, mode="replay",
                                                       run=run + "r", auth=f"Bearer {token}"))
            check_all_ok(result, "replays")
            replays.append(result)
        if sandbox.deposit_calls() != 0:
            raise RuntimeError("replays reached the upstream")
        rows[("replay", 16)] = median_result(replays)
        say(database, "relay replays c=16", rows[("replay", 16)])
        rows["storm"] = [storm(sandbox, [relay_url], token, f"{run}s{round_}") for round_ in range(rounds)]
        print(f"[{database}] storm, one process: upstream calls {[s['upstream_calls'] for s in rows['storm']]}",
              flush=True)
    return rows


def storm(sandbox: Sandbox, relay_urls: list[str], token: str, run: str) -> dict:
    """One deposit, sent once by each of 100 concurrent connections (split over the relay processes)."""
    sandbox.reset()
    share = STORM_CONNECTIONS // len(relay_urls)
    procs = [wrk_start(url, connections=share, duration=4, mode="storm", run=run, auth=f"Bearer {token}")
             for url in relay_urls]
    results = [wrk_result(proc, 4) for proc in procs]
    answers = sum(r["requests"] for r in results)
    for result in results:
        check_all_ok(result, "storm")
    return {"answers": answers, "upstream_calls": sandbox.deposit_calls(),
            "p99_us": max(r["p99_us"] for r in results)}


def io_scenario(database: str, database_url: str, sandboxes: dict, duration: float, rounds: int) -> dict:
    """The upstream an internet round trip away: does the relay keep up with it? A target's paths are measured in
    `rounds` interleaved rounds (direct, naive, relay in turn) and each figure is the median: one 10 s run of a
    wave-shaped load moved a p99 by a tenth from one run to the next."""
    rows = {}
    for latency, jitter, connections, is_target in IO_SCENARIOS:
        sandbox = sandboxes[(latency, jitter)]
        group = sandbox_group(latency, jitter)
        env = relay_env(database_url, sandbox.url)
        token = new_token(env)
        run = uuid.uuid4().hex[:8]
        naive_port = free_port()
        naive_name = f"naive-{latency}-{jitter}"
        # The naive proxy in front of the same slow upstream: what a pass-through with no safety work at all keeps
        # up with on this machine, the floor under the relay's IO-bound figures.
        with relay("relay", env) as relay_url, process(
                naive_name, gunicorn("bench.naive_proxy:app", naive_port),
                clean_env(NAIVE_UPSTREAM=sandbox.url, PAYWALLS_API_KEY=SANDBOX_KEY),
                f"http://127.0.0.1:{naive_port}/healthz") as naive_proc:
            GROUPS[naive_name] = naive_proc.pid
            wrk(relay_url, connections=connections, duration=2, run=run + "w", auth=f"Bearer {token}")  # warm pools
            each = {"direct": [], "naive": [], "relay": []}
            for round_ in range(rounds if is_target else 1):
                tag = f"{run}{round_}"
                sandbox.reset()
                each["direct"].append(counting_cpu(group, lambda: wrk(
                    sandbox.url, connections=connections, duration=duration, run=tag + "d",
                    auth=f"Bearer {SANDBOX_KEY}", send_key=True)))
                sandbox.reset()
                each["naive"].append(counting_cpu(naive_name, lambda: wrk(
                    f"http://127.0.0.1:{naive_port}", connections=connections, duration=duration, run=tag + "n",
                    auth=f"Bearer {SANDBOX_KEY}", send_key=True)))
                sandbox.reset()
                each["relay"].append(with_peak_rss("relay", lambda: counting_cpu("relay", lambda: wrk(
                    relay_url, connections=connections, duration=duration, run=tag + "r", auth=f"Bearer {token}"))))
        measured = {name: median_result(results) for name, results in each.items()}
        rows[(latency, jitter, connections)] = measured
        what = f"{delay_label(latency, jitter)} c={connections}"
        say(database, f"direct {what}", measured["direct"], f"non-2xx {non_2xx(measured['direct'])}")
        say(database, f"naive  {what}", measured["naive"], f"non-2xx {non_2xx(measured['naive'])}")
        say(database, f"relay  {what}", measured["relay"],
            f"non-2xx {non_2xx(measured['relay'])}  RSS {measured['relay']['rss_mb']:.0f} MB")
    return rows


def with_peak_rss(name: str, result_of) -> dict:
    """Run a measurement, sampling the total RSS of a path's processes twice a second; the peak goes in the result."""
    peak = [0.0]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.5):
            peak[0] = max(peak[0], rss_mb(GROUPS[name]))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = result_of()
    finally:
        stop.set()
        watcher.join()
    result["rss_mb"] = peak[0]
    return result


def sandbox_delays() -> list[tuple[int, int]]:
    """(delay ms, random part ms) of each sandbox a run starts: one answering at once, one per IO-bound delay."""
    return sorted({(0, 0)} | {(latency, jitter) for latency, jitter, _c, _t in IO_SCENARIOS})


def delay_label(latency: int, jitter: int) -> str:
    """How a sandbox's delay reads in the output and the table: "300 ms", or "250-350 ms" with a random part."""
    return f"{latency}-{latency + jitter} ms" if jitter else f"{latency} ms"


def sandbox_group(latency: int, jitter: int) -> str:
    return "direct" if latency == 0 and jitter == 0 else f"sandbox-{latency}-{jitter}"


@contextmanager
def lock_sampler(database_url: str):
    """Samples pg_stat_activity every 50 ms: how many of the bench database's backends wait on a row lock."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           isolation_level="AUTOCOMMIT")
    seen = {"samples": 0, "with_wait": 0, "max_waiting": 0}
    stop = threading.Event()

    def sample():
        with engine.connect() as connection:
            while not stop.wait(0.05):
                waiting = connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = 'transactionid'")).scalar()
                seen["samples"] += 1
                seen["with_wait"] += bool(waiting)
                seen["max_waiting"] = max(seen["max_waiting"], waiting)
    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        engine.dispose()


def tokens_scenario(database: str, env: dict, database_url: str, sandbox: Sandbox, duration: float, rounds: int) -> dict:
    """PostgreSQL: 16 connections on one token against the same load over 16 tokens, uncapped then capped."""
    rows = {}
    with relay("relay", env) as relay_url:
        for kind, limits in (("uncapped", {}), ("capped", {"daily_cap": "100000000"})):
            one = new_token(env, **limits)
            sixteen = [new_token(env, **limits) for _ in range(16)]
            results = {"one": [], "sixteen": []}
            samples = {}
            spreads = [("one", {"auth": f"Bearer {one}"}),
                       ("sixteen", {"auth": "", "auths": [f"Bearer {t}" for t in sixteen]})]
            # Warm pools and caches on every token first (this relay process is new), and take the two spreads in
            # turn, each first in every other round: the first measurement of a fresh process ran slower, and so
            # did a token's first use (only the 16 were warmed: the one token's first round measured 5.5 ms of CPU
            # per request against 4.5 to 5.0 in its later ones).
            for _spread, who in spreads:
                wrk(relay_url, connections=16, duration=2, run=f"{kind}warm{uuid.uuid4().hex[:6]}", **who)
            for round_ in range(rounds):
                for spread, who in (spreads if round_ % 2 == 0 else spreads[::-1]):
                    sandbox.reset()
                    with lock_sampler(database_url) as seen:
                        result = wrk(relay_url, connections=16, duration=duration,
                                     run=f"{kind}{spread}{round_}{uuid.uuid4().hex[:6]}", **who)
                    check_all_ok(result, f"{kind} {spread}")
                    results[spread].append(result)
                    previous = samples.setdefault(spread, {"samples": 0, "with_wait": 0, "max_waiting": 0})
                    previous["samples"] += seen["samples"]
                    previous["with_wait"] += seen["with_wait"]
                    previous["max_waiting"] = max(previous["max_waiting"], seen["max_waiting"])
            for spread in ("one", "sixteen"):
                rows[(kind, spread)] = {**median_result(results[spread]), "locks": samples[spread]}
                locks = samples[spread]
                say(database, f"{kind} {spread} token(s) c=16", rows[(kind, spread)],
                    f"Lock:transactionid in {locks['with_wait']}/{locks['samples']} samples")
    return rows


def two_processes_scenario(database: str, env: dict, sandbox: Sandbox, duration: float, rounds: int) -> dict:
    """Two relay processes (each the production gunicorn) on one database."""
    token = new_token(env)
    run = uuid.uuid4().hex[:8]
    with relay("relay-a", env) as a, relay("relay-b", env) as b:
        for url in (a, b):
            wrk(url, connections=8, duration=2, run=run + "w" + url[-5:], auth=f"Bearer {token}")
        sandbox.reset()
        procs = [wrk_start(url, connections=8, duration=duration, run=f"{run}f{url[-5:]}", auth=f"Bearer {token}")
                 for url in (a, b)]
        results = [wrk_result(proc, duration) for proc in procs]
        for result in results:
            check_all_ok(result, "two processes")
        both = {"rps": sum(r["rps"] for r in results), "p50_us": max(r["p50_us"] for r in results),
                "p99_us": max(r["p99_us"] for r in results), "requests": sum(r["requests"] for r in results)}
        say(database, "two processes fresh c=8+8", both)
        storms = [storm(sandbox, [a, b], token, f"{run}s{round_}") for round_ in range(rounds)]
        print(f"[{database}] storm, two processes: upstream calls {[s['upstream_calls'] for s in storms]}", flush=True)
    return {"fresh": both, "storm": storms}


def measure(database: str, database_url: str, sandboxes: dict, naive_url: str, args) -> dict:
    if args.bulk_only:
        return {"bulk": bulk_scenario(database, database_url, args.bulk_rows, args.io_duration)}
    sandbox = sandboxes[(0, 0)]
    env = relay_env(database_url, sandbox.url)
    migrate(env)
    rows = {"cpu": cpu_scenario(database, env, sandbox, naive_url, args.duration, args.rounds)}
    rows["io"] = io_scenario(database, database_url, sandboxes, args.io_duration, args.io_rounds)
    if database == "PostgreSQL":
        rows["tokens"] = tokens_scenario(database, env, database_url, sandbox, args.duration, max(1, args.rounds - 1))
    rows["two"] = two_processes_scenario(database, env, sandbox, args.duration, args.rounds)
    rows["bulk"] = bulk_scenario(database, database_url, args.bulk_rows, args.io_duration)
    return rows


# --- bulk (issue 18) ---------------------------------------------------------------------------------------------

BULK_LATENCY_MS = 50
BULK_CONCURRENCY = 8
MIN_BULK_VS_DIRECT = 0.8


def bulk_file(rows: int, prefix: str) -> bytes:
    lines = ["user,amount,reason,reference"] + [f"bench:{prefix}{i},1,bench,{prefix}-{i}" for i in range(rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


def bulk_post(relay_url: str, token: str, content: bytes) -> str:
    answer = requests.post(relay_url + "/v1/relay/bulk", data=content, timeout=120,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
    if answer.status_code != 202:
        raise RuntimeError(f"POST /v1/relay/bulk: {answer.status_code} {answer.text[:500]}")
    return relay_url + answer.json()["status_url"]


def bulk_status(status_url: str, token: str, report: bool = False) -> dict:
    answer = requests.get(status_url, timeout=60, headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    return answer.json()


def bulk_wait(status_url: str, token: str, until, seconds: float = 900) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = bulk_status(status_url, token)
        if until(batch):
            return batch
        time.sleep(0.2)
    raise RuntimeError(f"bulk batch {status_url} did not get there in {seconds:g} s: {batch}")


def sandbox_credits(sandbox: Sandbox, prefix: str) -> tuple[int, int]:
    """(credits to this run's users, of which distinct users) in the sandbox's state."""
    deposits = requests.get(sandbox.url + "/_sandbox/state", timeout=60).json()["deposits"]
    users = [d["user"] for d in deposits if d["user"].startswith(f"bench:{prefix}")]
    return len(users), len(set(users))


def bulk_scenario(database: str, database_url: str, rows: int, duration: float) -> dict:
    """10,000 rows through POST /v1/relay/bulk against a sandbox answering after 50 ms, against the same concurrency
    sent straight to the sandbox by wrk; then another 10,000 rows whose relay is SIGKILLed mid-batch and replaced: the
    batch resumes, and the sandbox must hold exactly one credit per row."""
    port = free_port()
    sandbox = Sandbox(f"http://127.0.0.1:{port}")
    name = f"sandbox-bulk-{database.lower()}"
    with process(name, sandbox_command(port, BULK_LATENCY_MS), clean_env(), sandbox.url + "/_sandbox/state") as proc:
        GROUPS[name] = proc.pid
        run = uuid.uuid4().hex[:8]
        direct = wrk(sandbox.url, connections=BULK_CONCURRENCY, duration=duration, run=run + "d",
                     auth=f"Bearer {SANDBOX_KEY}", send_key=True, threads=2)
        check_all_ok(direct, "bulk: direct to the sandbox")
        say(database, f"direct {BULK_LATENCY_MS} ms c={BULK_CONCURRENCY}", direct)
        # Short leases so the interrupted run resumes within seconds: a killed relay's claims (rows in flight) are
        # taken over after RELAY_LOCK_TIMEOUT, its batch after RELAY_BULK_LEASE.
        env = dict(relay_env(database_url, sandbox.url), RELAY_BULK_CONCURRENCY=str(BULK_CONCURRENCY),
                   RELAY_BULK_LEASE="5", RELAY_UPSTREAM_BUDGET="5", RELAY_RECORD_BUDGET="2", RELAY_LOCK_TIMEOUT="12")
        migrate(env)  # done already unless --bulk-only
        token = new_token(env, ops="deposit,bulk")

        prefix = run + "a"
        with relay("relay-bulk", env) as relay_url:
            calls_before = sandbox.deposit_calls()
            started = time.monotonic()
            status = bulk_post(relay_url, token, bulk_file(rows, prefix))
            batch = bulk_wait(status, token, lambda b: b["state"] == "done")
            seconds = time.monotonic() - started
        # rows/s of the run itself (the runner's first claim to its report), as the CLI's progress shows it; the
        # POST (reading and planning the file) and the polling are in end_to_end_rps.
        run_seconds = (datetime.datetime.fromisoformat(batch["finished_at"].replace("Z", "+00:00"))
                       - datetime.datetime.fromisoformat(batch["started_at"].replace("Z", "+00:00"))).total_seconds()
        clean = {"rows": rows, "seconds": run_seconds, "rps": rows / run_seconds, "end_to_end_s": seconds,
                 "end_to_end_rps": rows / seconds, "counts": batch["counts"],
                 "upstream_calls": sandbox.deposit_calls() - calls_before, "credits": sandbox_credits(sandbox, prefix)}
        print(f"{database:10} bulk {rows} rows: {clean['rps']:.0f} rows/s in {run_seconds:.1f} s ({clean['end_to_end_rps']:.0f} "
              f"rows/s from the POST), upstream calls "
              f"{clean['upstream_calls']}, counts {batch['counts']}", flush=True)

        prefix = run + "b"
        content = bulk_file(rows, prefix)
        calls_before = sandbox.deposit_calls()
        with relay("relay-bulk", env) as relay_url:
            status_path = bulk_post(relay_url, token, content).removeprefix(relay_url)
            bulk_wait(relay_url + status_path, token, lambda b: b["done"] >= rows * 0.3)
            os.killpg(GROUPS["relay-bulk"], signal.SIGKILL)  # no graceful stop: the lease must run out
            time.sleep(0.5)
        credited_before_kill = sandbox_credits(sandbox, prefix)[0]
        resumes = 0
        with relay("relay-bulk", env) as relay_url:
            while True:
                batch = bulk_wait(relay_url + status_path, token, lambda b: b["state"] == "done")
                good = batch["counts"].get("credited", 0) + batch["counts"].get("replayed", 0)
                if good == rows or resumes >= 3:
                    break
                resumes += 1  # rows the killed relay left in flight, failed here: the same file again resumes them
                bulk_post(relay_url, token, content)
        interrupted = {"killed_after": credited_before_kill, "counts": batch["counts"], "resends": resumes,
                       "upstream_calls": sandbox.deposit_calls() - calls_before, "credits": sandbox_credits(sandbox, prefix)}
        print(f"{database:10} bulk interrupted: killed after {credited_before_kill} credits; credits "
              f"{interrupted['credits'][0]} ({interrupted['credits'][1]} users), upstream calls "
              f"{interrupted['upstream_calls']}, counts {batch['counts']}", flush=True)
    return {"direct": direct, "clean": clean, "interrupted": interrupted, "rows": rows}


def bulk_targets(database: str, bulk: dict) -> list[tuple[str, str, bool]]:
    ratio = bulk["clean"]["rps"] / bulk["direct"]["rps"]
    rows = bulk["rows"]
    credits, users = bulk["interrupted"]["credits"]
    return [
        (f"bulk {rows} rows, {BULK_LATENCY_MS} ms upstream, concurrency {BULK_CONCURRENCY}: >= {MIN_BULK_VS_DIRECT:g}x "
         "direct rows/s", f"{ratio:.2f}x", ratio >= MIN_BULK_VS_DIRECT),
        (f"bulk {rows} rows: exactly {rows} upstream credits", str(bulk["clean"]["credits"][0]),
         bulk["clean"]["credits"] == (rows, rows)),
        (f"bulk {rows} rows, relay SIGKILLed mid-batch and resumed: exactly {rows} upstream credits",
         f"{credits} ({users} users)", (credits, users) == (rows, rows)),
    ]


def bulk_table(database: str, bulk: dict) -> list[str]:
    direct, clean, interrupted = bulk["direct"], bulk["clean"], bulk["interrupted"]
    return [
        f"| {database} | {BULK_LATENCY_MS} ms | direct to sandbox (wrk) | {BULK_CONCURRENCY} | {direct['rps']:.0f} | "
        f"{ms(direct['p50_us'])} | {ms(direct['p99_us'])} | | |",
        f"| {database} | {BULK_LATENCY_MS} ms | POST /v1/relay/bulk, {bulk['rows']} rows | {BULK_CONCURRENCY} | "
        f"{clean['rps']:.0f} | | | | run {clean['seconds']:.1f} s ({clean['end_to_end_rps']:.0f} rows/s from the POST to "
        f"the report, {clean['end_to_end_s']:.1f} s); upstream calls {clean['upstream_calls']}; credits "
        f"{clean['credits'][0]}; relay/direct {clean['rps'] / direct['rps']:.2f}x |",
        f"| {database} | {BULK_LATENCY_MS} ms | bulk, relay SIGKILLed after {interrupted['killed_after']} credits, resumed "
        f"| {BULK_CONCURRENCY} | | | | | upstream calls {interrupted['upstream_calls']}; credits "
        f"{interrupted['credits'][0]} to {interrupted['credits'][1]} users; same file re-sent {interrupted['resends']}x |",
    ]


# --- the report -------------------------------------------------------------------------------------------------

def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def targets(database: str, rows: dict) -> list[tuple[str, str, bool]]:
    if "cpu" not in rows:  # --bulk-only
        return bulk_targets(database, rows["bulk"])
    cpu, io = rows["cpu"], rows["io"]
    out = []
    for latency, jitter, connections, is_target in IO_SCENARIOS:
        if not is_target:
            continue
        direct, relayed = io[(latency, jitter, connections)]["direct"], io[(latency, jitter, connections)]["relay"]
        ratio = relayed["rps"] / direct["rps"]
        p99 = relayed["p99_us"] / direct["p99_us"]
        bad = non_2xx(relayed)
        # Each round's own ratio too: a median of three that hides one bad round should not read as steady.
        rounds = "; rounds " + ", ".join(f"{r['p99_us'] / d['p99_us']:.2f}x"
                                         for r, d in zip(relayed["each"], direct["each"]))
        out += [
            (f"IO-bound {latency} ms, {connections} connections: relay >= {MIN_IO_VS_DIRECT:g}x direct req/s",
             f"{ratio:.2f}x", ratio >= MIN_IO_VS_DIRECT),
            (f"IO-bound {latency} ms, {connections} connections: relay p99 <= {MAX_IO_P99_VS_DIRECT:g}x direct p99",
             f"{p99:.2f}x ({ms(relayed['p99_us'])} / {ms(direct['p99_us'])} ms{rounds})", p99 <= MAX_IO_P99_VS_DIRECT),
            (f"IO-bound {latency} ms, {connections} connections: 0 non-2xx", str(bad), bad == 0),
        ]
    cpu_ratio = cpu[("relay", 16)]["cpu_ms"] / cpu[("naive", 16)]["cpu_ms"]
    limit = MAX_CPU_VS_NAIVE[database]
    out.append((f"CPU per fresh deposit <= {limit:g}x naive (16 connections)", f"{cpu_ratio:.2f}x", cpu_ratio <= limit))
    if database == "SQLite":
        added = (cpu[("relay", 1)]["p50_us"] - cpu[("naive", 1)]["p50_us"]) / 1000
        out.append((f"added p50 over naive at 1 connection <= {MAX_ADDED_P50_OVER_NAIVE_MS:g} ms", f"{added:.2f} ms",
                    added <= MAX_ADDED_P50_OVER_NAIVE_MS))
    if "tokens" in rows:
        one, sixteen = rows["tokens"][("uncapped", "one")], rows["tokens"][("uncapped", "sixteen")]
        ratio = one["rps"] / sixteen["rps"]
        out.append((f"one uncapped token >= {MIN_ONE_TOKEN_VS_SIXTEEN:g}x 16 tokens (16 connections)", f"{ratio:.2f}x",
                    ratio >= MIN_ONE_TOKEN_VS_SIXTEEN))
        locks = one["locks"]
        out.append(("one uncapped token: no Lock:transactionid in pg_stat_activity samples",
                    f"{locks['with_wait']} of {locks['samples']}", locks["with_wait"] == 0 and locks["samples"] > 0))
    replay = cpu[("replay", 16)]["rps"] / cpu[("relay", 16)]["rps"]
    out.append((f"replays >= {MIN_REPLAY_VS_FRESH:g}x fresh (16 connections)", f"{replay:.2f}x",
                replay >= MIN_REPLAY_VS_FRESH))
    for label, storms in (("one process", cpu["storm"]), ("two processes", rows["two"]["storm"])):
        calls = [s["upstream_calls"] for s in storms]
        out.append((f"storm of 100 identical deposits, {label}: exactly 1 upstream call", ", ".join(map(str, calls)),
                    all(c == 1 for c in calls) and all(s["answers"] == STORM_CONNECTIONS for s in storms)))
    return out + bulk_targets(database, rows["bulk"])


def table(database: str, rows: dict) -> list[str]:
    if "cpu" not in rows:  # --bulk-only
        return bulk_table(database, rows["bulk"])
    cpu, io = rows["cpu"], rows["io"]
    labels = {"direct": "direct to sandbox", "naive": "naive proxy", "relay": "relay, fresh keys",
              "replay": "relay, replays"}
    lines = []
    for key in (("direct", 1), ("naive", 1), ("relay", 1), ("direct", 16), ("naive", 16), ("relay", 16), ("replay", 16)):
        r = cpu[key]
        lines.append(f"| {database} | 0 ms | {labels[key[0]]} | {key[1]} | {r['rps']:.0f} | {ms(r['p50_us'])} | "
                     f"{ms(r['p99_us'])} | {r.get('cpu_ms', 0):.2f} | |")
    for latency, jitter, connections, _target in IO_SCENARIOS:
        paths = io[(latency, jitter, connections)]
        delay = delay_label(latency, jitter)
        for name in ("direct", "naive", "relay"):
            r = paths[name]
            note = f"non-2xx {non_2xx(r)}"
            if r["rounds"] > 1:
                note += f"; median of {r['rounds']} rounds"
            if name == "naive":
                note += (f"; naive/direct {r['rps'] / paths['direct']['rps']:.2f}x, p99 "
                         f"{r['p99_us'] / paths['direct']['p99_us']:.2f}x direct's")
            if name == "relay":
                note += (f"; relay RSS {r['rss_mb']:.0f} MB; relay/direct {r['rps'] / paths['direct']['rps']:.2f}x, "
                         f"p99 {r['p99_us'] / paths['direct']['p99_us']:.2f}x direct's")
                if r.get("cpu_ms"):
                    note += f"; CPU ceiling {2000 / r['cpu_ms'] * (os.cpu_count() or 2) / 2:.0f} req/s"
            lines.append(f"| {database} | {delay} | {labels[name]} | {connections} | {r['rps']:.0f} | "
                         f"{ms(r['p50_us'])} | {ms(r['p99_us'])} | {r.get('cpu_ms', 0):.2f} | {note} |")
    for (kind, spread), r in rows.get("tokens", {}).items():
        locks = r["locks"]
        lines.append(f"| {database} | 0 ms | relay, {kind}, {'one token' if spread == 'one' else '16 tokens'} | 16 | "
                     f"{r['rps']:.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | | Lock:transactionid in "
                     f"{locks['with_wait']} of {locks['samples']} samples (max {locks['max_waiting']} backends) |")
    two = rows["two"]["fresh"]
    lines.append(f"| {database} | 0 ms | two relay processes, fresh keys | 8+8 | {two['rps']:.0f} | {ms(two['p50_us'])} | "
                 f"{ms(two['p99_us'])} | | |")
    for label, storms in (("storm, one process", cpu["storm"]), ("storm, two processes", rows["two"]["storm"])):
        lines.append(f"| {database} | 0 ms | {label} | 100 | | | {ms(max(s['p99_us'] for s in storms))} | | upstream "
                     f"calls {', '.join(str(s['upstream_calls']) for s in storms)} |")
    return lines + bulk_table(database, rows["bulk"])


def report(results: dict, settings: dict) -> tuple[str, bool]:
    delays = [delay_label(latency, jitter) for latency, jitter in sandbox_delays()]
    lines = ["# Benchmark results", "",
             "Written by `make bench` (bench/run.py); the README quotes these figures.", "",
             f"- date: {settings['date']}",
             f"- machine: {settings['cpus']} CPUs ({settings['cpu_model']}), {settings['platform']}, Python {settings['python']}",
             f"- load average (1, 5, 15 min) before: {settings['load_before']}; after: {settings['load_after']}",
             f"- load generator: {settings['wrk']}, bodies from bench/deposit.lua; 0 ms figures are the median of "
             f"{settings['rounds']} interleaved runs of {settings['duration']:g} s (direct, naive, relay in turn); "
             f"IO-bound runs last {settings['io_duration']:g} s, direct, naive proxy, then relay, in "
             f"{settings['io_rounds']} interleaved rounds (medians) for a target's rows and once for the others",
             f"- sandbox upstreams: standalone, gunicorn 1 worker x {SANDBOX_THREADS} threads, answering after "
             f"{', '.join(delays)} (`--latency-ms`, plus a random part with `--jitter-ms`); naive proxy and relay: "
             "gunicorn with gunicorn.conf.py and no tuning variables (gthread, 2 workers x 256 threads), all on "
             "127.0.0.1",
             "- 'CPU ms/req' is the CPU time (user + system) the path's own server spent per answered request: the "
             "sandbox for direct, the proxy alone for naive, the relay alone for the relay; every process shares the "
             "machine's CPUs. 'CPU ceiling' is the request rate at which the relay alone would use every CPU", "",
             "| database | upstream delay | path | connections | req/s | p50 ms | p99 ms | CPU ms/req | notes |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for database, rows in results.items():
        lines += table(database, rows)
    lines += ["", "## Targets (issues 15 and 18)", "", "| database | target | measured | met |", "|---|---|---:|---|"]
    all_met = True
    for database, rows in results.items():
        for what, value, met in targets(database, rows):
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


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per 0 ms measurement")
    parser.add_argument("--io-duration", type=float, default=10.0, help="seconds per IO-bound measurement")
    parser.add_argument("--io-rounds", type=int, default=3,
                        help="interleaved rounds per IO-bound target scenario (medians); other IO-bound rows run once")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per 0 ms measurement (medians)")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="which to run; postgres needs RELAY_TEST_DATABASE_URL")
    parser.add_argument("--out", default=str(BENCH / "results.md"))
    parser.add_argument("--bulk-rows", type=int, default=10_000, help="rows of the bulk row's files (issue 18)")
    parser.add_argument("--bulk-only", action="store_true", help="only the bulk row (writes its own table)")
    args = parser.parse_args()
    if args.bulk_only and args.out == str(BENCH / "results.md"):
        args.out = str(BENCH / "results-bulk.md")  # a partial run never overwrites the full table the README cites
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
        "io_duration": args.io_duration, "io_rounds": args.io_rounds, "load_before": load(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip() or "wrk",
    }
    print(f"load average before: {settings['load_before']}", flush=True)
    results = {}
    with ExitStack() as stack:
        sandboxes = {}
        for latency, jitter in sandbox_delays():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            name = sandbox_group(latency, jitter)
            GROUPS[name] = stack.enter_context(process(name, sandbox_command(port, latency, jitter), clean_env(),
                                                       url + "/_sandbox/state")).pid
            sandboxes[(latency, jitter)] = Sandbox(url)
        naive_port = free_port()
        naive_url = f"http://127.0.0.1:{naive_port}"
        # PAYWALLS_API_KEY is set so gunicorn.conf.py does not start an embedded sandbox for the proxy.
        naive_env = clean_env(NAIVE_UPSTREAM=sandboxes[(0, 0)].url, PAYWALLS_API_KEY=SANDBOX_KEY)
        GROUPS["naive"] = stack.enter_context(process("naive", gunicorn("bench.naive_proxy:app", naive_port),
                                                      naive_env, naive_url + "/healthz")).pid
        for database in databases:
            if database == "sqlite":
                with sqlite_database("relay") as url:
                    results["SQLite"] = measure("SQLite", url, sandboxes, naive_url, args)
            elif database == "postgres":
                with postgres_database(pg_url) as url:
                    results["PostgreSQL"] = measure("PostgreSQL", url, sandboxes, naive_url, args)
            else:
                raise SystemExit(f"unknown database {database!r}")
    settings["load_after"] = load()

    text, all_met = report(results, settings)
    Path(args.out).write_text(text)
    print()
    print(text)
    print(f"Written to {os.path.relpath(args.out, ROOT)}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
