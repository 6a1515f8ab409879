-- Files for the Python glq (issues #19/#16): the refusal marker of --glq-compat files for glq < 0.2.13
-- (one layer stored dense + an oversized SU), and HiF4 dense tensors (--dense-dtype hif4, our layout only).
-- What the Python packages do with these files is checked by `make test-interop` (tests/interop).
local glq = require "glq"
local json = require "glq.json"
local util = require "spec.support.util"
local bin, sh, tmpdir, exists = util.bin, util.sh, util.tmppath, util.exists
local GGUF, TINY = "../shared/models/stories260K/stories260K.gguf", "../shared/text/calib/tiny.utf8"
local function size(p) return #util.slurp(p) end

-- a one-layer Llama (hidden 96, ffn 160, kv 32: dims multiples of 8, not powers of two), its linears
-- quantized at 2 bits with glq's block-diagonal transform
local cfg = { architectures = { "LlamaForCausalLM" }, model_type = "llama", hidden_size = 96, intermediate_size = 160,
  num_hidden_layers = 1, num_attention_heads = 4, num_key_value_heads = 1, head_dim = 32, vocab_size = 32,
  max_position_embeddings = 64, rms_norm_eps = 1e-5, tie_word_embeddings = true }
local shapes = { ["self_attn.q_proj"] = { 128, 96 }, ["self_attn.k_proj"] = { 32, 96 }, ["self_attn.v_proj"] = { 32, 96 },
  ["self_attn.o_proj"] = { 96, 128 }, ["mlp.gate_proj"] = { 160, 96 }, ["mlp.up_proj"] = { 160, 96 }, ["mlp.down_proj"] = { 96, 160 } }
local function spec_for(only)
  local layers, seed = {}, 1
  local names = {}
  for hf in pairs(shapes) do names[#names + 1] = hf end
  table.sort(names)
  for _, hf in ipairs(names) do
    local s = shapes[hf]
    seed = seed + 1
    local name = "model.layers.0." .. hf
    if not only or only == name then
      local a = glq.quantize_linear(glq.randn(s, seed), nil, { bits = 2, transform = "block-diagonal", name = name })
      layers[name] = { format = "e8", bits = 2, transform = "block-diagonal", artifacts = a, shape = s }
    end
  end
  local dense = { ["model.embed_tokens.weight"] = glq.randn({ 32, 96 }, 99), ["model.norm.weight"] = glq.full("f32", { 96 }, 1),
    ["model.layers.0.input_layernorm.weight"] = glq.full("f32", { 96 }, 1),
    ["model.layers.0.post_attention_layernorm.weight"] = glq.full("f32", { 96 }, 1) }
  if only then -- the other linears dense
    for hf, s in pairs(shapes) do
      if "model.layers.0." .. hf ~= only then dense["model.layers.0." .. hf .. ".weight"] = glq.randn(s, 7) end
    end
  end
  return { config = cfg, layers = layers, dense = dense, python_compat = true }
end

describe("--glq-compat: the refusal marker for glq < 0.2.13", function()
  local ckpt = require "glq.checkpoint"
  local K = "model.layers.0.self_attn.k_proj"
  local dir, spec

  setup(function()
    dir, spec = tmpdir(), spec_for(nil)
    ckpt.write(dir, spec)
  end)

  it("stores the smallest layer as its decoded dense weight plus an SU one entry longer than glq 0.2.7's", function()
    local qc = json.read_file(dir .. "/config.json").quantization_config
    assert.equal("glq", qc.quant_method)
    assert.equal(K .. ".SU", qc.python_glq_marker)
    assert.is_nil(qc.layer_bpw[K])
    assert.equal(2, qc.layer_bpw["model.layers.0.self_attn.v_proj"]) -- same size, later name: quantized
    local info = glq.safetensors_info(dir .. "/model.safetensors")
    assert.is_nil(info[K .. ".Qidxs"])
    assert.is_nil(info[K .. ".Wscale"])
    assert.same({ 32, 96 }, info[K .. ".weight"].shape)
    assert.equal("f32", info[K .. ".weight"].dtype)
    assert.same({ 33 }, info[K .. ".SU"].shape) -- glq 0.2.7 pads 32 rows to 32: 33 is a size mismatch
    assert.equal("f16", info[K .. ".SU"].dtype)
    assert.equal(6, json.read_file(dir .. "/quantize_config.json").n_quantized_layers)
    -- the dense weight is the quantized layer's function
    local a = spec.layers[K].artifacts
    local w = glq.dequantize_linear(a, { transform = "block-diagonal" })
    local t = glq.load_safetensors(dir .. "/model.safetensors")
    assert.is_true(t[K .. ".weight"]:max_abs_diff(w) <= 1e-5 * w:absmax(), "diff " .. t[K .. ".weight"]:max_abs_diff(w))
  end)

  it("reads back as a dense linear, the marker dropped, with the quantized model's logits", function()
    local back = ckpt.read(dir)
    assert.is_nil(back.layers[K])
    assert.is_not_nil(back.dense[K .. ".weight"])
    assert.is_nil(back.dense[K .. ".SU"])
    local model = require "glq.model"
    local m = model.load(dir)
    local ref = model.load(dir)
    ref:set_linear(K, model.quantized_linear(spec.layers[K], 32, 96, K))
    local ids = model.ids_tensor({ 1, 5, 7, 2, 30 })
    local la = m.c:forward(ids, { all_logits = true })
    local lb = ref.c:forward(ids, { all_logits = true })
    assert.is_true(la:max_abs_diff(lb) <= 1e-4 * lb:absmax(), "diff " .. la:max_abs_diff(lb))
  end)

  it("refuses a marker that names no dense linear's SU", function()
    local d2 = tmpdir()
    ckpt.write(d2, spec)
    local cp = d2 .. "/config.json"
    local c = json.read_file(cp)
    c.quantization_config.python_glq_marker = "model.layers.0.self_attn.v_proj.SU" -- a quantized layer's
    glq.write_file(cp, json.encode(c))
    local ok, err = pcall(ckpt.read, d2)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("python_glq_marker \"model.layers.0.self_attn.v_proj.SU\" must name the SU tensor", 1, true), err)
  end)

  it("with a single quantized layer there is nothing to mark: our layout, with a warning", function()
    local d3 = tmpdir()
    local only = "model.layers.0.mlp.up_proj"
    local err_path = d3 .. ".stderr"
    local real = io.stderr
    io.stderr = assert(io.open(err_path, "w"))
    local ok, e = pcall(ckpt.write, d3, spec_for(only))
    io.stderr:close()
    io.stderr = real
    assert.is_true(ok, e)
    local warn = assert(io.open(err_path)):read("*a")
    assert.truthy(warn:find("too few to mark it for glq < 0.2.13", 1, true), warn)
    local qc = json.read_file(d3 .. "/config.json").quantization_config
    assert.is_nil(qc.quant_method)
    assert.is_nil(qc.python_glq_marker)
    assert.equal(2, qc.layer_bpw[only])
  end)
end)

describe("--dense-dtype hif4", function()
  if not exists(GGUF) then
    it("needs ../shared (stories260K)", function() pending("../shared is absent: skipped") end)
    return
  end
  local ckpt = require "glq.checkpoint"
  local model = require "glq.model"

  it("glq hif4 stores the embedding's HiF4 fields; the reader decodes them and the model runs", function()
    local a, b = tmpdir(), tmpdir()
    local rc, log = sh(("%s hif4 --model %s --output %s --dense-dtype hif4 --quiet"):format(bin, GGUF, a))
    assert.equal(0, rc, log)
    rc, log = sh(("%s hif4 --model %s --output %s --dense-dtype keep --quiet"):format(bin, GGUF, b))
    assert.equal(0, rc, log)
    local h = json.read_file(a .. "/hif4_config.json")
    assert.same({ ["model.embed_tokens.weight"] = "hif4" }, h.dense_format)
    local info = glq.safetensors_info(a .. "/model.safetensors")
    assert.is_nil(info["model.embed_tokens.weight"])
    assert.same({ 512, 1 }, info["model.embed_tokens.weight.e6m2"].shape)
    assert.same({ 512, 1, 32 }, info["model.embed_tokens.weight.s1p2_packed"].shape)
    assert.is_true(size(a .. "/model.safetensors") < size(b .. "/model.safetensors"))
    local emb = model.open(GGUF):tensor("model.embed_tokens.weight"):to("f32")
    local back = ckpt.read(a)
    assert.equal(0, back.dense["model.embed_tokens.weight"]:max_abs_diff(glq.hif4.dequantize(glq.hif4.quantize(emb))))
    assert.is_nil(back.layers["model.embed_tokens.weight"])
    local ma, mb = model.load(a, { tokenizer = GGUF }), model.load(b, { tokenizer = GGUF })
    local ids = mb:encode("Once upon a time there was a little girl")
    local la, lb = ma:logits(ids), mb:logits(ids)
    local kl = glq.kl_rows(lb:reshape({ 1, 512 }), la:reshape({ 1, 512 })):get(1)
    assert.is_true(kl > 0 and kl < 0.1, "KL " .. kl) -- the embedding changed a little, not a lot
  end)

  it("--glq-compat refuses it (the Python glq reads no HiF4)", function()
    local out = tmpdir()
    local rc, log = sh(("%s quantize --model %s --output %s --glq-compat --dense-dtype hif4 --calib %s --nsamples 4 --seqlen 128 --quiet")
      :format(bin, GGUF, out, TINY))
    assert.is_not.equal(0, rc)
    assert.truthy(log:find("the Python glq cannot read hif4 dense tensors", 1, true), log)
    assert.is_false(exists(out .. "/config.json"))
  end)
end)
