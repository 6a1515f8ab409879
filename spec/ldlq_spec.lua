-- E8 + RHT layer quantization with LDLQ: artifacts, losses, RHT identities, Hessian fallbacks,
-- determinism across threads.
local glq = require "glq"

-- X (rows x n): an AR(1) process along the features (rho 0.9), every 7th feature 3x louder
local function correlated_x(rows, n, seed)
  local z, v = glq.randn({rows, n}, seed):totable(), {}
  for r = 0, rows - 1 do
    local prev = 0
    for j = 1, n do
      prev = 0.9 * prev + z[r * n + j]
      v[r * n + j] = prev * (j % 7 == 0 and 3 or 1)
    end
  end
  return glq.tensor(v, {rows, n})
end

local function hessian(n, seed)
  local rows = 4 * n
  local h = glq.zeros("f64", {n, n})
  glq.hessian_accumulate(h, correlated_x(rows, n, seed))
  return h:mul(1 / rows)
end

local function weight(m, n, seed) return glq.randn({m, n}, seed):mul(0.02) end

-- tr(A·H·Aᵀ) in f64
local function quad(a, h) local a64 = a:to("f64"); return glq.matmul(a64, h:to("f64")):mul(a64):sum() end

local function mean_diag(h)
  local s, n = 0, h:shape()[1]
  for i = 1, n do s = s + h:get(i, i) end
  return s / n
end

local function damped(h, damp)
  local n, d = h:shape()[1], damp * mean_diag(h)
  local r = h:to("f64")
  for i = 1, n do r:set(r:get(i, i) + d, i, i) end
  return r
end

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-300) end

