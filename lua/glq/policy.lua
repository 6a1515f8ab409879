-- Per-layer policies: a policy maps a layer description to a decision.
--   layer = {name=, role="q"|"k"|"v"|"o"|"gate"|"up"|"down"|"head"|"embed"|"router",
--            shape={out, in}, index=<decoder layer, 0-based>, n_layers=, hessian={mean_diag=, trace=, n=}}
--   decision = {format="e8"|"e8p"|"trellis", bits=2|3|4} | {format="hif4", rht=bool, ldlq=bool} | {format="dense"}
--              (glq.formats; a decision's old key bpw is read as bits)
-- A user policy file returns either a function(layer, default_decision) -> decision or a table
-- {decide = function(layer, default_decision) ... end}.
local modelcfg = require "glq.modelcfg"
local formats = require "glq.formats"
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
  local f = formats.get(d.format)
  if not f then
    error(string.format("policy: layer %s: unknown format %s (%s)", name, tostring(d.format), table.concat(formats.names, ", ")), 0)
  end
  if d.bits == nil and d.bpw ~= nil then -- the key's old name
    local t = { bits = d.bpw }
    for k, v in pairs(d) do if k ~= "bpw" then t[k] = v end end
    d = t
  end
  if f.check then f.check(d, "policy: layer " .. name) end
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
    if not formats.from_alloc_value(v) then
      error(string.format("%s: %s = %s: expected 2, 3, 4, \"hif4\", \"hif4+rht\", \"hif4+ldlq\", \"hif4+rht+ldlq\" or \"dense\"",
        where, k, tostring(v)), 0)
    end
    n = n + 1
  end
  if n == 0 then error(where .. ": empty bpw allocation", 0) end
  return map
end

-- from a bpw allocation map (glq's flat module -> bits map; "hif4" names HiF4; map.default applies)
function M.from_allocation(map, fallback)
  M.check_allocation(map)
  return function(layer)
    if not ROLES[layer.role] then return { format = "dense" } end
    local v = map[layer.name]
    if v == nil then v = map.default end
    if v == nil then return fallback or { format = "e8", bits = 2 } end
    return formats.from_alloc_value(v)
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

return M
