-- present then cleanup of the same new value, the requests in turn across the connections:
-- every pair is a real insert and a real removal. BENCH_TOKEN authorizes *.example.test;
-- BENCH_DELAY_MS (if not 0) paces each connection: one request per that many milliseconds.
local token = os.getenv("BENCH_TOKEN")
local prefix = os.getenv("BENCH_PREFIX") or "p"
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local connections = 0

setup = function(thread)
  connections = connections + 1
  thread:set("id", connections)
end

if pace > 0 then
  delay = function()
    return pace
  end
end

local counter = 0
local presenting = true

request = function()
  if presenting then
    counter = counter + 1
  end
  local path = presenting and "/v1/present" or "/v1/cleanup"
  presenting = not presenting
  local body = string.format(
    '{"domain": "%s%d-%d.example.test", "value": "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjx%06d"}',
    prefix, id or 0, counter, counter % 1000000)
  return wrk.format("POST", path,
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
