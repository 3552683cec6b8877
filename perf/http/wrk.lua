-- wrk script of perf/http/run: sends CloudEvents and counts responses by status.
--
-- Environment (read by every thread):
--   PERF_EVENTS  NDJSON file, one event per line (perf/http/run writes it)
--   PERF_BATCH   events per request: 1 sends each line alone as
--                application/cloudevents+json; N > 1 sends N lines as one
--                application/cloudevents-batch+json array
-- The requests are formatted once per thread and sent round-robin, so keys
-- (subjects) vary across Kafka partitions at the cost of one table lookup.
--
-- wrk gives each thread its own Lua state: response() counts into that
-- thread's global `statuses`, and done() (in the main state) sums them
-- through the thread objects kept by setup(), as wrk's SCRIPTING describes.
-- The last line printed is machine-readable:
--   RESULT duration_us=.. requests=.. ok=.. non2xx=.. statuses=200:N,503:N
--          errors_connect=.. errors_read=.. errors_write=.. errors_timeout=..
--          p50_us=.. p90_us=.. p99_us=.. max_us=.. events_per_request=N

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local path = os.getenv("PERF_EVENTS")
   local batch = tonumber(os.getenv("PERF_BATCH") or "1")
   local lines = {}
   local f = assert(io.open(path, "r"), "cannot open PERF_EVENTS " .. tostring(path))
   for line in f:lines() do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   f:close()
   assert(#lines >= batch, "PERF_EVENTS has fewer lines than PERF_BATCH")

   pool = {}
   if batch == 1 then
      local headers = { ["Content-Type"] = "application/cloudevents+json" }
      for _, line in ipairs(lines) do
         table.insert(pool, wrk.format("POST", nil, headers, line))
      end
   else
      local headers = { ["Content-Type"] = "application/cloudevents-batch+json" }
      for first = 1, #lines - batch + 1, batch do
         local body = "[" .. table.concat(lines, ",", first, first + batch - 1) .. "]"
         table.insert(pool, wrk.format("POST", nil, headers, body))
      end
   end
   next_req = 0
   statuses = {}
end

function request()
   next_req = next_req % #pool + 1
   return pool[next_req]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total, ok, non2xx = {}, 0, 0
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + n
      end
   end
   local keys = {}
   for status, n in pairs(total) do
      table.insert(keys, status)
      if status >= 200 and status < 300 then
         ok = ok + n
      else
         non2xx = non2xx + n
      end
   end
   table.sort(keys)
   local parts = {}
   for _, status in ipairs(keys) do
      table.insert(parts, string.format("%d:%d", status, total[status]))
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT duration_us=%d requests=%d ok=%d non2xx=%d statuses=%s errors_connect=%d errors_read=%d " ..
      "errors_write=%d errors_timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d events_per_request=%d\n",
      summary.duration, summary.requests, ok, non2xx, #parts > 0 and table.concat(parts, ",") or "none",
      e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, tonumber(os.getenv("PERF_BATCH") or "1")))
end
