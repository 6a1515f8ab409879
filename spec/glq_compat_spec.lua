-- glq >= 0.2.9 compatibility: the block-diagonal FWHT plan (binary expansion of n), quantize_linear /
-- dequantize_linear / e8.linear with transform "block-diagonal", and `glq quantize --glq-compat` end to end.
local glq = require "glq"
local bit = require "bit"

local BD = { kind = "block-diagonal" }

local function parity(x)
  x = bit.bxor(x, bit.rshift(x, 16))
  x = bit.bxor(x, bit.rshift(x, 8))
  x = bit.bxor(x, bit.rshift(x, 4))
  x = bit.bxor(x, bit.rshift(x, 2))
  x = bit.bxor(x, bit.rshift(x, 1))
  return bit.band(x, 1)
end

-- the explicit n x n block-diagonal matrix: blocks 2^a > 2^b > ... from offset 0, each a Sylvester FWHT / sqrt(len)
local function blockdiag(n)
  local h = glq.zeros("f32", { n, n })
  local p, off, blocks = h:ptr(), 0, {}
  for e = 30, 0, -1 do
    local len = 2 ^ e
    if bit.band(n, len) ~= 0 then
      local s = 1 / math.sqrt(len)
      for i = 0, len - 1 do
        for j = 0, len - 1 do p[(off + i) * n + off + j] = parity(bit.band(i, j)) == 1 and -s or s end
      end
      blocks[#blocks + 1] = len
      off = off + len
    end
  end
  return h, blocks
end

local function eye(n)
  local t = glq.zeros("f32", { n, n })
  local p = t:ptr()
  for i = 0, n - 1 do p[i * n + i] = 1 end
  return t
end

local function bytes(t) local c = t:contiguous() return require("ffi").string(c:ptr(), c:nbytes()) end

describe("block-diagonal Hadamard plan", function()
  it("equals the explicit block-diagonal matrix of Sylvester FWHTs, is symmetric, orthonormal and involutive", function()
    for _, c in ipairs { { 576, "blockdiag FWHT 512 + FWHT 64" }, { 1536, "blockdiag FWHT 1024 + FWHT 512" },
      { 2688, "blockdiag FWHT 2048 + FWHT 512 + FWHT 128" }, { 200, "blockdiag FWHT 128 + FWHT 64 + FWHT 8" } } do
      local n = c[1]
      local ref = blockdiag(n)
      local I = eye(n)
      local h = glq.hadamard(I, BD) -- rows: H e_i
      assert.is_true(h:max_abs_diff(ref) <= 1e-6, "n = " .. n)
      assert.is_true(glq.hadamard(I, { kind = "block-diagonal", transpose = true }):max_abs_diff(ref) <= 1e-6)
      assert.is_true(glq.hadamard(h, BD):max_abs_diff(I) <= 1e-5, "involutive " .. n)
      assert.is_true(glq.matmul(h, h:transpose():contiguous()):max_abs_diff(I) <= 1e-5, "orthonormal " .. n)
      local info = glq.hadamard_info(n, BD)
      assert.equal(c[2], info.description)
      assert.is_true(info.symmetric)
      -- the default plan of these sizes is a different (Kronecker) transform
      assert.is_true(glq.hadamard(I):max_abs_diff(ref) > 0.01)
    end
  end)

  it("is the FWHT for powers of two (same bytes as the default plan) and accepts any size", function()
    local x = glq.randn({ 3, 256 }, 1)
    assert.is_true(bytes(glq.hadamard(x)) == bytes(glq.hadamard(x, BD)))
    local y = glq.randn({ 2, 172 }, 2) -- 128 + 32 + 8 + 4: glq's own unpadded rows
    assert.is_true(glq.hadamard(y, BD):max_abs_diff(glq.matmul(y, blockdiag(172))) <= 1e-5)
    assert.has_error(function() glq.hadamard(x, { kind = "kronecker" }) end)
  end)
end)

-- W from the artifacts by glq's formula W = (diag(SU)·H_m·W̃·H_n·diag(SV))[:m, :n], H = block-diagonal
local function glq_reconstruct(a, m, n)
  local mp, np = a.SU:numel(), a.SV:numel()
  local q = a.Qidxs:to("i32"):reshape({ -1 })
  local wt
  if a.Qidxs2 then
    wt = glq.e8.decode2(q, a.Qidxs2:to("i32"):reshape({ -1 }), a.inv_resid_scale:get(), a.bits == 3 and 256 or 65536)
  else
    wt = glq.e8.decode(q)
  end
  wt = wt:reshape({ mp, np }):mul(a.Wscale:get())
  wt = glq.hadamard(wt, BD)                                                      -- W̃·H_n
  wt = glq.hadamard(wt:transpose():contiguous(), BD):transpose():contiguous()  -- H_m·(.)
  local su, sv, p = a.SU:to("f32"):ptr(), a.SV:to("f32"):ptr(), wt:ptr()
  for i = 0, mp - 1 do
    for j = 0, np - 1 do p[i * np + j] = su[i] * p[i * np + j] * sv[j] end
  end
  return wt:narrow(1, 1, m):narrow(2, 1, n):contiguous()
end

local function hessian(n, seed)
  local x = glq.randn({ 4 * n, n }, seed)
  local h = glq.zeros("f64", { n, n })
  glq.hessian_accumulate(h, x)
  return h:mul(1 / (4 * n))
end

local function sqnr(w, what)
  local d = w:sub(what)
  return 10 * math.log10(w:norm() ^ 2 / d:norm() ^ 2)
end

describe("quantize_linear with transform block-diagonal", function()
  it("dequantizes by glq's formula; e8.linear agrees (dequantize and forward) at 2, 3 and 4 bits", function()
    for _, s in ipairs { { 172, 200 }, { 96, 176 }, { 64, 576 } } do
      local m, n = s[1], s[2]
      local W, H = glq.randn({ m, n }, m + n):mul(0.02), hessian(n, 3)
      for bits = 2, 4 do
        local what = ("%dx%d %d bits"):format(m, n, bits)
        local a = glq.quantize_linear(W, H, { bpw = bits, name = "l", transform = "block-diagonal" })
        assert.equal("block-diagonal", a.transform)
        local mp, np = math.ceil(m / 8) * 8, math.ceil(n / 8) * 8
        assert.same({ mp, np / 8 }, a.Qidxs:shape())
        assert.same({ np }, a.SV:shape())
        local w = glq.dequantize_linear(a)
        assert.equal(0, w:max_abs_diff(glq.dequantize_linear(a, { transform = "block-diagonal" })))
        local ref = glq_reconstruct(a, m, n)
        assert.is_true(w:max_abs_diff(ref) <= 1e-5 * ref:absmax(), what)
        -- the same artifacts read with our transform give another (wrong) weight
        assert.is_true(glq.dequantize_linear(a, { transform = "glq-hadamard-v1" }):max_abs_diff(w) > 0.1 * w:absmax(), what)
        -- quantization quality comparable to our transform's
        local q = sqnr(W, w)
        assert.is_true(q > ({ [2] = 4, [3] = 8, [4] = 12 })[bits], what .. ": " .. q .. " dB")
        assert.is_true(math.abs(q - a.stats.sqnr_db) < 1e-3, what)
        local lin = glq.e8.linear(a, { transform = "block-diagonal" })
        assert.is_true(lin:dequantize():max_abs_diff(w) <= 1e-5 * w:absmax(), what)
        local x = glq.randn({ 5, n }, 7)
        local y = glq.matmul(x, w:transpose():contiguous())
        assert.is_true(lin:forward(x):max_abs_diff(y) <= 1e-4 * y:absmax(), what)
        local x1 = glq.randn({ 1, n }, 8)
        local y1 = glq.matmul(x1, w:transpose():contiguous())
        assert.is_true(lin:forward(x1):max_abs_diff(y1) <= 1e-4 * y1:absmax(), what)
      end
    end
  end)

  it("gives byte-identical artifacts to the default transform for power-of-two dims", function()
    local W, H = glq.randn({ 64, 128 }, 1):mul(0.02), hessian(128, 2)
    for bits = 2, 4 do
      local a = glq.quantize_linear(W, H, { bpw = bits, name = "p", transform = "glq-hadamard-v1" })
      local b = glq.quantize_linear(W, H, { bpw = bits, name = "p", transform = "block-diagonal" })
      assert.is_nil(a.transform)
      for _, k in ipairs { "Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale" } do
        if a[k] or b[k] then assert.is_true(bytes(a[k]) == bytes(b[k]), k .. " at " .. bits .. " bits") end
      end
    end
  end)

  it("rejects an unknown transform", function()
    local W = glq.randn({ 8, 16 }, 1)
    assert.has_error(function() glq.quantize_linear(W, nil, { transform = "rotated" }) end,
      'glq.quantize_linear: transform must be "glq-hadamard-v1", "block-diagonal" or "pow2-padded", got "rotated"')
    -- one parser for every binding: the trellis and glq.e8.linear name the same choices
    assert.has_error(function() glq.trellis.quantize_linear(W, nil, { transform = "rotated" }) end,
      'glq.trellis.quantize_linear: transform must be "glq-hadamard-v1", "block-diagonal" or "pow2-padded", got "rotated"')
    local a = glq.quantize_linear(W, nil, {})
    assert.has_error(function() glq.dequantize_linear(a, { transform = "rotated" }) end)
  end)
end)

-- ---------------------------------------------------------------- end to end

local S = "../shared/models/stories260K"
local GGUF = S .. "/stories260K.gguf"
local TINY = "../shared/text/calib/tiny.utf8"
local have = io.open(GGUF, "rb") and io.open(TINY, "rb")
local util = require "spec.support.util"
local bin, tmpdir = util.bin, util.tmppath

-- a binary outside the tree (GLQ_BUILD=/tmp/...) finds the tree's Lua modules and recipes through these
local function sh(cmd)
  local lib = bin:match("^(.*)/[^/]*$") or "."
  return util.sh(("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/lib/?.so;;' GLQ_RECIPES=recipes "):format(lib) .. cmd)
end

describe("glq quantize --glq-compat", function()
  if not have then
    it("needs ../shared (stories260K and calibration text)", function() pending("../shared is absent: skipped") end)
    return
  end
  local json = require "glq.json"
  local fs = require "glq.fs"
  local model = require "glq.model"
  local ckpt = require "glq.checkpoint"
  local quick = "--calib " .. TINY .. " --nsamples 4 --seqlen 128 --quiet"

  it("writes a block-diagonal checkpoint that reloads to the in-memory quantized model's logits", function()
    local out = tmpdir()
    local rc, log = sh(("%s quantize --model %s --output %s --bpw 2 --glq-compat --dense-dtype keep %s"):format(bin, GGUF, out, quick))
    assert.equal(0, rc, log)
    local qc = json.read_file(out .. "/config.json").quantization_config
    assert.is_true(qc.block_diagonal)
    assert.equal("block-diagonal", qc.transform)
    assert.is_nil(qc.layer_transform)
    assert.equal(35, (function() local k = 0 for _, v in pairs(qc.layer_bpw) do assert.equal(2, v) k = k + 1 end return k end)())
    local back = ckpt.read(out)
    local base = model.load(GGUF)
    local mem = model.load(GGUF)
    local n = 0
    for name, e in pairs(back.layers) do
      n = n + 1
      assert.equal("block-diagonal", e.transform, name)
      local m, k = e.shape[1], e.shape[2]
      assert.same({ math.ceil(m / 8) * 8, math.ceil(k / 8) * 8 / 8 }, e.artifacts.Qidxs:shape())
      -- the in-memory model: each layer's weight decoded by dequantize_linear with the block-diagonal
      -- transform, as a dense linear
      local a = {}
      for f, v in pairs(e.artifacts) do a[f] = v end
      local w = glq.dequantize_linear(a, { transform = "block-diagonal" })
      local W = base.src:need(name .. ".weight"):to("f32")
      assert.is_true(sqnr(W, w) > 3, name .. ": " .. sqnr(W, w) .. " dB")
      mem:set_linear(name, glq.linear.dense(w))
    end
    assert.equal(35, n)
    -- non-power-of-two dims were exercised: the ffn's 172 is stored as 176 = 128 + 32 + 16
    assert.same({ 176, 8 }, back.layers["model.layers.0.mlp.gate_proj"].artifacts.Qidxs:shape())
    assert.same({ 64, 22 }, back.layers["model.layers.0.mlp.down_proj"].artifacts.Qidxs:shape())
    local loaded = model.load(out, { tokenizer = GGUF })
    local ids = base:encode("Once upon a time there was a little girl")
    local la, lm = loaded:logits(ids), mem:logits(ids)
    assert.is_true(la:max_abs_diff(lm) <= 1e-3 * lm:absmax(), "max diff " .. la:max_abs_diff(lm))
    local kl = glq.kl_rows(base:logits(ids):reshape({ 1, 512 }), la:reshape({ 1, 512 }))
    -- 2 bits cost a 260K-parameter model a lot either way (the default transform gives KL ~2.2 here)
    assert.is_true(kl:get(1) < 3, "KL " .. kl:get(1))
    fs.remove_tree(out)
  end)

  it("refuses --format hif4", function()
    local out = tmpdir()
    local rc, log = sh(("%s quantize --model %s --output %s --glq-compat --format hif4 %s"):format(bin, GGUF, out, quick))
    assert.is_not.equal(0, rc)
    assert.is_truthy(log:find("--glq-compat writes E8 layers only (glq has no HiF4)", 1, true), log)
    assert.is_false(fs.exists(out .. "/config.json"))
  end)
end)
