-- Bench workload 3 for envoy.filters.http.lua (twin of bench/filters/python/rate_limit.py): a
-- fixed-window rate limit per client.
--
-- Per-worker state only: Envoy gives each worker thread its own Lua state and the Lua filter has no
-- shared data, so `windows` below counts the requests one worker saw. With N workers a client gets
-- up to N x LIMIT requests per window (the Wasm filters count in shared data, across workers). The
-- bench checks the rejection with one worker, where both agree.

local LIMIT = 1000000000 -- per one-second window; high so the bench measures the bookkeeping
local windows = {} -- "rl:<client>" -> {window, count}

function envoy_on_request(request_handle)
  local key = "rl:" .. (request_handle:headers():get("x-client") or "anonymous")
  local window = os.time() -- seconds since the epoch: the one-second window
  local entry = windows[key]
  if entry == nil then
    entry = {window, 0}
    windows[key] = entry
  elseif entry[1] ~= window then
    entry[1], entry[2] = window, 0
  end
  if entry[2] >= LIMIT then
    request_handle:respond({[":status"] = "429"}, "rate limited\n")
    return
  end
  entry[2] = entry[2] + 1
end
