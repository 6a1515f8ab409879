-- Per-layer quantization report: rows of {name, shape, format, bits, sqnr_db, proxy_loss, seconds,
-- ...}, printed as a text table or written as JSON (the input of `glq plot`).
local json = require "glq.json"
local fs = require "glq.fs"
local modelcfg = require "glq.modelcfg"

local M = {}

local Report = {}
Report.__index = Report

function M.new() return setmetatable({ rows = {} }, Report) end

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- adds one layer; name and shape = {m, n} are required, the rest is optional
function Report:add(row)
  if type(row) ~= "table" or type(row.name) ~= "string" then fail("report:add: a row needs a name") end
  local s = row.shape
  if type(s) ~= "table" or type(s[1]) ~= "number" or type(s[2]) ~= "number" then
    fail("report:add: layer %s needs shape = {out, in}", row.name)
  end
  local r = {}
  for k, v in pairs(row) do
    local t = type(v)
    if t == "userdata" and v ~= json.null or t == "function" or t == "thread" then
      fail("report:add: layer %s: field %s is a %s (JSON-able values only)", row.name, tostring(k), t)
    end
    if t == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      v = v ~= v and "nan" or (v > 0 and "inf" or "-inf") -- JSON has no infinities
    end
    r[k] = v
  end
  r.shape = { s[1], s[2] }
  self.rows[#self.rows + 1] = r
  return self
end

local role_rank = {}
for i, r in ipairs(modelcfg.roles) do role_rank[r.role] = i end

-- decoder layers by index then projection, every other module after them by name
local function sort_key(name)
  local l, role = modelcfg.parse_linear_name(name)
  if l then return l, role_rank[role], name end
  return math.huge, 0, name
end

function Report:sorted()
  local t = {}
  for i, r in ipairs(self.rows) do t[i] = r end
  table.sort(t, function(a, b)
    local la, ra, na = sort_key(a.name)
    local lb, rb, nb = sort_key(b.name)
    if la ~= lb then return la < lb end
    if ra ~= rb then return ra < rb end
    return na < nb
  end)
  return t
end

local function weights(r) return r.shape[1] * r.shape[2] end

-- totals: layers, weights, bits (average over layers with bits, weighted by their weight count),
-- seconds, mean SQNR over layers that report one
function Report:totals()
  local n, w, wb, bw, sec, sq, nsq = #self.rows, 0, 0, 0, 0, 0, 0
  for _, r in ipairs(self.rows) do
    w = w + weights(r)
    if type(r.bits) == "number" then wb, bw = wb + weights(r), bw + r.bits * weights(r) end
    if type(r.seconds) == "number" then sec = sec + r.seconds end
    if type(r.sqnr_db) == "number" and r.sqnr_db == r.sqnr_db then sq, nsq = sq + r.sqnr_db, nsq + 1 end
  end
  return { layers = n, weights = w, bits = wb > 0 and bw / wb or nil, seconds = sec,
    sqnr_db = nsq > 0 and sq / nsq or nil }
end

local function num(v, fmt)
  if type(v) == "number" then return string.format(fmt, v) end
  return type(v) == "string" and v or "-"
end

local function fmt_bits(b)
  if type(b) ~= "number" then return b ~= nil and tostring(b) or "-" end
  return b % 1 == 0 and string.format("%d", b) or string.format("%.2f", b)
end

-- the printed table
function Report:table()
  local head = { "layer", "shape", "format", "bits", "SQNR dB", "proxy loss", "seconds" }
  local right = { false, true, false, true, true, true, true }
  local lines = {}
  for _, r in ipairs(self:sorted()) do
    lines[#lines + 1] = { r.name, string.format("%dx%d", r.shape[1], r.shape[2]), r.format or "-", fmt_bits(r.bits),
      num(r.sqnr_db, "%.2f"), num(r.proxy_loss, "%.4g"), num(r.seconds, "%.2f") }
  end
  local t = self:totals()
  local total = { string.format("total (%d layers)", t.layers), string.format("%d", t.weights), "",
    t.bits and string.format("%.3f", t.bits) or "-", num(t.sqnr_db, "%.2f"), "", string.format("%.2f", t.seconds) }
  local width = {}
  for i, h in ipairs(head) do width[i] = #h end
  for _, l in ipairs(lines) do for i, c in ipairs(l) do width[i] = math.max(width[i], #c) end end
  for i, c in ipairs(total) do width[i] = math.max(width[i], #c) end
  local function row(cells)
    local out = {}
    for i, c in ipairs(cells) do
      local pad = string.rep(" ", width[i] - #c)
      out[i] = right[i] and pad .. c or c .. pad
    end
    return (table.concat(out, "  "):gsub("%s+$", ""))
  end
  local rule = {}
  for i = 1, #head do rule[i] = string.rep("-", width[i]) end
  local out = { row(head), row(rule) }
  for _, l in ipairs(lines) do out[#out + 1] = row(l) end
  out[#out + 1] = row(rule)
  out[#out + 1] = row(total)
  return table.concat(out, "\n") .. "\n"
end

-- the JSON value: {glq_report = 1, layers = [...sorted...], totals = {...}}
function Report:data()
  local layers = json.array({})
  for i, r in ipairs(self:sorted()) do layers[i] = r end
  return { glq_report = 1, layers = layers, totals = self:totals() }
end

function Report:write_json(path)
  fs.write_atomic(path, json.encode(self:data(), { indent = 2 }) .. "\n")
end

-- a report from a JSON file written by write_json
function M.read_json(path)
  local v, err = json.read_file(path)
  if v == nil then fail("%s", tostring(err)) end
  if type(v) ~= "table" or type(v.layers) ~= "table" then fail("%s: not a glq report (no layers array)", path) end
  local r = M.new()
  for i, row in ipairs(v.layers) do
    if type(row) ~= "table" or type(row.name) ~= "string" or type(row.shape) ~= "table" then
      fail("%s: layer %d has no name or shape", path, i)
    end
    r:add(row)
  end
  return r
end

return M
