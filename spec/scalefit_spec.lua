-- glq.fit_scales: the closed-form row/column scale refit (src/quant/scalefit.c) against direct
-- evaluation of the proxy loss, its optimality (no single-scale perturbation lowers the loss at the
-- fitted point), the identity-Hessian case and argument errors; glq.rescale folds it into SU/SV.
local glq = require "glq"

-- deterministic pseudo-random numbers in [-1, 1)
local function rng(seed)
  local x = seed
  return function()
    x = (x * 1103515245 + 12345) % 2147483648
    return x / 1073741824 - 1
  end
end

local function rand(shape, r, f)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = f and f(i, r()) or r() end
  return glq.tensor(v, shape, "f32")
end

-- H = XᵀX / rows (f64) of a random X with correlated columns
local function hessian(n, rows, r)
  local X = rand({ rows, n }, r)
  local H = glq.zeros("f64", { n, n })
  glq.hessian_accumulate(H, X)
  return H:mul(1 / rows)
end

-- diag(s)·Q·diag(u)
local function scaled(Q, s, u)
  local m, n = Q:size(1), Q:size(2)
  local out = Q:clone()
  local p, ps, pu = out:ptr(), s:ptr(), u:ptr()
  for i = 0, m - 1 do
    for j = 0, n - 1 do p[i * n + j] = p[i * n + j] * ps[i] * pu[j] end
  end
  return out
end

describe("glq.fit_scales", function()
  local r = rng(7)
  local m, n = 12, 24
  local W = rand({ m, n }, r)
  -- a "quantized" weight: shrunk rows and columns plus noise, as low-bit codes come out
  local Q = rand({ m, n }, r, function(i, x)
    local row, col = math.floor((i - 1) / n), (i - 1) % n
    return W:ptr()[i - 1] * (0.7 + 0.02 * row) * (0.9 + 0.01 * col) + 0.05 * x
  end)
  local H = hessian(n, 64, r)

  it("lowers the proxy loss, and reports the loss of diag(s)·Q·diag(u)", function()
    local s, u, info = glq.fit_scales(W, Q, H, { iters = 3, damp = 0 })
    assert.are.equal(m, s:numel())
    assert.are.equal(n, u:numel())
    local l0 = glq.hif4.proxy_loss(W, Q, H)
    local l1 = glq.hif4.proxy_loss(W, scaled(Q, s, u), H)
    assert.is_true(math.abs(info.loss0 - l0) <= 1e-5 * l0)
    assert.is_true(math.abs(info.loss1 - l1) <= 1e-5 * l0)
    assert.is_true(l1 < 0.5 * l0, string.format("loss %g -> %g", l0, l1))
  end)

  it("converges to a point where no single row or column scale lowers the loss", function()
    local s, u, info = glq.fit_scales(W, Q, H, { iters = 60, damp = 0 })
    local best = info.loss1
    for _, v in ipairs({ s, u }) do
      for k = 0, v:numel() - 1, 3 do
        for _, e in ipairs({ 1e-3, -1e-3 }) do
          local keep = v:ptr()[k]
          v:ptr()[k] = keep * (1 + e)
          local l = glq.hif4.proxy_loss(W, scaled(Q, s, u), H)
          v:ptr()[k] = keep
          assert.is_true(l >= best * (1 - 1e-6), string.format("scale %d %+g: %.9g < %.9g", k, e, l, best))
        end
      end
    end
  end)

  it("damps H as LDLQ does: damp * mean(diag H) on its diagonal", function()
    local Hd = H:clone()
    local tr = 0
    for i = 1, n do tr = tr + H:get(i, i) end
    for i = 1, n do Hd:set(H:get(i, i) + 0.05 * tr / n, i, i) end
    local s1, u1, i1 = glq.fit_scales(W, Q, H, { damp = 0.05 })
    local s2, u2, i2 = glq.fit_scales(W, Q, Hd, { damp = 0 })
    assert.is_true(s1:max_abs_diff(s2) <= 1e-5 and u1:max_abs_diff(u2) <= 1e-5)
    assert.is_true(math.abs(i1.loss1 - i2.loss1) <= 1e-9 * i2.loss0)
  end)

  it("takes nil for the identity Hessian", function()
    local I = glq.zeros("f64", { n, n })
    for i = 1, n do I:set(1, i, i) end
    local s1, u1 = glq.fit_scales(W, Q, nil)
    local s2, u2 = glq.fit_scales(W, Q, I)
    assert.are.equal(0, s1:max_abs_diff(s2))
    assert.are.equal(0, u1:max_abs_diff(u2))
  end)

  it("keeps the scales at 1 when Q is already W", function()
    local s, u, info = glq.fit_scales(W, W, H)
    assert.are.equal(0, info.loss0)
    assert.are.equal(0, s:max_abs_diff(glq.full({ m }, 1)))
    assert.are.equal(0, u:max_abs_diff(glq.full({ n }, 1)))
  end)

  it("names the problem in its errors", function()
    assert.has_error(function() glq.fit_scales(W, Q:narrow(1, 1, 4), H) end,
      "fit_scales: W and What must be 2-d tensors of one shape")
    assert.has_error(function() glq.fit_scales(W, Q, glq.zeros("f64", { 3, 3 })) end,
      "fit_scales: H must be (24, 24) for a weight with 24 columns")
    assert.has_error(function() glq.fit_scales(W, Q, H, { iters = 0 }) end, "fit_scales: iters must be 1..100, got 0")
    assert.has_error(function() glq.fit_scales(W, Q, H, { damp = -1 }) end, "fit_scales: damp must be >= 0, got -1")
  end)
end)

