-- model_bench.lua - CPU prefill (1 x 512) and decode throughput of SmolLM2-135M-Instruct with its
-- projections dense (f32, dequantized from the Q4_1 GGUF), E8 2/3/4-bit, HiF4, E8P 2-bit and trellis 2-bit.
-- The E8, E8P and trellis layers use random valid codes, signs and scales (uniform codes: on the CPU, where the
-- E8/E8P kernels read a 512 KB table, the worst case for its caches); HiF4 layers are the real weights converted.
-- Run: build/glq bench/model_bench.lua [decode_steps] [cpu|cuda] [rounds] [variants] [checkpoints]
-- (cuda: the same models copied to the GPU, f32 activations, decode steps replayed as CUDA graphs; variants: a
-- comma-separated subset of the labels below, e.g. "E8 2-bit,trellis 2-bit", or "" for none; dense f32 always
-- runs first; checkpoints: "label=DIR,..." adds models loaded from quantized checkpoints of SmolLM2, e.g.
-- "E8P 2-bit ckpt=q2", to time the codes of a real quantization). The variants are built first and measured in interleaved rounds (default 5): every
-- number is a median over rounds, and the E8/HiF4 ratio to dense is the median of the ratios
-- within a round, so slow drifts of a shared machine's memory bandwidth cancel.
local model = require "glq.model"
local modelcfg = require "glq.modelcfg"
local progress = require "glq.progress"

local STEPS = tonumber(arg and arg[1]) or 32
local DEVICE = arg and arg[2] == "cuda" and "cuda" or "cpu"
local ROUNDS = tonumber(arg and arg[3]) or 5
if DEVICE == "cuda" then
  local ok, why = glq.core.cuda.available()
  if not ok then print("model_bench: no CUDA device (" .. why .. "); skipped") return end
