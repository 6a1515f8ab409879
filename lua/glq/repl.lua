-- glq.repl: the interactive loop of the `glq` executable, and the value printer it uses.
-- The host (src/main.c) supplies line editing and protected calls; everything decided about
-- what a line means and how a value looks lives here, so it can be tested without a terminal.
local M = {}
local loadstring = loadstring or load  -- Lua 5.2+ (for specs run outside LuaJIT)

local MAX_ITEMS = 30   -- table entries shown before "..."
local WIDTH = 78       -- a table longer than this is printed one entry per line

-- Compile a chunk typed at the prompt. Returns fn, or nil, message, incomplete.
-- An expression is tried first (so `1+1` prints 2), then a statement; the chunk is incomplete
-- when either form fails only because the input ended too early (as lua.c decides).
function M.compile(src, chunkname)
  chunkname = chunkname or "=stdin"
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end
  local fn, experr = loadstring("return " .. src, chunkname)
  if fn then return fn end
  local err
  fn, err = loadstring(src, chunkname)
  if fn then return fn end
  local function at_eof(msg) return msg:find("<eof>'?$") ~= nil end  -- 5.1 quotes it, 5.2+ not
  local incomplete = (at_eof(err) or at_eof(experr))
    and not err:find("unfinished string", 1, true)  -- LuaJIT says <eof>, but a newline cannot fix it
  return nil, err, incomplete
end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not M.keywords[s]
end

M.keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat
  return then true until while]]):gmatch("%a+") do M.keywords[w] = true end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil
end

local function short_function(f)
  local info = debug.getinfo(f, "S")
  if info and info.what == "Lua" then
    return ("function <%s:%d>"):format(info.short_src, info.linedefined)
  end
  return tostring(f)
end

