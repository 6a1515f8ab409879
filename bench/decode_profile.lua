-- decode_profile.lua - where one SmolLM2-135M decode step spends its time, per projection format:
-- after a 512-token prefill, the median of full greedy decode steps (as model_bench.lua times them),
-- the medians of each projection role (one sweep over the 30 layers at B = 1, as in a step) and of
-- the output head; "alloc" is what making a 1 x vocab result tensor costs in Lua (every step makes
-- one for its logits: the binding steps the collector in proportion to its bytes, and the model's
-- ~100K Lua objects make that step expensive); "head" excludes it. "rest" is the remainder:
-- attention over ~520 cached positions, norms, RoPE, residuals, thread hand-offs and sampling.
-- Same variants as model_bench.lua.
-- Run: build/glq bench/decode_profile.lua [variant ...]   (variants: dense e8-2 e8-4 hif4; default all)
local model = require "glq.model"
local modelcfg = require "glq.modelcfg"
local progress = require "glq.progress"

local path = (os.getenv("GLQ_CACHE") or (os.getenv("HOME") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf"
if not io.open(path, "rb") then
  print("decode_profile: SmolLM2 not fetched (make model); skipped")
  return
end

local function random_e8(out, inn, bits, seed)
  local function codes(s) return glq.rand({ out, inn / 8 }, s):mul(65535):to("i32"):sub(glq.full("i32", { out, inn / 8 }, 32768)):to("i16") end
  local function signs(n, s) return glq.rand({ n }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { n }, 1)):to("f16") end
  local a = { Qidxs = codes(seed), SU = signs(out, seed + 1), SV = signs(inn, seed + 2), Wscale = glq.tensor({ 0.02 }, {}, "f32"),
    out_features = out, in_features = inn }
  if bits > 2 then
    a.Qidxs2 = codes(seed + 3)
    a.inv_resid_scale = glq.tensor({ 0.5 }, {}, "f32")
  end
  return glq.e8.linear(a, { bits = bits })
end

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

-- median milliseconds of fn() over n calls
local function time_ms(n, fn)
  local t = {}
  for i = 1, n do
    local t0 = progress.now()
    fn()
    t[i] = (progress.now() - t0) * 1e3
  end
  return median(t)
end

local variants = { dense = "dense f32", ["e8-2"] = "E8 2-bit", ["e8-4"] = "E8 4-bit", hif4 = "HiF4" }
local order = { "dense", "e8-2", "e8-4", "hif4" }
local chosen = #arg > 0 and arg or order

local prompt = {}
for i = 1, 512 do prompt[i] = (i * 7919) % 49152 end

print(string.format("SmolLM2-135M decode step after a 512-token prefill, %d threads, ms (medians)", glq.num_threads()))
print(string.format("%-10s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s", "variant", "step", "tok/s", "qkv", "o", "gate+up", "down",
  "layers", "head", "alloc", "rest", "linMB"))
for _, key in ipairs(chosen) do
  local variant = assert(variants[key], "unknown variant " .. key)
  local m = model.load(path, { max_seq = 1024 })
  local shapes = model.layer_shapes(m.cfg)
  local bytes = 0
  for l = 0, m.cfg.n_layers - 1 do
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local s = shapes[r.role]
      local lin
      if key == "e8-2" then lin = random_e8(s[1], s[2], 2, l * 10)
      elseif key == "e8-4" then lin = random_e8(s[1], s[2], 4, l * 10)
      elseif key == "hif4" then lin = glq.hif4.linear(glq.hif4.quantize(m:linear(name):dequantize()))
      end
      if lin then m:set_linear(name, lin) end
      bytes = bytes + m:linear(name):stored_bytes()
    end
  end
  collectgarbage()
  local cache = glq.llama.kvcache(m.c, { dtype = "f32", max_seq = 1024 })
  local logits = m.c:forward(model.ids_tensor(prompt), { cache = cache })
  local greedy = glq.sampler.new({})
  local one = glq.zeros("i32", { 1, 1 })
  local step = time_ms(24, function()
    one:ptr()[0] = greedy:sample(logits:reshape({ 49152 }))
    logits = m.c:forward(one, { cache = cache })
  end)
  -- per role: every layer's projection once on one row, summed over layers
  local role_ms = {}
  for _, r in ipairs(modelcfg.roles) do
    local x = glq.randn({ 1, shapes[r.role][2] }, 7)
    local lins = {}
    for l = 0, m.cfg.n_layers - 1 do lins[l + 1] = m:linear(modelcfg.linear_name(l, r.role)) end
    role_ms[r.role] = time_ms(9, function() for _, lin in ipairs(lins) do lin:forward(x) end end)
  end
  local h = glq.randn({ 1, m.cfg.dim }, 8)
  local alloc = time_ms(15, function() glq.zeros("f32", { 1, m.cfg.vocab }) end)
  local head = time_ms(15, function() m.c:head(h) end) - alloc
  local qkv, gu = role_ms.q + role_ms.k + role_ms.v, role_ms.gate + role_ms.up
  local layers = qkv + role_ms.o + gu + role_ms.down
  print(string.format("%-10s %7.2f %7.1f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.1f", key, step, 1e3 / step, qkv, role_ms.o, gu,
    role_ms.down, layers, head, alloc, step - layers - head - alloc, bytes / 1e6))
  m, cache, logits = nil, nil, nil
  collectgarbage()
end
