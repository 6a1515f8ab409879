-- Per-layer policies: a policy maps a layer description to a decision.
--   layer = {name=, role="q"|"k"|"v"|"o"|"gate"|"up"|"down"|"head"|"embed"|"router",
--            shape={out, in}, index=<decoder layer, 0-based>, n_layers=, hessian={mean_diag=, trace=, n=}}
--   decision = {format="e8", bpw=2|3|4} | {format="trellis", bpw=2|3|4} | {format="hif4", rht=bool, ldlq=bool}
--              | {format="dense"}
-- A user policy file returns either a function(layer, default_decision) -> decision or a table
-- {decide = function(layer, default_decision) ... end}.
local modelcfg = require "glq.modelcfg"
local M = {}

local ROLES = { q = true, k = true, v = true, o = true, gate = true, up = true, down = true }
M.quantizable_roles = ROLES

-- the reference HiF4 tool's skip rule: case-insensitive substring match on the module path
M.hif4_compat_keywords = { "embed", "embedding", "lm_head", "gate", "gating", "router" }

function M.matches_compat_skip(name)
  local lname = name:lower()
  for _, k in ipairs(M.hif4_compat_keywords) do
    if lname:find(k, 1, true) then return true end
  end
  return false
end

local function check_decision(d, name)
  if type(d) ~= "table" then error(string.format("policy: layer %s: decision must be a table, got %s", name, type(d)), 0) end
  if d.format == "e8" then
    if d.bpw ~= 2 and d.bpw ~= 3 and d.bpw ~= 4 then
      error(string.format("policy: layer %s: e8 needs bpw 2, 3 or 4, got %s", name, tostring(d.bpw)), 0)
    end
  elseif d.format == "trellis" then
    if d.bpw ~= 2 and d.bpw ~= 3 and d.bpw ~= 4 then
      error(string.format("policy: layer %s: trellis needs bpw 2, 3 or 4, got %s", name, tostring(d.bpw)), 0)
    end
  elseif d.format ~= "hif4" and d.format ~= "dense" then
    error(string.format("policy: layer %s: unknown format %s (e8, trellis, hif4 or dense)", name, tostring(d.format)), 0)
  end
  return d
end
M.check_decision = check_decision

-- uniform: every quantizable projection gets the same decision; others stay dense
function M.uniform(decision)
  return function(layer)
    if not ROLES[layer.role] then return { format = "dense" } end
    return decision
  end
end

-- from a bpw allocation map (glq's flat module -> bits map; "hif4" names HiF4; map.default applies)
local ALLOC_VALUES = { hif4 = true, ["hif4+rht"] = true, ["hif4+ldlq"] = true, ["hif4+rht+ldlq"] = true, dense = true }

-- a map is checked whole before it is used: any other file (a config.json, say) is refused, not read as
-- "no entries, 2 bits everywhere"; where names the file in messages
function M.check_allocation(map, where)
  where = where or "bpw allocation"
  if type(map) ~= "table" or map[1] ~= nil then error(where .. ": not a bpw allocation (expected a JSON object of module -> bits)", 0) end
  local n = 0
  for k, v in pairs(map) do
    if type(k) ~= "string" or (k ~= "default" and not modelcfg.parse_linear_name(k)) then
      error(string.format("%s: not a bpw allocation: key %s is not a decoder linear (model.layers.N.self_attn.q_proj, ...) or \"default\"",
        where, tostring(k)), 0)
    end
    local b = tonumber(v)
    if not (ALLOC_VALUES[v] or (b and (b == 2 or b == 3 or b == 4))) then
      error(string.format("%s: %s = %s: expected 2, 3, 4, \"hif4\", \"hif4+rht\", \"hif4+ldlq\", \"hif4+rht+ldlq\" or \"dense\"",
        where, k, tostring(v)), 0)
    end
    n = n + 1
  end
  if n == 0 then error(where .. ": empty bpw allocation", 0) end
  return map
end

function M.from_allocation(map, fallback)
  M.check_allocation(map)
  return function(layer)
    if not ROLES[layer.role] then return { format = "dense" } end
    local v = map[layer.name]
    if v == nil then v = map.default end
    if v == nil then return fallback or { format = "e8", bpw = 2 } end
    if v == "hif4" then return { format = "hif4" } end
    if v == "hif4+rht" then return { format = "hif4", rht = true } end
    if v == "hif4+ldlq" then return { format = "hif4", ldlq = true } end
    if v == "hif4+rht+ldlq" then return { format = "hif4", rht = true, ldlq = true } end
    if v == "dense" then return { format = "dense" } end
    return { format = "e8", bpw = tonumber(v) }
  end
end

-- skip rules: names matching any Lua pattern in `patterns` stay dense
function M.skip(patterns, inner)
  return function(layer, default)
    for _, p in ipairs(patterns) do
      if layer.name:find(p) then return { format = "dense" } end
    end
    return inner(layer, default)
  end
end

-- load a user policy file; wraps it so it can defer to `base` by returning nil
function M.load(path, base)
  local chunk, err = loadfile(path)
  if not chunk then error("policy: " .. err, 0) end
  local ok, p = pcall(chunk)
  if not ok then error("policy: " .. path .. ": " .. tostring(p), 0) end
  local fn = type(p) == "function" and p or (type(p) == "table" and p.decide)
  if type(fn) ~= "function" then
    error("policy: " .. path .. " must return a function(layer, default) or a table with decide()", 0)
  end
  return function(layer)
    local default = base and base(layer) or { format = "dense" }
    local d = fn(layer, default)
    if d == nil then d = default end
    return check_decision(d, layer.name)
  end
end

-- apply a policy to a layer description and validate
function M.decide(policy, layer)
  return check_decision(policy(layer), layer.name)
end

-- stored bits per weight of a decision for a (out x in) layer, matching what the writers store
function M.stored_bits(d, out, inn)
  if d.format == "dense" then return 16 end
  if d.format == "hif4" then
    local padded = math.ceil(inn / 64) * 64
    local bits = 4.5 * padded / inn
    if d.rht then bits = bits + 16 / out end -- SV signs (f16) per input column, amortised over rows
    return bits
  end
  if d.format == "trellis" then -- both sides padded to multiples of 32 (src/layers/trellis_linear.h)
    return d.bpw * math.ceil(out / 32) * 32 * math.ceil(inn / 32) * 32 / (out * inn) + 32 / (out * inn)
  end
  local pin = math.ceil(inn / 8) * 8
  local stage = ({ [2] = 16, [3] = 24, [4] = 32 })[d.bpw]
  return stage / 8 * pin / inn + 32 / (out * inn)
end

return M
