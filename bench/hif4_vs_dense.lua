-- hif4_vs_dense.lua - HiF4 (default policy: all 35 projections) against the dense stories260K model: max |Δlogit|
-- and mean KL over the first 20 WikiText-2 windows of 512 tokens. Run: build/glq bench/hif4_vs_dense.lua
local model, eval, q, modelcfg = require "glq.model", require "glq.eval", require "glq.quantize", require "glq.modelcfg"
local P = "../shared/models/stories260K/stories260K.gguf"
local base, m = model.load(P), model.load(P)
for l = 0, 4 do for _, r in ipairs(modelcfg.roles) do
  local name = modelcfg.linear_name(l, r.role)
  local _, lin = q.quantize_linear(name, base.src:need(name .. ".weight"):to("f32"), nil, nil, { format = "hif4" }, {})
  m:set_linear(name, lin)
end end
local ids = eval.tokenize_file(base, "../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt")
local mx, kl, n = 0, 0, 0
for w = 0, 19 do
  local t = model.ids_tensor(ids, w * 512 + 1, (w + 1) * 512)
  local a = base.c:head(base:hidden(t)):reshape({ 512, 512 })
  local b = m.c:head(m:hidden(t)):reshape({ 512, 512 })
  mx = math.max(mx, a:max_abs_diff(b))
  local k = glq.kl_rows(a, b)
  kl = kl + k:sum(); n = n + 512
end
print(string.format("HiF4 vs dense, stories260K, 20 windows x 512: max |dlogit| %.3f, mean KL %.4f", mx, kl / n))
