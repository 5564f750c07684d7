-- Bench workload 1 for envoy.filters.http.lua (twin of bench/filters/python/headers.py): check an
-- API key header, add a request and a response header.

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  if headers:get("x-api-key") == nil then
    request_handle:respond({[":status"] = "401"}, "missing x-api-key\n")
    return
  end
  headers:replace("x-bench", "1")
end

function envoy_on_response(response_handle)
  response_handle:headers():replace("x-filtered", "lua")
end
