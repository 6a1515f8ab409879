-- glq.help: help() in the REPL, from the docstrings scripts/gen-api.lua gathers into glq.apidoc
-- (the same text as docs/api.md).
--   help                     an overview (modules and how to ask)
--   help(glq.zeros)          one function: its call and its docstring
--   help(glq.model)          a module: its summary and its functions
--   help "zeros", help "tensor:sum", help "model"   the same by name (a suffix is enough)
--   help "quantize"          a recipe's --help text
--   help(t) for a tensor     its methods
local M = {}

local function apidoc() return require "glq.apidoc" end

local function first_line(s) return (s or ""):match("^[^\n]*") end

local function show_entry(e, out)
  out[#out + 1] = e.sig .. "    [" .. e.file .. "]"
  if e.doc ~= "" then out[#out + 1] = "  " .. e.doc:gsub("\n", "\n  ") end
end

local function module_entries(name)
  local list = {}
  for _, e in ipairs(apidoc().entries) do if e.module == name then list[#list + 1] = e end end
  return list
end

local function show_module(m, out)
  out[#out + 1] = m.name .. (m.name ~= "glq" and " (module)" or "")
  if m.doc ~= "" then out[#out + 1] = "  " .. m.doc:gsub("\n", "\n  ") end
  local list = module_entries(m.name)
  if #list > 0 then
    out[#out + 1] = "functions (help \"NAME\" for one):"
    local w = 0
    for _, e in ipairs(list) do w = math.max(w, #e.name) end
    for _, e in ipairs(list) do
      out[#out + 1] = "  " .. e.name .. (" "):rep(w - #e.name + 2) .. first_line(e.doc)
    end
  end
end

local function find_module(name)
  for _, m in ipairs(apidoc().modules) do
    if m.name == name or m.name == "glq." .. name then return m end
  end
end

-- entries named `name`, or ending in ".name" / ":name"
local function find_entries(name)
  local exact, suffix = {}, {}
  for _, e in ipairs(apidoc().entries) do
    if e.name == name or e.name == "glq." .. name then exact[#exact + 1] = e
    elseif e.name:sub(-#name - 1) == "." .. name or e.name:sub(-#name - 1) == ":" .. name then suffix[#suffix + 1] = e end
  end
  return #exact > 0 and exact or suffix
end

-- the docstring of a Lua function, by its definition line (named as scripts/gen-api.lua names it)
local function entry_of_lua_function(f)
  local info = debug.getinfo(f, "S")
  if not info or info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then return nil end
  local mod = info.source:match("lua/glq/([%w_]+)%.lua$")
  if not mod then return nil end
  mod = mod == "init" and "glq" or "glq." .. mod
  local fh = io.open(info.source:sub(2), "rb")
  if not fh then return nil end
  local line
  for _ = 1, info.linedefined do line = fh:read("*l") end
  fh:close()
  local owner, sep, fname = (line or ""):match("^%s*function ([%w_]+)([.:])([%w_]+)%(")
  if not owner then return nil end
  local name = owner == "M" and mod .. "." .. fname or owner == "glq" and "glq." .. fname
    or owner == "methods" and "tensor:" .. fname or mod .. "." .. owner .. sep .. fname
  for _, e in ipairs(apidoc().entries) do if e.name == name then return e end end
end

-- the dotted name of a value reachable from glq (every module loaded first), or nil
local function path_of(v)
  local glq = require "glq"
  for _, m in ipairs(apidoc().modules) do
    if m.name ~= "glq" then pcall(require, m.name) end
  end
  local best
  local function consider(p) if not best or #p < #best then best = p end end
  for k, x in pairs(glq) do
    if x == v then consider("glq." .. k) end
    if type(x) == "table" and k ~= "core" then
      for k2, y in pairs(x) do if y == v then consider("glq." .. k .. "." .. k2) end end
    end
  end
  for k, x in pairs(glq.core) do
    if x == v then consider("glq." .. k) end
    if type(x) == "table" then
      for k2, y in pairs(x) do if y == v then consider("glq." .. k .. "." .. k2) end end
    end
  end
  local methods = glq.core._tensor_mt.__methods
  for k, x in pairs(methods or {}) do if x == v then consider("tensor:" .. k) end end
  return best
end

local function recipe_path(name)
  if not name:match("^[%w_%-]+$") then return nil end
  local here = package.searchpath and package.searchpath("glq.cli", package.path)
  if not here then return nil end
  local lua_glq = here:gsub("cli%.lua$", "")
  for _, dir in ipairs({ lua_glq .. "../../recipes/", lua_glq .. "recipes/", lua_glq .. "../../../../share/glq/recipes/" }) do
    local p = dir .. name .. ".lua"
    local f = io.open(p, "rb")
    if f then f:close(); return p end
  end
end

function M.overview()
  local out = { "glq help: help(glq.zeros) or help \"zeros\" for a function, help(glq.model) for a module,",
    "help \"tensor\" for tensor methods, help \"quantize\" for a recipe's options (docs/api.md has everything).",
    "", "modules (glq.NAME, loaded on first use):" }
  local w = 0
  for _, m in ipairs(apidoc().modules) do w = math.max(w, #m.name) end
  for _, m in ipairs(apidoc().modules) do
    local line = first_line(m.doc):gsub("^glq%.?[%w_]*:%s*", "")
    line = line:match("^(.-[^.]%.)%s") or line:match("^(.-)[,;:]%s*$") or line
    if #line > 74 then line = line:sub(1, 71) .. "..." end
    out[#out + 1] = "  " .. m.name .. (" "):rep(w - #m.name + 2) .. line
  end
  out[#out + 1] = ""
  out[#out + 1] = "tensors: glq.zeros(shape, dtype), glq.randn(shape, seed), glq.tensor(values, shape, dtype); t[i], t:sum(), ..."
  return table.concat(out, "\n")
end

-- The help text for x (see the header); nil, message when nothing is documented.
function M.text(x)
  local glq = require "glq"
  local out = {}
  if x == nil then return M.overview() end
  if type(x) == "string" then
    if x == "tensor" or x == "tensors" then
      local list = {}
      for _, e in ipairs(apidoc().entries) do if e.name:match("^tensor:") then list[#list + 1] = e end end
      out[1] = "tensor methods (t:NAME(...)); t[i] indexes the first dimension:"
      for _, e in ipairs(list) do out[#out + 1] = "  " .. e.sig .. "  " .. first_line(e.doc) end
      return table.concat(out, "\n")
    end
    local m = find_module(x)
    if m then show_module(m, out); return table.concat(out, "\n") end
    local es = find_entries(x)
    if #es > 0 then
      for i, e in ipairs(es) do if i > 1 then out[#out + 1] = "" end; show_entry(e, out) end
      return table.concat(out, "\n")
    end
    local rp = recipe_path(x)
    if rp then
      local saved, text = rawget(_G, "arg"), {}
      _G.arg = { [0] = rp, "--help" }
      local cli = require "glq.cli"
      local parse = cli.parse
      cli.parse = function(spec, args) return parse(spec, args, function(s) text[#text + 1] = s end) end
      local ok, err = pcall(dofile, rp)
      cli.parse, _G.arg = parse, saved
      if not ok and #text == 0 then return nil, tostring(err) end
      return table.concat(text):gsub("\n$", "")
    end
    return nil, ("no help for '%s' (help lists the modules; docs/api.md has every function)"):format(x)
  end
  if type(x) == "table" then
    for name, mod in pairs(package.loaded) do
      if mod == x and type(name) == "string" and find_module(name) then
        show_module(find_module(name), out)
        return table.concat(out, "\n")
      end
    end
    local mt = getmetatable(x)
    if mt and type(mt.__index) == "table" then -- an object: its class's methods
      local names = {}
      for k, v in pairs(mt.__index) do if type(v) == "function" and not k:match("^_") then names[#names + 1] = k end end
      table.sort(names)
      return "methods: " .. table.concat(names, ", ")
    end
    return nil, "no help for this table"
  end
  if glq.is_tensor(x) then return M.text("tensor") end
  if type(x) == "function" then
    local e = entry_of_lua_function(x)
    if not e then
      local p = path_of(x)
      if p then e = find_entries(p)[1] or find_entries(p:gsub("^glq%.", ""))[1] end
      if not e and p then return p .. ": no docstring" end
    end
    if e then show_entry(e, out); return table.concat(out, "\n") end
    return nil, "no help for this function"
  end
  return nil, "no help for a " .. type(x)
end

-- help(x): prints the text
function M.help(x)
  local s, err = M.text(x)
  print(s or err)
end

-- `help` as a REPL value: typing help prints the overview; help(x) prints x's help
M.callable = setmetatable({}, {
  __call = function(_, x) M.help(x) end,
  __tostring = function() return M.overview() end,
})

return M
