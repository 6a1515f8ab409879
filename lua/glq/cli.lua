-- glq.cli: the argument parser recipes use.
--
--   local cli = require "glq.cli"
--   local p = cli.parser{
--     prog = "glq info", description = "Print the tensors of a model file.",
--     args = { {"file", help = "safetensors or GGUF file"} },          -- positionals, in order
--     options = {
--       {"bits", type = "int", default = 2, help = "bits per weight"},
--       {"format", type = "choice", choices = {"e8", "hif4"}, default = "e8"},
--       {"out", required = true, help = "output file"},
--       {"verbose", type = "bool", short = "v", help = "say more"},
--     },
--   }
--   local opts = p:parse(arg)   -- nil after printing --help; raises a one-line error otherwise
--   (or in one step: local opts = cli.parse(spec, arg); if not opts then return end)
--
-- Options are `--name value`, `--name=value`, `-s value` (short alias), flags `--name` / `--no-name`;
-- `--` ends options. Types: string (default), number, int, bool, choice; numbers take `min`/`max`;
-- `metavar` names the value in --help, `epilog` adds a closing paragraph. Result keys use '_' for
-- '-'. A positional with `many = true` (last only) collects the rest into a list; `optional = true`
-- makes one optional. Errors are raised with level 0 so the host prints "glq: <message>".
-- parse's optional second argument replaces io.write for the --help text (and --version's line:
-- every parser answers --version with "glq VERSION" unless it defines a `version` option).
-- cli.given(args, name) says whether --name was typed (to tell a default from a chosen value).
local M = {}

local Parser = {}
Parser.__index = Parser

local TYPES = {string = true, number = true, int = true, bool = true, choice = true}

local function key_of(name) return (name:gsub("-", "_")) end

local BOOL_WORDS = {["true"] = true, yes = true, on = true, ["1"] = true,
                    ["false"] = false, no = false, off = false, ["0"] = false}

-- Converts text to the option's type; returns value or nil, complaint.
local function convert(o, text)
  local t = o.type
  if t == "string" then return text end
  if t == "bool" then
    local v = BOOL_WORDS[text:lower()]
    if v == nil then return nil, ("expected true or false, got '%s'"):format(text) end
    return v
  end
  if t == "choice" then
    for _, c in ipairs(o.choices) do if c == text then return text end end
    return nil, ("expected one of %s, got '%s'"):format(table.concat(o.choices, ", "), text)
  end
  local v = tonumber(text)
  if t == "int" and (v == nil or v ~= math.floor(v) or v == math.huge or v == -math.huge) then
    return nil, ("expected an integer, got '%s'"):format(text)
  end
  if v == nil or v ~= v then return nil, ("expected a number, got '%s'"):format(text) end
  if o.min and v < o.min then return nil, ("must be at least %s, got %s"):format(o.min, text) end
  if o.max and v > o.max then return nil, ("must be at most %s, got %s"):format(o.max, text) end
  return v
end

