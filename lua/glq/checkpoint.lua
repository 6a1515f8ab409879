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
local glq = require "glq"
local fs = require "glq.fs"
local json = require "glq.json"
local modelcfg = require "glq.modelcfg"
local ffi = require "ffi" -- getpid is declared by glq.fs

local M = {}

M.TRANSFORM = "glq-hadamard-v1" -- our padding-free RHT (src/quant/rht.h): dims padded to multiples of 8 only
M.TRANSFORMS = { ["glq-hadamard-v1"] = true, ["block-diagonal"] = true, ["pow2-padded"] = true }
M.PARTIAL = ".glq-partial"
-- quantization_config.format of our own layout: no quant_method, so transformers refuses to load it
-- ("no `quant_method` attribute") instead of letting the Python glq misread it (docs/format.md)
M.NATIVE = "glq-native"

local E8_FIELDS = { "Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale" }
local HIF4_FIELDS = { "e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed" }
local TRELLIS_FIELDS = { "trellis_packed", "SU", "SV", "Wscale", "tlut" }
local HIF4_LAST = { e1_8_packed = 1, e1_16_packed = 2, s1p2_packed = 32 }
-- files a finished checkpoint may contain besides tokenizer files; removed before a rewrite
local OUR_FILES = { "config.json", "hif4_config.json", "quantize_config.json", "model.safetensors" }

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local function ceil8(d) return math.ceil(d / 8) * 8 end
local function pow2ceil(d) local p = 1 while p < d do p = p * 2 end return p end
local function is_pow2(d) return d >= 1 and pow2ceil(d) == d end

local function shape_str(s)
  if #s == 0 then return "()" end
  return "(" .. table.concat(s, ", ") .. ")"
end

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

-- a tensor field: dtype (nil = any float) and shape (nil = any; entries false = any size) checked
local function check_tensor(where, field, t, dtype, shape)
  if not glq.is_tensor(t) then fail("%s: %s must be a tensor, got %s", where, field, type(t)) end
  local dt = t:dtype()
  if dtype and dt ~= dtype then
    fail("%s: %s has dtype %s, expected %s", where, field, dt, dtype)
  elseif not dtype and dt ~= "f32" and dt ~= "f16" and dt ~= "bf16" and dt ~= "f64" then
    fail("%s: %s has dtype %s, expected a float dtype", where, field, dt)
  end
  if shape then
    local s = t:shape()
    local ok = #s == #shape
    for i = 1, #shape do if ok and shape[i] and s[i] ~= shape[i] then ok = false end end
    if not ok then
      local want = {}
      for i = 1, #shape do want[i] = shape[i] or "*" end
      fail("%s: %s has shape %s, expected %s", where, field, shape_str(s), shape_str(want))
    end
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

-- the stored (rows, cols) of the transformed weight for a transform: multiples of 8 for ours and for
-- `--glq-compat` block-diagonal (the same as glq >= 0.2.9's unpadded m x n for real models' dims)
local function stored_dims(transform, m, n)
  if transform == "pow2-padded" then return pow2ceil(m), pow2ceil(n) end
  return ceil8(m), ceil8(n)
end

-- whether stored (rows, cols) fit the transform; glq >= 0.2.9 itself stores block-diagonal unpadded
local function dims_fit(transform, m, n, rows, cols)
  local wr, wc = stored_dims(transform, m, n)
  if wr == rows and wc == cols then return true end
  return transform == "block-diagonal" and rows == m and cols == n
end

-- ---- layer entries <-> tensors ----

local function pad32(d) return math.ceil(d / 32) * 32 end