-- One value as a short, single-line string (used inside tables).
local function scalar(v)
  local t = type(v)
  if t == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if t == "function" then return short_function(v) end
  if t == "table" and not has_tostring(v) then return next(v) == nil and "{}" or "{...}" end
  local s = tostring(v)
  return (s:match("^[^\n]*"))  -- tensors print several lines; inside a table show the first
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- A namespace (a module such as glq: many identifier keys, mostly functions and tables), listed
-- by kind in wrapped lines instead of one entry per line.
local function format_namespace(t)
  local groups = { modules = {}, functions = {}, values = {} }
  local n, callable = 0, 0
  for k, v in pairs(t) do
    if not is_identifier(k) then return nil end
    n = n + 1
    if type(v) == "function" then callable = callable + 1; table.insert(groups.functions, k)
    elseif type(v) == "table" and not has_tostring(v) then callable = callable + 1; table.insert(groups.modules, k)
    else table.insert(groups.values, k .. " = " .. scalar(v)) end
  end
  if n <= 12 or callable * 2 < n then return nil end
  local out = {}
  for _, kind in ipairs({ "modules", "functions", "values" }) do
    local list = groups[kind]
    if #list > 0 then
      table.sort(list)
      local line = "  " .. kind .. ": "
      local indent = (" "):rep(#line)
      for i, name in ipairs(list) do
        local piece = name .. (i < #list and ", " or "")
        if #line + #piece > WIDTH and line:match("%S$") == nil and #line > #indent then
          out[#out + 1] = (line:gsub("%s+$", ""))
          line = indent
        end
        line = line .. piece
      end
      out[#out + 1] = line
    end
  end
  return "{\n" .. table.concat(out, "\n") .. "\n}"
end

-- A table, one level deep and at most MAX_ITEMS entries: array part first, then sorted keys.
local function format_table(t)
  if #t == 0 then
    local ns = format_namespace(t)
    if ns then return ns end
  end
  local items, n = {}, #t
  for i = 1, math.min(n, MAX_ITEMS) do items[#items + 1] = scalar(t[i]) end
  local keys = {}
  for k in pairs(t) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    if #items >= MAX_ITEMS then break end
    local ks = is_identifier(k) and k or "[" .. scalar(k) .. "]"
    items[#items + 1] = ks .. " = " .. scalar(t[k])
  end
  local total = n + #keys
  if total > #items then items[#items + 1] = ("... (%d more)"):format(total - #items) end
  if #items == 0 then return "{}" end
  local one = "{" .. table.concat(items, ", ") .. "}"
  if #one <= WIDTH then return one end
  return "{\n  " .. table.concat(items, ",\n  ") .. "\n}"
end

-- How the REPL shows one value: strings as they are, tables readably, others by tostring.
function M.format(v)
  local t = type(v)
  if t == "table" and not has_tostring(v) then return format_table(v) end
  if t == "function" then return short_function(v) end
  return tostring(v)
end

-- All values of one result, tab-separated as lua.c does.
function M.format_results(n, ...)
  local out = {}
  for i = 1, n do out[i] = M.format((select(i, ...))) end
  return table.concat(out, "\t")
end

-- Names that complete `word` (as typed: "glq.ze", "t:sh", "pri"), looked up in env (default _G):
-- fields of the table reached by the dotted prefix, and of its metatable's __index tables, so
-- tensor methods complete after ':'.
function M.complete(word, env)
  local prefix, sep, last = word:match("^(.-)([.:]?)([%a_]?[%w_]*)$")
  if not prefix then return {} end
  local obj = env or _G
  if sep ~= "" then
    for name in (prefix .. "."):gmatch("(.-)%.") do
      if not is_identifier(name) then return {} end
      local ok, v = pcall(function() return obj[name] end)
      if not ok or v == nil then return {} end
      obj = v
    end
  elseif prefix ~= "" then
    return {}
  end
  local found, seen = {}, {}
  local function add(k, v, keyword)
    if (keyword or is_identifier(k)) and not seen[k] and k:sub(1, #last) == last and (sep ~= ":" or type(v) == "function") then
      seen[k] = true
      found[#found + 1] = prefix .. sep .. k
    end
  end
  local depth, t = 0, obj
  while t ~= nil and depth < 8 do                   -- the object, then its __index chain
    if type(t) == "table" then for k, v in pairs(t) do add(k, v) end end
    local mt = getmetatable(t)
    -- (a type whose __index is a function lists its methods as __methods, as tensors do)
    t = type(mt) == "table" and (type(mt.__index) == "table" and mt.__index or type(mt.__methods) == "table" and mt.__methods) or nil
    depth = depth + 1
  end
  if sep == "" then for k in pairs(M.keywords) do add(k, nil, true) end end
  table.sort(found)
  return found
end

-- Runs the loop. host: readline(prompt) -> line | nil (end) | false (Ctrl-C),
-- add_history(chunk), call(fn) -> true, results... | false, message; version, luajit: strings.
-- write(s) prints (defaults to io.stdout).
function M.run(host)
  local write = host.write or function(s) io.stdout:write(s); io.stdout:flush() end
  local function show(ok, ...)
    if not ok then
      local msg = tostring((...))
      write((msg == "interrupted" and "\n" or "") .. msg .. "\n")  -- past the echoed ^C
    elseif select("#", ...) > 0 then
      write(M.format_results(select("#", ...), ...) .. "\n")
    end
  end
  -- every glq module visible (printing glq, Tab) and `help`, when the glq module is there
  local ok_glq, glq = pcall(require, "glq")
  if ok_glq and type(glq) == "table" then
    local ok_doc, doc = pcall(require, "glq.apidoc")
    for _, m in ipairs(ok_doc and doc.modules or {}) do
      local short = m.name:match("^glq%.([%w_]+)$")
      if short and rawget(glq, short) == nil then
        local ok, mod = pcall(require, m.name)
        if ok then rawset(glq, short, mod) end
      end
    end
    for k, v in pairs(type(glq.core) == "table" and glq.core or {}) do -- glq.e8, glq.cuda, glq.llama, ...
      if type(k) == "string" and not k:match("^_") and type(v) == "table" and rawget(glq, k) == nil then rawset(glq, k, v) end
    end
    if rawget(_G, "help") == nil then
      local ok, h = pcall(require, "glq.help")
      if ok then _G.help = h.callable end
    end
  end
  write(("glq %s (%s) - Lua with `glq` loaded; help for help, Ctrl-C stops a computation, Ctrl-D leaves\n"):format(
    host.version or "?", host.luajit or _VERSION))
  local buffer
  while true do
    local line = host.readline(buffer and ">> " or "glq> ")
    if line == nil then write("\n"); return end
    if line == false then
      buffer = nil                                  -- Ctrl-C abandons a half-typed chunk
    else
      local src = buffer and buffer .. "\n" .. line or line
      local fn, err, incomplete = M.compile(src)
      if incomplete then
        buffer = src
      else
        buffer = nil
        host.add_history(src)
        if not fn then
          write(err .. "\n")
        elseif src:match("%S") then
          show(host.call(fn))
        end
      end
    end
  end
end

return M
