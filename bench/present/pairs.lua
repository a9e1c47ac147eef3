-- Present and cleanup pairs: each present is of a new value at a new name, and each value
-- whose present was answered (201) is cleaned up by a later request, so every pair is a
-- real insert and a real removal, never a cleanup racing its own present on another
-- connection. BENCH_TOKEN authorizes *.example.test; BENCH_PREFIX keeps names of runs
-- apart; BENCH_DELAY_MS (if not 0) paces each connection: one request per that many ms.
local token = os.getenv("BENCH_TOKEN")
local prefix = os.getenv("BENCH_PREFIX") or "p"
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end

if pace > 0 then
  delay = function()
    return pace
  end
end

local counter = 0
local presented = {}  -- numbers whose present was answered, waiting for their cleanup
local answered

request = function()
  if not answered then
    local name = (prefix .. (id or 0) .. "-"):gsub("%p", "%%%0")
    answered = '"fqdn": ?"_acme%-challenge%.' .. name .. '(%d+)%.example%.test%."'
  end
  local number = table.remove(presented)
  local path = "/v1/cleanup"
  if not number then
    counter = counter + 1
    number, path = counter, "/v1/present"
  end
  local body = string.format(
    '{"domain": "%s%d-%d.example.test", "value": "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjx%06d"}',
    prefix, id or 0, number, number % 1000000)
  return wrk.format("POST", path,
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status == 201 then
    local number = body:match(answered)
    if number then
      table.insert(presented, tonumber(number))
    end
  end
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
