-- glq info PATH: summarize a checkpoint directory (architecture, formats, bits per weight, sizes vs
-- bf16, tokenizer), or list the tensors of a safetensors or GGUF file (name, dtype, shape, size).
local cli = require "glq.cli"
local text = require "glq.text"

local opts = cli.parse({
  prog = "glq info",
  description = "Summarize a checkpoint directory (glq quantize / glq hif4 output, or a Hugging Face model "
    .. "directory), or print the tensors of a safetensors or GGUF file.",
  args = { {"file", help = "a checkpoint or model directory, or a .safetensors or .gguf file"} },
  options = {
    {"sort", type = "choice", choices = {"file", "name", "size"}, default = "file",
     help = "order of the listing (name: natural order, layers.2 before layers.10)"},
    {"layers", type = "bool", short = "l", help = "directory: also list every quantized layer"},
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

-- ---- a directory: the checkpoint's summary ----
local fs = require "glq.fs"

local function summarize(dir)
  local json = require "glq.json"
  local cfgj = json.read_file(fs.join(dir, "config.json"))
  local is_ckpt = type(cfgj) == "table" and (cfgj.quantization_config ~= nil or fs.exists(fs.join(dir, "quantize_config.json"))
    or fs.exists(fs.join(dir, "hif4_config.json")))
  local cfg, hf, layers, dense, quant = nil, nil, {}, {}, nil
  if is_ckpt then
    local ck = require("glq.checkpoint").read(dir)
    cfg, hf, layers, dense, quant = ck.config, ck.hf_config, ck.layers, ck.dense, ck.quant
  else                                            -- a plain Hugging Face directory
    local src = require("glq.model").open(dir)
    cfg, hf = src.cfg, type(cfgj) == "table" and cfgj or {}
  end
  -- every tensor of the directory's files, as stored (bytes on disk)
  local stored, disk = {}, 0
  for _, f in ipairs(fs.list(dir) or {}) do
    if f:match("%.safetensors$") then
      local p = fs.join(dir, f)
      local h = io.open(p, "rb")
      if h then disk = disk + h:seek("end"); h:close() end
      for name, t in pairs((glq.safetensors_info(p))) do
        local n = 1
        for _, d in ipairs(t.shape) do n = n * d end
        stored[name] = { bytes = t.data_offsets[2] - t.data_offsets[1], numel = n }
      end
    end
  end
  print(("%s: %s"):format(dir, is_ckpt and "glq checkpoint" or "model directory (not quantized)"))
  print(("  architecture  %s (%s): %d layers, hidden %d, intermediate %d, %d heads / %d KV heads, vocab %d%s"):format(
    (hf.architectures or {})[1] or "?", hf.model_type or "?", cfg.n_layers, cfg.dim, cfg.ffn_dim,
    cfg.n_heads, cfg.n_kv_heads, cfg.vocab, cfg.tied and ", tied embeddings" or ""))
  -- quantized linears by format; their stored bits count every tensor they own (codes, scales, signs)
  local owner = {}
  for name in pairs(stored) do
    local p = name:match("^(.+)%.[%w_]+$")
    if p and layers[p] then owner[name] = p end
  end
  local layer_bytes = {}
  for name, p in pairs(owner) do layer_bytes[p] = (layer_bytes[p] or 0) + stored[name].bytes end
  local groups, order = {}, {}
  local q_params, q_bytes, names = 0, 0, {}
  for name, e in pairs(layers) do
    local label = text.layer_label(e)
    local g = groups[label]
    if not g then g = { label = label, count = 0, params = 0, bytes = 0 }; groups[label] = g; order[#order + 1] = g end
    local params, bytes = e.shape[1] * e.shape[2], layer_bytes[name] or 0
    g.count, g.params, g.bytes = g.count + 1, g.params + params, g.bytes + bytes
    q_params, q_bytes = q_params + params, q_bytes + bytes
    names[#names + 1] = name
  end
  table.sort(order, function(a, b) return text.natural_less(a.label, b.label) end)
  local d_params, d_bytes, d_count = 0, 0, 0
  for name, t in pairs(stored) do
    if not owner[name] then
      local dt = dense[name]
      d_params, d_bytes, d_count = d_params + (dt and dt:numel() or t.numel), d_bytes + t.bytes, d_count + 1
    end
  end
  if #order > 0 then
    print(("  quantized     %d linears, %.0f weights, %.3f bits per weight stored (codes, scales, signs)"):format(
      #names, q_params, q_bytes * 8 / q_params))
    for _, g in ipairs(order) do
      print(("    %-14s %4d linears  %5.1f%% of the weights  %.3f bpw  %s"):format(g.label, g.count,
        100 * g.params / q_params, g.bytes * 8 / g.params, text.human_bytes(g.bytes)))
    end
    if quant and quant.bpw then print(("    target       %s bpw"):format(tostring(quant.bpw))) end
  end
  print(("  dense         %d tensors, %.0f values, %s"):format(d_count, d_params, text.human_bytes(d_bytes)))
  local bf16 = 2 * (q_params + d_params)
  print(("  size          %s of safetensors files = %.2fx the model in bf16 (%s)%s"):format(
    text.human_bytes(disk), disk / math.max(bf16, 1), text.human_bytes(bf16),
    q_params > 0 and ("; quantized linears %s vs %s in bf16"):format(text.human_bytes(q_bytes), text.human_bytes(2 * q_params)) or ""))
  -- tokenizer and chat template
  local tok_desc = "none (pass --tokenizer to eval/generate)"
  for _, f in ipairs({ "tokenizer.json", "tokenizer.model" }) do
    if fs.exists(fs.join(dir, f)) then
      local ok, tok = pcall(require("glq.tokenizer").load, fs.join(dir, f))
      tok_desc = ok and ("%s (%s, %d tokens)"):format(f, tok:kind(), tok:n_vocab()) or (f .. " (unreadable: " .. tostring(tok) .. ")")
      break
    end
  end
  local tc = json.read_file(fs.join(dir, "tokenizer_config.json"))
  local fmt = type(tc) == "table" and require("glq.chat").recognize(tc.chat_template)
  print(("  tokenizer     %s; chat template: %s"):format(tok_desc,
    fmt and fmt.name or (type(tc) == "table" and tc.chat_template and "not recognised") or "none"))
  local qc = json.read_file(fs.join(dir, "quantize_config.json"))
  if type(qc) == "table" then
    local notes = {}
    if qc.calibration and qc.nsamples and qc.seqlen then
      notes[#notes + 1] = ("calibration %s, %s x %s tokens"):format(tostring(qc.calibration), tostring(qc.nsamples), tostring(qc.seqlen))
    end
    if qc.total_time_s then notes[#notes + 1] = "in " .. require("glq.progress").fmt_time(qc.total_time_s) end
    print(("  made by       %s from %s%s"):format(qc.tool_version and "glq " .. tostring(qc.tool_version) or "?",
      tostring(qc.source_model or "?"), #notes > 0 and " (" .. table.concat(notes, ", ") .. ")" or ""))
  end
  if opts.layers then
    table.sort(names, text.natural_less)
    for _, name in ipairs(names) do
      local e = layers[name]
      print(("    %s  %s  %dx%d  %.3f bpw"):format(name, text.layer_label(e),
        e.shape[1], e.shape[2], (layer_bytes[name] or 0) * 8 / (e.shape[1] * e.shape[2])))
    end
  end
end

local path = opts.file
if fs.is_dir(path) then return summarize((path:gsub("/+$", ""))) end
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
    if key == "name" then return text.natural_less(a.name, b.name) end
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
-- names are padded by hand: string.format's widths stop at 99
local function row(name, dtype, shape, size)
  return name .. string.rep(" ", width - #name) .. ("  %-6s  %-14s  %s"):format(dtype, shape, size)
end
print(row("name", "dtype", "shape", "size"))
for _, r in ipairs(rows) do
  local shape = #r.shape > 0 and table.concat(r.shape, "x") or "scalar"
  print(row(r.name, r.dtype, shape, human(r.nbytes)))
end
print(("%s: %s, %d tensors, %.0f parameters, %s"):format(path, header, #rows, params, human(bytes)))
