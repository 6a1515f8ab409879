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
end)