-- the trellis part of layer_tensors: fills out/rec, returns m, n
local function trellis_tensors(where, e, settle_shape, out, rec)
  local a = e.artifacts
  if type(a) ~= "table" then fail("%s: format trellis needs an artifacts table", where) end
  local bits = e.bits or a.bits
  if bits ~= 2 and bits ~= 3 and bits ~= 4 then fail("%s: bits must be 2, 3 or 4, got %s", where, tostring(bits)) end
  local variant = e.variant or a.variant or "3inst"
  if variant ~= "3inst" and variant ~= "hyb" then fail("%s: unknown trellis variant '%s' (3inst or hyb)", where, tostring(variant)) end
  local tr = e.transform or a.transform or "block-diagonal"
  if tr ~= "block-diagonal" then fail("%s: transform '%s': trellis layers use block-diagonal (glq 0.8.16's)", where, tostring(tr)) end
  local su = check_tensor(where, "SU", a.SU, "f16", { false })
  local sv = check_tensor(where, "SV", a.SV, "f16", { false })
  check_tensor(where, "Wscale", a.Wscale, "f32", {})
  local rows, cols = su:shape()[1], sv:shape()[1]
  local m, n = settle_shape(e.shape or (a.out_features and { a.out_features, a.in_features }), { rows, cols })
  if rows ~= pad32(m) or cols ~= pad32(n) then
    fail("%s: SU/SV have %d/%d entries, expected %d/%d for a %dx%d weight (trellis pads to multiples of 32)", where, rows, cols,
      pad32(m), pad32(n), m, n)
  end
  check_tensor(where, "trellis_packed", a.trellis_packed, "i16", { rows / 16 * cols / 16, 16 * bits })
  if variant == "hyb" then
    check_tensor(where, "tlut", a.tlut, "f16", { 512, 2 })
  elseif a.tlut ~= nil then
    fail("%s: a tlut belongs to the hyb variant, not 3inst", where)
  end
  for _, f in ipairs(TRELLIS_FIELDS) do out[f] = a[f] end
  rec.bits, rec.variant, rec.transform, rec.label, rec.m_pad, rec.n_pad = bits, variant, tr, bits, rows, cols
  return m, n
end

