-- The forward pass on the GPU (the model's cuda backend: m:to("cuda"), --device cuda) against the
-- CPU forward and llama2.c's references. Runs on a machine with a CUDA GPU (`make test-gpu`); elsewhere every
-- case is pending with the reason.
local glq = require "glq"
local util = require "spec.support.util"

local S = "../shared/models/stories260K"
local have_model = util.exists(S .. "/stories260K.gguf")
local ok, why = glq.core.cuda.available()
local SMOL = (os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf"

-- max |a - b| / max |b| over two CPU tensors of equal shape
local function rel_diff(a, b)
  return a:max_abs_diff(b) / math.max(b:absmax(), 1e-30)
end

describe("GPU forward", function()
  if not ok then
    it("needs a CUDA GPU", function() pending("no CUDA device: " .. tostring(why)) end)
    return
  end
  if not have_model then
    it("needs ../shared/models/stories260K", function() pending("../shared/models/stories260K is absent: skipped") end)
    return
  end
  local model, eval = require "glq.model", require "glq.eval"
  local m = model.load(S .. "/stories260K.gguf")
  local g = m:cuda()

  it("device tensors round-trip and narrow without copying", function()
    local t = glq.randn({ 3, 5, 7 }, 11)
    local d = t:cuda()
    assert.same({ 3, 5, 7 }, d:size())
    assert.equal(0, d:cpu():max_abs_diff(t))
    local v = d:narrow(1, 2, 2)
    assert.equal(0, v:cpu():max_abs_diff(t:narrow(1, 2, 2):contiguous()))
    assert.has_error(function() d:narrow(2, 1, 2) end)
    assert.has_error(function() d:narrow(1, 3, 2) end)
  end)

  it("runs on the cuda backend: device argmax, f32 caches only, no CPU cache", function()
    assert.equal("cuda", g.device)
    assert.equal("cuda", g.c:device())
    assert.is_true(g.c:has("argmax"))
    assert.is_false(g.c:has("kv_quant"))
    assert.equal(g, g:to("cuda"))
    assert.error_matches(function() g:new_cache { dtype = "int8" } end, "GPU KV cache is f32")
    assert.error_matches(function() g.c:forward({ 1, 2 }, { cache = m:new_cache {} }) end, "a cpu KV cache cannot serve")
    assert.error_matches(function() m.c:forward({ 1, 2 }, { cache = g:new_cache {} }) end, "a cuda KV cache cannot serve")
    assert.error_matches(function() g.c:head(glq.zeros("f32", { 2, m.cfg.dim })) end, "expected a cuda tensor")
    assert.is_true(g.c:bytes() > 0)
  end)

  it("row statistics (NLL, KL, top-1) on the GPU equal the CPU's", function()
    local V = m.cfg.vocab
    local p = glq.randn({ 37, V }, 5):mul(4)
    local q = p:add(glq.randn({ 37, V }, 6))
    q:set(100, 3, 1); q:set(100, 3, 7); p:set(100, 3, 7) -- a tied argmax goes to the lowest index
    local t = glq.zeros("i32", { 37 })
    for i = 1, 37 do t:set((i * 37) % V, i) end
    local a, b = m.c:nll_rows(q, t), g.c:nll_rows(q:cuda(), t)
    assert.is_true(a:max_abs_diff(b) < 1e-9)
    local ka, aa = m.c:kl_rows(p, q)
    local kb, ab = g.c:kl_rows(p:cuda(), q:cuda())
    assert.is_true(ka:max_abs_diff(kb) < 1e-9)
    assert.equal(0, aa:to("f64"):max_abs_diff(ab:to("f64")))
  end)

  it("all-position logits match the CPU forward", function()
    local ids = m:encode("Once upon a time, there was a little dog named Max. He liked to run in the park.")
    local toks = model.ids_tensor(ids)
    local a = m.c:forward(toks, { all_logits = true })
    local b = g.c:forward(toks, { all_logits = true })
    assert.is_true(rel_diff(b, a) < 1e-5, "relative difference " .. rel_diff(b, a))
    -- identical bytes from run to run
    assert.equal(0, g.c:forward(toks, { all_logits = true }):max_abs_diff(b))
  end)

  it("batched sequences give each sequence's own logits", function()
    local a = m:encode("Lily saw a big red ball in the garden")
    local b = m:encode("The cat sat on the warm mat and sleep")
    local n = math.min(#a, #b)
    local rows = { {}, {} }
    for i = 1, n do rows[1][i] = a[i]; rows[2][i] = b[i] end
    local both = g.c:forward(rows, { all_logits = true })
    local one = g.c:forward({ rows[2] }, { all_logits = true })
    assert.is_true(rel_diff(both:narrow(1, 2, 1):contiguous(), one) < 1e-5)
  end)

  it("greedy tokens chosen on the GPU equal the argmax of the logits", function()
    local ids = model.ids_tensor(m:encode("Once upon a time, there was a"))
    local lg = g.c:forward(ids, {})
    local best, arg = -math.huge, -1
    for j = 1, lg:size(2) do
      local v = lg:get(1, j)
      if v > best then best, arg = v, j - 1 end
    end
    assert.equal(arg, g.c:forward(ids, { argmax = true }))
    local a, b = g.c:forward(glq.tensor({ 1, 2, 3, 4, 5, 6 }, { 2, 3 }, "i32"), { argmax = true })
    assert.is_number(a)
    assert.is_number(b)
    assert.has_error(function() g.c:forward(ids, { argmax = true, all_logits = true }) end)
  end)

  it("greedy decoding from BOS reproduces llama2.c's 256 steps byte for byte", function()
    assert.equal(util.stories_greedy(g, "bos"))
  end)

  it("greedy decoding of the prompt 'Zoo' reproduces the reference", function()
    assert.equal(util.stories_greedy(g, "Zoo"))
  end)

  it("perplexity equals the CPU's within 0.01% on WikiText-2 windows", function()
    local ids = eval.tokenize_file(m, S .. "/../../text/wikitext-2-raw/wikitext2_test_hf_joined.txt")
    local a = eval.run(m, ids, { seqlen = 512, max_windows = 40, quiet = true })
    local b = eval.run(g, ids, { seqlen = 512, max_windows = 40, quiet = true })
    assert.equal(a.tokens, b.tokens)
    assert.is_true(math.abs(b.ppl / a.ppl - 1) < 1e-4, string.format("GPU %.6f vs CPU %.6f", b.ppl, a.ppl))
  end)

  it("captures the same Hessians as the CPU", function()
    local ids = m:encode("Once upon a time, there was a girl who liked to sing songs to the birds every morning.")
    local toks = glq.zeros("i32", { 2, 16 })
    local p = toks:ptr()
    for i = 0, 31 do p[i] = ids[(i % #ids) + 1] end
    local hc, hg = m.c:embed(toks), g.c:embed(toks)
    for l = 0, 1 do
      local _, capc = m.c:layer(l, hc, { capture = true })
      local _, capg = g.c:layer(l, hg, { capture = true })
      for _, k in ipairs { "qkv", "o", "gate_up", "down" } do
        assert.equal(capc.rows[k], capg.rows[k])
        assert.is_true(rel_diff(capg[k], capc[k]) < 1e-5, string.format("layer %d %s: %g", l, k, rel_diff(capg[k], capc[k])))
      end
      assert.is_true(rel_diff(hg:cpu(), hc) < 1e-5)
    end
    -- a capture table given is accumulated into, as on the CPU; in_place = false leaves hidden as it was
    local before = hg:cpu()
    local _, cap1 = g.c:layer(2, hg, { capture = true, in_place = false })
    local once = cap1.down:clone()
    g.c:layer(2, hg, { capture = cap1, in_place = false })
    assert.equal(0, hg:cpu():max_abs_diff(before))
    assert.equal(2 * 32, cap1.rows.down)
    assert.is_true(rel_diff(cap1.down, once:mul(2)) < 1e-12)
  end)

  it("runs E8 and HiF4 checkpoints like the CPU", function()
    local out = util.tmppath()
    local rc, log = util.sh(string.format("%s quantize --model %s/stories260K.gguf --output %s --bpw 2.5 --calib %s " ..
      "--nsamples 8 --seqlen 128 --device cuda --quiet", util.bin, S, out, S .. "/../../text/calib/tiny.utf8"))
    assert.equal(0, rc, log)
    local q = model.load(out)
    local qg = q:to("cuda")
    local ids = m:encode("Once upon a time, there was a little dog named Max.")
    local a = q.c:forward(model.ids_tensor(ids), { all_logits = true })
    local b = qg.c:forward(model.ids_tensor(ids), { all_logits = true })
    -- past the fused threshold the E8/HiF4 kernels take bf16 inputs (2^-9 relative rounding), the CPU layers f32;
    -- these 13 tokens take the split (hi + lo) input, but the bound stays the bf16 one
    assert.is_true(rel_diff(b, a) < 3e-2, "relative difference " .. rel_diff(b, a))
    util.sh("rm -rf " .. out)
  end)

  -- issue #15: the fused E8 shell / E8P / trellis kernels (cuda/e8_kernels.cu, cuda/lowbit.cu) give the CPU
  -- layers' greedy output byte for byte (a quantized stories260K, 2 bits, 128 steps from BOS)
  for _, book in ipairs({ "e8", "e8p", "trellis" }) do
    it("greedy output through " .. book .. " 2-bit layers equals the CPU's byte for byte", function()
      local out = util.tmppath()
      local rc, log = util.sh(string.format("%s quantize --model %s/stories260K.gguf --output %s --bpw 2 --codebook %s " ..
        "--calib %s --nsamples 8 --seqlen 128 --device cuda --quiet", util.bin, S, out, book, S .. "/../../text/calib/tiny.utf8"))
      assert.equal(0, rc, log)
      local gen = require "glq.generate"
      local q = model.load(out)
      local bos = { q:tokenizer():bos() }
      local _, cpu_text = gen.run(q, bos, { max_new_tokens = 128, stop_at_eos = false })
      local _, gpu_text = gen.run(q:to("cuda"), bos, { max_new_tokens = 128, stop_at_eos = false })
      assert.equal(cpu_text, gpu_text)
      util.sh("rm -rf " .. out)
    end)
  end

  it("SmolLM2-135M perplexity on the GPU equals the CPU's within 0.01% (first windows)", function()
    if not util.exists(SMOL) then pending("SmolLM2 not fetched (make model): skipped") return end
    local s = model.load(SMOL, { max_seq = 2048 })
    local sg = s:cuda()
    local ids = eval.tokenize_file(s, S .. "/../../text/wikitext-2-raw/wikitext2_test_hf_joined.txt")
    local a = eval.run(s, ids, { seqlen = 2048, max_windows = 2, quiet = true })
    local b = eval.run(sg, ids, { seqlen = 2048, max_windows = 2, quiet = true })
    assert.is_true(math.abs(b.ppl / a.ppl - 1) < 1e-4, string.format("GPU %.6f vs CPU %.6f", b.ppl, a.ppl))
  end)
end)

-- LDLQ sweeps on the GPU (cuda/ldlq.cu): exact search and the CPU's per-row arithmetic, so a layer whose
-- padded input dimension is at most 128 (one column group: no GEMM) gives the CPU's artifacts byte for
-- byte; larger layers differ only through the summation order of the group updates.
describe("LDLQ on the GPU", function()
  if not ok then
    it("needs a CUDA GPU", function() pending("no CUDA device: " .. tostring(why)) end)
    return
  end
  -- a correlated Hessian (f64) for n inputs
  local function hessian(n, seed)
    local x = glq.matmul(glq.randn({ 4 * n, n }, seed), glq.randn({ n, n }, seed + 1))
    local h = glq.zeros("f64", { n, n })
    glq.hessian_accumulate(h, x)
    return h:mul(1 / (4 * n))
  end
  local function same_artifacts(a, b)
    for _, k in ipairs { "Qidxs", "Qidxs2", "Wscale", "inv_resid_scale" } do
      if (a[k] == nil) ~= (b[k] == nil) then return false, k .. " present in one only" end
      if a[k] and a[k]:to("f64"):max_abs_diff(b[k]:to("f64")) ~= 0 then return false, k .. " differs" end
    end
    return true
  end
  local function agreement(a, b)
    local x, y = a.Qidxs:to("f64"), b.Qidxs:to("f64")
    local n, same = x:numel(), 0
    local px, py = x:contiguous():ptr(), y:contiguous():ptr()
    for i = 0, n - 1 do if px[i] == py[i] then same = same + 1 end end
    return same / n
  end

  it("gives the CPU's artifacts for layers of up to 128 inputs (2, 3, 4 bits; padding; no feedback)", function()
    for _, c in ipairs { { 40, 64, 2 }, { 24, 128, 3 }, { 17, 120, 4 }, { 64, 128, 2, false }, { 33, 96, 4, true, false } } do
      local m, n, bits = c[1], c[2], c[3]
      local W, H = glq.randn({ m, n }, m + n), hessian(n, n)
      local o = { bpw = bits, name = "l" .. m, feedback = c[4] ~= false, scale_search = c[5] ~= false }
      local a = glq.quantize_linear(W, H, o)
      o.device = "cuda"
      local b = glq.quantize_linear(W, H, o)
      local same, what = same_artifacts(a, b)
      assert.is_true(same, string.format("%d x %d, %d bits: %s", m, n, bits, tostring(what)))
      assert.equal(a.stats.proxy_loss, b.stats.proxy_loss)
    end
  end)

  it("matches the CPU's quality on larger layers, deterministically", function()
    for _, bits in ipairs { 2, 3, 4 } do
      local W, H = glq.randn({ 96, 768 }, 7 + bits), hessian(768, 3)
      local a = glq.quantize_linear(W, H, { bpw = bits, name = "big" })
      local b = glq.quantize_linear(W, H, { bpw = bits, name = "big", device = "cuda" })
      local b2 = glq.quantize_linear(W, H, { bpw = bits, name = "big", device = "cuda" })
      assert.is_true(same_artifacts(b, b2), "two GPU runs differ")
      local agree, ratio = agreement(a, b), b.stats.proxy_loss / a.stats.proxy_loss
      assert.is_true(agree > 0.9 and math.abs(ratio - 1) < 0.02,
        string.format("%d bits: index agreement %.4f, proxy loss GPU/CPU %.5f", bits, agree, ratio))
    end
  end)

  it("quantizes layers side by side like one call each", function()
    local jobs, H = {}, hessian(256, 9)
    for i = 1, 4 do jobs[i] = { glq.randn({ 48, 256 }, 20 + i), H, { bpw = 2 + i % 3, name = "j" .. i, device = "cuda" } } end
    local r = glq.quantize_linears(jobs)
    for i = 1, 4 do
      local one = glq.quantize_linear(jobs[i][1], H, jobs[i][3])
      assert.is_true(same_artifacts(r[i], one), "job " .. i)
    end
  end)

end)
