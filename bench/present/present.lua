-- Each request presents a new value at a new name, so every request is a real insert.
local counter = 0
local token = os.getenv("BENCH_TOKEN")

request = function()
  counter = counter + 1
  local body = string.format(
    '{"domain": "h%d.example.test", "value": "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjx%06d"}',
    counter, counter % 1000000)
  return wrk.format("POST", "/v1/present",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