-- Validates a layer entry and returns its tensors as {field = tensor} plus its JSON-able record
-- {format, bits, transform, shape, label, rht_seed}. expect = {m, n} from the model config or nil.
local function layer_tensors(name, e, expect)
  local where = "checkpoint: layer " .. name
  if type(e) ~= "table" then fail("%s: entry must be a table, got %s", where, type(e)) end
  local fmt = e.format or (e.artifacts and "e8") or (e.pack and "hif4")
  local out, rec = {}, { format = fmt, rht_seed = e.rht_seed }
  local m, n
  local function settle_shape(given, from_tensors)
    local s = given or expect or from_tensors
    if expect and given and not same_shape(given, expect) then
      fail("%s: shape %s differs from %s implied by config.json", where, shape_str(given), shape_str(expect))
    end
    return s[1], s[2]
  end
  if fmt == "e8" then
    local a = e.artifacts
    if type(a) ~= "table" then fail("%s: format e8 needs an artifacts table", where) end
    local bits = e.bits or a.bits
    if bits ~= 2 and bits ~= 3 and bits ~= 4 then fail("%s: bits must be 2, 3 or 4, got %s", where, tostring(bits)) end
    local tr = e.transform or a.transform or M.TRANSFORM
    if not M.TRANSFORMS[tr] then fail("%s: unknown transform '%s'", where, tostring(tr)) end
    local q = check_tensor(where, "Qidxs", a.Qidxs, "i16", { false, false })
    local su = check_tensor(where, "SU", a.SU, "f16", { false })
    local sv = check_tensor(where, "SV", a.SV, "f16", { false })
    check_tensor(where, "Wscale", a.Wscale, "f32", {})
    local rows, cols = su:shape()[1], sv:shape()[1]
    if cols % 8 ~= 0 then fail("%s: SV has %d entries, not a multiple of 8", where, cols) end
    check_tensor(where, "Qidxs", q, "i16", { rows, cols / 8 })
    if bits > 2 then
      check_tensor(where, "Qidxs2", a.Qidxs2, "i16", { rows, cols / 8 })
      check_tensor(where, "inv_resid_scale", a.inv_resid_scale, "f32", {})
    elseif a.Qidxs2 ~= nil or a.inv_resid_scale ~= nil then
      fail("%s: bits = 2 but a second stage (Qidxs2 / inv_resid_scale) was given", where)
    end
    local given = e.shape or (a.out_features and { a.out_features, a.in_features })
    m, n = settle_shape(given, { rows, cols })
    local wr, wc = stored_dims(tr, m, n)
    if not dims_fit(tr, m, n, rows, cols) then
      fail("%s: SU/SV have %d/%d entries, expected %d/%d for a %dx%d weight with transform %s",
        where, rows, cols, wr, wc, m, n, tr)
    end
    for _, f in ipairs(E8_FIELDS) do out[f] = a[f] end
    rec.bits, rec.transform, rec.label, rec.m_pad, rec.n_pad = bits, tr, bits, rows, cols
    local cb = e.codebook or a.codebook -- nil: the E8 shell book; "e8p": QuIP#'s E8P (stage 2 E81B at 3 bits)
    if cb ~= nil and cb ~= "e8" and cb ~= "e8p" then fail("%s: unknown codebook '%s' (expected e8 or e8p)", where, tostring(cb)) end
    if cb == "e8p" then rec.codebook = "e8p" end
  elseif fmt == "hif4" then
    local p = e.pack
    if type(p) ~= "table" then fail("%s: format hif4 needs a pack table", where) end
    local e6 = check_tensor(where, "e6m2", p.e6m2, "u8", { false, false })
    local s = e6:shape()
    m, n = settle_shape(p.shape or e.shape, { s[1], s[2] * 64 })
    local nb = math.ceil(n / 64)
    check_tensor(where, "e6m2", e6, "u8", { m, nb })
    for f, last in pairs(HIF4_LAST) do check_tensor(where, f, p[f], "u8", { m, nb, last }) end
    for _, f in ipairs(HIF4_FIELDS) do out[f] = p[f] end
    local sv = e.sv or p.signs
    if sv ~= nil then
      if not glq.is_tensor(sv) then fail("%s: sv must be a tensor of +-1 signs, got %s", where, type(sv)) end
      -- signs cover the rotated input dimension, padded to a multiple of 8 for the transform
      check_tensor(where, "sv", sv, sv:dtype() == "i8" and "i8" or nil, { ceil8(n) })
      out.SV = sv:dtype() == "f16" and sv or sv:to("f16")
    end
    rec.label = sv and "hif4+rht" or "hif4"
  elseif fmt == "trellis" then
    m, n = trellis_tensors(where, e, settle_shape, out, rec)
  else
    fail("%s: unknown format '%s' (expected e8, trellis or hif4)", where, tostring(fmt))
  end
  if e.bias ~= nil then out.bias = check_tensor(where, "bias", e.bias, nil, { m }) end
  rec.shape = { m, n }
  return out, rec
end

