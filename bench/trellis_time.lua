-- trellis_time.lua - wall time of one trellis layer (glq.quantize_linear with codebook = "trellis": RHT,
-- LDLQ with one tail-biting Viterbi per 16x16 tile, Wscale search, statistics) on the CPU threads and,
-- where a CUDA device is present, with the Viterbi searches on the GPU; random W (N(0, 0.02^2)) and a
-- correlated Hessian (a rank-64 factor plus noise). The GPU's states are the CPU's bit for bit, so when
-- both run the packed codes must be identical (printed). Issue #14's targets: one 4096x4096 layer on
-- 2 CPU threads <= 60 s.
-- Run: glq bench/trellis_time.lua [shapes] [bits] [devices]
--   shapes: comma list of OUTxIN (default 4096x4096); bits: comma list (default 2); devices: cpu,cuda (default:
--   both where CUDA is available, else cpu)
local progress = require "glq.progress"

local shapes, bitsl, devs = {}, {}, {}
for m, n in ((arg and arg[1]) or "4096x4096"):gmatch("(%d+)x(%d+)") do shapes[#shapes + 1] = { tonumber(m), tonumber(n) } end
for b in ((arg and arg[2]) or "2"):gmatch("%d") do bitsl[#bitsl + 1] = tonumber(b) end
local cuda_ok, why = glq.core.cuda.available()
for d in ((arg and arg[3]) or (cuda_ok and "cpu,cuda" or "cpu")):gmatch("%a+") do
  if d == "cuda" and not cuda_ok then error("trellis_time: no CUDA device (" .. tostring(why) .. ")") end
  devs[#devs + 1] = d
end

local hessian = dofile("bench/support/hessian.lua")

local function same(a, b)
  local x, y = a.trellis_packed:to("f64"):contiguous(), b.trellis_packed:to("f64"):contiguous()
  local px, py = x:ptr(), y:ptr()
  for i = 0, x:numel() - 1 do if px[i] ~= py[i] then return "no" end end
  return "yes"
end

print(string.format("trellis layer quantization (3inst, glq.quantize_linear), %d CPU threads; %s", glq.num_threads(),
  cuda_ok and "CUDA available" or ("no CUDA: " .. tostring(why))))
print("| layer | bits | Viterbi on | seconds | of it: prepare / scale search / sweep / statistics | weights/s | proxy loss (mean row) | codes equal to the first row |")
print("|---|---|---|---|---|---|---|---|")
for _, s in ipairs(shapes) do
  local m, n = s[1], s[2]
  local W, H = glq.randn({ m, n }, m + n):mul(0.02), hessian(n, n)
  for _, bits in ipairs(bitsl) do
    local first
    for _, dev in ipairs(devs) do
      local t0 = progress.now()
      local a = glq.quantize_linear(W, H, { bpw = bits, codebook = "trellis", device = dev, name = "bench" })
      local dt = progress.now() - t0
      local st = a.stats
      print(string.format("| %dx%d | %d | %s | %.1f | %.2f / %.2f / %.2f / %.2f | %.3g | %.6g | %s |", m, n, bits, dev, dt,
        st.seconds_prepare or 0, st.seconds_search or 0, st.seconds_sweep or 0, st.seconds_stats or 0, m * n / dt,
        st.proxy_loss_orig, first and same(first, a) or "-"))
      io.stdout:flush()
      first = first or a
    end
  end
end
