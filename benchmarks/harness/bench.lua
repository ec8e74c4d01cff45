-- wrk script: POSTs pre-encoded bodies in rotation and prints the run's numbers as JSON.
-- Usage: wrk ... -s bench.lua URL -- BODIES_FILE CONTENT_TYPE
-- BODIES_FILE holds records "<length>\n<bytes>"; each wrk thread pre-builds every request
-- once (wrk.format) and then only rotates through them, so the generator costs little CPU.
local reqs = {}
local idx = 0

function init(args)
  local path, ctype = args[1], args[2]
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local n = tonumber(string.sub(data, pos, nl - 1))
    local body = string.sub(data, nl + 1, nl + n)
    pos = nl + n + 1
    reqs[#reqs + 1] = wrk.format("POST", nil, {["Content-Type"] = ctype}, body)
  end
  -- threads start at different photos
  idx = math.random(#reqs) - 1
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "min": %d, "max": %d, "p50": %d, "p90": %d, "p99": %d, ' ..
    '"p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.min, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
