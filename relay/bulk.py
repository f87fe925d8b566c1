"""Bulk deposits or charges from a file: migrations, campaigns, make-goods. Every row goes through the money
path of an HTTP call, in process (validation, token limits, the idempotency claim, the ledger, the upstream
client): this module only reads the file, plans, paces and reports.

API (the CLI `paywalls-relay bulk` and the HTTP endpoint build on it; all inside an app context):

    rows, problems = read_rows(source, op)      # bytes/str/binary stream: CSV (BOM, `,` `;` or tab, \\r\\n) or a
                                                # JSON array. problems: [{"line", "field", "message"}], line 1 is
                                                # the header; a row with problems has body None.
    batch = batch_id(content_bytes, explicit)   # explicit (checked), or "file:" + sha256(content)[:16]
    token = load_token(token_id)                # a Problem if unknown, revoked or expired
    p = plan(token, op, rows, problems, batch)  # the dry run: Plan.problems, .totals, .to_send, .to_replay,
                                                # .refusal (over a cap for the FILE's total), .ok
    report = run(token, op, rows, problems, batch, concurrency=8, on_progress=None, stop_event=None,
                 skip_invalid=False)            # raises Refused(plan) before the first call when plan says no
    report.rows -> [ReportRow(line, user, amount, outcome, idempotency_key, balance_after, error)]
    report.counts, report.ok, report.write_csv(stream), report.pauses, report.as_dict(); batches.plan_json(plan) renders a plan

Keys (schemas/idempotency.md has the rules):
- The EVENT key of a row comes from its fields under the token's dedupe rule, exactly as an HTTP call with the
  same body: the batch is not part of it. So a rerun of the same file, or of an edited copy, replays every row
  whose fields are unchanged (never a second credit), and a row identical to an earlier HTTP call of the same
  token (or namespace) is a replay of that call. A campaign repeated on purpose needs its own reference.
- The CLIENT key (Idempotency-Key) is `bulk:<batch id>:<line>`: it names the row in the ledger and the report.
  With the default batch id (the content hash) an edited file is a new batch. With an explicit --batch-id, a line
  that now holds other fields is refused (the key is bound to the row it first named), never credited.
- Two rows of one file that are the same event are a problem of the file (the second would silently be a
  replay): the plan names both lines.
"""

import csv
import hashlib
import heapq
import io
import json
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from flask import current_app

from . import amounts, caps, claims, clock, contract, db, ledger, messages, money, tokens, validation
from .models import as_utc

log = logging.getLogger("relay.bulk")

OPS = ("deposit", "charge")
SCHEMAS = {"deposit": "deposit-request.json", "charge": "charge-request.json"}
NAMED_COLUMNS = ("user", "amount", "reason", "reference")
METADATA_PREFIX = "metadata."
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")
OUTCOMES = ("credited", "charged", "replayed", "declined", "invalid", "failed", "ambiguous", "skipped")
GOOD = {"credited", "charged", "replayed"}
DECIMAL_COMMA = re.compile(r"[0-9]+,[0-9]+")
MAX_PAUSE = 60.0
TOUCH_EVERY = timedelta(minutes=1)  # tokens.touch's period  # a Retry-After longer than this pauses the run this long, then it tries again
REPORT_COLUMNS = ("line", "user", "amount", "outcome", "idempotency_key", "balance_after", "error")


# --- reading the file ----------------------------------------------------------------------------------------

@dataclass
class Row:
    line: int               # the file's own line number (header = 1); a JSON array's item number (first = 1)
    cells: dict             # what the file says, by column
    body: dict | None = None  # the validated request body; None when the row has problems
    problems: list = field(default_factory=list)  # found reading the file
    refusals: list = field(default_factory=list)  # found by the last plan(): token limits, duplicates, keys
    identity: money.Identity | None = None  # set by plan()

    @property
    def all_problems(self) -> list:
        return self.problems + self.refusals

    @property
    def user(self) -> str:
        return self.body["user"] if self.body else str(self.cells.get("user", ""))

    @property
    def amount(self) -> str:
        return self.body["amount"] if self.body else str(self.cells.get("amount", ""))