describe("glq.rescale", function()
  it("folds the fit into a quantized layer's SU/SV (f16) and lowers its proxy loss", function()
    local r = rng(11)
    local W = rand({ 40, 64 }, r)
    local H = hessian(64, 256, r)
    local a = glq.quantize_linear(W, H, { bpw = 2 })
    local before = glq.hif4.proxy_loss(W, glq.dequantize_linear(a), H)
    local info = require("glq.rescale").apply(a, W, glq.dequantize_linear(a), H, { damp = 0 })
    assert.are.equal("f16", a.SU:dtype())
    assert.are.equal("f16", a.SV:dtype())
    local after = glq.hif4.proxy_loss(W, glq.dequantize_linear(a), H)
    assert.is_true(math.abs(info.loss0 - before) <= 1e-5 * before)
    -- the stored f16 scales give the fitted loss up to their rounding
    assert.is_true(math.abs(after - info.loss1) <= 1e-2 * info.loss1, string.format("%g vs %g", after, info.loss1))
    assert.is_true(after < before, string.format("%g -> %g", before, after))
  end)
end)

describe("glq quantize --rescale", function()
  local u = require "spec.support.util"
  local STORIES = "../shared/models/stories260K/stories260K.gguf"
  local CALIB = "../shared/text/calib/tiny.utf8"
  if not (u.exists(STORIES) and u.exists(CALIB)) then
    pending("stories260K or tiny.utf8 not in ../shared: skipped")
    return
  end
  -- the stored SU/SV of every layer: {all +-1?, count}
  local function scales(out)
    local ck = require("glq.checkpoint").read(out)
    local signs, n = true, 0
    for _, e in pairs(ck.layers) do
      for _, k in ipairs({ "SU", "SV" }) do
        for _, v in ipairs(e.artifacts[k]:to("f32"):totable()) do
          n = n + 1
          if v ~= 1 and v ~= -1 then signs = false end
        end
      end
    end
    return signs, n
  end

  it("refits SU/SV by default (lower proxy loss) and keeps the LDLQ signs with --no-rescale", function()
    local a, b = u.tmppath(), u.tmppath()
    local cmd = "%s quantize --model %s --output %s --bpw 2 --calib %s --nsamples 4 --seqlen 64 --quiet %s"
    local rc, log = u.sh(cmd:format(u.bin, STORIES, a, CALIB, ""))
    assert.equal(0, rc, log)
    rc, log = u.sh(cmd:format(u.bin, STORIES, b, CALIB, "--no-rescale"))
    assert.equal(0, rc, log)
    local sa, na = scales(a)
    local sb, nb = scales(b)
    assert.equal(na, nb)
    assert.is_false(sa, "the default run's scales are refitted reals")
    assert.is_true(sb, "--no-rescale keeps +-1 signs")
    -- the report's proxy losses of decoder layer 0, whose Hessians both runs share (later layers see
    -- each run's own quantized outputs): the refit lowers them
    local ra, rb = require("glq.json").read_file(a .. "/report.json"), require("glq.json").read_file(b .. "/report.json")
    local function total(r)
      local t = 0
      for _, l in ipairs(r.layers) do
        if l.name:match("%.layers%.0%.") then t = t + l.proxy_loss end
      end
      return t
    end
    assert.is_true(total(ra) < total(rb), string.format("%g vs %g", total(ra), total(rb)))
    u.sh("rm -rf " .. a .. " " .. b)
  end)
end)
