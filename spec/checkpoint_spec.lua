-- checkpoint: bit-exact write/read round trips (E8 2/3/4 bits with biases, HiF4 with and without
-- RHT, dense tensors), config.json contents, atomic publication, resumable runs, output-dir checks,
-- and reading glq 0.2.7 (pow2-padded) and >= 0.2.9 (block-diagonal) checkpoints made here.
local glq = require "glq"
local ckpt = require "glq.checkpoint"
local json = require "glq.json"
local fs = require "glq.fs"
local ffi = require "ffi"

local ROOT = os.tmpname()
os.remove(ROOT)
fs.mkdir_p(ROOT)
local counter = 0
local function newdir()
  counter = counter + 1
  return ROOT .. "/ck" .. counter
end

local function bytes_of(t)
  local c = t:contiguous()
  return ffi.string(ffi.cast("const char *", c:_rawptr()), c:nbytes())
end

local function same_tensor(a, b, what)
  assert(glq.is_tensor(a), what .. ": expected a tensor")
  assert(glq.is_tensor(b), what .. ": tensor missing after the round trip")
  assert.are.equal(a:dtype(), b:dtype(), what .. " dtype")
  assert.are.same(a:shape(), b:shape(), what .. " shape")
  assert.is_true(bytes_of(a) == bytes_of(b), what .. " bytes differ")
end

local function slurp(p) return assert(fs.read(p)) end

-- a 2-layer llama: dim 64, 4 heads of 16 (2 kv heads), ffn 96 (not a power of two), vocab 32
local HF = {
  architectures = { "LlamaForCausalLM" }, model_type = "llama", hidden_size = 64, intermediate_size = 96,
  num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, vocab_size = 32,
  max_position_embeddings = 128, rms_norm_eps = 1e-5, rope_theta = 10000, tie_word_embeddings = true,
  torch_dtype = "bfloat16", use_cache = false,
}
local SHAPES = { q = { 64, 64 }, k = { 32, 64 }, v = { 32, 64 }, o = { 64, 64 }, gate = { 96, 64 }, up = { 96, 64 }, down = { 64, 96 } }
local HFNAME = { q = "self_attn.q_proj", k = "self_attn.k_proj", v = "self_attn.v_proj", o = "self_attn.o_proj",
  gate = "mlp.gate_proj", up = "mlp.up_proj", down = "mlp.down_proj" }
local function lname(l, role) return string.format("model.layers.%d.%s", l, HFNAME[role]) end

local function indices(rows, cols, seed) -- uniform over the whole int16 range
  return glq.rand({ rows, cols }, seed):mul(65535):add(glq.full("f32", { rows, cols }, -32768)):to("i16")
end

local function e8_artifacts(rows, cols, bits, seed)
  local a = {
    Qidxs = indices(rows, cols / 8, seed),
    SU = glq.rht.signs(seed, "art", "SU", rows):to("f16"),
    SV = glq.rht.signs(seed, "art", "SV", cols):to("f16"),
    Wscale = glq.full("f32", {}, 0.0123 * seed),
  }
  if bits > 2 then
    a.Qidxs2 = indices(rows, cols / 8, seed + 1000)
    -- 3 bits: stage-2 indices of the 256-entry codebook (written in one byte)
    if bits == 3 then a.Qidxs2 = glq.rand({ rows, cols / 8 }, seed + 1000):mul(255.99):to("i16") end
    a.inv_resid_scale = glq.full("f32", {}, 1 / 3)
  end
  return a
end

local function e8(role, bits, seed, bias)
  local s = SHAPES[role]
  return { format = "e8", bits = bits, artifacts = e8_artifacts(s[1], s[2], bits, seed),
    bias = bias and glq.randn({ s[1] }, seed + 7, "f16") or nil, stats = { sqnr_db = 10 + bits, proxy_loss = 0.1 } }
end

local function hif4(role, seed, rht)
  local s = SHAPES[role]
  local pack = glq.hif4.quantize(glq.randn(s, seed))
  return { format = "hif4", pack = pack, sv = rht and glq.hif4.rht_signs(s[2], seed) or nil, rht_seed = rht and seed or nil,
    bias = glq.randn({ s[1] }, seed + 9, "bf16") }