def problem(line: int, field_name: str, message: str) -> dict:
    return {"line": line, "field": field_name, "message": message}


def batch_id(content: bytes, explicit: str | None = None) -> str:
    if explicit is not None:
        if not BATCH_ID.fullmatch(explicit):
            raise messages.validation([messages.field_error("batch_id", messages.BULK_BATCH_ID)])
        return explicit
    return "file:" + hashlib.sha256(content).hexdigest()[:16]


def read_rows(source, op: str = "deposit", decimals: int | None = None) -> tuple[list[Row], list[dict]]:
    """The file's rows, each validated as the body of an HTTP call would be, and every problem found, by line."""
    if decimals is None:
        decimals = current_app.config["RELAY"]["RELAY_AMOUNT_DECIMALS"]
    raw = source.read() if hasattr(source, "read") else source
    if isinstance(raw, bytes):
        text, trouble = _decode(raw)
        if trouble:
            return [], [trouble]
    else:
        text = raw
    text = text.removeprefix("\ufeff")
    if not text.strip():
        return [], [problem(1, "(file)", messages.BULK_EMPTY)]
    if text.lstrip()[:1] in ("[", "{"):  # JSON (an object is refused there: it must be an array)
        rows, problems = _json_rows(text)
    else:
        rows, problems = _csv_rows(text)
    if not problems and not rows:
        problems.append(problem(1, "(file)", messages.BULK_NO_ROWS))
    for row in rows:
        if not row.problems:
            _validate(row, op, decimals)
    return rows, problems + [p for row in rows for p in row.problems]


def _decode(raw: bytes) -> tuple[str, dict | None]:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "", problem(1, "(file)", messages.BULK_UTF16)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        return "", problem(line, "(file)", messages.BULK_NOT_UTF8.format(offset=error.start))


def _delimiter(header: str) -> str:
    """The separator the header uses most, outside quotes: `,` (default), `;` (spreadsheets in locales whose decimal
    mark is a comma) or a tab."""
    counts, quoted = {",": 0, ";": 0, "\t": 0}, False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda char: counts[char])
    return best if counts[best] else ","


def _column(name: str) -> str:
    name = contract.js_trim(name)
    lowered = name.lower()
    if lowered in NAMED_COLUMNS:
        return lowered
    if lowered.startswith(METADATA_PREFIX):
        return METADATA_PREFIX + contract.js_trim(name[len(METADATA_PREFIX):])
    return name


def _header_problems(columns: list[str]) -> list[dict]:
    found = []
    for index, name in enumerate(columns):
        if name not in NAMED_COLUMNS and not (name.startswith(METADATA_PREFIX) and len(name) > len(METADATA_PREFIX)):
            found.append(problem(1, name or f"(column {index + 1})", messages.bulk_unknown_column(name, index + 1)))
        elif name in columns[:index]:
            found.append(problem(1, name, messages.bulk_duplicate_column(name)))
    for required in ("user", "amount"):
        if required not in columns:
            found.append(problem(1, required, messages.bulk_missing_column(required)))
    return found


def _csv_rows(text: str) -> tuple[list[Row], list[dict]]:
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line), strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        return [], [problem(1, "(header)", messages.bulk_unreadable(str(error)))]
    columns = [_column(name) for name in header]
    header_trouble = _header_problems(columns)
    if header_trouble:
        return [], header_trouble
    rows, problems, line = [], [], reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problems.append(problem(line, "(row)", messages.bulk_unreadable(str(error))))
            break  # the reader cannot find the next record reliably after a broken quote
        if not any(cell.strip() for cell in cells):  # a blank line, or a row of empty cells
            line = reader.line_num + 1
            continue
        row = Row(line, dict(zip(columns, cells)))
        if len(cells) != len(columns):
            row.problems.append(problem(line, "(row)", messages.bulk_cell_count(len(cells), len(columns))))
        rows.append(row)
        line = reader.line_num + 1
    return rows, problems


