-- glq info FILE: list the tensors of a safetensors or GGUF file (name, dtype, shape, size).
local cli = require "glq.cli"

local opts = cli.parse({
  prog = "glq info",
  description = "Print the tensors of a safetensors or GGUF file.",
  args = { {"file", help = "a .safetensors or .gguf file"} },
  options = {
    {"sort", type = "choice", choices = {"file", "name", "size"}, default = "file",
     help = "order of the listing"},
    {"filter", metavar = "PATTERN", help = "only tensors whose name contains PATTERN (plain text)"},
    {"metadata", type = "bool", short = "m", help = "also print the file's metadata"},
  },
}, arg)
if not opts then return end

local function file_format(path)
  local f, err = io.open(path, "rb")
  if not f then error(err, 0) end
  local head = f:read(9) or ""
  f:close()
  if head:sub(1, 4) == "GGUF" then return "gguf" end
  if #head == 9 and head:sub(9, 9) == "{" then return "safetensors" end
  error(("%s: neither a GGUF nor a safetensors file"):format(path), 0)
end

local function need(fn, what)
  if type(fn) ~= "function" then
    error(("this glq build cannot read %s files (%s is missing)"):format(what, what == "gguf" and
      "glq.gguf.open" or "glq.safetensors_info"), 0)
  end
  return fn
end

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

-- {name, dtype, shape, nbytes, order} rows and a metadata table
local function read_gguf(path)
  local g = need(glq.gguf and glq.gguf.open, "gguf")(path)
  local rows = {}
  for i, t in ipairs(g:tensors()) do
    rows[i] = {name = t.name, dtype = t.type, shape = t.shape, nbytes = t.nbytes, order = i}
  end
  local meta = opts.metadata and g:metadata() or {}
  local header = ("GGUF v%d"):format(g:version())
  g:close()
  return header, rows, meta
end

local function read_safetensors(path)
  local info, meta = need(glq.safetensors_info, "safetensors")(path)
  local rows = {}
  for name, t in pairs(info) do
    rows[#rows + 1] = {name = name, dtype = t.dtype, shape = t.shape,
                       nbytes = t.data_offsets[2] - t.data_offsets[1], order = t.file_offset}
  end
  return "safetensors", rows, meta or {}
end

local function human(bytes)
  local units, u = {"B", "KiB", "MiB", "GiB", "TiB"}, 1
  while bytes >= 1024 and u < #units do bytes, u = bytes / 1024, u + 1 end
  return u == 1 and ("%d B"):format(bytes) or ("%.1f %s"):format(bytes, units[u])
end

local function show(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for i = 1, math.min(#v, 8) do parts[i] = tostring(v[i]) end
  if #v > 8 then parts[#parts + 1] = ("... (%d items)"):format(#v) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local path = opts.file
local header, rows, meta = (file_format(path) == "gguf" and read_gguf or read_safetensors)(path)

if opts.filter then
  local kept = {}
  for _, r in ipairs(rows) do
    if r.name:find(opts.filter, 1, true) then kept[#kept + 1] = r end
  end
  rows = kept
end
local key = ({file = "order", name = "name", size = "nbytes"})[opts.sort]
table.sort(rows, function(a, b)
  if a[key] ~= b[key] then
    if key == "nbytes" then return a[key] > b[key] end
    return a[key] < b[key]
  end
  return a.order < b.order
end)

if opts.metadata then
  local keys = {}
  for k in pairs(meta) do keys[#keys + 1] = k end
  table.sort(keys)
  print(("metadata (%d entries):"):format(#keys))
  for _, k in ipairs(keys) do print(("  %s = %s"):format(k, show(meta[k]))) end
  print()
end

local width, params, bytes = 4, 0, 0
for _, r in ipairs(rows) do
  width = math.max(width, #r.name)
  params, bytes = params + numel(r.shape), bytes + r.nbytes
end
local fmt = "%-" .. width .. "s  %-6s  %-14s  %s"
print(fmt:format("name", "dtype", "shape", "size"))
for _, r in ipairs(rows) do
  local shape = #r.shape > 0 and table.concat(r.shape, "x") or "scalar"
  print(fmt:format(r.name, r.dtype, shape, human(r.nbytes)))
end
print(("%s: %s, %d tensors, %.0f parameters, %s"):format(path, header, #rows, params, human(bytes)))
