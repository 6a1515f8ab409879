-- glq.formats: the layer formats a policy decision can name, one entry each, so that the pipeline
-- (glq.quantize), the policies (glq.policy) and the allocator look a format up instead of asking
-- "which format is this?" in if-chains. A decision is {format = NAME, bits = 2|3|4} for the
-- lattice/trellis codebooks, {format = "hif4", rht = bool, ldlq = bool} or {format = "dense"}.
--
-- An entry holds:
--   name            the decision's format
--   check(d, where) raises when the decision is malformed (bits out of range, ...)
--   label(d)        the short name in reports, progress lines and bpw_allocation.json ("e8-3", "hif4+rht")
--   alloc_value(d)  the value that names d in a bpw allocation map (E8 widths are numbers)
--   stored_bits(d, out, inn)  code bits per weight an (out x in) layer will store: over its padded size,
--                   scalars (Wscale, RHT signs) not counted, as glq.checkpoint.stored_bpw measures them
--   ldlq_options(name, d, o)  options of glq.quantize_linear (formats quantized side by side only)
--   quantize(name, W, H, d, o, pre) -> the layer's checkpoint entry without bias (see glq.checkpoint);
--                   pre: its glq.quantize_linear result when computed side by side already; nil for dense
-- Adding a format: an entry here, its checkpoint tensors in glq.checkpoint (layer_tensors / layer_entry)
-- and its forward in glq.model.quantized_linear (docs/architecture.md, "Adding a format").
local glq = require "glq"

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
    transform = transform or o.transform or require("glq.checkpoint").TRANSFORM, -- "block-diagonal" with --glq-compat
    codebook = codebook,
    device = o.ldlq_device == "cuda" and "cuda" or nil } -- the LDLQ sweeps on the GPU
end

-- E8 lattice codebooks (8 weights per code, 16 bits per stage): the shell book and QuIP#'s E8P
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
e8_book("e8", nil)
e8_book("e8p", "e8p") -- its sweeps run on the CPU

-- QTIP's bitshift trellis (16x16 tiles, glq 0.8.16's layout); with --ldlq-device cuda the tiles'
-- Viterbi searches run on the GPU (same states)
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
}

-- HiF4 (4.5 bits per weight in 64-weight groups), optionally rotated (rht) and with LDLQ feedback
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
}

-- left as it is in the source (the checkpoint keeps it as a dense tensor)
add {
  name = "dense", label = function() return "dense" end, alloc_value = function() return "dense" end,
  stored_bits = function() return 16 end,
}

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
