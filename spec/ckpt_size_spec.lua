-- Checkpoints that shrink (issue #16): Q8_0 dense tensors, the 3-bit U8 stage-2 layout, the
-- markers that make the Python glq refuse our layout or read --glq-compat files, zero RVQ stages.
local glq = require "glq"
local json = require "glq.json"
local util = require "spec.support.util"
local bin, sh, tmpdir = util.bin, util.sh, util.tmppath

local GGUF = "../shared/models/stories260K/stories260K.gguf"
local TINY = "../shared/text/calib/tiny.utf8"
local SMOL = (os.getenv("GLQ_CACHE") or (os.getenv("HOME") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf"
local function exists(p) local f = io.open(p, "rb") if f then f:close() return true end return false end
local function size(p) local f = assert(io.open(p, "rb")) local n = f:seek("end") f:close() return n end

describe("Q8_0 blocks", function()
  it("quantize as ggml's reference does and round-trip through dequantize byte for byte", function()
    local x = glq.randn({ 8, 64 }, 7)
    local b = glq.gguf.quantize_q8_0(x)
    assert.same({ 8, 68 }, b:shape())
    local y = glq.gguf.dequantize(b, "q8_0", { 8, 64 })
    local xp, yp = x:ptr(), y:ptr()
    for blk = 0, 15 do -- error within half a step (amax/127/2, plus the f16 rounding of the step)
      local amax = 0
      for j = 0, 31 do amax = math.max(amax, math.abs(xp[blk * 32 + j])) end
      for j = 0, 31 do assert.is_true(math.abs(xp[blk * 32 + j] - yp[blk * 32 + j]) <= amax / 127 * 0.51 + 1e-6) end
    end
    local b2 = glq.gguf.quantize_q8_0(y)
    local p1, p2 = b:ptr(), b2:ptr()
    for i = 0, b:numel() - 1 do assert.equal(p1[i], p2[i]) end
  end)
  it("refuses wrong shapes with a message", function()
    local ok, err = pcall(glq.gguf.dequantize, glq.zeros("u8", { 10 }), "q8_0", { 1, 32 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("gguf.dequantize: 10 bytes of q8_0 blocks for 1 x 32, expected 34", 1, true), err)
    ok, err = pcall(glq.gguf.dequantize, glq.zeros("u8", { 34 }), "q9", { 1, 32 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unknown ggml type 'q9'", 1, true), err)
  end)
end)

describe("checkpoint size and layout on stories260K", function()
  if not (exists(GGUF) and exists(TINY)) then
    it("needs ../shared", function() pending("../shared is absent: skipped") end)
    return
  end
  local quick = "--calib " .. TINY .. " --nsamples 2 --seqlen 64 --quiet"
  it("at 2, 3 and 4 bits is smaller than its source; 3-bit stage 2 is U8; our layout has no quant_method", function()
    for _, bits in ipairs { 2, 3, 4 } do
      local out = tmpdir()
      local rc, log = sh(("%s quantize --model %s --output %s --bpw %d %s"):format(bin, GGUF, out, bits, quick))
      assert.equal(0, rc, log)
      assert.is_true(size(out .. "/model.safetensors") < size(GGUF), bits .. " bits")
      local qc = json.read_file(out .. "/config.json").quantization_config
      assert.is_nil(qc.quant_method)
      assert.equal("glq-native", qc.format)
      local info = glq.safetensors_info(out .. "/model.safetensors")
      assert.equal("bf16", info["model.embed_tokens.weight"].dtype) -- f32 source: bf16 at most
      assert.equal("f32", info["model.norm.weight"].dtype)          -- norms stay exact
      local q2 = info["model.layers.0.mlp.up_proj.Qidxs2"]
      if bits == 3 then assert.equal("u8", q2.dtype) elseif bits == 4 then assert.equal("i16", q2.dtype) else assert.is_nil(q2) end
      if bits == 3 then -- the reader widens it back: same logits as the in-memory artifacts' I16
        local m = require("glq.model").load(out)
        local e = m.src.ckpt.layers["model.layers.0.mlp.up_proj"]
        assert.equal("i16", e.artifacts.Qidxs2:dtype())
      end
    end
  end)
  it("--glq-compat on shapes glq's loader misreads (172) falls back to our layout, with a warning", function()
    local out = tmpdir()
    local rc, log = sh(("%s quantize --model %s --output %s --bpw 2 --glq-compat %s"):format(bin, GGUF, out, quick))
    assert.equal(0, rc, log)
    assert.truthy(log:find("the Python glq would misread this checkpoint", 1, true), log)
    local qc = json.read_file(out .. "/config.json").quantization_config
    assert.is_nil(qc.quant_method)
    assert.is_true(qc.block_diagonal)
  end)
end)

describe("checkpoint reader: zero RVQ stages as the Python glq may write them", function()
  local ckpt = require "glq.checkpoint"
  local cfg = { architectures = { "LlamaForCausalLM" }, model_type = "llama", hidden_size = 64, intermediate_size = 128,
    num_hidden_layers = 1, num_attention_heads = 4, num_key_value_heads = 4, vocab_size = 32,
    max_position_embeddings = 64, rms_norm_eps = 1e-5, tie_word_embeddings = true }
  local function write(extra, irs2)
    local dir = tmpdir()
    local roles = { q = { 64, 64 }, k = { 64, 64 }, v = { 64, 64 }, o = { 64, 64 }, gate = { 128, 64 }, up = { 128, 64 }, down = { 64, 128 } }
    local hf = { q = "self_attn.q_proj", k = "self_attn.k_proj", v = "self_attn.v_proj", o = "self_attn.o_proj",
      gate = "mlp.gate_proj", up = "mlp.up_proj", down = "mlp.down_proj" }
    local layers = {}
    for r, s in pairs(roles) do
      local a = { Qidxs = glq.zeros("i16", { s[1], s[2] / 8 }), SU = glq.full("f16", { s[1] }, 1), SV = glq.full("f16", { s[2] }, 1),
        Wscale = glq.full("f32", {}, 0.5) }
      layers["model.layers.0." .. hf[r]] = { format = "e8", bits = 2, transform = "block-diagonal", artifacts = a, shape = s }
    end
    ckpt.write(dir, { config = cfg, layers = layers, python_compat = true,
      dense = { ["model.embed_tokens.weight"] = glq.zeros("f32", { 32, 64 }), ["model.norm.weight"] = glq.zeros("f32", { 64 }),
        ["model.layers.0.input_layernorm.weight"] = glq.zeros("f32", { 64 }), ["model.layers.0.post_attention_layernorm.weight"] = glq.zeros("f32", { 64 }) } })
    if extra then -- add glq's stage-3/4 tensors to one layer
      local p = dir .. "/model.safetensors"
      local t = glq.load_safetensors(p)
      local all = {}
      for k, v in pairs(t) do all[k] = v:clone() end
      all["model.layers.0.mlp.up_proj.Qidxs3"] = glq.zeros("i16", { 128, 8 })
      all["model.layers.0.mlp.up_proj.inv_resid_scale2"] = glq.full("f32", {}, irs2)
      glq.save_safetensors(p, all, { format = "pt" })
    end
    return dir
  end
  it("--glq-compat files carry quant_method glq and zero stage scalars, and read back as 2-bit", function()
    local dir = write(false)
    local qc = json.read_file(dir .. "/config.json").quantization_config
    assert.equal("glq", qc.quant_method)
    local info = glq.safetensors_info(dir .. "/model.safetensors")
    for _, f in ipairs { "inv_resid_scale", "inv_resid_scale2", "inv_resid_scale3" } do
      assert.same({}, info["model.layers.0.mlp.up_proj." .. f].shape)
    end
    local back = ckpt.read(dir)
    local e = back.layers["model.layers.0.mlp.up_proj"]
    assert.equal(2, e.bits)
    assert.is_nil(e.artifacts.Qidxs2)
    assert.is_nil(e.artifacts.inv_resid_scale)
  end)
  it("accepts stage buffers switched off by a zero scale, refuses live ones", function()
    assert.equal(2, ckpt.read(write(true, 0)).layers["model.layers.0.mlp.up_proj"].bits)
    assert.has_error(function() ckpt.read(write(true, 0.5)) end)
    local ok, err = pcall(ckpt.read, write(true, 0.5))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("inv_resid_scale2 is not zero: N%-stage RVQ"), err)
  end)
end)