end
local path = (os.getenv("GLQ_CACHE") or (os.getenv("HOME") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf"
if not io.open(path, "rb") then
  print("model_bench: SmolLM2 not fetched (make model); skipped")
  return
end

local function random_e8(out, inn, bits, seed, codebook)
  local function codes(s) return glq.rand({ out, inn / 8 }, s):mul(65535):to("i32"):sub(glq.full("i32", { out, inn / 8 }, 32768)):to("i16") end
  local function signs(n, s) return glq.rand({ n }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { n }, 1)):to("f16") end
  local a = { Qidxs = codes(seed), SU = signs(out, seed + 1), SV = signs(inn, seed + 2), Wscale = glq.tensor({ 0.02 }, {}, "f32"),
    out_features = out, in_features = inn }
  if bits > 2 then
    a.Qidxs2 = bits == 3 and glq.rand({ out, inn / 8 }, seed + 3):mul(255):to("i16") or codes(seed + 3)
    a.inv_resid_scale = glq.tensor({ 0.5 }, {}, "f32")
  end
  return glq.e8.linear(a, { bits = bits, codebook = codebook })
end

-- a 3inst trellis layer with random bitstreams (SmolLM2's sides are multiples of 32)
local function random_trellis(out, inn, bits, seed)
  local packed = glq.rand({ (out / 16) * (inn / 16), 16 * bits }, seed):mul(65535):to("i32")
    :sub(glq.full("i32", { (out / 16) * (inn / 16), 16 * bits }, 32768)):to("i16")
  local function signs(n, s) return glq.rand({ n }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { n }, 1)):to("f16") end
  return glq.trellis.linear({ trellis_packed = packed, SU = signs(out, seed + 1), SV = signs(inn, seed + 2),
    Wscale = glq.tensor({ 0.02 }, {}, "f32"), bits = bits, out_features = out, in_features = inn })
end

local prompt = {}
for i = 1, 512 do prompt[i] = (i * 7919) % 49152 end

-- one measurement: prefill 1x512, then STEPS greedy decode steps into one logits tensor
local function run(m)
  local cache = m:new_cache { dtype = "f32", max_seq = 1024 }
  local t0 = progress.now()
  local logits = m.c:forward(model.ids_tensor(prompt), { cache = cache })
  local t1 = progress.now()
  local greedy = glq.sampler.new({})
  local one, step = glq.zeros("i32", { 1, 1 }), { cache = cache, out = logits }
  for _ = 1, STEPS do
    one:ptr()[0] = greedy:sample(logits:reshape({ 49152 }))
    m.c:forward(one, step)
  end
  local t2 = progress.now()
  return 512 / (t1 - t0), STEPS / (t2 - t1)
end

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local n = #c
  return n % 2 == 1 and c[(n + 1) / 2] or (c[n / 2] + c[n / 2 + 1]) / 2
end

if DEVICE == "cuda" then
  print(string.format("SmolLM2-135M-Instruct forward on the GPU (%s), prefill 1x512, %d decode steps", select(2, glq.core.cuda.available()), STEPS))
else
  print(string.format("SmolLM2-135M-Instruct forward on the CPU, %d threads, prefill 1x512, %d decode steps", glq.num_threads(), STEPS))
end
print(string.format("%-22s %14s %14s %14s %14s", "projections", "prefill tok/s", "decode tok/s", "decode/dense", "linear MB"))
local variants, models, mbytes = { "dense f32", "E8 2-bit", "E8 3-bit", "E8 4-bit", "HiF4", "E8P 2-bit", "trellis 2-bit" }, {}, {}
if arg and arg[4] and arg[4] ~= "" then
  local want, picked = {}, { "dense f32" }
  for v in arg[4]:gmatch("[^,]+") do want[v] = true end
  want["dense f32"] = nil
  for i = 2, #variants do
    if want[variants[i]] then picked[#picked + 1] = variants[i]; want[variants[i]] = nil end
  end
  local unknown = next(want)
  if unknown then error("model_bench: unknown variant '" .. unknown .. "' (" .. table.concat(variants, ", ") .. ")", 0) end
  variants = picked
end
if arg and arg[4] == "" then variants = { "dense f32" } end
local ckpt_dir = {}
for item in ((arg and arg[5]) or ""):gmatch("[^,]+") do
  local label, dir = item:match("^(.-)=(.+)$")
  if not label then error("model_bench: checkpoints are label=DIR, got '" .. item .. "'", 0) end
  variants[#variants + 1], ckpt_dir[label] = label, dir
end
for vi, variant in ipairs(variants) do
  local m = model.load(ckpt_dir[variant] or path, { max_seq = 1024 })
  local bytes = 0
  local shapes = model.layer_shapes(m.cfg)
  for l = 0, m.cfg.n_layers - 1 do
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local s = shapes[r.role]
      local lin
      if variant == "E8 2-bit" then lin = random_e8(s[1], s[2], 2, l * 10)
      elseif variant == "E8 3-bit" then lin = random_e8(s[1], s[2], 3, l * 10)
      elseif variant == "E8 4-bit" then lin = random_e8(s[1], s[2], 4, l * 10)
      elseif variant == "HiF4" then lin = glq.hif4.linear(glq.hif4.quantize(m:linear(name):dequantize()))
      elseif variant == "E8P 2-bit" then lin = random_e8(s[1], s[2], 2, l * 10, "e8p")
      elseif variant == "trellis 2-bit" then lin = random_trellis(s[1], s[2], 2, l * 10)
      end
      if lin then m:set_linear(name, lin) end
      bytes = bytes + m:linear(name):stored_bytes()
    end
  end
  collectgarbage()
  models[vi] = DEVICE == "cuda" and m:cuda() or m
  mbytes[vi] = bytes
end
local pre, dec, ratio = {}, {}, {}
for vi = 1, #variants do pre[vi], dec[vi], ratio[vi] = {}, {}, {} end
for r = 1, ROUNDS do
  for vi = 1, #variants do
    pre[vi][r], dec[vi][r] = run(models[vi])
    ratio[vi][r] = dec[vi][r] / dec[1][r]
  end
end
for vi, variant in ipairs(variants) do
  print(string.format("%-22s %14.1f %14.1f %14.2f %14.1f", variant, median(pre[vi]), median(dec[vi]), median(ratio[vi]),
    mbytes[vi] / 1e6))
end
print("decode/dense in each round:")
for vi = 2, #variants do
  local r = {}
  for i, v in ipairs(ratio[vi]) do r[i] = string.format("%.2f", v) end
  print(string.format("  %-20s %s", variants[vi], table.concat(r, " ")))
end
