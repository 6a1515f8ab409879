-- JSON for glq: decoding through lua-cjson, encoding with sorted keys and optional indentation
-- so files we write (configs, allocations, reports) are byte-for-byte reproducible.
local cjson = require "cjson.safe"

local M = {}

M.null = cjson.null

-- decode a string; returns value or nil, message
function M.decode(s, what)
  local v, err = cjson.decode(s)
  if v == nil and err then return nil, (what and (what .. ": ") or "") .. "invalid JSON: " .. err end
  return v
end

-- a JSON file (regular files of at most 256 MiB; see fs.read) -> value or nil, message
function M.read_file(path)
  local s, err = require("glq.fs").read(path, 256 * 2 ^ 20)
  if not s then return nil, err end
  return M.decode(s, path)
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  for i = 1, n do if t[i] == nil then return false end end
  return true, n
end

local function num(x)
  if x ~= x then error("cannot encode NaN as JSON") end
  if x == math.huge or x == -math.huge then error("cannot encode infinity as JSON") end
  if x % 1 == 0 and math.abs(x) < 2 ^ 53 then return string.format("%d", x) end
  -- the shortest of 15..17 significant digits that reads back as the same double
  for digits = 15, 17 do
    local s = string.format("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function enc(v, indent, depth, out)
  local t = type(v)
  if v == nil or v == M.null then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then out[#out + 1] = num(v)
  elseif t == "string" then out[#out + 1] = str(v)
  elseif t == "table" then
    local nl = indent and ("\n" .. string.rep(" ", indent * (depth + 1))) or ""
    local close = indent and ("\n" .. string.rep(" ", indent * depth)) or ""
    local arr, n = is_array(v)
    if arr and (n > 0 or getmetatable(v) == M.array_mt) then
      if n == 0 then out[#out + 1] = "[]" return end
      out[#out + 1] = "["
      for i = 1, n do
        out[#out + 1] = (i > 1 and "," or "") .. nl
        enc(v[i], indent, depth + 1, out)
      end
      out[#out + 1] = close .. "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then error("JSON object keys must be strings, got " .. type(k)) end
        keys[#keys + 1] = k
      end
      table.sort(keys)
      if #keys == 0 then out[#out + 1] = "{}" return end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        out[#out + 1] = (i > 1 and "," or "") .. nl .. str(k) .. (indent and ": " or ":")
        enc(v[k], indent, depth + 1, out)
      end
      out[#out + 1] = close .. "}"
    end
  else
    error("cannot encode a " .. t .. " as JSON")
  end
end

M.array_mt = {}
-- mark a (possibly empty) table to encode as an array
function M.array(t) return setmetatable(t or {}, M.array_mt) end

-- encode with sorted keys; opts.indent = spaces per level (nil: compact)
function M.encode(v, opts)
  local out = {}
  enc(v, opts and opts.indent, 0, out)
  return table.concat(out)
end

return M
