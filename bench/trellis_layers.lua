-- trellis_layers.lua - held-out style layer check: relative proxy loss tr(dW H dWᵀ)/tr(W H Wᵀ) of the trellis
-- codebook (QTIP 3inst, glq 0.8.16 layout) vs the E8 shell codebook at 2/3/4 bits, on real layers with their
-- calibration Hessians (dense propagation: each layer sees the unquantized model's activations).
-- Run: build/glq bench/trellis_layers.lua MODEL CALIB_TEXT NSAMPLES SEQLEN LAYERS ROLES [BITS]
--   e.g. build/glq bench/trellis_layers.lua ../shared/models/stories260K/stories260K.gguf \
--          ../shared/text/calib/tiny.utf8 32 256 0,2,4 q,o,up,down 2,3,4
local model = require "glq.model"
local modelcfg = require "glq.modelcfg"
local quantize = require "glq.quantize"
local progress = require "glq.progress"

local path, calib = arg[1], arg[2]
local nsamples, seqlen = tonumber(arg[3] or "16"), tonumber(arg[4] or "256")
local function list(s) local t = {} for x in s:gmatch("[^,]+") do t[#t + 1] = x end return t end
local layers, roles, bits = list(arg[5] or "0"), list(arg[6] or "q,o,up,down"), list(arg[7] or "2,3,4")
local CAP = { q = "qkv", k = "qkv", v = "qkv", o = "o", gate = "gate_up", up = "gate_up", down = "down" }

local src = model.open(path)
local m = model.load(src, { lazy = true, max_seq = math.max(seqlen, 8) })
local tokens = quantize.calib_from_text(m, calib, nsamples, seqlen)
local hidden = m.c:embed(tokens)
local want = {}
for _, l in ipairs(layers) do want[tonumber(l)] = true end

-- tr(W H Wᵀ) and tr(dW H dWᵀ) with H f64 (n x n)
local function proxy(W, What, H) return glq.hif4.proxy_loss(W, What, H) end
local zero = function(W) return glq.zeros("f32", { W:size(1), W:size(2) }) end

print(string.format("model %s; calibration %s, %d x %d tokens; %d threads", path, calib, nsamples, seqlen, glq.num_threads()))
print("| layer | shape | bits | E8 shell rel. proxy | E8 bpw | trellis rel. proxy | trellis bpw | trellis vs E8 | E8 s | trellis s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for l = 0, src.cfg.n_layers - 1 do
  m:load_layer(l)
  local cap = {}
  for s = 1, hidden:size(1) do
    local h = hidden:narrow(1, s, 1)
    local _, c = m.c:layer(l, h, { capture = want[l] and cap or nil })
    if want[l] then cap = c end
  end
  if want[l] then
    for k, rows in pairs(cap.rows or {}) do
      if rows > 0 and cap[k] then cap[k] = cap[k]:mul(1 / rows):to("f64") end
    end
    for _, role in ipairs(roles) do
      local name = modelcfg.linear_name(l, role)
      local W = src:need(name .. ".weight"):to("f32")
      local H = cap[CAP[role]]
      local base = proxy(W, zero(W), H)
      for _, b in ipairs(bits) do
        local o = { bpw = tonumber(b), name = name, transform = "block-diagonal" }
        local t0 = progress.now()
        local e = glq.quantize_linear(W, H, o)
        local t1 = progress.now()
        local t = glq.trellis.quantize_linear(W, H, o)
        local t2 = progress.now()
        local pe = proxy(W, glq.dequantize_linear(e), H) / base
        local pt = proxy(W, glq.trellis.dequantize_linear(t), H) / base
        print(string.format("| %d %s | %dx%d | %s | %.5f | %.3f | %.5f | %.3f | %+.1f%% | %.2f | %.2f |", l, role, W:size(1), W:size(2),
          b, pe, e.stats.bpw, pt, t.stats.bpw, 100 * (pt / pe - 1), t1 - t0, t2 - t1))
        io.stdout:flush()
      end
    end
  end
end
