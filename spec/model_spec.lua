-- The model runtime on the real stories260K model: greedy decoding and logits against llama2.c's
-- published outputs, the HF form against the GGUF form, and WikiText-2 perplexity against the
-- float64 reference (../shared/models/stories260K/reference).
local glq = require "glq"
local util = require "spec.support.util"
local read = util.slurp
local json = require "glq.json"

local S = "../shared/models/stories260K"
local have = io.open(S .. "/stories260K.gguf", "rb")
if have then have:close() end


describe("stories260K", function()
  if not have then
    it("needs ../shared/models/stories260K", function() pending("../shared/models/stories260K is absent: skipped") end)
    return
  end
  local model, gen = require "glq.model", require "glq.generate"
  local m = model.load(S .. "/stories260K.gguf")
  local ref = json.read_file(S .. "/reference/prompt_once_upon_a_time_logits.json")

  it("tokenizes the prompt like llama2.c", function()
    assert.same(ref.token_ids_with_bos, m:encode(ref.prompt))
  end)

  it("top-5 next-token logits match the reference within 1e-4", function()
    local lg = m:logits(m:encode(ref.prompt))
    for _, e in ipairs(ref.last_position_top5) do
      assert.is_true(math.abs(lg:get(e[1] + 1) - e[3]) < 1e-4, string.format("token %d: %g vs %g", e[1], lg:get(e[1] + 1), e[3]))
    end
  end)

  it("greedy decoding from BOS reproduces llama2.c's 256 steps byte for byte", function()
    assert.equal(util.stories_greedy(m, "bos"))
  end)

  it("greedy decoding of the prompt 'Zoo' reproduces the reference", function()
    assert.equal(util.stories_greedy(m, "Zoo"))
  end)

  it("the HF safetensors form gives the same logits as the GGUF form", function()
    local h = model.load(S .. "/hf", { tokenizer = S .. "/stories260K.gguf" })
    local ids = m:encode(ref.prompt)
    local a, b = m:logits(ids), h:logits(ids)
    assert.is_true(a:max_abs_diff(b) < 1e-4)
  end)

  it("int8 KIVI and f16 caches stay close to f32 and use less memory", function()
    local ids = m:encode("Once upon a time, there was a little dog")
    local outs = {}
    for _, dt in ipairs { "f32", "f16", "int8" } do
      local out, _, st = gen.run(m, ids, { max_new_tokens = 40, kv_cache = dt, residual_length = 8 })
      outs[dt] = { ids = out, bytes = st.cache_bytes }
    end
    assert.same(outs.f32.ids, outs.f16.ids)
    assert.is_true(outs.int8.bytes < outs.f16.bytes and outs.f16.bytes < outs.f32.bytes)
    local same = 0
    for i = 1, 40 do if outs.int8.ids[i] == outs.f32.ids[i] then same = same + 1 end end
    assert.is_true(same >= 30, "int8 cache diverged after " .. same .. " tokens")
  end)

  it("WikiText-2 test perplexity at seqlen 512 matches the float64 reference within 0.1%", function()
    local text = S .. "/../../text/wikitext-2-raw/wikitext2_test_hf_joined.txt"
    local eval = require "glq.eval"
    local ids = eval.tokenize_file(m, text)
    -- under the sanitizers only the first windows run (the full run takes ~10x longer there)
    local asan = os.getenv("GLQ_ASAN") ~= nil
    local r = eval.run(m, ids, { seqlen = 512, quiet = true, max_windows = asan and 20 or nil })
    if asan then
      assert.is_true(r.ppl > 50 and r.ppl < 300)
    else
      assert.equal(1591, r.windows)
      assert.equal(813001, r.tokens)
      assert.is_true(math.abs(r.ppl / 122.334401498566 - 1) < 1e-3, "ppl " .. r.ppl)
    end
  end)

  it("errors clearly on a prompt longer than the context", function()
    local small = model.load(S .. "/stories260K.gguf", { max_seq = 8 })
    local ids = small:encode("Once upon a time there was a big dog and a cat")
    assert.error_matches(function() gen.run(small, ids, {}) end, "prompt has %d+ tokens; the context holds 8")
  end)

  it("errors clearly on paths that are not models", function()
    assert.error_matches(function() model.load("/nonexistent/model.gguf") end, "no such file")
    assert.error_matches(function() model.load(S .. "/tok512.bin") end, "not a model")
  end)

  -- the model's backend (src/model/backend.h): what eval, generate and quantize call on any device
  describe("backend", function()
    local toks = glq.tensor({ 1, 403, 407, 261, 378, 12, 99, 7, 1, 50, 77, 300, 45, 8, 9, 10 }, { 2, 8 }, "i32")

    it("runs on the cpu, with f16/int8 caches and without device argmax; other devices are refused clearly", function()
      assert.equal("cpu", m.device)
      assert.equal("cpu", m.c:device())
      assert.is_true(m.c:has("kv_quant"))
      assert.is_false(m.c:has("argmax"))
      assert.has_error(function() m.c:has("flying") end)
      assert.equal(m, m:to("cpu"))
      assert.error_matches(function() m.c:to("tpu") end, 'unknown device "tpu"')
      if not glq.core.cuda.built() then
        assert.error_matches(function() m:to("cuda") end, "no CUDA backend")
      end
    end)

    it("a layer call runs its sequences independently: batched = one by one, in place or on a copy", function()
      local h = m.c:embed(toks)
      local one = h:clone()
      for s = 1, 2 do m.c:layer(0, one:narrow(1, s, 1)) end
      local kept = h:clone()
      local same, cap = m.c:layer(0, kept, { capture = true, in_place = false })
      assert.equal(kept, same)
      assert.equal(0, kept:max_abs_diff(h))
      assert.same({ qkv = 16, o = 16, gate_up = 16, down = 16 }, cap.rows)
      local _, cap2 = m.c:layer(0, h, { capture = true })
      assert.equal(0, h:max_abs_diff(one))
      for _, k in ipairs { "qkv", "o", "gate_up", "down" } do assert.equal(0, cap2[k]:max_abs_diff(cap[k])) end
      assert.error_matches(function() m.c:layer(0, h, { cache = m:new_cache { batch = 2 }, in_place = false }) end,
        "must run in place")
    end)

    it("head logits and their row statistics equal glq.nll_rows / kl_rows", function()
      local h = m:hidden(toks:narrow(1, 1, 1))
      local lg = m.c:head(h)
      assert.same({ 1, 8, m.cfg.vocab }, lg:shape())
      local flat = lg:reshape({ 8, m.cfg.vocab })
      local tg = glq.tensor({ 403, 407, 261, 378, 12, 99, 7, 1 }, { 8 }, "i32")
      assert.equal(0, m.c:nll_rows(lg, tg):max_abs_diff(glq.nll_rows(flat, tg)))
      local q = m.c:head(m:hidden(toks:narrow(1, 2, 1)))
      local kl, ag = m.c:kl_rows(lg, q)
      local kl2, ag2 = glq.kl_rows(flat, q:reshape({ 8, m.cfg.vocab }))
      assert.equal(0, kl:max_abs_diff(kl2))
      assert.equal(0, ag:to("f64"):max_abs_diff(ag2:to("f64")))
      assert.error_matches(function() m.c:nll_rows(lg, glq.zeros("i32", { 3 })) end, "8 rows of logits but 3 targets")
    end)

    it("forward with argmax gives each sequence's greedy token", function()
      local lg = m.c:forward(toks)
      local a, b = m.c:forward(toks, { argmax = true })
      for s, id in ipairs { a, b } do
        local best, arg = -math.huge, -1
        for j = 1, m.cfg.vocab do
          if lg:get(s, j) > best then best, arg = lg:get(s, j), j - 1 end
        end
        assert.equal(arg, id)
      end
      assert.has_error(function() m.c:forward(toks, { argmax = true, all_logits = true }) end)
    end)
  end)
end)