end

local function make_spec()
  local layers = {
    [lname(0, "q")] = e8("q", 2, 1, true), [lname(0, "k")] = e8("k", 3, 2, true), [lname(0, "v")] = e8("v", 4, 3),
    [lname(0, "o")] = hif4("o", 4, false), [lname(0, "gate")] = hif4("gate", 5, true),
    [lname(0, "up")] = e8("up", 4, 6), [lname(0, "down")] = e8("down", 3, 7),
  }
  for i, role in ipairs({ "q", "k", "v", "o", "gate", "up" }) do layers[lname(1, role)] = e8(role, 2, 20 + i) end
  local dense = {
    ["model.embed_tokens.weight"] = glq.randn({ 32, 64 }, 50, "bf16"),
    ["model.norm.weight"] = glq.randn({ 64 }, 51, "bf16"),
    ["model.layers.0.input_layernorm.weight"] = glq.randn({ 64 }, 52, "bf16"),
    ["model.layers.1.mlp.down_proj.weight"] = glq.randn({ 64, 96 }, 53, "bf16"), -- kept dense
  }
  return { config = HF, layers = layers, dense = dense, bpw = nil,
    quantize_config = { nsamples = 16, seqlen = 64, source_model = "tiny", total_time_s = 1.5 },
    tokenizer_files = { ["tokenizer.json"] = '{"model":{}}', ["tokenizer_config.json"] = "{}" } }
end

