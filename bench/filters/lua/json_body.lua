-- Bench workload 2 for envoy.filters.http.lua (twin of bench/filters/python/json_body.py): buffer
-- the JSON request body and reject it unless it is an object with a "user" key.
--
-- Envoy's Lua filter has no JSON module and cannot `require` one, so the script carries its own
-- decoder: recursive descent in plain Lua over the body's bytes, building tables as json.loads
-- builds dicts and lists in the Python twin (RFC 8259's grammar: strings with every escape,
-- surrogate pairs to UTF-8, numbers to Lua numbers). Objects and arrays carry a metatable that tells
-- them apart, and null is a sentinel value so that {"user": null} still has its key. Unlike
-- json.loads, it does not check that strings are valid UTF-8 and rejects NaN, Infinity, a
-- byte-order mark and UTF-16/32 bodies; bench/README.md lists these differences.

local byte, char, find, sub, floor = string.byte, string.char, string.find, string.sub, math.floor
local OBJECT, ARRAY, NULL = {}, {}, {}
local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
  [116] = "\t"}

local decode_value -- defined below; objects and arrays recurse into it

-- The position of the first byte at or after pos that is not JSON whitespace (#text + 1 at the end).
local function skip(text, pos)
  return find(text, "[^ \t\r\n]", pos) or #text + 1
end

local function utf8(code)
  if code < 0x80 then return char(code) end
  if code < 0x800 then return char(0xC0 + floor(code / 0x40), 0x80 + code % 0x40) end
  if code < 0x10000 then
    return char(0xE0 + floor(code / 0x1000), 0x80 + floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
  end
  return char(0xF0 + floor(code / 0x40000), 0x80 + floor(code / 0x1000) % 0x40, 0x80 + floor(code / 0x40) % 0x40,
    0x80 + code % 0x40)
end

-- pos is just after the opening quote; returns the string and the position after the closing quote.
local function decode_string(text, pos)
  local parts, n = nil, 0
  while true do
    local stop = find(text, '[%z\1-\31"\\]', pos)
    if stop == nil then error("unterminated string") end
    local c = byte(text, stop)
    if c == 34 then
      if parts == nil then return sub(text, pos, stop - 1), stop + 1 end
      parts[n + 1] = sub(text, pos, stop - 1)
      return table.concat(parts), stop + 1
    end
    if c ~= 92 then error("control character in a string") end
    parts = parts or {}
    n = n + 1
    parts[n] = sub(text, pos, stop - 1)
    local escape = byte(text, stop + 1)
    if escape == 117 then -- \uXXXX, perhaps the first half of a surrogate pair
      local hex = sub(text, stop + 2, stop + 5)
      if not find(hex, "^%x%x%x%x$") then error("bad \\u escape") end
      local code = tonumber(hex, 16)
      pos = stop + 6
      if code >= 0xD800 and code <= 0xDBFF and find(text, "^\\u[dD][c-fC-F]%x%x", pos) then
        code = 0x10000 + (code - 0xD800) * 0x400 + tonumber(sub(text, pos + 2, pos + 5), 16) - 0xDC00
        pos = pos + 6
      end
      n = n + 1
      parts[n] = utf8(code)
    else
      local decoded = ESCAPES[escape]
      if decoded == nil then error("bad escape") end
      n = n + 1
      parts[n] = decoded
      pos = stop + 2
    end
  end
end

local function decode_number(text, pos)
  local _, last = find(text, "^-?0", pos)
  if last == nil then _, last = find(text, "^-?[1-9]%d*", pos) end
  if last == nil then error("bad number") end
  local _, fraction = find(text, "^%.%d+", last + 1)
  if fraction then last = fraction end
  local _, exponent = find(text, "^[eE][-+]?%d+", last + 1)
  if exponent then last = exponent end
  return tonumber(sub(text, pos, last)), last + 1
end

-- Decodes the value at or after pos; returns it and the position after it.
decode_value = function(text, pos)
  pos = skip(text, pos)
  local c = byte(text, pos)
  if c == 123 then -- {
    local object = setmetatable({}, OBJECT)
    pos = skip(text, pos + 1)
    if byte(text, pos) == 125 then return object, pos + 1 end
    while true do
      if byte(text, pos) ~= 34 then error("expected a key") end
      local key
      key, pos = decode_string(text, pos + 1)
      pos = skip(text, pos)
      if byte(text, pos) ~= 58 then error("expected ':'") end
      local value
      value, pos = decode_value(text, pos + 1)
      object[key] = value
      pos = skip(text, pos)
      c = byte(text, pos)
      if c == 125 then return object, pos + 1 end
      if c ~= 44 then error("expected ',' or '}'") end
      pos = skip(text, pos + 1)
    end
  elseif c == 91 then -- [
    local array, n = setmetatable({}, ARRAY), 0
    pos = skip(text, pos + 1)
    if byte(text, pos) == 93 then return array, pos + 1 end
    while true do
      n = n + 1
      array[n], pos = decode_value(text, pos)
      pos = skip(text, pos)
      c = byte(text, pos)
      if c == 93 then return array, pos + 1 end
      if c ~= 44 then error("expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == 34 then
    return decode_string(text, pos + 1)
  elseif c == 45 or (c ~= nil and c >= 48 and c <= 57) then
    return decode_number(text, pos)
  elseif find(text, "^true", pos) then
    return true, pos + 4
  elseif find(text, "^false", pos) then
    return false, pos + 5
  elseif find(text, "^null", pos) then
    return NULL, pos + 4
  end
  error("expected a value")
end

local function decode(text)
  local value, pos = decode_value(text, 1)
  if skip(text, pos) <= #text then error("data after the value") end
  return value
end

function envoy_on_request(request_handle)
  local body = request_handle:body() -- buffers the whole body (Envoy answers 413 past its buffer limit)
  if body == nil then return end -- no body: json_body.py is not called either
  local ok, document = pcall(decode, body:getBytes(0, body:length()))
  if not (ok and getmetatable(document) == OBJECT and document.user ~= nil) then
    request_handle:respond({[":status"] = "400"}, "a JSON object with a user is required\n")
  end
end
