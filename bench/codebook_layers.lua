-- codebook_layers.lua - held-out style layer check for any set of codebooks: relative proxy loss
-- tr(dW H dWᵀ)/tr(W H Wᵀ) and stored bits per weight per codebook at each width, on real layers with their
-- calibration Hessians (dense propagation: each layer sees the unquantized model's activations).
-- Run: build/glq bench/codebook_layers.lua MODEL CALIB_TEXT NSAMPLES SEQLEN LAYERS ROLES [BITS] [CODEBOOKS]
--   e.g. build/glq bench/codebook_layers.lua ../shared/models/stories260K/stories260K.gguf \
--          ../shared/text/calib/tiny.utf8 32 256 0,2,4 q,o,up,down 2,3,4 e8,e8p,trellis
-- The first codebook is the baseline of the "vs" columns; "trellis" uses glq.trellis.quantize_linear.
local model = require "glq.model"
local modelcfg = require "glq.modelcfg"
local quantize = require "glq.quantize"
local progress = require "glq.progress"

local path, calib = arg[1], arg[2]
local nsamples, seqlen = tonumber(arg[3] or "16"), tonumber(arg[4] or "256")
local function list(s) local t = {} for x in s:gmatch("[^,]+") do t[#t + 1] = x end return t end
local layers, roles, bits = list(arg[5] or "0"), list(arg[6] or "q,o,up,down"), list(arg[7] or "2,3,4")
local books = list(arg[8] or "e8,e8p")
local CAP = { q = "qkv", k = "qkv", v = "qkv", o = "o", gate = "gate_up", up = "gate_up", down = "down" }

local src = model.open(path)
local m = model.load(src, { lazy = true, max_seq = math.max(seqlen, 8) })
local tokens = quantize.calib_from_text(m, calib, nsamples, seqlen)
local hidden = m.c:embed(tokens)
local want = {}
for _, l in ipairs(layers) do want[tonumber(l)] = true end

local function run(book, W, H, o)
  if book == "trellis" then
    local t = glq.trellis.quantize_linear(W, H, o)
    return glq.trellis.dequantize_linear(t), t.stats.bpw
  end
  o.codebook = book
  local a = glq.quantize_linear(W, H, o)
  return glq.dequantize_linear(a), a.stats.bpw
end

print(string.format("model %s; calibration %s, %d x %d tokens; %d threads", path, calib, nsamples, seqlen, glq.num_threads()))
local head, rule = "| layer | shape | bits |", "|---|---|---|"
for i, b in ipairs(books) do
  head = head .. string.format(" %s rel. proxy | %s bpw |%s", b, b, i > 1 and string.format(" %s vs %s |", b, books[1]) or "")
  rule = rule .. "---|---|" .. (i > 1 and "---|" or "")
end
print(head .. " seconds |")
print(rule .. "---|")
for l = 0, src.cfg.n_layers - 1 do
  m:load_layer(l)
  local cap = {}
  for s = 1, hidden:size(1) do
    local _, c = m.c:layer(l, hidden:narrow(1, s, 1), { capture = want[l] and cap or nil })
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
      local base = glq.hif4.proxy_loss(W, glq.zeros("f32", { W:size(1), W:size(2) }), H)
      for _, b in ipairs(bits) do
        local row, p0, secs = string.format("| %d %s | %dx%d | %s |", l, role, W:size(1), W:size(2), b), nil, {}
        for i, book in ipairs(books) do
          local t0 = progress.now()
          local What, bpw = run(book, W, H, { bpw = tonumber(b), name = name, transform = "block-diagonal" })
          secs[#secs + 1] = string.format("%.2f", progress.now() - t0)
          local p = glq.hif4.proxy_loss(W, What, H) / base
          p0 = p0 or p
          row = row .. string.format(" %.5f | %.3f |", p, bpw) .. (i > 1 and string.format(" %+.1f%% |", 100 * (p / p0 - 1)) or "")
        end
        print(row .. " " .. table.concat(secs, " / ") .. " |")
        io.stdout:flush()
      end
    end
  end
end
