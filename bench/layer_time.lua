-- layer_time.lua - one thread's CPU time for SmolLM2-135M's 210 projection shapes at batch 1 through one quantized
-- kind, with random codes (no model file needed): the fused CPU decode kernels alone, without the rest of a step.
-- Run: build/glq bench/layer_time.lua [e8|e8p|trellis] [bits 2|3|4] [rounds] [l1]
--   l1: E8/E8P codes drawn from the table's first 256 entries only (its 2 KB stay in L1): the bound any table
--   layout could reach with the same instructions. Prints the best round (CPU time of the process, one thread).
local kind, bits = arg[1] or "e8p", tonumber(arg[2]) or 2
local rounds, l1 = tonumber(arg[3]) or 20, arg[4] == "l1"
if kind ~= "e8" and kind ~= "e8p" and kind ~= "trellis" then error("layer_time: kind is e8, e8p or trellis, got " .. kind, 0) end
if bits ~= 2 and bits ~= 3 and bits ~= 4 then error("layer_time: bits is 2, 3 or 4", 0) end
glq.num_threads(1)
local shapes = { { 576, 576 }, { 192, 576 }, { 192, 576 }, { 576, 576 }, { 1536, 576 }, { 1536, 576 }, { 576, 1536 } }
local function i16(shape, hi, seed) -- uniform in [0, hi] as uint16 patterns held in i16
  local t = glq.rand(shape, seed):mul(hi):to("i32")
  if hi > 32767 then t = t:sub(glq.full("i32", shape, 32768)) end
  return t:to("i16")
end
local function signs(n, s) return glq.rand({ n }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { n }, 1)):to("f16") end
local lins, xs = {}, {}
for l = 0, 29 do
  for r, s in ipairs(shapes) do
    local seed, out, inn = l * 10 + r, s[1], s[2]
    if kind == "trellis" then
      local tiles = (out / 16) * (inn / 16)
      lins[#lins + 1] = glq.trellis.linear({ trellis_packed = i16({ tiles, 16 * bits }, 65535, seed), SU = signs(out, seed + 1),
        SV = signs(inn, seed + 2), Wscale = glq.tensor({ 0.02 }, {}, "f32"), bits = bits, out_features = out, in_features = inn })
    else
      local hi = l1 and 255 or 65535
      local a = { Qidxs = i16({ out, inn / 8 }, hi, seed), SU = signs(out, seed + 1), SV = signs(inn, seed + 2),
        Wscale = glq.tensor({ 0.02 }, {}, "f32"), out_features = out, in_features = inn }
      if bits > 2 then
        a.Qidxs2 = i16({ out, inn / 8 }, bits == 3 and 255 or hi, seed + 3)
        a.inv_resid_scale = glq.tensor({ 0.5 }, {}, "f32")
      end
      lins[#lins + 1] = glq.e8.linear(a, { bits = bits, codebook = kind })
    end
    xs[#xs + 1] = glq.rand({ 1, inn }, seed):sub(glq.full("f32", { 1, inn }, 0.5))
  end
end
local best = math.huge
for _ = 1, rounds do
  local t0 = os.clock()
  for i, L in ipairs(lins) do L:forward(xs[i]) end
  best = math.min(best, os.clock() - t0)
end
print(string.format("%s %d-bit%s, 210 SmolLM2 layers at batch 1, one thread: best of %d rounds %.2f ms", kind, bits,
  l1 and " (codes < 256)" or "", rounds, best * 1e3))