def _plain(value):
    """A JSON item's numbers as an HTTP client's JSON would carry them (the relay reads those as Decimal too)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) and "E" not in str(value).upper() \
            else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _json_rows(text: str) -> tuple[list[Row], list[dict]]:
    try:
        items = json.loads(text, parse_float=Decimal)
    except ValueError as error:
        return [], [problem(1, "(file)", messages.bulk_not_json(str(error)))]
    if not isinstance(items, list):
        return [], [problem(1, "(file)", messages.BULK_NOT_A_LIST)]
    rows = []
    for number, item in enumerate(items, start=1):
        row = Row(number, {})
        rows.append(row)
        if not isinstance(item, dict):
            row.problems.append(problem(number, "(row)", messages.BULK_ITEM_NOT_OBJECT))
            continue
        item = _plain(item)
        cells = {}
        for key, value in item.items():
            if key == "metadata" and isinstance(value, dict):
                cells.update({METADATA_PREFIX + str(name): sub for name, sub in value.items()})
            elif key in NAMED_COLUMNS or key.startswith(METADATA_PREFIX):
                cells[key] = value
            else:
                row.problems.append(problem(number, key, messages.bulk_unknown_column(key, None)))
        row.cells = cells
    return rows, []


def _validate(row: Row, op: str, decimals: int):
    """The body a client would send for these cells (contract.py's rules, but a reference is not required: see
    README "Bulk credits"), then the relay's own validation of an HTTP body, so a row is refused as a call would be."""
    cells = row.cells
    inputs = {name: cells.get(name) for name in NAMED_COLUMNS}
    inputs["extra_metadata"] = {key[len(METADATA_PREFIX):]: value for key, value in cells.items()
                                if key.startswith(METADATA_PREFIX)}
    try:
        texts = {name: contract.text_input(name, inputs.get(name)) for name in ("user", "reason", "reference")}
        merged = contract.metadata(inputs, texts)
    except contract.ContractError as refusal:
        key = refusal.values.get("key")
        row.problems.append(problem(row.line, f"metadata.{key}" if key else "metadata", refusal.message))
        return
    body = {"user": texts["user"], "amount": contract.amount_input(inputs.get("amount"))}
    if merged is not None:
        body["metadata"] = merged
    try:
        raw = json.dumps(body, ensure_ascii=False).encode()
        row.body = validation.money_body(SCHEMAS[op], raw, "application/json", decimals)
    except messages.Problem as refusal:
        found = _problems_of(row.line, refusal)
        if isinstance(cells.get("amount"), str) and DECIMAL_COMMA.fullmatch(cells["amount"].strip()):
            # 1,5 from a spreadsheet in a locale whose decimal mark is a comma: say so, never guess 1.5 or 15.
            found = [dict(p, message=p["message"] + " " + messages.BULK_DECIMAL_COMMA) if p["field"] == "amount"
                     else p for p in found]
        row.problems.extend(found)


def _problems_of(line: int, refusal: messages.Problem) -> list[dict]:
    errors = refusal.extra.get("errors")
    if errors:
        return [problem(line, error["field"], error["message"]) for error in errors]
    return [problem(line, _FIELD_OF.get(refusal.extra.get("limit"), "(row)"), refusal.detail)]


# --- the dry run: what a run would do, read only -----------------------------------------------------------------

_FIELD_OF = {"max_amount": "amount", "user_pattern": "user"}  # a token limit's refusal names the field it is about


@dataclass
class Plan:
    op: str
    batch_id: str
    rows: list
    problems: list            # every problem, by line (header and file problems at line 1)
    totals: dict              # user -> total this run would send (canonical text)
    total: str                # the sum of totals
    to_send: int              # rows Paywalls would be called for
    to_replay: int            # rows already done (by an earlier run or an identical HTTP call)
    in_flight: int            # rows another caller is handling right now
    refusal: messages.Problem | None  # a cap the file's total exceeds: the run refuses before the first call
    remaining: dict | None    # what would remain of the caps after the run

    @property
    def invalid_lines(self) -> set:
        return {p["line"] for p in self.problems}

    @property
    def ok(self) -> bool:
        return not self.problems and self.refusal is None


class Refused(Exception):
    """A run refused before its first call; `plan` says why."""

    def __init__(self, plan: Plan, reason: str):
        super().__init__(reason)
        self.plan, self.reason = plan, reason