local function keys(t)
  local k = {}
  for name, v in pairs(t) do if glq.is_tensor and glq.is_tensor(v) or type(v) == "userdata" then k[#k + 1] = name end end
  table.sort(k)
  return k
end

local M, N = 64, 128
local W, H = weight(M, N, 1), hessian(N, 2)

describe("quantize_linear artifacts", function()
  it("has glq's names, dtypes and shapes at 2, 3 and 4 bits", function()
    for _, bits in ipairs {2, 3, 4} do
      local a = glq.quantize_linear(W, H, {bpw = bits, name = "blk.0.q"})
      local want = bits == 2 and {"Qidxs", "SU", "SV", "Wscale"} or {"Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale"}
      assert.same(want, keys(a))
      assert.equal("i16", a.Qidxs:dtype()); assert.same({M, N / 8}, a.Qidxs:shape())
      assert.equal("f16", a.SU:dtype()); assert.same({M}, a.SU:shape())
      assert.equal("f16", a.SV:dtype()); assert.same({N}, a.SV:shape())
      assert.equal("f32", a.Wscale:dtype()); assert.same({}, a.Wscale:shape())
      for _, s in ipairs(a.SU:totable()) do assert.truthy(s == 1 or s == -1) end
      if bits > 2 then
        assert.equal("i16", a.Qidxs2:dtype()); assert.same({M, N / 8}, a.Qidxs2:shape())
        assert.equal("f32", a.inv_resid_scale:dtype()); assert.same({}, a.inv_resid_scale:shape())
        assert.near(1 / a.stats.resid_scale, a.inv_resid_scale:get(), 1e-6)
      end
      if bits == 3 then for _, i in ipairs(a.Qidxs2:totable()) do assert.truthy(i >= 0 and i < 256) end end
      assert.near(bits + 32 * (bits > 2 and 2 or 1) / (M * N), a.stats.bpw, 1e-12)
      assert.same({M, N}, glq.dequantize_linear(a):shape())
    end
  end)

  it("pads dimensions to multiples of 8 and counts the padding in bpw", function()
    local w = weight(10, 50, 3)
    local a = glq.quantize_linear(w, hessian(50, 4), {bpw = 2})
    assert.same({16, 7}, a.Qidxs:shape())
    assert.same({16}, a.SU:shape())
    assert.same({56}, a.SV:shape())
    assert.near((16 * 16 * 7 + 32) / (10 * 50), a.stats.bpw, 1e-12)
    assert.same({10, 50}, glq.dequantize_linear(a):shape())
  end)

  it("dequantize_linear returns exactly the weight the statistics describe", function()
    local a = glq.quantize_linear(W, H, {bpw = 3})
    local d = W:sub(glq.dequantize_linear(a))
    assert.near(10 * math.log10(W:norm() ^ 2 / d:norm() ^ 2), a.stats.sqnr_db, 1e-6)
    -- proxy loss = mean over rows of diag(ΔW H₁ ΔWᵀ), H₁ with damp #1 (0.01·mean diag)
    assert.is_true(rel(a.stats.proxy_loss, quad(d, damped(H, 0.01)) / M) < 1e-3)
    assert.equal(a.stats.proxy_loss, a.stats.proxy_loss_orig)
  end)

  it("reports the original-domain proxy loss of a padded layer", function()
    local w, h = weight(12, 44, 5), hessian(44, 6)
    local a = glq.quantize_linear(w, h, {bpw = 4})
    local d = w:sub(glq.dequantize_linear(a))
    assert.is_true(rel(a.stats.proxy_loss_orig, quad(d, damped(h, 0.01)) / 12) < 1e-3)
  end)

  it("accepts bf16 weights and f32 Hessians (converted exactly)", function()
    local a = glq.quantize_linear(W:to("bf16"), H:to("f32"), {bpw = 2})
    local b = glq.quantize_linear(W:to("bf16"):to("f32"), H:to("f32"):to("f64"), {bpw = 2})
    assert.equal(0, a.Qidxs:max_abs_diff(b.Qidxs))
    assert.equal(a.Wscale:get(), b.Wscale:get())
  end)
end)

describe("LDLQ quality", function()
  local res = {}
  for _, bits in ipairs {2, 3, 4} do
    res[bits] = {
      ldlq = glq.quantize_linear(W, H, {bpw = bits}).stats,
      nearest = glq.quantize_linear(W, H, {bpw = bits, feedback = false}).stats,
      plain = glq.quantize_linear(W, H, {bpw = bits, scale_search = false}).stats,
    }
  end

  it("has a lower proxy loss than nearest rounding of the same rotated weights", function()
    for bits = 2, 4 do
      assert.is_true(res[bits].ldlq.proxy_loss < 0.5 * res[bits].nearest.proxy_loss,
        ("%d bits: %g vs %g"):format(bits, res[bits].ldlq.proxy_loss, res[bits].nearest.proxy_loss))
    end
  end)

  it("improves with every bit: proxy 4 < 3 < 2 and SQNR 4 > 3 > 2", function()
    assert.is_true(res[4].ldlq.proxy_loss < res[3].ldlq.proxy_loss)
    assert.is_true(res[3].ldlq.proxy_loss < res[2].ldlq.proxy_loss)
    assert.is_true(res[4].ldlq.sqnr_db > res[3].ldlq.sqnr_db and res[3].ldlq.sqnr_db > res[2].ldlq.sqnr_db)
    assert.is_true(res[2].nearest.sqnr_db > 9.5) -- E8 at 2 bits on a Gaussian-like source: ~10.4 dB
  end)

  it("never loses to the default scales when searching (the sample is every row here)", function()
    for bits = 2, 4 do assert.is_true(res[bits].ldlq.proxy_loss <= res[bits].plain.proxy_loss * (1 + 1e-4)) end
  end)

  it("tune_iters lowers the proxy loss further", function()
    for _, bits in ipairs {2, 4} do
      local t = glq.quantize_linear(W, H, {bpw = bits, tune_iters = 2}).stats
      assert.is_true(t.proxy_loss < res[bits].ldlq.proxy_loss, ("%d bits: %g vs %g"):format(bits, t.proxy_loss, res[bits].ldlq.proxy_loss))
    end
  end)
end)

describe("RHT", function()
  it("round-trips a padded weight and preserves its norm", function()
    local w = weight(10, 44, 7)
    local su, sv = glq.rht.signs(1, "x", "SU", 16), glq.rht.signs(1, "x", "SV", 48)
    local wt = glq.rht.weight(w, su, sv)
    assert.same({16, 48}, wt:shape())
    assert.near(w:norm(), wt:norm(), 1e-6 * w:norm())
    assert.is_true(w:max_abs_diff(glq.rht.weight_inverse(wt, su, sv, 10, 44)) < 1e-6)
  end)

  it("keeps the Hessian loss: tr(ΔW H ΔWᵀ) = tr(ΔW̃ H̃ ΔW̃ᵀ)", function()
    local dw, h = weight(10, 44, 8), hessian(44, 9)
    local su, sv = glq.rht.signs(5, "y", "SU", 16), glq.rht.signs(5, "y", "SV", 48)
    local ht = glq.rht.hessian(h, sv)
    assert.same({48, 48}, ht:shape())
    for i = 1, 48 do for j = 1, i do assert.equal(ht:get(i, j), ht:get(j, i)) end end
    assert.is_true(rel(quad(glq.rht.weight(dw, su, sv), ht), quad(dw, h)) < 1e-5)
  end)

  it("draws signs from (seed, name, tag): reproducible, and different for other names, tags or seeds", function()
    local a = glq.rht.signs(42, "model.layers.0.self_attn.q_proj", "SU", 4096)
    assert.equal(0, a:max_abs_diff(glq.rht.signs(42, "model.layers.0.self_attn.q_proj", "SU", 4096)))
    assert.is_true(a:max_abs_diff(glq.rht.signs(42, "model.layers.1.self_attn.q_proj", "SU", 4096)) > 0)
    assert.is_true(a:max_abs_diff(glq.rht.signs(42, "model.layers.0.self_attn.q_proj", "SV", 4096)) > 0)
    assert.is_true(a:max_abs_diff(glq.rht.signs(43, "model.layers.0.self_attn.q_proj", "SU", 4096)) > 0)
    assert.is_true(math.abs(a:sum()) < 300) -- balanced: |sum| ~ 64 expected for 4096 fair signs
  end)

  it("gives equal-shaped layers with different names different signs", function()
    local a = glq.quantize_linear(W, H, {bpw = 2, name = "layers.0.q_proj"})
    local b = glq.quantize_linear(W, H, {bpw = 2, name = "layers.1.q_proj"})
    assert.is_true(a.SU:max_abs_diff(b.SU) > 0 and a.SV:max_abs_diff(b.SV) > 0)
    -- layers reading the same input can share SV (one input transform at inference)
    local k = glq.quantize_linear(W, H, {bpw = 2, name = "layers.0.k_proj", input_name = "layers.0.attn_in"})
    local v = glq.quantize_linear(W, H, {bpw = 2, name = "layers.0.v_proj", input_name = "layers.0.attn_in"})
    assert.equal(0, k.SV:max_abs_diff(v.SV))
    assert.is_true(k.SU:max_abs_diff(v.SU) > 0)
  end)
end)

describe("Hessian fallbacks", function()
  it("survives a zero Hessian with the identity fallback", function()
    local a = glq.quantize_linear(W, glq.zeros("f64", {N, N}), {bpw = 2})
    assert.equal(3, a.stats.fallback)
    assert.equal(0, a.stats.damp_used)
    assert.equal(0, a.stats.proxy_loss)
    assert.is_true(a.stats.sqnr_db > 9)
  end)

  it("survives a rank-1 Hessian: damping makes it definite, and without damping the ladder adds some", function()
    local v = glq.randn({1, N}, 11)
    local h = glq.zeros("f64", {N, N})
    glq.hessian_accumulate(h, v)
    local a = glq.quantize_linear(W, h, {bpw = 2})
    assert.equal(0, a.stats.fallback)
    assert.equal(0.01, a.stats.damp_used)
    local b = glq.quantize_linear(W, h, {bpw = 2, damp = 0})
    assert.equal(1, b.stats.fallback)
    assert.equal(0.1, b.stats.damp_used)
    assert.is_true(b.stats.sqnr_db > 0 and a.stats.sqnr_db > 0)
  end)

  it("treats a nil Hessian as the identity", function()
    local a = glq.quantize_linear(W, nil, {bpw = 2})
    local d = W:sub(glq.dequantize_linear(a))
    assert.is_true(rel(a.stats.proxy_loss, 1.01 * d:norm() ^ 2 / M) < 1e-4)
  end)

  it("names the layer and the argument in errors", function()
    assert.error_matches(function() glq.quantize_linear(W, H, {bpw = 5}) end, "bits must be 2, 3 or 4")
    local bad = W:clone()
    bad:set(0 / 0, 3, 4)
    assert.error_matches(function() glq.quantize_linear(bad, H, {name = "blk.7.k"}) end,
      "quantize_linear blk.7.k: weight has a non%-finite value at %(2, 3%)")
    assert.error_matches(function() glq.quantize_linear(W, glq.zeros("f64", {N, 8})) end, "H must be a 128 x 128 matrix")
    assert.error_matches(function() glq.quantize_linear(W, H, {damp = -1}) end, "damp must be")
    assert.error_matches(function() glq.quantize_linear(W:reshape({M * N}), nil) end, "W must be a 2%-D matrix")
    assert.error_matches(function() glq.quantize_linear(W, H:mul(-1)) end, "negative diagonal entry at %(0, 0%)")
    assert.error_matches(function() glq.dequantize_linear({SU = W}) end, "artifacts.Qidxs must be a tensor")
  end)
end)

describe("determinism", function()
  -- quantize in a child process with the given environment; returns the artifact bytes
  local function child_bytes(env)
    local base = os.tmpname()
    local script = io.open(base .. ".lua", "w")
    script:write(("package.path = %q; package.cpath = %q\n"):format(package.path, package.cpath))
    script:write(([[local glq = require "glq"
      local x = glq.randn({512, 136}, 5)
      local h = glq.zeros("f64", {136, 136})
      glq.hessian_accumulate(h, x)
      h:tofile(%q)
      local a = glq.quantize_linear(glq.randn({264, 136}, 6), h, {bpw = 3, tune_iters = 1, name = "d"})
      a.Qidxs:tofile(%q); a.Qidxs2:tofile(%q); a.Wscale:tofile(%q)]]):format(base .. ".h", base .. ".q1", base .. ".q2", base .. ".s"))
    script:close()
    local ok = os.execute(env .. " luajit " .. base .. ".lua")
    assert.truthy(ok == 0 or ok == true)
    local out = {}
    for _, ext in ipairs {".h", ".q1", ".q2", ".s"} do
      local f = io.open(base .. ext, "rb")
      out[#out + 1] = f:read("*a")
      f:close()
      os.remove(base .. ext)
    end
    os.remove(base .. ".lua")
    os.remove(base)
    return table.concat(out)
  end

  it("gives identical bytes for the same inputs and seed", function()
    local a = glq.quantize_linear(W, H, {bpw = 4, tune_iters = 1, seed = 7})
    local b = glq.quantize_linear(W, H, {bpw = 4, tune_iters = 1, seed = 7})
    assert.equal(0, a.Qidxs:max_abs_diff(b.Qidxs))
    assert.equal(0, a.Qidxs2:max_abs_diff(b.Qidxs2))
    assert.equal(a.Wscale:get(), b.Wscale:get())
    local c = glq.quantize_linear(W, H, {bpw = 4, seed = 8})
    assert.is_true(a.SU:max_abs_diff(c.SU) > 0)
  end)

  it("gives identical Hessian and artifact bytes with 1 or 2 threads (glq pool and OpenBLAS)", function()
    local one = child_bytes("GLQ_THREADS=1 OPENBLAS_NUM_THREADS=1")
    local two = child_bytes("GLQ_THREADS=2 OPENBLAS_NUM_THREADS=2")
    assert.is_true(#one > 0)
    assert.is_true(one == two)
  end)

  it("quantize_linears gives every job's quantize_linear bytes (trellis jobs too), for 1, 2 and 3 threads", function()
    local h96, h40 = hessian(96, 11), hessian(40, 12)
    local jobs = { { weight(80, 96, 13), h96, { bpw = 2, name = "a" } }, { weight(24, 96, 14), h96, { bpw = 3, name = "b" } },
      { weight(96, 40, 15), h40, { bpw = 4, name = "c" } }, { weight(8, 96, 16), nil, { bpw = 2, name = "d" } },
      { weight(40, 96, 17), h96, { bpw = 2, name = "e", tune_iters = 1 } },
      { weight(32, 96, 18), h96, { bpw = 2, name = "f", codebook = "trellis" } } }
    local want = {}
    for i, j in ipairs(jobs) do
      want[i] = j[3].codebook == "trellis" and glq.trellis.quantize_linear(j[1], j[2], j[3]) or glq.quantize_linear(j[1], j[2], j[3])
    end
    assert.equal("trellis", want[6].codebook)
    assert.is_not_nil(want[6].trellis_packed)
    local n0 = glq.num_threads()
    for _, t in ipairs({ 1, 2, 3 }) do
      glq.num_threads(t)
      local ok, got = pcall(glq.quantize_linears, jobs)
      glq.num_threads(n0)
      assert(ok, got)
      assert.equal(#jobs, #got)
      for i = 1, #jobs do
        assert.equal(want[i].codebook, got[i].codebook)
        for _, f in ipairs({ "Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale", "trellis_packed", "tlut" }) do
          if want[i][f] then
            assert.equal(0, got[i][f]:max_abs_diff(want[i][f]), ("%d threads, job %d, %s"):format(t, i, f))
          else
            assert.is_nil(got[i][f])
          end
        end
        assert.equal(want[i].stats.proxy_loss, got[i].stats.proxy_loss)
      end
    end
    assert.same({}, glq.quantize_linears({}))
  end)

  it("quantize_linears names the job that fails", function()
    local bad = weight(16, 32, 1)
    bad:set(0 / 0, 2, 3)
    assert.has_error(function() glq.quantize_linears({ { weight(16, 32, 2), nil, {} }, { bad, nil, { name = "bad" } } }) end,
      "EINVAL: glq.quantize_linears: job 2: quantize_linear bad: weight has a non-finite value at (1, 2)")
    assert.has_error(function() glq.quantize_linears({ 5 }) end, "glq.quantize_linears: job 1 must be a table {W, H, opts}")
    assert.has_error(function() glq.quantize_linears({ { weight(16, 32, 2), glq.zeros("f64", { 8, 8 }), {} } }) end)
  end)

  it("device: cpu or cuda; cuda without a usable GPU is an error that says so", function()
    assert.has_error(function() glq.quantize_linear(weight(8, 8, 1), nil, { device = "tpu" }) end,
      'glq.quantize_linear: device must be "cpu" or "cuda", got "tpu"')
    if not glq.core.cuda.available() then
      local okq, err = pcall(glq.quantize_linear, weight(8, 8, 1), nil, { device = "cuda", name = "w" })
      assert.is_false(okq)
      assert.is_truthy(tostring(err):find("CUDA", 1, true), tostring(err))
    end
  end)
end)