local function siblings_tmp(dir)
  local left = {}
  for _, n in ipairs(fs.list(fs.dirname(dir))) do
    if n:find(fs.basename(dir) .. ".tmp.", 1, true) == 1 then left[#left + 1] = n end
  end
  return left
end

local function check_layer(name, want, got)
  assert.is_truthy(got, name .. " missing after read")
  assert.are.equal(want.format, got.format, name)
  if want.bias then same_tensor(want.bias, got.bias, name .. ".bias") else assert.is_nil(got.bias) end
  if want.format == "e8" then
    assert.are.equal(want.bits, got.bits, name .. " bits")
    assert.are.equal("glq-hadamard-v1", got.transform)
    for _, f in ipairs({ "Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale" }) do
      if want.artifacts[f] then same_tensor(want.artifacts[f], got.artifacts[f], name .. "." .. f)
      else assert.is_nil(got.artifacts[f], name .. "." .. f) end
    end
  else
    for _, f in ipairs({ "e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed" }) do
      same_tensor(want.pack[f], got.pack[f], name .. "." .. f)
    end
    assert.are.same(want.pack.shape, got.pack.shape)
    if want.sv then
      assert.are.same(want.sv:to("f32"):totable(), got.sv:to("f32"):totable())
      assert.are.equal("f16", got.sv:dtype())
    else
      assert.is_nil(got.sv)
    end
  end
end

describe("checkpoint write/read", function()
  local spec, dir, back
  setup(function()
    spec = make_spec()
    dir = newdir()
    ckpt.write(dir, spec)
    back = ckpt.read(dir)
  end)

  it("round-trips every quantized layer and dense tensor bit-exactly", function()
    local n = 0
    for name, want in pairs(spec.layers) do
      check_layer(name, want, back.layers[name])
      n = n + 1
    end
    for _ in pairs(back.layers) do n = n - 1 end
    assert.are.equal(0, n, "no extra layers")
    for name, t in pairs(spec.dense) do same_tensor(t, back.dense[name], name) end
    local nd = 0
    for _ in pairs(back.dense) do nd = nd + 1 end
    assert.are.equal(4, nd)
    assert.are.same({ 96, 64 }, back.layers[lname(0, "up")].shape)
    assert.are.equal(96, back.layers[lname(0, "down")].artifacts.in_features)
    assert.are.equal(64, back.config.dim)
    assert.are.equal(dir .. "/tokenizer.json", back.tokenizer_path)
  end)

  it("writes glq's tensor names, dtypes and the safetensors metadata", function()
    local info, meta = glq.safetensors_info(dir .. "/model.safetensors")
    assert.are.same({ format = "pt", quantization = "glq" }, meta)
    local p = lname(0, "k")
    assert.are.same({ dtype = "i16", shape = { 32, 8 } }, { dtype = info[p .. ".Qidxs"].dtype, shape = info[p .. ".Qidxs"].shape })
    assert.are.equal("u8", info[p .. ".Qidxs2"].dtype) -- 3 bits: stage-2 index in one byte (our layout)
    assert.are.equal("f16", info[p .. ".SU"].dtype)
    assert.are.same({}, info[p .. ".Wscale"].shape)
    assert.are.equal("f32", info[p .. ".inv_resid_scale"].dtype)
    assert.are.equal("f16", info[p .. ".bias"].dtype) -- quantized layers keep their bias
    assert.is_nil(info[lname(0, "q") .. ".Qidxs2"])
    local o = lname(0, "o")
    assert.are.same({ 64, 1, 32 }, info[o .. ".s1p2_packed"].shape)
    assert.is_nil(info[o .. ".SV"])
    assert.are.same({ 64 }, info[lname(0, "gate") .. ".SV"].shape)
    assert.are.equal("bf16", info[lname(0, "gate") .. ".bias"].dtype)
  end)

  it("writes config.json with quantization_config (bpw to 2 decimals, layer_bpw always)", function()
    local cfg = json.read_file(dir .. "/config.json")
    local qc = cfg.quantization_config
    assert.is_nil(qc.quant_method) -- our layout: transformers refuses it instead of glq misreading it
    assert.are.equal("glq-native", qc.format)
    assert.are.equal("e8_shell", qc.codebook)
    assert.are.equal(8, qc.codesz)
    assert.are.equal("glq-hadamard-v1", qc.transform)
    assert.is_false(qc.block_diagonal)
    assert.is_true(cfg.use_cache)
    assert.are.equal(64, cfg.hidden_size)
    assert.are.equal("bfloat16", cfg.torch_dtype)
    -- stored bits: E8 nominal bits (no padding at these sizes), HiF4 4.5
    local num, den = 0, 0
    for name, e in pairs(spec.layers) do
      local s = e.format == "e8" and SHAPES[name:match("%.(%w+)_proj$")] or e.pack.shape
      num = num + (e.format == "e8" and e.bits or 4.5) * s[1] * s[2]
      den = den + s[1] * s[2]
    end
    assert.are.equal(math.floor(num / den * 100 + 0.5) / 100, qc.bpw)
    assert.is_true(math.abs(qc.bpw * 100 - math.floor(qc.bpw * 100 + 0.5)) < 1e-6, "bpw has 2 decimals")
    local nl = 0
    for name, v in pairs(qc.layer_bpw) do
      nl = nl + 1
      local e = spec.layers[name]
      if e.format == "e8" then assert.are.equal(e.bits, v) else assert.are.equal(e.sv and "hif4+rht" or "hif4", v) end
    end
    assert.are.equal(13, nl)
    local q = json.read_file(dir .. "/quantize_config.json")
    assert.are.equal(13, q.n_quantized_layers)
    assert.are.equal("tiny", q.source_model)
    assert.are.equal(math.floor((12 + 13 + 14 + 14 + 13 + 6 * 12) / 11 * 100 + 0.5) / 100, q.avg_sqnr_db)
    assert.are.same({ [lname(0, "gate")] = 5 }, q.hif4_rht_seeds)
    assert.are.equal('{"model":{}}', slurp(dir .. "/tokenizer.json"))
    assert.is_false(fs.exists(dir .. "/hif4_config.json"))
    assert.are.same({}, siblings_tmp(dir))
  end)

  it("is deterministic: the same spec gives the same bytes", function()
    local d2 = newdir()
    ckpt.write(d2, spec)
    for _, f in ipairs({ "model.safetensors", "config.json", "quantize_config.json" }) do
      assert.is_true(slurp(dir .. "/" .. f) == slurp(d2 .. "/" .. f), f)
    end
  end)

  it("copies tokenizer files given as source paths", function()
    local d2 = newdir()
    local s = make_spec()
    s.tokenizer_files = { dir .. "/tokenizer.json" }
    ckpt.write(d2, s)
    assert.are.equal('{"model":{}}', slurp(d2 .. "/tokenizer.json"))
  end)
end)

describe("checkpoint with real quantizer output", function()
  it("stores glq.quantize_linear and glq.hif4.quantize_rht results that dequantize identically", function()
    local s = make_spec()
    local wq = glq.randn({ 32, 64 }, 77)
    local res = glq.quantize_linear(wq, nil, { bits = 3, name = lname(0, "k") })
    s.layers[lname(0, "k")] = { format = "e8", bits = res.bits, artifacts = res, stats = res.stats }
    local wg = glq.randn({ 96, 64 }, 78)
    local h = glq.hif4.quantize_rht(wg, { seed = 11 })
    s.layers[lname(0, "gate")] = { format = "hif4", pack = h, sv = h.signs, rht_seed = 11 }
    local dir = newdir()
    ckpt.write(dir, s)
    local back = ckpt.read(dir)
    local k = back.layers[lname(0, "k")]
    assert.are.equal(3, k.bits)
    assert.are.equal(0, glq.dequantize_linear(res):max_abs_diff(glq.dequantize_linear(k.artifacts)))
    local g = back.layers[lname(0, "gate")]
    assert.are.equal(0, glq.hif4.dequantize(h):max_abs_diff(glq.hif4.dequantize(g.pack)))
    local q = json.read_file(dir .. "/quantize_config.json")
    assert.is_number(q.avg_sqnr_db)
  end)

  it("refuses layers whose shape contradicts config.json", function()
    local s = make_spec()
    s.layers[lname(0, "q")].shape = { 32, 64 }
    local ok, err = pcall(ckpt.write, newdir(), s)
    assert.is_false(ok)
    assert.is_truthy(err:find("layer model.layers.0.self_attn.q_proj: shape (32, 64) differs from (64, 64) implied by config.json", 1, true), err)
    s = make_spec()
    s.layers[lname(0, "k")].artifacts = e8_artifacts(64, 64, 3, 2) -- k_proj is 32 x 64
    ok, err = pcall(ckpt.write, newdir(), s)
    assert.is_false(ok)
    assert.is_truthy(err:find("SU/SV have 64/64 entries, expected 32/64 for a 32x64 weight", 1, true), err)
  end)

  it("tells an unfinished run from a checkpoint when reading", function()
    local dir = newdir()
    ckpt.partial(dir, {})
    local ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find("unfinished quantization run", 1, true), err)
  end)
end)