def load_token(token_id: str):
    with db.read() as session:
        token = tokens.get(session, token_id)
    if token is None:
        raise messages.not_found(f"Token {token_id}")
    if token.revoked_at is not None:
        raise messages.unauthorized("revoked")
    if token.expires_at is not None and as_utc(token.expires_at) <= clock.now():
        raise messages.unauthorized("expired")
    return token


def client_key(batch: str, line: int) -> str:
    return f"bulk:{batch}:{line}"


def plan(token, op: str, rows: list[Row], problems: list[dict], batch: str) -> Plan:
    """Every problem with its line and field, the total per user, and the caps checked against the file's total
    (rows already done excluded, so a resumed run is checked against what it still has to send)."""
    if op not in OPS:
        raise ValueError(f"{op} is not deposit or charge")
    tokens.require_operation(token, op)
    problems = list(problems)  # read_rows' (the file's and each row's): plan() may run more than once on rows
    seen: dict[str, int] = {}
    for row in rows:
        row.refusals = []
        if row.body is None:
            continue
        try:
            tokens.authorize_money(token, op, row.body)
        except messages.Problem as refusal:
            row.refusals.extend(_problems_of(row.line, refusal))
        row.identity = money.identify(token, op, row.body, client_key(batch, row.line))
        first = seen.setdefault(row.identity.event_key, row.line)
        if first != row.line:
            row.refusals.append(problem(row.line, "(row)", messages.bulk_same_event(first, token.dedupe_on)))
        problems.extend(row.refusals)
    config, now = current_app.config["RELAY"], clock.now()
    totals: dict[str, int] = {}
    to_send = to_replay = busy = 0
    refusal = remaining = None
    with db.read() as session:
        for row in rows:
            if row.all_problems or row.body is None:
                continue
            micros = amounts.to_micros(row.body["amount"])
            try:
                rehearsal = claims.peek(session, token, row.identity.event_key, row.identity.client_key,
                                        row.identity.fingerprint, micros, now, config["RELAY_LOCK_TIMEOUT"])
            except claims.InFlight:
                busy += 1
                continue
            except messages.Problem as refused:  # the client key or the event was used for other fields
                row.refusals.extend(_problems_of(row.line, refused))
                problems.extend(row.refusals)
                continue
            if rehearsal.would == "replay":
                to_replay += 1
                continue
            to_send += 1
            totals[row.body["user"]] = totals.get(row.body["user"], 0) + micros
        try:
            remaining = caps.check(session, token, sum(totals.values()), now)
        except messages.Problem as over:
            refusal = over
    problems.sort(key=lambda p: p["line"])
    return Plan(op, batch, rows, problems, {user: amounts.from_micros(m) for user, m in totals.items()},
                amounts.from_micros(sum(totals.values())), to_send, to_replay, busy, refusal, remaining)


# --- the run -----------------------------------------------------------------------------------------------------

@dataclass
class ReportRow:
    line: int
    user: str
    amount: str
    outcome: str
    idempotency_key: str = ""
    balance_after: str = ""
    error: str = ""
    attempts: int = 0
    started: float = 0.0   # time.time() of the last attempt's start (tests read it; not in the CSV)


@dataclass
class Report:
    op: str
    batch_id: str
    rows: list = field(default_factory=list)
    pauses: list = field(default_factory=list)  # (time.time() when, seconds) of each pause after a 429
    stopped: bool = False
    seconds: float = 0.0

    @property
    def counts(self) -> dict:
        counts = {name: 0 for name in OUTCOMES}
        for row in self.rows:
            counts[row.outcome] += 1
        return counts

    @property
    def ok(self) -> bool:
        return all(row.outcome in GOOD for row in self.rows)

    def as_dict(self) -> dict:
        """The report as JSON for the HTTP endpoint: counts, pauses and one entry per input line."""
        return {"op": self.op, "batch_id": self.batch_id, "counts": self.counts, "ok": self.ok,
                "stopped": self.stopped, "seconds": round(self.seconds, 3), "rate_limited_pauses": len(self.pauses),
                "rows": self.row_dicts()}

    def row_dicts(self) -> list[dict]:
        return [{name: getattr(row, name) for name in REPORT_COLUMNS} for row in self.rows]

    def unknown(self) -> list:
        return [row for row in self.rows if row.outcome == "ambiguous"]

    def write_csv(self, stream):
        """One row per input line, spreadsheet-safe (ledger.spreadsheet_safe: no cell runs as a formula)."""
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow(REPORT_COLUMNS)
        for row in sorted(self.rows, key=lambda r: r.line):
            writer.writerow([ledger.spreadsheet_safe(getattr(row, name)) for name in REPORT_COLUMNS])


