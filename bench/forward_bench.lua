-- forward_bench.lua - CPU forward throughput at SmolLM2-135M shapes with random dense weights:
-- prefill of one 512-token sequence through a KV cache, then greedy decode steps, for f32 and
-- bf16 weights and f32 / f16 / INT8 caches. Run from the repository root after `make`:
--   LUA_PATH='lua/?.lua;lua/?/init.lua' LUA_CPATH='build/lib/?.so' luajit bench/forward_bench.lua [decode_steps]
local glq = require "glq"

local STEPS = tonumber(arg and arg[1]) or 32
local cfg = { dim = 576, n_layers = 30, n_heads = 9, n_kv_heads = 3, head_dim = 64, ffn_dim = 1536,
  vocab = 49152, max_seq = 1024, norm_eps = 1e-5, rope_theta = 100000, rope_layout = "half", tied = true }

-- wall-clock seconds (CLOCK_MONOTONIC); os.clock() would add up every thread's CPU time
local ffi = require "ffi"
ffi.cdef [[ typedef struct { long tv_sec; long tv_nsec; } glq_bench_ts; int clock_gettime(int, glq_bench_ts *); ]]
local ts = ffi.new("glq_bench_ts")
local function now() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9 end

local seed = 0
local function weight(dt, ...)
  seed = seed + 1
  local w = glq.randn({ ... }, seed):mul(0.02)
  return dt == "f32" and w or w:to(dt)
end

local function build(dt)
  local m = glq.llama.new(cfg)
  local ones = glq.full("f32", { cfg.dim }, 1)
  m:set_embedding(weight(dt, cfg.vocab, cfg.dim))
  m:set_final_norm(ones)
  local q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  for l = 0, cfg.n_layers - 1 do
    local D = glq.linear.dense
    m:set_layer(l, { attn_norm = ones, ffn_norm = ones,
      q = D(weight(dt, q, cfg.dim)), k = D(weight(dt, kv, cfg.dim)), v = D(weight(dt, kv, cfg.dim)),
      o = D(weight(dt, cfg.dim, q)), gate = D(weight(dt, cfg.ffn_dim, cfg.dim)),
      up = D(weight(dt, cfg.ffn_dim, cfg.dim)), down = D(weight(dt, cfg.dim, cfg.ffn_dim)) })
  end
  return m
end

local prompt = {}
for i = 1, 512 do prompt[i] = (i * 7919) % cfg.vocab end

-- best of two runs; also the CPU seconds they used (os.clock sums every thread), which shows what
-- the code does when other processes share the cores: tokens / (cpu / threads)
local function run(m, cache_dtype)
  local best = { math.huge, math.huge, math.huge, math.huge }
  for _ = 1, 2 do
    local cache = glq.llama.kvcache(m, { dtype = cache_dtype })
    local t0, c0 = now(), os.clock()
    local logits = m:forward(prompt, { cache = cache })
    local t1, c1 = now(), os.clock()
    local greedy = glq.sampler.new({})
    for _ = 1, STEPS do logits = m:forward({ greedy:sample(logits)[1] }, { cache = cache }) end
    local t2, c2 = now(), os.clock()
    best = { math.min(best[1], t1 - t0), math.min(best[2], t2 - t1), math.min(best[3], c1 - c0), math.min(best[4], c2 - c1) }
  end
  local n = glq.num_threads()
  return 512 / best[1], STEPS / best[2], 512 / (best[3] / n), STEPS / (best[4] / n)
end

print(("forward throughput, SmolLM2-135M shapes (dim 576, 30 layers, 9/3 heads, ffn 1536, vocab 49152, tied), %d threads")
  :format(glq.num_threads()))
print(("%-8s %-6s %14s %14s   %s"):format("weights", "kv", "prefill tok/s", "decode tok/s", "(per CPU: prefill, decode)"))
for _, dt in ipairs({ "f32", "bf16" }) do
  local m = build(dt)
  for _, kv in ipairs(dt == "bf16" and { "f32", "f16", "int8" } or { "f32" }) do
    local p, d, pc, dc = run(m, kv)
    print(("%-8s %-6s %14.1f %14.1f   (%.1f, %.1f)"):format(dt, kv, p, d, pc, dc))
  end
  m = nil
  collectgarbage()
end
