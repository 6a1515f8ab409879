-- glq.modelcfg.from_hf on the two config.json dialects: transformers 4 writes rope_theta / rope_scaling at the top
-- level; transformers >= 5 writes them inside rope_parameters (and drops the top-level keys). A reader that misses
-- the second silently runs RoPE at the default base 10000 (SmolLM2's is 100000: +19% perplexity), which is what
-- made glq 0.2.7's own SmolLM2 checkpoints read worse in ours than in glq (issue #16).
local util = require "spec.support.util"
local json = require "glq.json"
local modelcfg = require "glq.modelcfg"

local S = "../shared/models/stories260K"

local function base_cfg()
  return { model_type = "llama", hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 8,
    num_key_value_heads = 4, intermediate_size = 172, vocab_size = 512, max_position_embeddings = 512 }
end

describe("HF config dialects", function()
  it("reads rope_theta at the top level (transformers 4) and inside rope_parameters (transformers 5)", function()
    local a = base_cfg()
    a.rope_theta = 100000
    assert.equal(100000, modelcfg.from_hf(a, "tf4").rope_theta)
    local b = base_cfg()
    b.rope_parameters = { rope_theta = 100000, rope_type = "default" }
    local c = modelcfg.from_hf(b, "tf5")
    assert.equal(100000, c.rope_theta)
    assert.is_nil(c.rope_scaling)
    assert.equal(10000, modelcfg.from_hf(base_cfg(), "none").rope_theta)
  end)

  it("reads llama3 RoPE scaling from rope_parameters as from rope_scaling", function()
    local sc = { rope_type = "llama3", factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0,
      original_max_position_embeddings = 8192 }
    local a = base_cfg()
    a.rope_theta, a.rope_scaling = 500000, sc
    local b = base_cfg()
    b.rope_parameters = { rope_theta = 500000, rope_type = "llama3", factor = 8.0, low_freq_factor = 1.0,
      high_freq_factor = 4.0, original_max_position_embeddings = 8192 }
    local ca, cb = modelcfg.from_hf(a, "tf4"), modelcfg.from_hf(b, "tf5")
    assert.equal(500000, cb.rope_theta)
    assert.same(ca.rope_scaling, cb.rope_scaling)
    assert.equal("llama3", cb.rope_scaling.type)
    local bad = base_cfg()
    bad.rope_parameters = { rope_theta = 10000, rope_type = "yarn" }
    local ok, e = pcall(modelcfg.from_hf, bad, "cfg.json")
    assert.is_false(ok)
    assert.truthy(tostring(e):match("RoPE scaling 'yarn' is not supported"), tostring(e))
  end)

  it("a model directory in either dialect gives the same logits (stories260K with a non-default RoPE base)", function()
    if not util.exists(S .. "/hf/config.json") then pending("../shared/models/stories260K is absent: skipped") return end
    local model = require "glq.model"
    local orig = json.read_file(S .. "/hf/config.json")
    local function variant(edit)
      local d = util.tmppath()
      assert(os.execute(string.format("mkdir -p '%s' && cp '%s/hf/model.safetensors' '%s/'", d, S, d)) == 0)
      local c = json.read_file(S .. "/hf/config.json")
      edit(c)
      util.spit(d .. "/config.json", json.encode(c))
      return d
    end
    local d4 = variant(function(c) c.rope_theta = 50000 end)
    local d5 = variant(function(c) c.rope_theta = nil; c.rope_parameters = { rope_theta = 50000, rope_type = "default" } end)
    local ids = { 1, 403, 407, 261, 378, 1288, 29892, 727 }
    for i = 1, #ids do ids[i] = ids[i] % orig.vocab_size end
    local opts = { tokenizer = S .. "/stories260K.gguf" }
    local l4 = model.load(d4, opts):logits(ids)
    local l5 = model.load(d5, opts):logits(ids)
    local l0 = model.load(S .. "/hf", opts):logits(ids)
    assert.equal(0, l4:max_abs_diff(l5))
    assert.is_true(l4:max_abs_diff(l0) > 1e-3, "the RoPE base must change the logits")
    os.execute(string.format("rm -rf '%s' '%s'", d4, d5))
  end)
end)