class Limiter:
    """The run's pace: a 429 from Paywalls (on any row, with its Retry-After) pauses every row not yet started and
    halves how many calls may be in flight; each run of successes as long as that limit earns one back."""

    def __init__(self, concurrency: int):
        self.most = self.allowed = concurrency
        self.paused_until = 0.0
        self.pauses: list = []
        self._streak = 0
        self._lock = threading.Lock()

    def rate_limited(self, retry_after):
        seconds = min(float(retry_after) if retry_after else 1.0, MAX_PAUSE)
        with self._lock:
            until = time.monotonic() + seconds
            if until > self.paused_until:
                self.paused_until = until
                self.pauses.append((time.time(), seconds))
            self.allowed = max(1, self.allowed // 2)
            self._streak = 0

    def succeeded(self):
        with self._lock:
            self._streak += 1
            if self._streak >= self.allowed and self.allowed < self.most:
                self.allowed += 1
                self._streak = 0

    def wait_for(self) -> float:
        """Seconds until new calls may start (0: now)."""
        return max(0.0, self.paused_until - time.monotonic())


# How a refusal or an answer ends a row: (outcome if final, retry?)
_RETRY_UNKNOWN = {"upstream-ambiguous", "outcome-unrecorded", "idempotency-in-flight"}
_RETRY_NOTHING_APPLIED = {"upstream-unavailable", "unavailable", "token-changed"}


def _outcome_of(op: str, result: money.Answer) -> tuple[str, bool, str, str]:
    """(outcome, retry, balance_after, error) of the money path's answer."""
    try:
        body = json.loads(result.text)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    balance = body.get("balanceFormatted") or ""
    balance = balance if isinstance(balance, str) else ""
    if 200 <= result.status < 300:
        if op == "charge" and body.get("success") is not True:
            return "declined", False, "", str(body.get("message") or "declined")
        return ("replayed" if result.replayed else money.APPLIED[op]), False, balance, ""
    name = str(body.get("type", "")).rsplit(":", 1)[-1]
    error = str(body.get("detail") or f"HTTP {result.status}")
    if name in _RETRY_UNKNOWN:
        return "ambiguous", True, "", error
    if name in _RETRY_NOTHING_APPLIED:
        return "failed", True, "", error
    return ("invalid" if name == "validation" else "failed"), False, "", error


def run(token, op: str, rows: list[Row], problems: list[dict], batch: str, concurrency: int = 8,
        on_progress=None, stop_event: threading.Event | None = None, skip_invalid: bool = False,
        retry_for: float | None = None) -> Report:
    """Send every valid row through money.perform, `concurrency` at a time. Refused before the first call (Refused)
    when the file has problems (unless skip_invalid: those rows are reported invalid and the rest run; problems of the
    file itself are never skipped) or its total is over a cap. A row whose outcome is unknown, whose event is held by
    another caller (e.g. a killed run's claim, until its lease ends), or that reached nothing is retried for
    `retry_for` seconds (default: the lease, RELAY_LOCK_TIMEOUT, plus 10), then reported ambiguous or failed.
    stop_event (Ctrl-C): calls in flight finish, rows not started are reported skipped. on_progress(report, row)
    runs on the calling thread after each row."""
    the_plan = plan(token, op, rows, problems, batch)
    if the_plan.refusal is not None:
        raise Refused(the_plan, the_plan.refusal.detail)
    if the_plan.problems:
        lines = {row.line for row in rows}
        if not skip_invalid or any(p["line"] not in lines for p in the_plan.problems):
            raise Refused(the_plan, messages.bulk_has_problems(len(the_plan.invalid_lines)))
    app = current_app._get_current_object()
    config = app.config["RELAY"]
    retry_for = config["RELAY_LOCK_TIMEOUT"] + 10 if retry_for is None else retry_for
    stop_event = stop_event or threading.Event()
    report = Report(op, batch)
    limiter = Limiter(max(1, concurrency))
    upstream = app.extensions["relay.upstream"]
    upstream.on_rate_limited.append(limiter.rate_limited)
    started_at = time.monotonic()

    def finish(row: Row, outcome: str, balance="", error="", attempts=0, started=0.0):
        entry = ReportRow(row.line, row.user, row.amount, outcome, row.identity.client_key if row.identity else "",
                          balance, error, attempts, started)
        report.rows.append(entry)
        if on_progress:
            on_progress(report, entry)

    for row in rows:
        if row.all_problems:
            finish(row, "invalid", error="; ".join(f"{p['field']}: {p['message']}" for p in row.all_problems))

    def attempt(row: Row) -> tuple[str, bool, str, str, float]:
        started = time.time()
        with app.app_context():
            try:
                result = money.perform(token, op, row.body, row.identity, f"bulk:{batch}:{row.line}")
            except messages.Problem as refusal:
                result = money.Answer(refusal.status, json.dumps(refusal.body()), row.identity.shown_key, False)
            except db.FAILURES as error:  # nothing recorded: the claim (if any) stays in flight, retried after it
                log.warning("bulk row %s: database error %s", row.line, type(error).__name__)
                return "ambiguous", True, "", messages.database_unavailable().detail, started
            except Exception:  # a bug must not end the run with rows in flight; the row is retried, never re-credited
                log.exception("bulk row %s failed unexpectedly", row.line)
                return "ambiguous", True, "", messages.internal_error().detail, started
            # The claim wrote the token's last use if it was over a minute old (tokens.touch). This token object
            # lives for the whole run: note it here too, or every row after the first minute would write the row.
            now = clock.now()
            if token.last_used_at is None or now - as_utc(token.last_used_at) > TOUCH_EVERY:
                token.last_used_at = now
        return (*_outcome_of(op, result), started)

    pending = deque(row for row in rows if not row.all_problems)
    retries: list = []  # heap of (due, line, row)
    first_try: dict[int, float] = {}
    tries: dict[int, int] = {}
    running: dict = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="bulk") as pool:
            while pending or retries or running:
                now = time.monotonic()
                if stop_event.is_set():
                    report.stopped = True
                    for row in pending:
                        finish(row, "skipped", error=messages.BULK_STOPPED)
                    for _, _, row, outcome, error in retries:
                        finish(row, outcome, error=error, attempts=tries[row.line])
                    pending.clear()
                    retries.clear()
                while not stop_event.is_set() and len(running) < limiter.allowed and limiter.wait_for() == 0:
                    if retries and retries[0][0] <= now:
                        row = heapq.heappop(retries)[2]
                    elif pending:
                        row = pending.popleft()
                    else:
                        break
                    first_try.setdefault(row.line, now)
                    tries[row.line] = tries.get(row.line, 0) + 1
                    running[pool.submit(attempt, row)] = row
                if not running:
                    time.sleep(min(0.05, max(limiter.wait_for(), 0.005)))
                    continue
                done, _ = wait(list(running), timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    row = running.pop(future)
                    outcome, again, balance, error, started = future.result()
                    if not again:
                        limiter.succeeded()
                        finish(row, outcome, balance, error, tries[row.line], started)
                    elif time.monotonic() - first_try[row.line] < retry_for and not stop_event.is_set():
                        delay = min(0.5 * 2 ** (tries[row.line] - 1), 5.0)
                        heapq.heappush(retries, (time.monotonic() + delay, row.line, row, outcome, error))
                    else:
                        finish(row, outcome, balance, error, tries[row.line], started)
    finally:
        upstream.on_rate_limited.remove(limiter.rate_limited)
        report.pauses = list(limiter.pauses)
        report.seconds = time.monotonic() - started_at
    report.rows.sort(key=lambda r: r.line)
    return report
