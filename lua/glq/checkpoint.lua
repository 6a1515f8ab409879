-- Quantized checkpoints: the directory format (docs/format.md), its atomic writer, resumable
-- partial runs and the reader (ours, glq 0.2.7 pow2-padded, glq >= 0.2.9 block-diagonal, HiF4).
--
-- A layer entry is a plain table:
--   E8:   {format="e8", bits=2|3|4, transform=, shape={m,n}, bias=, codebook=nil|"e8p" (QuIP#'s E8P book),
--          artifacts={Qidxs=i16, Qidxs2=i16|nil, SU=f16, SV=f16, Wscale=f32 0-d, inv_resid_scale=f32 0-d|nil}}
--   trellis: {format="trellis", bits=2|3|4, variant="3inst"|"hyb", transform=, shape={m,n}, bias=,
--          artifacts={trellis_packed=i16 ((m32/16)(n32/16), 16·bits), SU=f16 (m32), SV=f16 (n32), Wscale=f32 0-d,
--          tlut=f16 (512, 2) for hyb}} (m32, n32: m, n rounded up to multiples of 32; glq 0.8.16's layout)
--   HiF4: {format="hif4", pack={e6m2=, e1_8_packed=, e1_16_packed=, s1p2_packed= (u8), shape={m,n}},
--          sv=±1 tensor|nil (RHT signs), rht_seed=, bias=}
-- How each format's entries map to tensors, are read from a file and become linears is its
-- glq.formats entry's business (tensors, entry, read, store, config); this module does the rest.
local glq = require "glq"
local fs = require "glq.fs"
local json = require "glq.json"
local modelcfg = require "glq.modelcfg"
local formats = require "glq.formats"
local ffi = require "ffi" -- getpid is declared by glq.fs

local M = {}

M.PARTIAL = ".glq-partial"
-- quantization_config.format of our own layout: no quant_method, so transformers refuses to load it
-- ("no `quant_method` attribute") instead of letting the Python glq misread it (docs/format.md)
M.NATIVE = "glq-native"

local HIF4_LAST = formats.checks.HIF4_LAST
-- files a finished checkpoint may contain besides tokenizer files; removed before a rewrite
local OUR_FILES = { "config.json", "hif4_config.json", "quantize_config.json", "model.safetensors" }

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local check_tensor, shape_str = formats.checks.check_tensor, formats.checks.shape_str
local pow2ceil, is_pow2 = formats.checks.pow2ceil, formats.checks.is_pow2

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function deep_copy(v)
  if type(v) ~= "table" or glq.is_tensor(v) then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return setmetatable(t, getmetatable(v))
end

local function round2(x) return math.floor(x * 100 + 0.5) / 100 end

local function finite(x) return type(x) == "number" and x == x and x > -math.huge and x < math.huge end

-- a JSON-able copy of per-layer stats: non-finite numbers become "inf", "-inf" or "nan"
local function json_safe(v)
  if type(v) == "number" and not finite(v) then
    return v ~= v and "nan" or (v > 0 and "inf" or "-inf")
  end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do
    if type(x) ~= "userdata" and type(x) ~= "function" then t[k] = json_safe(x) end
  end
  return t
end

-- ---- model shapes from config ----

-- (out, in) of a linear module from a normalized config, or nil for modules we cannot place
local function expected_shape(c, name)
  if not c then return nil end
  if name == "lm_head" then return { c.vocab, c.dim } end
  local l, role = modelcfg.parse_linear_name(name)
  if not l or l >= c.n_layers then return nil end
  local q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
  local t = { q = { q, c.dim }, k = { kv, c.dim }, v = { kv, c.dim }, o = { c.dim, q },
    gate = { c.ffn_dim, c.dim }, up = { c.ffn_dim, c.dim }, down = { c.dim, c.ffn_dim } }
  return t[role]
end
M.expected_shape = expected_shape

local function try_normalize(hf)
  if type(hf) ~= "table" then return nil end
  local ok, c = pcall(modelcfg.from_hf, hf, "config.json")
  return ok and c or nil
end

-- ---- layer entries <-> tensors ----

-- the glq.formats entry of a stored format, or nil
local function stored_format(fmt)
  local f = fmt ~= nil and formats.get(fmt)
  return f and f.read and f or nil
end

-- "a, b <word> c"
local function listing(t, word)
  if #t < 2 then return t[1] or "" end
  return table.concat(t, ", ", 1, #t - 1) .. " " .. word .. " " .. t[#t]
end

local function stored_names()
  local t = {}
  for i, f in ipairs(formats.stored) do t[i] = f.name end
  return listing(t, "or")
end

-- Validates a layer entry and returns its tensors as {field = tensor} plus its JSON-able record
-- {format, bits, transform, shape, label, rht_seed, ...}. expect = {m, n} from the model config or nil.
local function layer_tensors(name, e, expect)
  local where = "checkpoint: layer " .. name
  if type(e) ~= "table" then fail("%s: entry must be a table, got %s", where, type(e)) end
  local fmt = e.format or (e.artifacts and "e8") or (e.pack and "hif4") -- entries made before format was set
  local f = stored_format(fmt)
  if not f then fail("%s: unknown format '%s' (expected %s)", where, tostring(fmt), stored_names()) end
  local function settle_shape(given, from_tensors)
    local s = given or expect or from_tensors
    if expect and given and not same_shape(given, expect) then
      fail("%s: shape %s differs from %s implied by config.json", where, shape_str(given), shape_str(expect))
    end
    return s[1], s[2]
  end
  local out, frec, m, n = f.tensors(where, e, settle_shape)
  local rec = { format = fmt, rht_seed = e.rht_seed }
  for k, v in pairs(frec) do rec[k] = v end
  if e.bias ~= nil then out.bias = check_tensor(where, "bias", e.bias, nil, { m }) end
  rec.shape = { m, n }
  return out, rec
end

-- the entry back from {field = tensor} and its record (inverse of layer_tensors)
local function layer_entry(rec, get)
  local e = { format = rec.format, shape = { rec.shape[1], rec.shape[2] }, rht_seed = rec.rht_seed,
    bias = get("bias"), stats = rec.stats, extra = rec.extra }
  formats.get(rec.format).entry(rec, get, e)
  return e
end

-- stored bits per weight of a validated record: code bits over the stored (padded) size
local function record_bpw(rec) return formats.get(rec.format).record_bpw(rec) end

-- stored bits per weight of a layer entry (validates it)
function M.stored_bpw(name, entry)
  local _, rec = layer_tensors(name, entry, nil)
  return record_bpw(rec)
end

-- Why the Python glq's loader would misread block-diagonal E8 layers (nil when it reads them): it
-- stores dims unpadded, and it picks block-diagonal vs power-of-two padding for every layer from
-- the first .Qidxs tensor's row count alone (non-power-of-two -> block-diagonal).
function M.python_misreads(names, recs)
  local first, mixed
  for _, name in ipairs(names) do -- names are sorted, as the tensors are in the file
    local r = recs[name]
    if r.format == "e8" then
      local m, n = r.shape[1], r.shape[2]
      if m % 8 ~= 0 or n % 8 ~= 0 then return string.format("layer %s is %dx%d, not multiples of 8", name, m, n) end
      first = first or r
      if not (is_pow2(m) and is_pow2(n)) then mixed = name end
    end
  end
  if first and mixed and is_pow2(first.shape[1]) then
    return string.format("its first layer has %d rows, a power of two, so it would pad %s to powers of two", first.shape[1], mixed)
  end
  return nil
end

-- The layer a --glq-compat file stores dense to make glq < 0.2.13 refuse it: the smallest quantized
-- one (ties: the first name); nil with fewer than two (glq >= 0.2.13 must still find a quantized one).
local function python_marker_layer(names, recs)
  if #names < 2 then return nil end
  local best
  for _, name in ipairs(names) do
    local s = recs[name].shape
    if not best or s[1] * s[2] < recs[best].shape[1] * recs[best].shape[2] then best = name end
  end
  return best
end

-- glq 0.2.7 pads block-diagonal layers to powers of two and decodes them silently wrong, and no config
-- field or quantized layer's tensor makes it refuse a file that glq >= 0.2.13 reads. But it turns every
-- nn.Linear except lm_head into its E8 module (glq >= 0.2.13: only those with a .Qidxs), and the shape
-- of each tensor loaded into a module is checked. So layer `name` is stored as the dense f32 weight
-- our forward decodes (the same function; glq >= 0.2.13 keeps it an nn.Linear) plus P.SU one entry
-- longer than glq 0.2.7's power-of-two SU buffer: 0.2.7 raises "size mismatch for SU", glq >= 0.2.13
-- ignores it (an unexpected key). Replaces the layer's tensors in `tensors`.
local function mark_for_python(name, rec, tensors)
  local m, n = rec.shape[1], rec.shape[2]
  local e = layer_entry(rec, function(f) return tensors[name .. "." .. f] end)
  e.bias = nil
  local lin = require("glq.model").quantized_linear(e, m, n, name)
  local eye = glq.zeros("f32", { n, n })
  local p = ffi.cast("float *", eye:_rawptr())
  for i = 0, n - 1 do p[i * n + i] = 1 end
  local w = lin:forward(eye):transpose():contiguous() -- rows of forward(I) are W's columns
  for k in pairs(tensors) do
    if k:sub(1, #name + 1) == name .. "." and k ~= name .. ".bias" then tensors[k] = nil end
  end
  tensors[name .. ".weight"] = w
  tensors[name .. ".SU"] = glq.full("f16", { pow2ceil(m) + 1 }, 1)
end

-- ---- output directories ----

local function dir_has(dir, name) return fs.exists(fs.join(dir, name)) end

local function is_finished(dir)
  local cfgp = fs.join(dir, "config.json")
  if not fs.exists(cfgp) then return false end
  if dir_has(dir, "hif4_config.json") then return true end
  local cfg = json.read_file(cfgp)
  local qc = type(cfg) == "table" and cfg.quantization_config
  return type(qc) == "table" and (qc.quant_method == "glq" or qc.format == M.NATIVE)
end

-- "absent" | "empty" | "partial" | "finished" | "foreign" | "file"
function M.inspect(dir)
  if not fs.exists(dir) then return "absent" end
  if not fs.is_dir(dir) then return "file" end
  local names = fs.list(dir)
  if #names == 0 then return "empty" end
  if is_finished(dir) then return "finished" end
  if fs.is_dir(fs.join(dir, M.PARTIAL)) then return "partial" end
  return "foreign"
end

local function check_output(dir, state, opts, from_partial)
  if state == "file" then fail("%s exists and is not a directory", dir) end
  if state == "foreign" then
    fail("%s exists and is not a glq output directory (it is not empty and has neither a glq config.json nor %s); choose another output directory", dir, M.PARTIAL)
  end
  if state == "finished" and not opts.overwrite then
    fail("%s already holds a finished checkpoint; pass --overwrite to replace it", dir)
  end
  if state == "partial" and not from_partial and not opts.overwrite then
    fail("%s holds an unfinished quantization run; pass --resume to continue it (or --overwrite to start over)", dir)
  end
end

local function pid() return ffi.C.getpid() end

-- moves every file of src into dst (existing directory), config.json last, then removes src
local function move_into(src, dst)
  for _, f in ipairs(OUR_FILES) do os.remove(fs.join(dst, f)) end -- config.json first: unfinished from here
  local last = false
  for _, f in ipairs(fs.list(src)) do
    if f == "config.json" then last = true else fs.rename(fs.join(src, f), fs.join(dst, f)) end
  end
  if last then fs.rename(fs.join(src, "config.json"), fs.join(dst, "config.json")) end
  os.remove(src)
end

-- ---- writer ----

local function json_file(path, v) fs.write_atomic(path, json.encode(v, { indent = 2 }) .. "\n") end

local function seed_json(s)
  if type(s) == "number" and s >= 0 and s < 2 ^ 53 and s % 1 == 0 then return s end
  return s ~= nil and tostring(s) or nil
end

-- Everything to write, validated, before any file is touched.
local function build(spec)
  if type(spec) ~= "table" then fail("checkpoint.write: spec must be a table") end
  if type(spec.config) ~= "table" then fail("checkpoint.write: spec.config (the source config.json table) is required") end
  local c = try_normalize(spec.config)
  local tensors, recs, names = {}, {}, {}
  for name in pairs(spec.layers or {}) do names[#names + 1] = name end
  table.sort(names)
  local wsum, bsum, n_reference = 0, 0, 0
  for _, name in ipairs(names) do
    local ts, rec = layer_tensors(name, spec.layers[name], expected_shape(c, name))
    for f, t in pairs(ts) do tensors[name .. "." .. f] = t end
    recs[name] = rec
    local w = rec.shape[1] * rec.shape[2]
    wsum, bsum = wsum + w, bsum + record_bpw(rec) * w
    if formats.get(rec.format).reference_layout then n_reference = n_reference + 1 end
  end
  local dense_format = {}
  for name, t in pairs(spec.dense or {}) do
    if tensors[name] then fail("checkpoint: dense tensor %s collides with a quantized layer's tensor", name) end
    if type(t) == "table" and t.format == "q8_0" then
      -- ggml Q8_0 blocks stored as U8 (rows, cols/32*34) under the tensor's own name
      local r, cl = t.shape and t.shape[1], t.shape and t.shape[2]
      if type(r) ~= "number" or type(cl) ~= "number" or cl % 32 ~= 0 then
        fail("checkpoint: dense tensor %s: q8_0 needs shape = {rows, cols} with cols a multiple of 32", name)
      end
      tensors[name] = check_tensor("checkpoint: dense tensor " .. name, "blocks", t.blocks, "u8", { r, cl / 32 * 34 })
      dense_format[name] = "q8_0"
    elseif type(t) == "table" and t.format == "hif4" then
      -- HiF4 fields (no rotation) stored under the tensor's name: NAME.e6m2, NAME.e1_8_packed, ...
      local p, where = t.pack, "checkpoint: dense tensor " .. name
      local r, cl = t.shape and t.shape[1], t.shape and t.shape[2]
      if type(p) ~= "table" or type(r) ~= "number" or type(cl) ~= "number" or p.signs ~= nil then
        fail("%s: hif4 needs shape = {rows, cols} and an unrotated pack", where)
      end
      local nb = math.ceil(cl / 64)
      tensors[name .. ".e6m2"] = check_tensor(where, "e6m2", p.e6m2, "u8", { r, nb })
      for f, last in pairs(HIF4_LAST) do tensors[name .. "." .. f] = check_tensor(where, f, p[f], "u8", { r, nb, last }) end
      dense_format[name] = "hif4"
    elseif not glq.is_tensor(t) then
      fail("checkpoint: dense tensor %s must be a tensor or a q8_0/hif4 entry, got %s", name, type(t))
    else
      tensors[name] = t
    end
  end
  local bpw = spec.bpw or (wsum > 0 and bsum / wsum) or 0
  local layer_bpw, seeds, stats_n, sqnr_sum = {}, {}, 0, 0
  for _, name in ipairs(names) do
    local rec, e = recs[name], spec.layers[name]
    layer_bpw[name] = rec.label
    if rec.rht_seed ~= nil then seeds[name] = seed_json(rec.rht_seed) end
    local st = e.stats or (e.artifacts and e.artifacts.stats)
    if type(st) == "table" and finite(st.sqnr_db) then
      stats_n, sqnr_sum = stats_n + 1, sqnr_sum + st.sqnr_db
    end
  end

  -- only HiF4 layers: the HiF4 reference tool's layout (hif4_config.json, no quantization_config)
  local hif4_only = #names > 0 and n_reference == #names
  local cfg = deep_copy(spec.config)
  cfg.use_cache = true
  local qc = { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = round2(bpw), layer_bpw = layer_bpw }
  local compat = spec.python_compat
  if compat then
    -- what the Python glq (>= 0.2.9) reads: its block-diagonal E8 layers, or (glq 0.8.16, one codebook
    -- per file) trellis layers, and float tensors only
    local any_trellis = false
    for _, name in ipairs(names) do any_trellis = any_trellis or recs[name].format == "trellis" end
    for _, name in ipairs(names) do
      local rec = recs[name]
      if any_trellis then -- glq 0.8.16: one codebook per model; its trellis needs no padding and block-diagonal RHTs
        if rec.format ~= "trellis" or rec.transform ~= "block-diagonal" or rec.m_pad ~= rec.shape[1] or rec.n_pad ~= rec.shape[2]
          or rec.variant ~= recs[names[1]].variant then
          fail("checkpoint: layer %s: a trellis file for the Python glq holds trellis layers only, all of one variant, with "
            .. "the block-diagonal transform and sides that are multiples of 32", name)
        end
      elseif rec.format ~= "e8" or rec.transform ~= "block-diagonal" then
        fail("checkpoint: layer %s is %s; a file for the Python glq holds block-diagonal E8 layers only", name,
          rec.format == "e8" and ("E8 with transform " .. rec.transform) or rec.format)
      end
    end
    local marked = python_marker_layer(names, recs)
    local rest = {}
    for _, name in ipairs(names) do if name ~= marked then rest[#rest + 1] = name end end
    local why = not marked and "it has fewer than two quantized layers, too few to mark it for glq < 0.2.13"
      or M.python_misreads(rest, recs)
    if why then
      io.stderr:write("glq: warning: the Python glq would misread this checkpoint (" .. why
        .. "); it is written in our layout, which the Python glq refuses\n")
      compat = false
    else
      mark_for_python(marked, recs[marked], tensors)
      layer_bpw[marked], recs[marked], names = nil, nil, rest
      qc.python_glq_marker = marked .. ".SU"
    end
  end
  -- each format's last rewrite of its tensors for the file's layout (the Python glq's or ours)
  for _, name in ipairs(names) do
    local store = formats.get(recs[name].format).store
    if store then store(name, recs[name], tensors, compat) end
  end
  if compat then
    if next(dense_format) then fail("checkpoint: a file for the Python glq cannot hold q8_0 or hif4 dense tensors") end
  else
    qc.quant_method = nil -- our layout: no quant_method (see M.NATIVE)
    qc.format = M.NATIVE
    if next(dense_format) then qc.dense_format = dense_format end
  end
  for _, f in ipairs(formats.stored) do -- each format's quantization_config fields
    if f.config then f.config(qc, names, recs, compat) end
  end
  if hif4_only then cfg.quantization_config = nil else cfg.quantization_config = qc end

  local qmeta = deep_copy(spec.quantize_config or {})
  for k, v in pairs({ quant_method = "glq", codebook = "e8_shell", codesz = 8 }) do
    if qmeta[k] == nil and not hif4_only then qmeta[k] = v end
  end
  if hif4_only and qmeta.format == nil then qmeta.format = "HiF4" end
  qmeta.bpw = qmeta.bpw or round2(bpw)
  qmeta.layer_bpw = layer_bpw
  qmeta.n_quantized_layers = #names
  if stats_n > 0 then qmeta.avg_sqnr_db = round2(sqnr_sum / stats_n) end
  if next(seeds) then qmeta.hif4_rht_seeds = seeds end

  local meta = { format = "pt", quantization = hif4_only and "HiF4" or "glq" }
  local hif4cfg = hif4_only and { format = "HiF4", filename = "model.safetensors",
    skip_name_keywords = json.array(deep_copy(spec.hif4_skip_keywords or {})) } or nil
  if hif4cfg and next(dense_format) then hif4cfg.dense_format = dense_format end -- no quantization_config here

  -- tokenizer files: name -> contents, or a list of source paths
  local tok = {}
  local tf = spec.tokenizer_files or {}
  if #tf > 0 then
    for _, p in ipairs(tf) do tok[fs.basename(p)] = { path = p } end
  else
    for k, s in pairs(tf) do
      if type(s) ~= "string" then fail("checkpoint: tokenizer file %s: contents must be a string", tostring(k)) end
      tok[k] = { data = s }
    end
  end
  for k in pairs(tok) do
    if k:find("/", 1, true) or k == ".." or k == "." or k == "" then fail("checkpoint: bad tokenizer file name '%s'", k) end
    for _, f in ipairs(OUR_FILES) do
      if k == f then fail("checkpoint: tokenizer file name '%s' collides with a checkpoint file", k) end
    end
  end
  return { tensors = tensors, meta = meta, config = cfg, qmeta = qmeta, hif4 = hif4cfg, tok = tok }
end

local function write_files(tmp, b)
  glq.save_safetensors(fs.join(tmp, "model.safetensors"), b.tensors, b.meta)
  local toknames = {}
  for k in pairs(b.tok) do toknames[#toknames + 1] = k end
  table.sort(toknames)
  for _, k in ipairs(toknames) do
    local t = b.tok[k]
    local data = t.data
    if not data then
      local err
      data, err = fs.read(t.path)
      if not data then fail("checkpoint: cannot read tokenizer file %s: %s", t.path, tostring(err)) end
    end
    fs.write_atomic(fs.join(tmp, k), data)
  end
  json_file(fs.join(tmp, "quantize_config.json"), b.qmeta)
  if b.hif4 then json_file(fs.join(tmp, "hif4_config.json"), b.hif4) end
  json_file(fs.join(tmp, "config.json"), b.config) -- last: its presence marks a finished checkpoint
end

local function write_dir(dir, spec, opts, from_partial)
  opts = opts or {}
  dir = dir:gsub("/+$", "")
  local state = M.inspect(dir)
  check_output(dir, state, opts, from_partial)
  local b = build(spec)
  local tmp = string.format("%s.tmp.%d", dir, pid())
  fs.remove_tree(tmp)
  fs.mkdir_p(tmp)
  local ok, err = pcall(write_files, tmp, b)
  require("glq.events").emit("checkpoint.written", { dir = dir, tmp = tmp })
  if ok and state == "absent" then
    ok, err = pcall(fs.rename, tmp, dir)
  elseif ok then
    ok, err = pcall(move_into, tmp, dir)
    if ok then fs.remove_tree(fs.join(dir, M.PARTIAL)) end
  end
  if not ok then
    fs.remove_tree(tmp)
    -- name the file the user asked for, not its temporary directory
    if type(err) == "string" then err = err:gsub(tmp:gsub("%p", "%%%0") .. "/", (dir:gsub("%%", "%%%%")) .. "/") end
    error(err, 0)
  end
  return dir
end

-- Writes a finished checkpoint (see the header and docs/format.md). opts.overwrite replaces a
-- finished one. Nothing under dir looks finished until config.json appears, last.
function M.write(dir, spec, opts) return write_dir(dir, spec, opts, false) end

-- ---- resumable runs ----

local Partial = {}
Partial.__index = Partial

local function fingerprint_diff(old, new)
  if type(old) ~= "table" or type(new) ~= "table" then
    if json.encode(old) ~= json.encode(new) then
      return string.format("options were %s, now %s", json.encode(old), json.encode(new))
    end
    return nil
  end
  local keys, seen = {}, {}
  for k in pairs(old) do if not seen[k] then seen[k] = true keys[#keys + 1] = k end end
  for k in pairs(new) do if not seen[k] then seen[k] = true keys[#keys + 1] = k end end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local a, b = old[k], new[k]
    if json.encode(a) ~= json.encode(b) then
      return string.format("option '%s' was %s, now %s", tostring(k),
        a == nil and "unset" or json.encode(a), b == nil and "unset" or json.encode(b))
    end
  end
  return nil
end

-- Opens or starts a resumable run in dir. fingerprint: a JSON-able table of the options that
-- determine the result. opts.resume continues an unfinished run; opts.overwrite starts over.
-- removes DIR.tmp.<pid> siblings left by a run that was killed while writing its checkpoint
local function remove_stale_tmp(dir)
  local base = fs.basename(dir)
  for _, f in ipairs(fs.list(fs.dirname(dir)) or {}) do
    local p = f:sub(1, #base + 5) == base .. ".tmp." and tonumber(f:sub(#base + 6):match("^(%d+)$"))
    if p and p ~= pid() and not fs.pid_alive(p) then fs.remove_tree(fs.join(fs.dirname(dir), f)) end
  end
end

function M.partial(dir, fingerprint, opts)
  opts = opts or {}
  dir = dir:gsub("/+$", "")
  remove_stale_tmp(dir)
  local state = M.inspect(dir)
  check_output(dir, state, { overwrite = opts.overwrite }, true)
  local pdir = fs.join(dir, M.PARTIAL)
  local self = setmetatable({ dir = dir, pdir = pdir, resumed = false }, Partial)
  if state == "partial" and not opts.overwrite then
    if not opts.resume then
      fail("%s holds an unfinished quantization run; pass --resume to continue it (or --overwrite to start over)", dir)
    end
    local st, err = json.read_file(fs.join(pdir, "state.json"))
    if st == nil and not fs.exists(fs.join(pdir, "state.json")) then
      -- interrupted before its first state.json: nothing was saved, start afresh
      st = { glq_partial = 1, fingerprint = fingerprint, layers = {}, values = {} }
    end
    if type(st) ~= "table" or type(st.layers) ~= "table" then
      fail("%s: unreadable %s/state.json (%s); pass --overwrite to start over", dir, M.PARTIAL, tostring(err))
    end
    local diff = fingerprint_diff(st.fingerprint, fingerprint)
    if diff then
      fail("%s: cannot resume: the unfinished run used different options: %s (rerun with the original options, or --overwrite to start over)", dir, diff)
    end
    self.state, self.resumed = st, true
  else
    if state == "finished" then os.remove(fs.join(dir, "config.json")) end -- overwrite: no longer finished
    fs.remove_tree(pdir)
    fs.mkdir_p(fs.join(pdir, "layers"))
    require("glq.events").emit("partial.started", { dir = dir })
    self.state = { glq_partial = 1, fingerprint = fingerprint, layers = {}, values = {} }
    self:_save_state()
  end
  return self
end

function Partial:_save_state()
  json_file(fs.join(self.pdir, "state.json"), self.state)
end

-- names of the layers saved so far, sorted
function Partial:names()
  local t = {}
  for k in pairs(self.state.layers) do t[#t + 1] = k end
  table.sort(t)
  return t
end

function Partial:has(name) return self.state.layers[name] ~= nil end

-- saves one layer's result: its tensors first, then the state that lists it
function Partial:save_layer(name, entry)
  local ts, rec = layer_tensors(name, entry, nil)
  local old = self.state.layers[name]
  local index = old and old.index or (self.state.next_index or 1)
  local file = string.format("layers/%05d.safetensors", index)
  glq.save_safetensors(fs.join(self.pdir, file), ts, { module = name, format = rec.format })
  rec.index, rec.file = index, file
  rec.checksum = glq.file_checksum(fs.join(self.pdir, file)) -- verified when the run resumes
  local st = entry.stats or (entry.artifacts and entry.artifacts.stats)
  rec.stats = type(st) == "table" and json_safe(st) or nil
  rec.extra = json_safe(entry.extra)
  rec.rht_seed = seed_json(rec.rht_seed)
  self.state.layers[name] = rec
  self.state.next_index = math.max(self.state.next_index or 1, index + 1)
  self:_save_state()
end

-- the saved entry of a layer (tensors mapped from disk), or nil
function Partial:load_layer(name)
  local rec = self.state.layers[name]
  if not rec then return nil end
  local path = fs.join(self.pdir, rec.file)
  if not fs.exists(path) then fail("%s: layer %s is listed in state.json but %s is missing", self.dir, name, path) end
  if type(rec.checksum) ~= "string" or glq.file_checksum(path) ~= rec.checksum then
    fail("%s: the saved layer %s (%s) does not match its checksum in state.json (the file was changed or damaged); pass --overwrite to start over",
      self.dir, name, path)
  end
  local ts = glq.load_safetensors(path)
  return layer_entry(rec, function(f) return ts[f] end)
end

-- small JSON-able values the caller wants to keep with the run (e.g. an allocation)
function Partial:put(key, value)
  self.state.values = self.state.values or {}
  self.state.values[key] = value
  self:_save_state()
end
function Partial:get(key) return (self.state.values or {})[key] end

-- writes the final checkpoint; layers missing from spec.layers are taken from the saved ones
function Partial:finish(spec)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.layers = {}
  for k, v in pairs(spec.layers or {}) do s.layers[k] = v end
  for _, name in ipairs(self:names()) do
    if s.layers[name] == nil then s.layers[name] = self:load_layer(name) end
  end
  write_dir(self.dir, s, { overwrite = true }, true)
  fs.remove_tree(self.pdir)
  return self.dir
end

-- ---- reader ----

-- Reads a checkpoint directory: {config (normalized), hf_config, quant, layers, dense, tokenizer_path, hif4}
function M.read(dir)
  dir = dir:gsub("/+$", "")
  local cfgp = fs.join(dir, "config.json")
  if not fs.exists(cfgp) then
    if fs.is_dir(fs.join(dir, M.PARTIAL)) then
      fail("%s: unfinished quantization run (no config.json yet); finish it with --resume", dir)
    end
    fail("%s: no config.json: not a checkpoint directory", dir)
  end
  local hf, err = json.read_file(cfgp)
  if type(hf) ~= "table" then fail("%s", tostring(err)) end
  local c = modelcfg.from_hf(hf, cfgp)
  local quant = hf.quantization_config
  local hif4
  if fs.exists(fs.join(dir, "hif4_config.json")) then
    hif4, err = json.read_file(fs.join(dir, "hif4_config.json"))
    if type(hif4) ~= "table" then fail("%s", tostring(err)) end
  end
  if quant ~= nil then
    if type(quant) ~= "table" then fail("%s: quantization_config must be an object", cfgp) end
    if quant.quant_method ~= "glq" and not (quant.quant_method == nil and quant.format == M.NATIVE) then
      fail("%s: quant_method '%s' is not supported (glq is)", cfgp, tostring(quant.quant_method))
    end
    local codesz, known = {}, {} -- the codebook names of the formats' files and their codesz
    for _, f in ipairs(formats.stored) do
      for _, cb in ipairs(f.codebooks or {}) do codesz[cb[1]], known[#known + 1] = cb[2], cb[1] end
    end
    codesz = codesz[quant.codebook or "e8_shell"] -- glq's default codebook
    if not codesz then
      fail("%s: codebook '%s' is not supported (%s are)", cfgp, tostring(quant.codebook), listing(known, "and"))
    end
    if quant.codesz ~= nil and quant.codesz ~= codesz then fail("%s: codesz %s is not supported (%d is)", cfgp, tostring(quant.codesz), codesz) end
  end
  if hif4 and hif4.filename ~= nil and not fs.inside(hif4.filename) then
    fail("%s: filename %s must name a file inside the checkpoint directory", fs.join(dir, "hif4_config.json"), json.encode(hif4.filename))
  end
  local file = fs.join(dir, hif4 and hif4.filename or "model.safetensors")
  local tensors
  if fs.exists(file) then
    tensors = glq.load_safetensors(file)
  elseif fs.exists(fs.join(dir, "model.safetensors.index.json")) then
    file = fs.join(dir, "model.safetensors.index.json")
    tensors = glq.load_safetensors_index(file)
  else
    fail("%s: missing %s", dir, fs.basename(file))
  end

  -- quantized modules are the prefixes of their format's tensor_field (.Qidxs, .trellis_packed, .e6m2;
  -- a HiF4 dense tensor's fields aside)
  local dense_format = (quant and quant.dense_format) or (hif4 and hif4.dense_format) or {}
  if type(dense_format) ~= "table" then fail("%s: dense_format must be an object", cfgp) end
  local marks = {}
  for _, f in ipairs(formats.stored) do marks[f.tensor_field] = f end
  local layers, owned = {}, {}
  for k in pairs(tensors) do
    local p, f = k:match("^(.+)%.([%w_]+)$")
    if dense_format[p] == "hif4" then
      owned[k] = true
    elseif marks[f] then
      layers[p] = marks[f]
    end
    if f == "Qidxs_e8p" then
      fail("%s: %s: glq 0.8.16's packed E8P layers (its GPU quantizer's Qidxs_e8p) are not read yet (glq.e8p.unpack converts the indices)", file, k)
    end
  end
  if quant and quant.layer_bpw then
    for name in pairs(quant.layer_bpw) do
      if not layers[name] then fail("%s: missing tensor %s.Qidxs (listed in layer_bpw)", file, name) end
    end
  end
  local out = { config = c, hf_config = hf, quant = quant, hif4 = hif4, layers = {}, dense = {} }
  local x = { file = file, cfgp = cfgp, quant = quant or {}, native = quant ~= nil and quant.format == M.NATIVE }
  for name, f in pairs(layers) do
    local function get(fld) owned[name .. "." .. fld] = true return tensors[name .. "." .. fld] end
    x.exp = expected_shape(c, name)
    local rec = f.read(name, get, x)
    local bias = get("bias")
    if bias then check_tensor(file .. ": " .. name, name .. ".bias", bias, nil, { rec.shape[1] }) end
    out.layers[name] = layer_entry(rec, get)
  end
  for k, t in pairs(tensors) do
    if not owned[k] then
      local p, f = k:match("^(.+)%.([%w_]+)$")
      if p and layers[p] then
        if not layers[p].fields[f] then
          fail("%s: unsupported tensor %s next to the quantized layer %s (N-stage RVQ and other newer glq layouts are not supported)", file, k, p)
        end
      end
      out.dense[k] = t
    end
  end
  -- --glq-compat's refusal marker for glq < 0.2.13 (see mark_for_python): a dense linear's stray SU
  local mk = quant and quant.python_glq_marker
  if mk ~= nil then
    local p = type(mk) == "string" and mk:match("^(.+)%.SU$")
    local t = p and out.dense[mk]
    if not (p and modelcfg.parse_linear_name(p) and out.dense[p .. ".weight"] and t and #t:shape() == 1) then
      fail("%s: python_glq_marker %s must name the SU tensor (1-d) of a linear stored dense", cfgp, json.encode(mk))
    end
    out.dense[mk] = nil
  end
  -- dense tensors stored in another format (our layout): decoded to f32, Q8_0's raw blocks kept
  out.dense_raw = {}
  for k, f in pairs(dense_format) do
    if f == "hif4" then
      -- HiF4 fields under the tensor's name, its shape from config.json (embedding, head or a linear)
      local s = (k == "model.embed_tokens.weight" or k == "lm_head.weight") and { c.vocab, c.dim }
        or k:match("%.weight$") and expected_shape(c, k:sub(1, -8))
      if not s then fail("%s: dense_format hif4 of %s: not an embedding, head or linear weight", cfgp, k) end
      local nb, p = math.ceil(s[2] / 64), { shape = s }
      p.e6m2 = check_tensor(file, k .. ".e6m2", tensors[k .. ".e6m2"], "u8", { s[1], nb })
      for fld, last in pairs(HIF4_LAST) do p[fld] = check_tensor(file, k .. "." .. fld, tensors[k .. "." .. fld], "u8", { s[1], nb, last }) end
      out.dense[k] = glq.hif4.dequantize(p) -- the forward reads the decoded values (no HiF4 head kernel kept)
    else
      local t = out.dense[k]
      if not t then fail("%s: missing tensor %s (listed in dense_format)", file, k) end
      if f ~= "q8_0" then fail("%s: dense_format '%s' of %s is not supported (q8_0 and hif4 are)", cfgp, tostring(f), k) end
      local s = t:shape()
      if t:dtype() ~= "u8" or #s ~= 2 or s[2] % 34 ~= 0 then
        fail("%s: %s is q8_0 but has dtype %s and shape %s, expected u8 (rows, cols/32*34)", file, k, t:dtype(), shape_str(s))
      end
      out.dense[k] = glq.gguf.dequantize(t, "q8_0", { s[1], s[2] / 34 * 32 })
      out.dense_raw[k] = { format = "q8_0", blocks = t }
    end
  end
  -- no tensors of decoder layers the config does not have (a wrong num_hidden_layers would drop them)
  for k in pairs(tensors) do
    local l = tonumber(k:match("^model%.layers%.(%d+)%."))
    if l and l >= c.n_layers then
      fail("%s: tensor %s belongs to decoder layer %d, but %s says num_hidden_layers = %d", file, k, l, cfgp, c.n_layers)
    end
  end
  -- every decoder linear must be quantized or kept dense
  for l = 0, c.n_layers - 1 do
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local w = out.dense[name .. ".weight"]
      if not out.layers[name] and not w then
        fail("%s: missing tensor %s.Qidxs (quantized) or %s.weight (dense)", file, name, name)
      end
      if out.layers[name] and w then fail("%s: %s has both quantized tensors and a dense %s.weight", file, name, name) end
      local exp = expected_shape(c, name)
      if w and not same_shape(w:shape(), exp) then
        fail("%s: %s.weight has shape %s, config.json implies %s", file, name, shape_str(w:shape()), shape_str(exp))
      end
    end
  end
  local tp = fs.join(dir, "tokenizer.json")
  out.tokenizer_path = fs.exists(tp) and tp or nil
  return out
end

return M
