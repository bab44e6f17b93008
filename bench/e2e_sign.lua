-- wrk script for bench/e2e_sign.py --load wrk: the same requests as its aiohttp clients.
--
-- Each request POSTs an EIP-1559 transaction with a nonce never sent before in this run and value
-- 10^15 + nonce, over wrk's keep-alive connections. Arguments (after `--`): token, first nonce,
-- number of threads, sample every Nth 200, output prefix, and the body cut around nonce and value
-- (head, middle, tail, from e2e_sign._body_parts). The nonce also goes out as X-Request-Id, which the
-- service echoes, so a sampled response is paired with the request that carried it.
--
-- Per thread: a count of responses by status, and a file <prefix>-<thread>.txt with every Nth 200 body
-- ("<request id>\t<body>") and the first few other answers ("E<status>\t<body>"), verified by Python
-- afterwards. done() writes <prefix>-summary.txt: the run's duration, socket errors, latency
-- percentiles (wrk's histogram of every response of this run, microseconds), the status counts and
-- the ids of requests sent but never answered (cut off when the run ended).

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local fmt = string.format

function init(args)
   token = args[1]
   first = tonumber(args[2])
   stride = tonumber(args[3])
   every = tonumber(args[4])
   prefix = args[5]
   head, middle, tail = args[6], args[7], args[8]
   -- Mean pause in ms between an answer and the connection's next request (0: none, a closed loop).
   -- bench/e2e_sign.py --rate-load wrk appends a delay() that uses it (fixed-rate windows).
   pace = tonumber(args[9] or "0")
   math.randomseed(os.time() * 1000 + id)
   sent = 0
   ok = 0
   others = 0
   statuses = {}
   -- Request ids sent and not answered (yet): at the end of a run wrk drops what is in flight, and
   -- the service may still have signed (and audited) it.
   pending = {}
   out = assert(io.open(fmt("%s-%d.txt", prefix, id), "w"))
end

function request()
   -- Nonces interleave across threads: thread i sends first + i, first + i + stride, ...
   local nonce = first + sent * stride + id
   sent = sent + 1
   local n = fmt("%.0f", nonce)
   local body = head .. n .. middle .. fmt("%.0f", 1e15 + nonce) .. tail
   local rid = "n" .. n
   pending[rid] = true
   local headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
      ["X-Request-Id"] = rid,
   }
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local rid = headers["X-Request-Id"]
   if rid then
      pending[rid] = nil
   end
   if status == 200 then
      ok = ok + 1
      if ok % every == 0 then
         out:write(rid or "?", "\t", body, "\n")
         -- wrk never closes a thread's Lua state: what is not flushed is lost.
         out:flush()
      end
   elseif others < 5 then
      others = others + 1
      out:write("E", status, "\t", (body:gsub("[\r\n]", " ")), "\n")
      out:flush()
   end
end

function done(summary, latency, requests)
   -- done() runs in the setup state, where init() never ran: the prefix is the threads'.
   local f = assert(io.open(threads[1]:get("prefix") .. "-summary.txt", "w"))
   f:write(fmt("duration_us %d\n", summary.duration))
   f:write(fmt("requests %d\n", summary.requests))
   for _, kind in ipairs({ "connect", "read", "write", "timeout" }) do
      f:write(fmt("socket_error %s %d\n", kind, summary.errors[kind]))
   end
   for _, p in ipairs({ 50, 90, 99 }) do
      f:write(fmt("percentile_us %d %d\n", p, latency:percentile(p)))
   end
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      for status, count in pairs(counts) do
         f:write(fmt("status %d %d\n", status, count))
      end
      f:write(fmt("sent %d\n", thread:get("sent")))
      for rid, _ in pairs(thread:get("pending")) do
         f:write(fmt("unanswered %s\n", rid))
      end
   end
   f:close()
end
