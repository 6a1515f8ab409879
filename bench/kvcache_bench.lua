-- kvcache_bench.lua - memory of the f32 / f16 / INT8 (KIVI) KV caches and their effect on logits:
-- prefill a 900-token WikiText-2 prefix, then decode the next 100 tokens teacher-forced, comparing
-- each step's logits with the f32 cache (KL and max |Δlogit|).  build/glq bench/kvcache_bench.lua [model] [text]
local model, eval = require "glq.model", require "glq.eval"
local path = arg[1] or ((os.getenv("GLQ_CACHE") or (os.getenv("HOME") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf")
local text = arg[2] or "../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt"
if not io.open(path, "rb") or not io.open(text, "rb") then print("kvcache_bench: model or text absent; skipped") return end
local m = model.load(path, { max_seq = 1024 })
local ids = eval.tokenize_file(m, text)
local P, N, V = 900, 100, m.cfg.vocab

local function run(dtype)
  local cache = glq.llama.kvcache(m.c, { dtype = dtype, max_seq = 1024, residual_length = 128 })
  m.c:forward(model.ids_tensor(ids, 1, P), { cache = cache })
  local rows = {}
  for i = 1, N do
    local one = glq.zeros("i32", { 1, 1 })
    one:ptr()[0] = ids[P + i]
    rows[i] = m.c:forward(one, { cache = cache }):reshape({ 1, V })
  end
  return rows, cache:bytes()
end

local ref, ref_bytes = run("f32")
print(string.format("KV cache after %d tokens (SmolLM2-135M, 30 layers, 3 KV heads x 64, allocated for 1024 positions)", P + N))
print(string.format("%-6s %12s %10s %12s %14s %8s", "cache", "bytes", "vs f32", "KL mean", "max |dlogit|", "top-1"))
for _, dt in ipairs { "f32", "f16", "int8" } do
  local rows, bytes = run(dt)
  local kl, mx, agree = 0, 0, 0
  for i = 1, N do
    local k, a = glq.kl_rows(ref[i], rows[i])
    kl = kl + k:get(1); agree = agree + a:get(1)
    mx = math.max(mx, ref[i]:max_abs_diff(rows[i]))
  end
  print(string.format("%-6s %12d %9.2fx %12.2e %14.4f %8.3f", dt, bytes, bytes / ref_bytes, kl / N, mx, agree / N))
end
