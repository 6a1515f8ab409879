-- ldlq_bench.lua - wall time of glq.quantize_linear (RHT, factorisation, Wscale/residual-scale search,
-- LDLQ sweep, statistics) with the sweeps on the CPU threads vs on the GPU, for layer shapes of
-- SmolLM2-135M and Llama-3-8B, with a random correlated Hessian (a rank-64 factor plus noise).
-- Also prints how many indices agree and the proxy losses (the two differ only through the summation
-- order of the group-update GEMMs). Run: build/glq bench/ldlq_bench.lua [shapes] [bits]
--   shapes: comma list of OUTxIN (default 576x1536,4096x4096,14336x4096,4096x14336); bits: comma list (default 2,4)
local progress = require "glq.progress"

local ok, why = glq.core.cuda.available()
if not ok then print("ldlq_bench: no CUDA device (" .. tostring(why) .. "); skipped") return end

local shapes, bitsl = {}, {}
for m, n in ((arg and arg[1]) or "576x1536,4096x4096,14336x4096,4096x14336"):gmatch("(%d+)x(%d+)") do shapes[#shapes + 1] = { tonumber(m), tonumber(n) } end
for b in ((arg and arg[2]) or "2,4"):gmatch("%d") do bitsl[#bitsl + 1] = tonumber(b) end

local hessian = dofile("bench/support/hessian.lua")

local function agreement(a, b)
  local x, y = a.Qidxs:to("f64"):contiguous(), b.Qidxs:to("f64"):contiguous()
  local px, py, same = x:ptr(), y:ptr(), 0
  for i = 0, x:numel() - 1 do if px[i] == py[i] then same = same + 1 end end
  return same / x:numel()
end

print(string.format("glq.quantize_linear, CPU sweeps (%d threads) vs GPU sweeps; %s", glq.num_threads(), why))
print("| layer | bits | CPU s | GPU s | speed-up | GPU: prepare / search / sweep / stats s | indices equal | proxy loss CPU | proxy loss GPU |")
print("|---|---|---|---|---|---|---|---|---|")
for _, s in ipairs(shapes) do
  local m, n = s[1], s[2]
  local W, H = glq.randn({ m, n }, m + n):mul(0.02), hessian(n, n)
  for _, bits in ipairs(bitsl) do
    local o = { bpw = bits, name = "bench" }
    glq.quantize_linear(glq.randn({ 64, 64 }, 1), nil, { bpw = bits, device = "cuda" }) -- warm the GPU tables
    local t0 = progress.now()
    local a = glq.quantize_linear(W, H, o)
    local t1 = progress.now()
    o.device = "cuda"
    local b = glq.quantize_linear(W, H, o)
    local t2 = progress.now()
    local st = b.stats
    print(string.format("| %dx%d | %d | %.2f | %.2f | %.1fx | %.2f / %.2f / %.2f / %.2f | %.5f | %.6g | %.6g |", m, n, bits,
      t1 - t0, t2 - t1, (t1 - t0) / (t2 - t1), st.seconds_prepare, st.seconds_search, st.seconds_sweep, st.seconds_stats,
      agreement(a, b), a.stats.proxy_loss, b.stats.proxy_loss))
    io.stdout:flush()
  end
end