local function check_spec(o, where)
  if type(o) ~= "table" or type(o[1]) ~= "string" or o[1] == "" then
    error(where .. ": each entry needs a name as its first element", 3)
  end
  o.type = o.type or "string"
  if not TYPES[o.type] then error(("%s '%s': unknown type '%s'"):format(where, o[1], tostring(o.type)), 3) end
  if o.type == "choice" and (type(o.choices) ~= "table" or #o.choices == 0) then
    error(("%s '%s': a choice needs a non-empty `choices` list"):format(where, o[1]), 3)
  end
  if o.default ~= nil and o.type ~= "bool" then
    local ok, why = convert(o, tostring(o.default))
    if ok == nil then error(("%s '%s': default %s"):format(where, o[1], why), 3) end
  end
end

-- Builds a parser from {prog=, description=, options={...}, args={...}, epilog=}.
function M.parser(spec)
  assert(type(spec) == "table", "glq.cli.parser expects a table")
  local p = setmetatable({prog = spec.prog or "glq", description = spec.description, epilog = spec.epilog,
                          options = {}, args = {}, by_name = {}, by_short = {}}, Parser)
  for _, o in ipairs(spec.options or {}) do
    check_spec(o, "option")
    if p.by_name[o[1]] or o[1] == "help" then error(("option '%s' defined twice"):format(o[1]), 2) end
    p.options[#p.options + 1] = o
    p.by_name[o[1]] = o
    if o.short then
      if #o.short ~= 1 or o.short == "h" or p.by_short[o.short] then
        error(("option '%s': bad or duplicate short name '%s'"):format(o[1], o.short), 2)
      end
      p.by_short[o.short] = o
    end
  end
  for i, a in ipairs(spec.args or {}) do
    check_spec(a, "argument")
    if a.many and i ~= #spec.args then error(("argument '%s': only the last may take many values"):format(a[1]), 2) end
    p.args[i] = a
  end
  return p
end

-- Levenshtein distance, for "did you mean" (option names are short).
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

function Parser:fail(fmt, ...)
  error(fmt:format(...) .. (" (see '%s --help')"):format(self.prog), 0)
end

function Parser:unknown(name)
  local best, bestd
  for _, o in ipairs(self.options) do
    local d = distance(name, o[1])
    if d <= 2 and (not bestd or d < bestd) then best, bestd = o[1], d end
  end
  if best then self:fail("unknown option '--%s'; did you mean '--%s'?", name, best) end
  self:fail("unknown option '--%s'", name)
end

local function metavar(o)
  if o.type == "bool" then return "" end
  if o.metavar then return " " .. o.metavar end
  if o.type == "int" or o.type == "number" then return " N" end
  if o.type == "choice" then return " {" .. table.concat(o.choices, ",") .. "}" end
  return " " .. key_of(o[1]):upper()
end

local function wrap_row(left, text, out)
  if #left >= 24 then
    out[#out + 1] = left
    left = ""
  end
  out[#out + 1] = left .. (" "):rep(24 - #left) .. text
end

-- The --help text, built from the specs.
function Parser:help()
  local usage = {"usage: " .. self.prog}
  if #self.options > 0 then usage[#usage + 1] = "[options]" end
  for _, a in ipairs(self.args) do
    local s = a[1]:upper() .. (a.many and " ..." or "")
    usage[#usage + 1] = a.optional and "[" .. s .. "]" or s
  end
  local out = {table.concat(usage, " ")}
  if self.description then out[#out + 1] = ""; out[#out + 1] = self.description end
  if #self.args > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "arguments:"
    for _, a in ipairs(self.args) do wrap_row("  " .. a[1]:upper(), a.help or "", out) end
  end
  out[#out + 1] = ""
  out[#out + 1] = "options:"
  for _, o in ipairs(self.options) do
    local left = "  " .. (o.short and "-" .. o.short .. ", " or "") .. "--" .. o[1] .. metavar(o)
    local notes = {}
    if o.required then notes[#notes + 1] = "required" end
    if o.default ~= nil then notes[#notes + 1] = "default " .. tostring(o.default) end
    if o.min and o.max then notes[#notes + 1] = ("%s..%s"):format(o.min, o.max)
    elseif o.min then notes[#notes + 1] = ">= " .. tostring(o.min)
    elseif o.max then notes[#notes + 1] = "<= " .. tostring(o.max) end
    if o.type == "bool" then notes[#notes + 1] = "--no-" .. o[1] .. " to turn off" end
    local text = o.help or ""
    if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
    wrap_row(left, text, out)
  end
  wrap_row("  -h, --help", "print this help", out)
  if not self.by_name.version then wrap_row("  --version", "print glq's version", out) end
  if self.epilog then out[#out + 1] = ""; out[#out + 1] = self.epilog end
  return table.concat(out, "\n") .. "\n"
end

-- Parses a list of strings (an `arg` table: only indices 1..#args are read).
-- Returns the options table (positionals by name too), or nil after printing --help.
function Parser:parse(args, output)
  args = args or {}
  local res, seen, positional = {}, {}, {}
  local i, n = 1, #args
  local function take_value(o, shown)
    if i > n then self:fail("option '%s' needs a value", shown) end
    local v = args[i]
    i = i + 1
    return v
  end
  local function set(o, text, shown)
    local v, why = convert(o, text)
    if v == nil then self:fail("option '%s': %s", shown, why) end
    res[key_of(o[1])] = v
    seen[o] = true
  end
  while i <= n do
    local a = tostring(args[i])
    i = i + 1
    if a == "--" then
      for j = i, n do positional[#positional + 1] = tostring(args[j]) end
      break
    elseif a == "-h" or a == "--help" then
      (output or io.write)(self:help())
      return nil
    elseif a == "--version" and not self.by_name.version then
      local ok, glq = pcall(require, "glq")
      local write = output or io.write
      write(("glq %s\n"):format(ok and type(glq) == "table" and glq.version or "?"))
      return nil
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local o = self.by_name[name]
      if not o and value == nil and name:sub(1, 3) == "no-" and self.by_name[name:sub(4)]
          and self.by_name[name:sub(4)].type == "bool" then
        o = self.by_name[name:sub(4)]
        res[key_of(o[1])] = false
        seen[o] = true
      elseif not o then
        self:unknown(name)
      elseif o.type == "bool" and value == nil then
        res[key_of(o[1])] = true
        seen[o] = true
      else
        set(o, value or take_value(o, "--" .. name), "--" .. name)
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      local o = #a == 2 and self.by_short[a:sub(2)]
      if not o then self:fail("unknown option '%s'", a) end
      if o.type == "bool" then
        res[key_of(o[1])] = true
        seen[o] = true
      else
        set(o, take_value(o, a), a)
      end
    else
      positional[#positional + 1] = a
    end
  end
  for _, o in ipairs(self.options) do
    if not seen[o] then
      if o.required then self:fail("missing required option '--%s'", o[1]) end
      local k = key_of(o[1])
      if o.default ~= nil then
        res[k] = o.type == "bool" and o.default or convert(o, tostring(o.default))
      elseif o.type == "bool" then
        res[k] = false
      end
    end
  end
  local j = 1
  for _, a in ipairs(self.args) do
    local k = key_of(a[1])
    if a.many then
      local list = {}
      while j <= #positional do
        local v, why = convert(a, positional[j])
        if v == nil then self:fail("argument %s: %s", a[1]:upper(), why) end
        list[#list + 1] = v
        j = j + 1
      end
      if #list == 0 and not a.optional then self:fail("missing argument %s", a[1]:upper()) end
      res[k] = list
    elseif j <= #positional then
      local v, why = convert(a, positional[j])
      if v == nil then self:fail("argument %s: %s", a[1]:upper(), why) end
      res[k] = v
      j = j + 1
    elseif a.default ~= nil then
      res[k] = convert(a, tostring(a.default))
    elseif not a.optional then
      self:fail("missing argument %s", a[1]:upper())
    end
  end
  if j <= #positional then self:fail("unexpected argument '%s'", positional[j]) end
  return res
end

-- Was option `name` ("nsamples", "max-new-tokens") typed in args (before a "--")?
function M.given(args, name)
  for i = 1, #(args or {}) do
    local a = tostring(args[i])
    if a == "--" then return false end
    if a == "--" .. name or a:sub(1, #name + 3) == "--" .. name .. "=" then return true end
  end
  return false
end

-- One call for recipes: cli.parse(spec, arg).
function M.parse(spec, args, output)
  return M.parser(spec):parse(args, output)
end

return M