-- the entry back from {field = tensor} and its record (inverse of layer_tensors)
local function layer_entry(rec, get)
  local e = { format = rec.format, shape = { rec.shape[1], rec.shape[2] }, rht_seed = rec.rht_seed,
    bias = get("bias"), stats = rec.stats, extra = rec.extra }
  if rec.format == "e8" then
    e.bits, e.transform, e.codebook = rec.bits, rec.transform, rec.codebook
    e.m_pad, e.n_pad = rec.m_pad, rec.n_pad
    local a = { bits = rec.bits, out_features = rec.shape[1], in_features = rec.shape[2], codebook = rec.codebook }
    for _, f in ipairs(E8_FIELDS) do a[f] = get(f) end
    if rec.stage2 == false then a.Qidxs2, a.inv_resid_scale = nil, nil end -- zero (switched-off) stage 2
    for f, t in pairs(rec.pad or {}) do a[f] = t end -- signs padded with ones (glq's unpadded SU/SV)
    if a.Qidxs2 and a.Qidxs2:dtype() == "u8" then a.Qidxs2 = a.Qidxs2:to("i16") end -- packed 3-bit
    e.artifacts = a
  elseif rec.format == "trellis" then
    e.bits, e.variant, e.transform, e.m_pad, e.n_pad = rec.bits, rec.variant, rec.transform, rec.m_pad, rec.n_pad
    local a = { codebook = "trellis", bits = rec.bits, variant = rec.variant, transform = rec.transform,
      out_features = rec.shape[1], in_features = rec.shape[2] }
    for _, f in ipairs(TRELLIS_FIELDS) do a[f] = get(f) end
    e.artifacts = a
  else
    local p = { shape = { rec.shape[1], rec.shape[2] } }
    for _, f in ipairs(HIF4_FIELDS) do p[f] = get(f) end
    e.sv = get("SV")
    p.signs = e.sv
    e.pack = p
  end
  return e
end

-- stored bits per weight of a validated record: code bits over the stored (padded) size
local function record_bpw(rec)
  local m, n = rec.shape[1], rec.shape[2]
  if rec.format == "hif4" then return 4.5 * math.ceil(n / 64) * 64 / n end
  if rec.format == "trellis" then return rec.bits * rec.m_pad * rec.n_pad / (m * n) end
  local r, c = stored_dims(rec.transform, m, n)
  return rec.bits * (rec.m_pad or r) * (rec.n_pad or c) / (m * n)
end

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
  local n_e8, n_tr, wsum, bsum, transforms = 0, 0, 0, 0, {}
  for _, name in ipairs(names) do
    local ts, rec = layer_tensors(name, spec.layers[name], expected_shape(c, name))
    for f, t in pairs(ts) do tensors[name .. "." .. f] = t end
    recs[name] = rec
    local w = rec.shape[1] * rec.shape[2]
    wsum, bsum = wsum + w, bsum + record_bpw(rec) * w
    if rec.format == "e8" then n_e8 = n_e8 + 1 transforms[rec.transform] = true end
    if rec.format == "trellis" then n_tr = n_tr + 1 end
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

  local hif4_only = #names > 0 and n_e8 == 0 and n_tr == 0
  local cfg = deep_copy(spec.config)
  cfg.use_cache = true
  local qc = { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = round2(bpw), layer_bpw = layer_bpw }
  local compat = spec.python_compat
  if compat then
    -- what the Python glq (>= 0.2.9) reads: its block-diagonal E8 layers and float tensors only
    for _, name in ipairs(names) do
      local rec = recs[name]
      if n_tr > 0 then -- glq 0.8.16: one codebook per model; its trellis needs no padding and block-diagonal RHTs
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
  if compat then
    for _, name in ipairs(names) do
      local rec = recs[name]
      -- explicit zero scalars of the stages a layer lacks: glq 0.8 on transformers 5 leaves missing
      -- buffers uninitialized, and a zero scale is what switches a stage off in its loader
      local zero = glq.zeros("f32", {})
      if rec.format == "e8" then
        if rec.bits == 2 then tensors[name .. ".inv_resid_scale"] = zero end
        tensors[name .. ".inv_resid_scale2"] = zero
        tensors[name .. ".inv_resid_scale3"] = zero
      end
    end
    if next(dense_format) then fail("checkpoint: a file for the Python glq cannot hold q8_0 or hif4 dense tensors") end
  else
    -- our layout: 3-bit stage-2 indices (< 256) in one byte, and no quant_method (see M.NATIVE)
    for _, name in ipairs(names) do
      if recs[name].format == "e8" and recs[name].bits == 3 then
        local q2 = tensors[name .. ".Qidxs2"]:contiguous()
        local p = ffi.cast("const uint16_t *", q2:_rawptr())
        for i = 0, q2:numel() - 1 do
          if p[i] > 255 then fail("checkpoint: layer %s: 3-bit Qidxs2 entry %d is %d, not below 256", name, i, p[i]) end
        end
        tensors[name .. ".Qidxs2"] = q2:to("u8")
      end
    end
    qc.quant_method = nil
    qc.format = M.NATIVE
    if next(dense_format) then qc.dense_format = dense_format end
  end
  local tlist = {}
  for t in pairs(transforms) do tlist[#tlist + 1] = t end
  table.sort(tlist)
  qc.block_diagonal = transforms["block-diagonal"] == true
  if #tlist == 1 then
    qc.transform = tlist[1]
  elseif #tlist > 1 then
    qc.layer_transform = {}
    for _, name in ipairs(names) do
      if recs[name].format == "e8" then qc.layer_transform[name] = recs[name].transform end
    end
  end
  if n_tr > 0 then -- glq 0.8.16's trellis fields; our layout also names each layer's codebook when they mix
    if n_tr == n_e8 + n_tr then
      qc.codebook, qc.codesz, qc.variant, qc.trellis_layout = "trellis", 16, recs[names[1]].variant, "kernel"
      for _, name in ipairs(names) do
        if recs[name].format == "trellis" and recs[name].variant ~= qc.variant then qc.variant = nil end
      end
      qc.block_diagonal = true
    else
      qc.trellis_layout = "kernel"
    end
    if not compat then
      qc.layer_codebook = {}
      for _, name in ipairs(names) do
        local r = recs[name]
        if r.format == "trellis" then qc.layer_codebook[name] = r.variant == "hyb" and "trellis-hyb" or "trellis" end
      end
    end
  end
  local n_e8p = 0 -- E8P layers: our layout names their codebook (glq 0.8.16's packed layout is not written)
  for _, name in ipairs(names) do
    if recs[name].codebook == "e8p" then
      if compat then fail("checkpoint: layer %s is E8P; files for the Python glq hold E8 shell or trellis layers only", name) end
      qc.layer_codebook = qc.layer_codebook or {}
      qc.layer_codebook[name], n_e8p = "e8p", n_e8p + 1
    end
  end
  if n_e8p > 0 and n_e8p == #names then qc.codebook = "e8p" end
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

local E8_SUFFIX = { Qidxs = true, Qidxs2 = true, SU = true, SV = true, Wscale = true, inv_resid_scale = true, bias = true,
  Qidxs3 = true, Qidxs4 = true, inv_resid_scale2 = true, inv_resid_scale3 = true }

-- a scalar f32 field that is absent or zero (a stage the layer does not use)
local function zero_scalar(where, field, t)
  if t == nil then return true end
  check_tensor(where, field, t, "f32", nil)
  if t:numel() ~= 1 then fail("%s: %s has shape %s, expected a scalar ()", where, field, shape_str(t:shape())) end
  return t:to("f32"):ptr()[0] == 0
end
local TRELLIS_SUFFIX = { trellis_packed = true, SU = true, SV = true, Wscale = true, tlut = true, bias = true }

-- a trellis layer's record from its tensors (glq 0.8.16's layout, or ours with sides padded to multiples of 32)
local function read_trellis(path, name, get, quant, c)
  local where = path .. ": " .. name
  for _, f in ipairs({ "trellis_packed", "SU", "SV", "Wscale" }) do
    if not get(f) then fail("%s: missing tensor %s.%s", where, name, f) end
  end
  if quant.codebook == "trellis" and quant.trellis_layout ~= "kernel" then
    fail("%s: trellis_layout '%s' is not supported (kernel is; glq's older natural-layout 3inst files must be re-quantized)",
      where, tostring(quant.trellis_layout))
  end
  local p = check_tensor(where, name .. ".trellis_packed", get("trellis_packed"), "i16", { false, false })
  local K = p:shape()[2] / 16
  if K ~= 2 and K ~= 3 and K ~= 4 then fail("%s: %s.trellis_packed has %d columns: not 16 x 2, 3 or 4 bits", where, name, p:shape()[2]) end
  local rows, cols = get("SU"):numel(), get("SV"):numel()
  local exp = expected_shape(c, name)
  local m, n = exp and exp[1] or rows, exp and exp[2] or cols
  if rows ~= pad32(m) or cols ~= pad32(n) then
    fail("%s: %s.SU/SV have %d/%d entries, expected %d/%d for a %dx%d weight", where, name, rows, cols, pad32(m), pad32(n), m, n)
  end
  local tlut = get("tlut")
  local variant = (quant.layer_codebook and quant.layer_codebook[name] == "trellis-hyb" and "hyb") or quant.variant
    or (tlut and "hyb" or "3inst")
  local rec = { format = "trellis", shape = { m, n }, bits = K, variant = variant, transform = "block-diagonal" }
  local out, r2 = {}, {}
  trellis_tensors(where, { artifacts = { trellis_packed = p, SU = get("SU"), SV = get("SV"), Wscale = get("Wscale"),
    tlut = variant == "hyb" and tlut or nil }, bits = K, variant = variant, shape = { m, n } },
    function(given) return given[1], given[2] end, out, r2)
  if variant ~= "hyb" and tlut then fail("%s: %s.tlut present but the variant is 3inst", where, name) end
  rec.m_pad, rec.n_pad = rows, cols
  local bias = get("bias")
  if bias then check_tensor(where, name .. ".bias", bias, nil, { m }) end
  return rec
end

local HIF4_SUFFIX = { e6m2 = true, e1_8_packed = true, e1_16_packed = true, s1p2_packed = true, SV = true, bias = true }

local function read_e8(path, name, get, quant, c)
  local where = path .. ": " .. name
  local q = check_tensor(where, name .. ".Qidxs", get("Qidxs"), "i16", { false, false })
  if not get("SU") then fail("%s: missing tensor %s.SU", where, name) end
  if not get("SV") then fail("%s: missing tensor %s.SV", where, name) end
  if not get("Wscale") then fail("%s: missing tensor %s.Wscale", where, name) end
  local su = check_tensor(where, name .. ".SU", get("SU"), "f16", { false })
  local sv = check_tensor(where, name .. ".SV", get("SV"), "f16", { false })
  local ws = check_tensor(where, name .. ".Wscale", get("Wscale"), "f32", nil)
  if ws:numel() ~= 1 then fail("%s: %s.Wscale has shape %s, expected a scalar ()", where, name, shape_str(ws:shape())) end
  local rows, cols = su:shape()[1], sv:shape()[1]
  -- glq >= 0.8 stores a dim that is not a multiple of 8 with Qidxs padded to the next multiple of 8
  -- and SU/SV unpadded; its loader pads the signs with ones, and so do we
  local qs, pad = q:shape(), nil
  local function ones_padded(t, len)
    local o = glq.full("f16", { len }, 1)
    local src, dst = ffi.cast("const uint16_t *", t:contiguous():_rawptr()), ffi.cast("uint16_t *", o:_rawptr())
    for i = 0, t:numel() - 1 do dst[i] = src[i] end
    return o
  end
  if #qs == 2 and qs[1] == ceil8(rows) and qs[1] ~= rows then
    pad = pad or {}
    pad.SU, rows = ones_padded(su, qs[1]), qs[1]
  end
  if #qs == 2 and qs[2] * 8 == ceil8(cols) and qs[2] * 8 ~= cols then
    pad = pad or {}
    pad.SV, cols = ones_padded(sv, qs[2] * 8), qs[2] * 8
  end
  check_tensor(where, name .. ".Qidxs", q, "i16", { rows, math.floor(cols / 8) })
  if cols % 8 ~= 0 then fail("%s: %s.SV has %d entries, not a multiple of 8", where, name, cols) end
  -- bits: config first, else from the stage-2 tensors
  local lb = quant.layer_bpw and quant.layer_bpw[name]
  local bits = lb
  if bits == nil and type(quant.bpw) == "number" and quant.bpw % 1 == 0 then bits = quant.bpw end
  local q2, irs = get("Qidxs2"), get("inv_resid_scale")
  -- stages 3 and 4 (5-8 bpw RVQ) are read only when switched off by zero scales, as glq writes them
  for k = 2, 3 do
    local f = "inv_resid_scale" .. k
    if not zero_scalar(where, name .. "." .. f, get(f)) then
      fail("%s: %s.%s is not zero: N-stage RVQ (5-8 bpw) is not supported", where, name, f)
    end
    if get("Qidxs" .. (k + 1)) then check_tensor(where, name .. ".Qidxs" .. (k + 1), get("Qidxs" .. (k + 1)), "i16", { rows, cols / 8 }) end
  end
  -- a zero inv_resid_scale switches stage 2 off (glq's 2-bit layers may carry it, with zero Qidxs2)
  if irs and zero_scalar(where, name .. ".inv_resid_scale", irs) and (bits == nil or bits == 2) then
    if q2 then check_tensor(where, name .. ".Qidxs2", q2, "i16", { rows, cols / 8 }) end
    q2, irs, bits = nil, nil, 2
  end
  if bits == nil then
    if q2 then fail("%s: cannot tell 3 from 4 bits: no layer_bpw entry and a fractional bpw in config.json", where) end
    bits = 2
  end
  if bits ~= 2 and bits ~= 3 and bits ~= 4 then
    fail("%s: %s bits per weight is not supported (2, 3 and 4 are)", where, tostring(bits))
  end
  if bits > 2 then
    if not q2 then fail("%s: missing tensor %s.Qidxs2 (config.json says %d bits)", where, name, bits) end
    if not irs then fail("%s: missing tensor %s.inv_resid_scale (config.json says %d bits)", where, name, bits) end
    -- our 3-bit layout packs the stage-2 index (< 256) in one byte; glq's is I16
    check_tensor(where, name .. ".Qidxs2", q2, (bits == 3 and q2:dtype() == "u8") and "u8" or "i16", { rows, cols / 8 })
    check_tensor(where, name .. ".inv_resid_scale", irs, "f32", nil)
    if irs:numel() ~= 1 then fail("%s: %s.inv_resid_scale has shape %s, expected a scalar ()", where, name, shape_str(irs:shape())) end
  elseif q2 then
    fail("%s: %s.Qidxs2 present but config.json says 2 bits", where, name)
  end
  -- transform: ours is recorded; glq's is told by the shapes (per layer, like glq's own loader)
  local exp = expected_shape(c, name)
  local tr = (quant.layer_transform and quant.layer_transform[name]) or quant.transform
  local m, n
  if tr ~= nil then
    if not M.TRANSFORMS[tr] then fail("%s: unknown transform '%s' in config.json", where, tostring(tr)) end
    if exp then
      m, n = exp[1], exp[2]
      local wr, wc = stored_dims(tr, m, n)
      if not dims_fit(tr, m, n, rows, cols) then
        fail("%s: %s.Qidxs has shape %s but config.json implies %s (a %dx%d weight, transform %s)", where, name,
          shape_str(q:shape()), shape_str({ wr, wc / 8 }), m, n, tr)
      end
    else
      m, n = rows, cols
    end
  elseif exp then
    m, n = exp[1], exp[2]
    if rows == m and cols == n then
      tr = (quant.block_diagonal or not (is_pow2(m) and is_pow2(n))) and "block-diagonal" or "pow2-padded"
    elseif rows == pow2ceil(m) and cols == pow2ceil(n) then
      tr = "pow2-padded"
    elseif rows == ceil8(m) and cols == ceil8(n) then
      tr = "block-diagonal" -- glq >= 0.8: dims not multiples of 8 padded to the next multiple of 8
    else
      fail("%s: %s.Qidxs has shape %s but config.json implies %s (block-diagonal) or %s (power-of-two padded) for a %dx%d weight",
        where, name, shape_str(q:shape()), shape_str({ m, n / 8 }), shape_str({ pow2ceil(m), pow2ceil(n) / 8 }), m, n)
    end
  else
    m, n = rows, cols
    tr = (quant.block_diagonal or not (is_pow2(m) and is_pow2(n))) and "block-diagonal" or "pow2-padded"
  end
  local bias = get("bias")
  if bias then check_tensor(where, name .. ".bias", bias, nil, { m }) end
  -- E8P: the same tensors, the codebook named in quantization_config (ours per layer; glq 0.8.16's CPU
  -- quantizer writes these plain I16 tensors with codebook "e8p" too)
  local e8p = (quant.layer_codebook and quant.layer_codebook[name] == "e8p") or quant.codebook == "e8p"
  -- glq 0.8.16's CPU path quantizes "e8p" with its shell pipeline on the E8P table: the 3-bit stage 2 indexes
  -- the table's first 256 entries (not E81B), which our E8P layer decodes as its 4-bit (E8P) stage 2
  local dbits = (e8p and bits == 3 and quant.format ~= M.NATIVE) and 4 or bits
  return { format = "e8", shape = { m, n }, bits = dbits, transform = tr, m_pad = rows, n_pad = cols, stage2 = bits > 2,
    codebook = e8p and "e8p" or nil, pad = pad }
end

local function read_hif4(path, name, get, c)
  local where = path .. ": " .. name
  for _, f in ipairs(HIF4_FIELDS) do
    if not get(f) then fail("%s: missing tensor %s.%s", where, name, f) end
  end
  local e6 = check_tensor(where, name .. ".e6m2", get("e6m2"), "u8", { false, false })
  local m, nb = e6:shape()[1], e6:shape()[2]
  local sv = get("SV")
  local exp = expected_shape(c, name)
  local n = exp and exp[2] or (sv and sv:numel()) or nb * 64
  if exp and exp[1] ~= m or math.ceil(n / 64) ~= nb then
    fail("%s: %s.e6m2 has shape %s but config.json implies %s", where, name, shape_str(e6:shape()),
      shape_str({ exp and exp[1] or m, math.ceil(n / 64) }))
  end
  for f, last in pairs(HIF4_LAST) do check_tensor(where, name .. "." .. f, get(f), "u8", { m, nb, last }) end
  if sv then check_tensor(where, name .. ".SV", sv, "f16", { ceil8(n) }) end
  local bias = get("bias")
  if bias then check_tensor(where, name .. ".bias", bias, nil, { m }) end
  return { format = "hif4", shape = { m, n } }
end

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
    if quant.codebook ~= nil and quant.codebook ~= "e8_shell" and quant.codebook ~= "trellis" and quant.codebook ~= "e8p" then
      fail("%s: codebook '%s' is not supported (e8_shell, e8p and trellis are)", cfgp, tostring(quant.codebook))
    end
    local codesz = quant.codebook == "trellis" and 16 or 8
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

  -- quantized modules are the prefixes of .Qidxs / .e6m2 tensors (a HiF4 dense tensor's fields aside)
  local dense_format = (quant and quant.dense_format) or (hif4 and hif4.dense_format) or {}
  if type(dense_format) ~= "table" then fail("%s: dense_format must be an object", cfgp) end
  local layers, owned = {}, {}
  for k in pairs(tensors) do
    local p, f = k:match("^(.+)%.([%w_]+)$")
    if dense_format[p] == "hif4" then
      owned[k] = true
    elseif f == "Qidxs" then layers[p] = "e8" elseif f == "e6m2" then layers[p] = "hif4" elseif f == "trellis_packed" then layers[p] = "trellis" end
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
  for name, fmt in pairs(layers) do
    local function get(f) owned[name .. "." .. f] = true return tensors[name .. "." .. f] end
    local rec = fmt == "e8" and read_e8(file, name, get, quant or {}, c)
      or fmt == "trellis" and read_trellis(file, name, get, quant or {}, c) or read_hif4(file, name, get, c)
    out.layers[name] = layer_entry(rec, get)
    if quant and quant.layer_bpw and fmt == "hif4" then
      local lb = quant.layer_bpw[name]
      if lb ~= nil and lb ~= (out.layers[name].sv and "hif4+rht" or "hif4") then
        fail("%s: layer_bpw says %s for %s, the tensors hold %s", cfgp, tostring(lb), name, out.layers[name].sv and "hif4+rht" or "hif4")
      end
    end
  end
  for k, t in pairs(tensors) do
    if not owned[k] then
      local p, f = k:match("^(.+)%.([%w_]+)$")
      if p and layers[p] then
        local allowed = layers[p] == "e8" and E8_SUFFIX or layers[p] == "trellis" and TRELLIS_SUFFIX or HIF4_SUFFIX
        if not allowed[f] then
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