describe("checkpoint HiF4-only models", function()
  it("writes hif4_config.json, HiF4 metadata and no quantization_config, and reads back", function()
    local s = make_spec()
    local layers = {}
    for l = 0, 1 do
      for _, role in ipairs({ "q", "k", "v", "o", "up", "down" }) do
        layers[lname(l, role)] = hif4(role, 100 + l * 10 + #role, false)
      end
    end
    s.layers = layers
    s.dense["model.layers.0.mlp.gate_proj.weight"] = glq.randn({ 96, 64 }, 60, "bf16")
    s.dense["model.layers.1.mlp.gate_proj.weight"] = glq.randn({ 96, 64 }, 61, "bf16")
    s.dense["model.layers.1.mlp.down_proj.weight"] = nil
    s.hif4_skip_keywords = { "embed", "embedding", "lm_head", "gate", "gating", "router" }
    local dir = newdir()
    ckpt.write(dir, s)
    local h = json.read_file(dir .. "/hif4_config.json")
    assert.are.same({ format = "HiF4", filename = "model.safetensors", skip_name_keywords = s.hif4_skip_keywords }, h)
    local _, meta = glq.safetensors_info(dir .. "/model.safetensors")
    assert.are.same({ format = "pt", quantization = "HiF4" }, meta)
    assert.is_nil(json.read_file(dir .. "/config.json").quantization_config)
    assert.are.equal("finished", ckpt.inspect(dir))
    local back = ckpt.read(dir)
    assert.is_nil(back.quant)
    assert.are.equal("HiF4", back.hif4.format)
    for name, e in pairs(layers) do check_layer(name, e, back.layers[name]) end
    same_tensor(s.dense["model.layers.0.mlp.gate_proj.weight"], back.dense["model.layers.0.mlp.gate_proj.weight"], "gate")
  end)
end)

describe("checkpoint atomicity", function()
  it("rejects a layer with a bad dtype before anything is written", function()
    local s = make_spec()
    local a = s.layers[lname(1, "o")].artifacts
    a.Qidxs = a.Qidxs:to("i32")
    local dir = newdir()
    local ok, err = pcall(ckpt.write, dir, s)
    assert.is_false(ok)
    assert.is_truthy(err:find("layer model.layers.1.self_attn.o_proj: Qidxs has dtype i32, expected i16", 1, true), err)
    assert.is_false(fs.exists(dir))
    assert.are.same({}, siblings_tmp(dir))
  end)

  it("leaves no directory behind when writing fails midway", function()
    local s = make_spec()
    s.tokenizer_files = { ROOT .. "/does-not-exist/tokenizer.json" } -- fails after model.safetensors
    local dir = newdir()
    local ok, err = pcall(ckpt.write, dir, s)
    assert.is_false(ok)
    assert.is_truthy(err:find("cannot read tokenizer file", 1, true), err)
    assert.is_false(fs.exists(dir))
    assert.are.same({}, siblings_tmp(dir))
  end)

  it("keeps an unfinished run unfinished when the final write fails", function()
    local dir = newdir()
    local p = ckpt.partial(dir, { bpw = 2 })
    p:save_layer(lname(0, "q"), e8("q", 2, 1))
    local s = make_spec()
    s.tokenizer_files = { ROOT .. "/nope.json" }
    assert.has_error(function() p:finish(s) end)
    assert.is_false(fs.exists(dir .. "/config.json"))
    assert.are.equal("partial", ckpt.inspect(dir))
    assert.are.same({}, siblings_tmp(dir))
  end)
end)

describe("checkpoint resumable runs", function()
  local FP = { bpw = 2.5, nsamples = 16, seed = 42, model = "tiny" }

  it("saves layers, reopens them bit-exactly, refuses other options, and finishes", function()
    local dir = newdir()
    local p = ckpt.partial(dir, FP)
    assert.is_false(p.resumed)
    local k, g = e8("k", 3, 2, true), hif4("gate", 5, true)
    p:save_layer(lname(0, "k"), k)
    p:save_layer(lname(0, "gate"), g)
    p:put("allocation", { [lname(0, "k")] = 3 })
    assert.are.equal("partial", ckpt.inspect(dir))

    local ok, err = pcall(ckpt.partial, dir, FP)
    assert.is_false(ok)
    assert.is_truthy(err:find("--resume", 1, true), err)
    ok, err = pcall(ckpt.write, dir, make_spec())
    assert.is_false(ok)
    assert.is_truthy(err:find("--resume", 1, true), err)

    local other = { bpw = 3, nsamples = 16, seed = 42, model = "tiny" }
    ok, err = pcall(ckpt.partial, dir, other, { resume = true })
    assert.is_false(ok)
    assert.is_truthy(err:find("option 'bpw' was 2.5, now 3", 1, true), err)

    local r = ckpt.partial(dir, FP, { resume = true })
    assert.is_true(r.resumed)
    assert.are.same({ lname(0, "gate"), lname(0, "k") }, r:names())
    assert.is_true(r:has(lname(0, "k")))
    assert.is_nil(r:load_layer(lname(0, "q")))
    check_layer(lname(0, "k"), k, r:load_layer(lname(0, "k")))
    check_layer(lname(0, "gate"), g, r:load_layer(lname(0, "gate")))
    assert.are.same({ sqnr_db = 13, proxy_loss = 0.1 }, r:load_layer(lname(0, "k")).stats)
    assert.are.same({ 32, 64, 32, 64 }, (function(e) return { e.shape[1], e.shape[2], e.m_pad, e.n_pad } end)(r:load_layer(lname(0, "k"))))
    assert.are.equal(5, r:load_layer(lname(0, "gate")).rht_seed)
    assert.are.same({ [lname(0, "k")] = 3 }, r:get("allocation"))

    local s = make_spec()
    s.layers[lname(0, "k")] = nil
    s.layers[lname(0, "gate")] = nil
    r:finish(s)
    assert.are.equal("finished", ckpt.inspect(dir))
    assert.is_false(fs.exists(dir .. "/.glq-partial"))
    local back = ckpt.read(dir)
    check_layer(lname(0, "k"), k, back.layers[lname(0, "k")])
    check_layer(lname(0, "gate"), g, back.layers[lname(0, "gate")])
    check_layer(lname(1, "q"), s.layers[lname(1, "q")], back.layers[lname(1, "q")])
  end)

  it("starts over with overwrite", function()
    local dir = newdir()
    local p = ckpt.partial(dir, FP)
    p:save_layer(lname(0, "q"), e8("q", 2, 1))
    local q = ckpt.partial(dir, { bpw = 4 }, { overwrite = true })
    assert.are.same({}, q:names())
  end)
end)

describe("checkpoint output directory checks", function()
  it("refuses a directory that is not ours", function()
    local dir = newdir()
    fs.mkdir_p(dir)
    fs.write_atomic(dir .. "/notes.txt", "mine")
    assert.are.equal("foreign", ckpt.inspect(dir))
    local ok, err = pcall(ckpt.write, dir, make_spec())
    assert.is_false(ok)
    assert.is_truthy(err:find("is not a glq output directory", 1, true), err)
    ok, err = pcall(ckpt.partial, dir, {})
    assert.is_false(ok)
    assert.are.equal("mine", slurp(dir .. "/notes.txt"))
  end)

  it("refuses to replace a finished checkpoint unless overwrite is set", function()
    local dir = newdir()
    ckpt.write(dir, make_spec())
    local ok, err = pcall(ckpt.write, dir, make_spec())
    assert.is_false(ok)
    assert.is_truthy(err:find("already holds a finished checkpoint; pass --overwrite", 1, true), err)
    ok, err = pcall(ckpt.partial, dir, {}, { resume = true })
    assert.is_false(ok)
    assert.is_truthy(err:find("--overwrite", 1, true), err)
    -- overwrite with a HiF4-only model: the old glq files must not survive
    local s = make_spec()
    s.layers = { [lname(0, "q")] = hif4("q", 9, false) }
    for l = 0, 1 do
      for _, role in ipairs({ "q", "k", "v", "o", "gate", "up", "down" }) do
        local nm = lname(l, role)
        if not s.layers[nm] then s.dense[nm .. ".weight"] = glq.zeros("bf16", SHAPES[role]) end
      end
    end
    ckpt.write(dir, s, { overwrite = true })
    local back = ckpt.read(dir)
    assert.are.equal("hif4", back.layers[lname(0, "q")].format)
    assert.is_nil(back.quant)
    assert.are.same({}, siblings_tmp(dir))
  end)

  it("writes into an existing empty directory", function()
    local dir = newdir()
    fs.mkdir_p(dir)
    ckpt.write(dir, make_spec())
    assert.are.equal("finished", ckpt.inspect(dir))
  end)
end)

-- checkpoints in glq's own layouts, assembled here tensor by tensor
local function glq_style(dir, qc, dims_of, extra)
  fs.mkdir_p(dir)
  local cfg = {}
  for k, v in pairs(HF) do cfg[k] = v end
  cfg.quantization_config = qc
  fs.write_atomic(dir .. "/config.json", json.encode(cfg))
  local t = { ["model.embed_tokens.weight"] = glq.zeros("bf16", { 32, 64 }) }
  for l = 0, 1 do
    for role, s in pairs(SHAPES) do
      local r, c = dims_of(s[1]), dims_of(s[2])
      local a = e8_artifacts(r, c, 2, l * 10 + #role)
      for f, x in pairs(a) do t[lname(l, role) .. "." .. f] = x end
    end
  end
  for k, v in pairs(extra or {}) do t[k] = v end
  glq.save_safetensors(dir .. "/model.safetensors", t) -- glq writes no metadata
  return t
end

local function pow2(d) local p = 1 while p < d do p = p * 2 end return p end

describe("checkpoint reader for glq's layouts", function()
  it("detects glq 0.2.7 power-of-two padding per layer", function()
    local dir = newdir()
    local t = glq_style(dir, { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = 2 }, pow2)
    local back = ckpt.read(dir)
    local down, up, q = back.layers[lname(0, "down")], back.layers[lname(1, "up")], back.layers[lname(0, "q")]
    assert.are.equal("pow2-padded", down.transform)
    assert.are.same({ 64, 96 }, down.shape)
    assert.are.same({ 64, 128 }, { down.m_pad, down.n_pad })
    assert.are.same({ 128, 64 }, { up.m_pad, up.n_pad })
    assert.are.equal("pow2-padded", q.transform)
    assert.are.equal(2, down.bits)
    same_tensor(t[lname(0, "down") .. ".Qidxs"], down.artifacts.Qidxs, "Qidxs")
    assert.are.same({ 64, 16 }, down.artifacts.Qidxs:shape())
  end)

  it("detects glq >= 0.2.9 block-diagonal layers", function()
    local dir = newdir()
    glq_style(dir, { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = 2, block_diagonal = true,
      layer_bpw = {} }, function(d) return d end)
    local back = ckpt.read(dir)
    assert.are.equal("block-diagonal", back.layers[lname(0, "down")].transform)
    assert.are.equal("block-diagonal", back.layers[lname(0, "q")].transform)
    assert.are.same({ 64, 96 }, { back.layers[lname(0, "down")].m_pad, back.layers[lname(0, "down")].n_pad })
    -- without the flag, non-power-of-two shapes alone say block-diagonal
    local d2 = newdir()
    glq_style(d2, { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = 2 }, function(d) return d end)
    local b2 = ckpt.read(d2)
    assert.are.equal("block-diagonal", b2.layers[lname(1, "gate")].transform)
    assert.are.equal("pow2-padded", b2.layers[lname(1, "q")].transform) -- 64x64: both layouts agree
  end)

  it("names the tensor, the expected and the actual value on bad input", function()
    local qc = { quant_method = "glq", codebook = "e8_shell", codesz = 8, bpw = 2 }
    local down = lname(0, "down")
    local dir = newdir()
    glq_style(dir, qc, pow2, { [down .. ".SU"] = glq.zeros("f32", { 64 }) })
    local ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find(down .. ".SU has dtype f32, expected f16", 1, true), err)

    dir = newdir()
    glq_style(dir, qc, pow2, { [down .. ".Qidxs"] = glq.zeros("i16", { 64, 24 }), [down .. ".SV"] = glq.zeros("f16", { 192 }) })
    ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find(down .. ".Qidxs has shape (64, 24) but config.json implies (64, 12) (block-diagonal) or (64, 16)", 1, true), err)

    dir = newdir()
    qc.bpw = 3
    glq_style(dir, qc, pow2)
    ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find("missing tensor model.layers.%d.[%w_.]+.Qidxs2 %(config.json says 3 bits%)"), err)

    dir = newdir()
    ckpt.write(dir, make_spec())
    local t = glq.load_safetensors(dir .. "/model.safetensors")
    local t2 = {}
    for k, v in pairs(t) do if k ~= lname(1, "v") .. ".Qidxs" and k ~= lname(1, "v") .. ".SU" then t2[k] = v:clone() end end
    t = nil
    collectgarbage()
    glq.save_safetensors(dir .. "/model.safetensors", t2, { format = "pt" })
    ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find("missing tensor " .. lname(1, "v") .. ".Qidxs", 1, true), err)
  end)

  it("rejects unsupported codebooks", function()
    local dir = newdir()
    glq_style(dir, { quant_method = "glq", codebook = "e8_relaxed", codesz = 8, bpw = 2 }, pow2) -- trellis and e8p are read
    local ok, err = pcall(ckpt.read, dir)
    assert.is_false(ok)
    assert.is_truthy(err:find("codebook 'e8_relaxed' is not supported", 1, true), err)
  end)
end)

teardown(function() fs.remove_tree(ROOT) end)
