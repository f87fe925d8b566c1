-- wrk script for `make bench`: POST deposits, configured by environment variables.
--   BENCH_MODE   fresh  (a new body, so a new idempotency key, on every request)
--                replay (cycle through BENCH_POOL bodies that were sent before)
--                storm  (one identical body; each connection sends it exactly once)
--   BENCH_AUTH   the Authorization header value (BENCH_AUTHS: several, "|"-separated, used in turn)
--   BENCH_PATH   the request path
--   BENCH_RUN    a run id, so bodies never collide across runs
--   BENCH_SEND_KEY=1  also send an Idempotency-Key header (direct and naive: what the relay sends upstream)
--   BENCH_PER_THREAD  storm: connections per thread (each sends once)
-- done() prints one line "BENCH_RESULT {json}" that bench/run.py reads.

local mode = os.getenv("BENCH_MODE") or "fresh"
local auth = os.getenv("BENCH_AUTH") or ""
-- BENCH_AUTHS: several Authorization values separated by "|": requests take them in turn (load spread over tokens)
local auths = {}
for value in string.gmatch(os.getenv("BENCH_AUTHS") or "", "[^|]+") do
  table.insert(auths, value)
end
local path = os.getenv("BENCH_PATH") or "/v1/user/balance/deposit"
local run = os.getenv("BENCH_RUN") or "run"
local send_key = os.getenv("BENCH_SEND_KEY") == "1"
local pool = tonumber(os.getenv("BENCH_POOL") or "200")
local per_thread = tonumber(os.getenv("BENCH_PER_THREAD") or "0")

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n, got = 0, 0
  codes = {}
end

-- The same body text for a given sequence name, in every mode and script run.
function body_for(seq)
  return '{"user":"bench:user_' .. (seq % 97) .. '","amount":"1.50","metadata":{"run":"' .. run ..
         '","seq":"' .. seq .. '"}}'
end

function request()
  n = n + 1
  local seq
  if mode == "fresh" then
    seq = tid * 10000000 + n
  elseif mode == "replay" then
    seq = n % pool
  else
    seq = 0
  end
  local who = auth
  if #auths > 0 then
    who = auths[(n % #auths) + 1]
  end
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = who}
  if send_key then
    headers["Idempotency-Key"] = run .. "-" .. seq
  end
  return wrk.format("POST", path, headers, body_for(seq))
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  got = got + 1
  if mode == "storm" and got >= per_thread then
    wrk.thread:stop()
  end
end

if mode == "storm" then
  -- Each connection sends once: every later request is held back past the end of the run.
  local sent = 0
  function delay()
    sent = sent + 1
    if sent > per_thread then
      return 3600000
    end
    return 0
  end
end

function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("codes")
    for status, count in pairs(c) do
      statuses[tostring(status)] = (statuses[tostring(status)] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(statuses) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
