-- glq.formats: the layer formats, one entry each, so that the pipeline (glq.quantize), the
-- policies (glq.policy), the allocator, the checkpoint writer and reader (glq.checkpoint) and the
-- model loader (glq.model) look a format up instead of asking "which format is this?" in if-chains.
-- A decision is {format = NAME, bits = 2|3|4} for the lattice/trellis codebooks,
-- {format = "hif4", rht = bool, ldlq = bool} or {format = "dense"}.
--
-- An entry holds, for decisions:
--   name            the decision's format
--   check(d, where) raises when the decision is malformed (bits out of range, ...)
--   label(d)        the short name in reports, progress lines and bpw_allocation.json ("e8-3", "hif4+rht")
--   alloc_value(d)  the value that names d in a bpw allocation map (E8 widths are numbers)
--   stored_bits(d, out, inn)  code bits per weight an (out x in) layer will store: over its padded size,
--                   scalars (Wscale, RHT signs) not counted, as glq.checkpoint.stored_bpw measures them
--   ldlq_options(name, d, o)  options of glq.quantize_linear (formats quantized side by side only)
--   quantize(name, W, H, d, o, pre) -> the layer's checkpoint entry without bias (see glq.checkpoint);
--                   pre: its glq.quantize_linear result when computed side by side already; nil for dense
-- and, for the formats a checkpoint stores (e8, trellis, hif4: the entry's format; e8p is stored as e8
-- with codebook "e8p"), its checkpoint layout (docs/format.md) and forward:
--   tensor_field    the tensor NAME.<field> that marks a layer of this format in a file
--   fields          every tensor field such a layer may have in a file (the reader refuses others)
--   tensors(where, e, settle) -> out, rec, m, n: validates a checkpoint entry (write side); out =
--                   {field = tensor}, rec = its JSON-able record (bits, transform, label = its
--                   layer_bpw value, m_pad, n_pad, ...); settle(given, from_tensors) -> m, n
--   entry(rec, get, e)  fills entry e from a record and get(field) -> tensor (the inverse of tensors)
--   record_bpw(rec) stored bits per weight of a record
--   read(name, get, x) -> rec: a layer as a file stores it (ours, or the Python glq's / the HiF4
--                   reference tool's layouts); x = {file, cfgp, quant, exp = {m, n} | nil, native}
--   store(name, rec, tensors, compat)  (optional) the last rewrite of its tensors for the file's layout
--   config(qc, names, recs, compat)    (optional) its fields of quantization_config
--   codebooks       {{name, codesz}, ...}: the quantization_config.codebook values of its files
--   reference_layout  a file of only such layers is written in the HiF4 reference tool's layout
--   linear(e, out, inn, name) -> the glq.linear of a checkpoint entry
-- Adding a format: an entry here (and its C codec, layer and binding: docs/architecture.md).
local glq = require "glq"
local ffi = require "ffi"

local M = {}

local BY_NAME = {}
M.names = {} -- in the order error messages list them

local function add(f)
  BY_NAME[f.name] = f
  M.names[#M.names + 1] = f.name
  return f
end

-- the entry of a format name, or nil
function M.get(name) return BY_NAME[name] end

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- ---- checks of stored tensors (shared with glq.checkpoint as M.checks) ----

local function ceil8(d) return math.ceil(d / 8) * 8 end
local function pad32(d) return math.ceil(d / 32) * 32 end
local function pow2ceil(d) local p = 1 while p < d do p = p * 2 end return p end
local function is_pow2(d) return d >= 1 and pow2ceil(d) == d end

local function shape_str(s)
  if #s == 0 then return "()" end
  return "(" .. table.concat(s, ", ") .. ")"
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

-- a scalar f32 field that is absent or zero (a stage the layer does not use)
local function zero_scalar(where, field, t)
  if t == nil then return true end
  check_tensor(where, field, t, "f32", nil)
  if t:numel() ~= 1 then fail("%s: %s has shape %s, expected a scalar ()", where, field, shape_str(t:shape())) end
  return t:to("f32"):ptr()[0] == 0
end

M.checks = { check_tensor = check_tensor, shape_str = shape_str, pow2ceil = pow2ceil, is_pow2 = is_pow2,
  HIF4_LAST = { e1_8_packed = 1, e1_16_packed = 2, s1p2_packed = 32 } } -- HiF4's packed fields: their last dimension
local HIF4_LAST = M.checks.HIF4_LAST

local function check_width(d, where)
  if d.bits ~= 2 and d.bits ~= 3 and d.bits ~= 4 then
    fail("%s: %s needs bits 2, 3 or 4, got %s", where, d.format, tostring(d.bits))
  end
end

local function width_label(d) return d.format .. "-" .. d.bits end
local function width_value(d) return d.bits end

-- options of glq.quantize_linear / glq.trellis.quantize_linear for the LDLQ codebooks
local function ldlq_options(name, d, o, codebook, transform)
  return { bpw = d.bits, tune_iters = o.tune_iters or 0, seed = o.seed or 42, damp = o.damp or 0.01, name = name,
    transform = transform or o.transform or M.TRANSFORM, -- "block-diagonal" with --glq-compat
    codebook = codebook,
    device = o.ldlq_device == "cuda" and "cuda" or nil } -- the LDLQ sweeps on the GPU
end

-- ---- E8 lattice codebooks (8 weights per code, 16 bits per stage): the shell book and QuIP#'s E8P ----
-- Stored as format "e8" (docs/format.md): Qidxs (+ Qidxs2 and inv_resid_scale above 2 bits), SU, SV,
-- Wscale; codebook nil (the shell book) or "e8p".

M.TRANSFORM = "glq-hadamard-v1" -- our padding-free RHT (src/quant/rht.h): dims padded to multiples of 8 only
M.TRANSFORMS = { ["glq-hadamard-v1"] = true, ["block-diagonal"] = true, ["pow2-padded"] = true }
local E8_FIELDS = { "Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale" }

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

local function e8_tensors(where, e, settle)
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
  local m, n = settle(e.shape or (a.out_features and { a.out_features, a.in_features }), { rows, cols })
  local wr, wc = stored_dims(tr, m, n)
  if not dims_fit(tr, m, n, rows, cols) then
    fail("%s: SU/SV have %d/%d entries, expected %d/%d for a %dx%d weight with transform %s",
      where, rows, cols, wr, wc, m, n, tr)
  end
  local out = {}
  for _, f in ipairs(E8_FIELDS) do out[f] = a[f] end
  local rec = { bits = bits, transform = tr, label = bits, m_pad = rows, n_pad = cols }
  local cb = e.codebook or a.codebook -- nil: the E8 shell book; "e8p": QuIP#'s E8P (stage 2 E81B at 3 bits)
  if cb ~= nil and cb ~= "e8" and cb ~= "e8p" then fail("%s: unknown codebook '%s' (expected e8 or e8p)", where, tostring(cb)) end
  if cb == "e8p" then rec.codebook = "e8p" end
  return out, rec, m, n
end

local function e8_entry(rec, get, e)
  e.bits, e.transform, e.codebook = rec.bits, rec.transform, rec.codebook
  e.m_pad, e.n_pad = rec.m_pad, rec.n_pad
  local a = { bits = rec.bits, out_features = rec.shape[1], in_features = rec.shape[2], codebook = rec.codebook }
  for _, f in ipairs(E8_FIELDS) do a[f] = get(f) end
  if rec.stage2 == false then a.Qidxs2, a.inv_resid_scale = nil, nil end -- zero (switched-off) stage 2
  for f, t in pairs(rec.pad or {}) do a[f] = t end -- signs padded with ones (glq's unpadded SU/SV)
  if a.Qidxs2 and a.Qidxs2:dtype() == "u8" then a.Qidxs2 = a.Qidxs2:to("i16") end -- packed 3-bit
  e.artifacts = a
end

local function e8_record_bpw(rec)
  local m, n = rec.shape[1], rec.shape[2]
  local r, c = stored_dims(rec.transform, m, n)
  return rec.bits * (rec.m_pad or r) * (rec.n_pad or c) / (m * n)
end

-- f16 signs t padded with ones to len entries
local function ones_padded(t, len)
  local o = glq.full("f16", { len }, 1)
  local src, dst = ffi.cast("const uint16_t *", t:contiguous():_rawptr()), ffi.cast("uint16_t *", o:_rawptr())
  for i = 0, t:numel() - 1 do dst[i] = src[i] end
  return o
end

-- the bits of an E8 layer as a file stores it: config first, else from the stage-2 tensors; returns
-- bits and the stage-2 tensors that hold (nil, nil when a zero scale switches stage 2 off)
local function e8_read_bits(where, name, get, quant, rows, cols)
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
  return bits
end

-- the true (m, n) and transform of an E8 layer: ours is recorded; glq's is told by the shapes (per
-- layer, like glq's own loader)
local function e8_read_transform(where, name, q, quant, exp, rows, cols)
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
  return m, n, tr
end

local function e8_read(name, get, x)
  local where, quant = x.file .. ": " .. name, x.quant
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
  local bits = e8_read_bits(where, name, get, quant, rows, cols)
  local m, n, tr = e8_read_transform(where, name, q, quant, x.exp, rows, cols)
  -- E8P: the same tensors, the codebook named in quantization_config (ours per layer; glq 0.8.16's CPU
  -- quantizer writes these plain I16 tensors with codebook "e8p" too)
  local e8p = (quant.layer_codebook and quant.layer_codebook[name] == "e8p") or quant.codebook == "e8p"
  -- glq 0.8.16's CPU path quantizes "e8p" with its shell pipeline on the E8P table: the 3-bit stage 2 indexes
  -- the table's first 256 entries (not E81B), which our E8P layer decodes as its 4-bit (E8P) stage 2
  local dbits = (e8p and bits == 3 and not x.native) and 4 or bits
  return { format = "e8", shape = { m, n }, bits = dbits, transform = tr, m_pad = rows, n_pad = cols, stage2 = bits > 2,
    codebook = e8p and "e8p" or nil, pad = pad }
end

-- our layout: 3-bit stage-2 indices (< 256) in one byte; the Python glq's: explicit zero scalars of
-- the stages a layer lacks (glq 0.8 on transformers 5 leaves missing buffers uninitialized, and a zero
-- scale is what switches a stage off in its loader)
local function e8_store(name, rec, tensors, compat)
  if compat then
    local zero = glq.zeros("f32", {})
    if rec.bits == 2 then tensors[name .. ".inv_resid_scale"] = zero end
    tensors[name .. ".inv_resid_scale2"] = zero
    tensors[name .. ".inv_resid_scale3"] = zero
  elseif rec.bits == 3 then
    local q2 = tensors[name .. ".Qidxs2"]:contiguous()
    local p = ffi.cast("const uint16_t *", q2:_rawptr())
    for i = 0, q2:numel() - 1 do
      if p[i] > 255 then fail("checkpoint: layer %s: 3-bit Qidxs2 entry %d is %d, not below 256", name, i, p[i]) end
    end
    tensors[name .. ".Qidxs2"] = q2:to("u8")
  end
end

-- quantization_config: the E8 layers' transform (one for all, else per layer); E8P layers named per
-- layer, and the file's codebook when every layer is E8P
local function e8_config(qc, names, recs, compat)
  local transforms, tlist = {}, {}
  for _, name in ipairs(names) do
    if recs[name].format == "e8" then transforms[recs[name].transform] = true end
  end
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
  local n_e8p = 0 -- our layout names their codebook (glq 0.8.16's packed layout is not written)
  for _, name in ipairs(names) do
    if recs[name].codebook == "e8p" then
      if compat then fail("checkpoint: layer %s is E8P; files for the Python glq hold E8 shell or trellis layers only", name) end
      qc.layer_codebook = qc.layer_codebook or {}
      qc.layer_codebook[name], n_e8p = "e8p", n_e8p + 1
    end
  end
  if n_e8p > 0 and n_e8p == #names then qc.codebook = "e8p" end
end

local function e8_linear(e, out, inn, name)
  local a = {}
  for k, v in pairs(e.artifacts) do a[k] = v end
  a.out_features, a.in_features = out, inn
  return glq.e8.linear(a, { bias = e.bias, transform = e.transform, bits = e.bits, codebook = e.codebook, name = name })
end

local function e8_book(name, codebook)
  return add {
    name = name, check = check_width, label = width_label, alloc_value = width_value, side_by_side = true,
    stored_bits = function(d, out, inn) -- both sides padded to multiples of 8 (our transform)
      return d.bits * math.ceil(out / 8) * 8 * math.ceil(inn / 8) * 8 / (out * inn)
    end,
    ldlq_options = function(lname, d, o) return ldlq_options(lname, d, o, codebook) end,
    quantize = function(lname, W, H, d, o, pre)
      local eo = ldlq_options(lname, d, o, codebook)
      local a = pre or glq.quantize_linear(W, H, eo)
      return { format = "e8", bits = d.bits, transform = eo.transform, shape = { W:size(1), W:size(2) }, codebook = a.codebook,
        artifacts = { Qidxs = a.Qidxs, Qidxs2 = a.Qidxs2, SU = a.SU, SV = a.SV, Wscale = a.Wscale,
          inv_resid_scale = a.inv_resid_scale } }
    end,
  }
end
local e8 = e8_book("e8", nil)
e8_book("e8p", "e8p") -- its sweeps run on the CPU; stored as format e8 with codebook "e8p"
e8.tensor_field = "Qidxs"
e8.codebooks = { { "e8_shell", 8 }, { "e8p", 8 } }
e8.fields = { Qidxs = true, Qidxs2 = true, SU = true, SV = true, Wscale = true, inv_resid_scale = true, bias = true,
  Qidxs3 = true, Qidxs4 = true, inv_resid_scale2 = true, inv_resid_scale3 = true }
e8.tensors, e8.entry, e8.record_bpw, e8.read = e8_tensors, e8_entry, e8_record_bpw, e8_read
e8.store, e8.config, e8.linear = e8_store, e8_config, e8_linear

-- ---- QTIP's bitshift trellis (16x16 tiles, glq 0.8.16's layout) ----
-- Stored as format "trellis": trellis_packed ((m32/16)(n32/16), 16·bits), SU (m32), SV (n32), Wscale,
-- tlut (512, 2) for the hyb variant; m32, n32: the sides rounded up to multiples of 32.
-- With --ldlq-device cuda the tiles' Viterbi searches run on the GPU (same states).
local TRELLIS_FIELDS = { "trellis_packed", "SU", "SV", "Wscale", "tlut" }

local function trellis_tensors(where, e, settle)
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
  local m, n = settle(e.shape or (a.out_features and { a.out_features, a.in_features }), { rows, cols })
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
  local out = {}
  for _, f in ipairs(TRELLIS_FIELDS) do out[f] = a[f] end
  return out, { bits = bits, variant = variant, transform = tr, label = bits, m_pad = rows, n_pad = cols }, m, n
end

local function trellis_entry(rec, get, e)
  e.bits, e.variant, e.transform, e.m_pad, e.n_pad = rec.bits, rec.variant, rec.transform, rec.m_pad, rec.n_pad
  local a = { codebook = "trellis", bits = rec.bits, variant = rec.variant, transform = rec.transform,
    out_features = rec.shape[1], in_features = rec.shape[2] }
  for _, f in ipairs(TRELLIS_FIELDS) do a[f] = get(f) end
  e.artifacts = a
end

-- a trellis layer's record from its tensors (glq 0.8.16's layout, or ours with sides padded to multiples of 32)
local function trellis_read(name, get, x)
  local where, quant = x.file .. ": " .. name, x.quant
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
  local exp = x.exp
  local m, n = exp and exp[1] or rows, exp and exp[2] or cols
  if rows ~= pad32(m) or cols ~= pad32(n) then
    fail("%s: %s.SU/SV have %d/%d entries, expected %d/%d for a %dx%d weight", where, name, rows, cols, pad32(m), pad32(n), m, n)
  end
  local tlut = get("tlut")
  local variant = (quant.layer_codebook and quant.layer_codebook[name] == "trellis-hyb" and "hyb") or quant.variant
    or (tlut and "hyb" or "3inst")
  trellis_tensors(where, { artifacts = { trellis_packed = p, SU = get("SU"), SV = get("SV"), Wscale = get("Wscale"),
    tlut = variant == "hyb" and tlut or nil }, bits = K, variant = variant, shape = { m, n } },
    function(given) return given[1], given[2] end)
  if variant ~= "hyb" and tlut then fail("%s: %s.tlut present but the variant is 3inst", where, name) end
  return { format = "trellis", shape = { m, n }, bits = K, variant = variant, transform = "block-diagonal",
    m_pad = rows, n_pad = cols }
end

-- quantization_config: glq 0.8.16 names one codebook per file (trellis, its variant and layout when no
-- E8 layer shares the file); our layout also names each trellis layer's codebook
local function trellis_config(qc, names, recs, compat)
  local n_tr, n_e8 = 0, 0
  for _, name in ipairs(names) do
    if recs[name].format == "trellis" then n_tr = n_tr + 1 elseif recs[name].format == "e8" then n_e8 = n_e8 + 1 end
  end
  if n_tr == 0 then return end
  if n_e8 == 0 then
    qc.codebook, qc.codesz, qc.variant, qc.trellis_layout = "trellis", 16, recs[names[1]].variant, "kernel"
    for _, name in ipairs(names) do
      if recs[name].format == "trellis" and recs[name].variant ~= qc.variant then qc.variant = nil end
    end
    qc.block_diagonal = true
  else
    qc.trellis_layout = "kernel"
  end
  if not compat then
    qc.layer_codebook = qc.layer_codebook or {}
    for _, name in ipairs(names) do
      local r = recs[name]
      if r.format == "trellis" then qc.layer_codebook[name] = r.variant == "hyb" and "trellis-hyb" or "trellis" end
    end
  end
end

local function trellis_linear(e, out, inn, name)
  local a = { codebook = "trellis", variant = e.variant, bits = e.bits, transform = e.transform }
  for k, v in pairs(e.artifacts) do a[k] = v end
  a.out_features, a.in_features = out, inn
  local bias = e.bias and e.bias:to("f32") or nil
  local ok, lin = pcall(glq.trellis.linear, a, bias)
  if not ok then error(string.format("layer %s: %s", tostring(name), tostring(lin)), 0) end
  return lin
end

add {
  name = "trellis", check = check_width, label = width_label, alloc_value = width_value,
  stored_bits = function(d, out, inn) -- both sides padded to multiples of 32 (src/layers/trellis_linear.h)
    return d.bits * math.ceil(out / 32) * 32 * math.ceil(inn / 32) * 32 / (out * inn)
  end,
  quantize = function(name, W, H, d, o)
    -- block-diagonal: glq 0.8.16's transform (the checkpoint reader assumes it for trellis layers)
    local a = glq.trellis.quantize_linear(W, H, ldlq_options(name, d, o, "trellis", "block-diagonal"))
    return { format = "trellis", bits = d.bits, variant = a.variant, transform = a.transform, shape = { W:size(1), W:size(2) },
      artifacts = { trellis_packed = a.trellis_packed, SU = a.SU, SV = a.SV, Wscale = a.Wscale, tlut = a.tlut } }
  end,
  tensor_field = "trellis_packed", codebooks = { { "trellis", 16 } },
  fields = { trellis_packed = true, SU = true, SV = true, Wscale = true, tlut = true, bias = true },
  tensors = trellis_tensors, entry = trellis_entry, read = trellis_read, config = trellis_config, linear = trellis_linear,
  record_bpw = function(rec) return rec.bits * rec.m_pad * rec.n_pad / (rec.shape[1] * rec.shape[2]) end,
}

-- ---- HiF4 (4.5 bits per weight in 64-weight groups), optionally rotated (rht) and with LDLQ feedback ----
-- Stored as format "hif4": e6m2 (m, n64), e1_8_packed / e1_16_packed / s1p2_packed (m, n64, 1|2|32) u8
-- (n64 = ceil(n / 64)); SV: the f16 RHT signs of the rotated input (padded to a multiple of 8), if rotated.
local HIF4_FIELDS = { "e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed" }

local function hif4_tensors(where, e, settle)
  local p = e.pack
  if type(p) ~= "table" then fail("%s: format hif4 needs a pack table", where) end
  local e6 = check_tensor(where, "e6m2", p.e6m2, "u8", { false, false })
  local s = e6:shape()
  local m, n = settle(p.shape or e.shape, { s[1], s[2] * 64 })
  local nb = math.ceil(n / 64)
  check_tensor(where, "e6m2", e6, "u8", { m, nb })
  for f, last in pairs(HIF4_LAST) do check_tensor(where, f, p[f], "u8", { m, nb, last }) end
  local out = {}
  for _, f in ipairs(HIF4_FIELDS) do out[f] = p[f] end
  local sv = e.sv or p.signs
  if sv ~= nil then
    if not glq.is_tensor(sv) then fail("%s: sv must be a tensor of +-1 signs, got %s", where, type(sv)) end
    -- signs cover the rotated input dimension, padded to a multiple of 8 for the transform
    check_tensor(where, "sv", sv, sv:dtype() == "i8" and "i8" or nil, { ceil8(n) })
    out.SV = sv:dtype() == "f16" and sv or sv:to("f16")
  end
  return out, { label = sv and "hif4+rht" or "hif4" }, m, n
end

local function hif4_entry(rec, get, e)
  local p = { shape = { rec.shape[1], rec.shape[2] } }
  for _, f in ipairs(HIF4_FIELDS) do p[f] = get(f) end
  e.sv = get("SV")
  p.signs = e.sv
  e.pack = p
end

local function hif4_read(name, get, x)
  local where = x.file .. ": " .. name
  for _, f in ipairs(HIF4_FIELDS) do
    if not get(f) then fail("%s: missing tensor %s.%s", where, name, f) end
  end
  local e6 = check_tensor(where, name .. ".e6m2", get("e6m2"), "u8", { false, false })
  local m, nb = e6:shape()[1], e6:shape()[2]
  local sv = get("SV")
  local exp = x.exp
  local n = exp and exp[2] or (sv and sv:numel()) or nb * 64
  if exp and exp[1] ~= m or math.ceil(n / 64) ~= nb then
    fail("%s: %s.e6m2 has shape %s but config.json implies %s", where, name, shape_str(e6:shape()),
      shape_str({ exp and exp[1] or m, math.ceil(n / 64) }))
  end
  for f, last in pairs(HIF4_LAST) do check_tensor(where, name .. "." .. f, get(f), "u8", { m, nb, last }) end
  if sv then check_tensor(where, name .. ".SV", sv, "f16", { ceil8(n) }) end
  local lb = x.quant.layer_bpw and x.quant.layer_bpw[name]
  if lb ~= nil and lb ~= (sv and "hif4+rht" or "hif4") then
    fail("%s: layer_bpw says %s for %s, the tensors hold %s", x.cfgp, tostring(lb), name, sv and "hif4+rht" or "hif4")
  end
  return { format = "hif4", shape = { m, n } }
end

local function hif4_linear(e)
  local pack = e.pack
  if e.sv then
    pack = {}
    for k, v in pairs(e.pack) do pack[k] = v end
    pack.signs = e.sv:to("i8")
  end
  return glq.hif4.linear(pack, e.bias)
end

local function hif4_label(d)
  return "hif4" .. (d.rht and "+rht" or "") .. (d.ldlq and "+ldlq" or "")
end
add {
  name = "hif4", label = hif4_label, alloc_value = hif4_label,
  stored_bits = function(_, _, inn) return 4.5 * math.ceil(inn / 64) * 64 / inn end, -- groups of 64 inputs
  quantize = function(name, W, H, d, o)
    local pack
    if d.ldlq then
      if not H then fail("layer %s: HiF4 with LDLQ needs calibration Hessians", name) end
      pack = glq.hif4.quantize_ldlq(W, H, { rht = d.rht or false, seed = o.seed or 0, damp = o.damp or 0.01 })
    elseif d.rht then
      pack = glq.hif4.quantize_rht(W, { seed = o.seed or 0 })
    else
      pack = glq.hif4.quantize(W, { name = name })
    end
    local shape = { W:size(1), W:size(2) }
    return { format = "hif4", shape = shape, sv = pack.signs and pack.signs:to("f16") or nil,
      rht_seed = pack.signs and pack.seed or nil,
      pack = { e6m2 = pack.e6m2, e1_8_packed = pack.e1_8_packed, e1_16_packed = pack.e1_16_packed,
        s1p2_packed = pack.s1p2_packed, shape = shape } }
  end,
  tensor_field = "e6m2",
  fields = { e6m2 = true, e1_8_packed = true, e1_16_packed = true, s1p2_packed = true, SV = true, bias = true },
  tensors = hif4_tensors, entry = hif4_entry, read = hif4_read, linear = hif4_linear, reference_layout = true,
  record_bpw = function(rec) local n = rec.shape[2] return 4.5 * math.ceil(n / 64) * 64 / n end,
}

-- left as it is in the source (the checkpoint keeps it as a dense tensor)
add {
  name = "dense", label = function() return "dense" end, alloc_value = function() return "dense" end,
  stored_bits = function() return 16 end,
}

-- the formats a checkpoint stores (entries with a checkpoint layout), in the order their
-- quantization_config fields are written and error messages list them
M.stored = {}
for _, name in ipairs(M.names) do
  if BY_NAME[name].read then M.stored[#M.stored + 1] = BY_NAME[name] end
end

-- stored code bits per weight of decision d for an (out x in) layer (see stored_bits above)
function M.stored_bits(d, out, inn) return BY_NAME[d.format].stored_bits(d, out, inn) end

-- the decision a bpw allocation map's value names (2/3/4: E8 widths, or a label such as "hif4+rht"),
-- a fresh table; nil for any other value
local NAMED = {}
for _, rht in ipairs { false, true } do
  for _, ldlq in ipairs { false, true } do
    local d = { format = "hif4", rht = rht or nil, ldlq = ldlq or nil }
    NAMED[hif4_label(d)] = d
  end
end
NAMED.dense = { format = "dense" }

function M.from_alloc_value(v)
  local b = tonumber(v)
  if type(v) == "number" or (type(v) == "string" and b) then
    if b == 2 or b == 3 or b == 4 then return { format = "e8", bits = b } end
    return nil
  end
  local d = NAMED[v]
  if not d then return nil end
  local t = {}
  for k, x in pairs(d) do t[k] = x end
  return t
end

return M
