-- Padding-free Hadamard transforms: orthonormality for every supported size, the model sizes that
-- must work unpadded, transpose = inverse, determinism across threads and SIMD paths.
local glq = require "glq"

local function rows_of(n, rows, seed) return glq.randn({rows, n}, seed) end

-- explicit matrix: row i of hadamard(I) is H e_i, i.e. the matrix M = Hᵀ
local function matrix(n)
  local eye = glq.zeros("f32", {n, n})
  for i = 1, n do eye:set(1, i, i) end
  return glq.hadamard(eye)
end

local function max_offdiag_err(g, n)
  local worst = 0
  local t = g:totable()
  for i = 1, n do
    for j = 1, n do
      local e = math.abs(t[(i - 1) * n + j] - (i == j and 1 or 0))
      if e > worst then worst = e end
    end
  end
  return worst
end

local function relerr_norm(x, y) return math.abs(y:norm() / x:norm() - 1) end

describe("hadamard", function()
  it("matches the Sylvester FWHT on a small vector", function()
    local y = glq.hadamard(glq.tensor({3, 1}))
    assert.near(4 / math.sqrt(2), y:get(1), 1e-6)
    assert.near(2 / math.sqrt(2), y:get(2), 1e-6)
    local h4 = matrix(4):totable() -- H4 / 2 in Sylvester order
    local want = {1, 1, 1, 1, 1, -1, 1, -1, 1, 1, -1, -1, 1, -1, -1, 1}
    for i = 1, 16 do assert.near(want[i] / 2, h4[i], 1e-7) end
  end)

  it("is exactly orthonormal (explicit H·Hᵀ = I) for every multiple of 8 up to 512", function()
    for n = 8, 512, 8 do
      local m = matrix(n)
      local err = max_offdiag_err(glq.matmul(m, m, {transpose_b = true}), n)
      assert.is_true(err < 1e-5, ("n=%d: |H·Hᵀ - I| = %g (%s)"):format(n, err, glq.hadamard_info(n).description))
    end
  end)

  it("preserves norms and inverts with transpose for every multiple of 8 up to 4096", function()
    for n = 8, 4096, 8 do
      local x = rows_of(n, 2, n)
      local y = glq.hadamard(x)
      assert.is_true(relerr_norm(x, y) < 1e-5, "norm at n=" .. n)
      local back = glq.hadamard(y, {transpose = true})
      assert.is_true(x:max_abs_diff(back) < 1e-5, "inverse at n=" .. n)
    end
  end)

  it("is symmetric and involutive for powers of two up to 65536", function()
    for k = 0, 16 do
      local n = 2 ^ k
      local x = rows_of(n, 2, k + 1)
      local y = glq.hadamard(x)
      assert.is_true(relerr_norm(x, y) < 1e-5, "norm at n=" .. n)
      assert.is_true(glq.hadamard_info(n).symmetric)
      assert.is_true(x:max_abs_diff(glq.hadamard(y)) < 2e-5, "involution at n=" .. n)
    end
  end)

  it("handles the common model sizes as true Hadamard matrices, without padding", function()
    local sizes = {576, 960, 1536, 2048, 2560, 3072, 4096, 5120, 8192, 11008, 13824, 14336}
    for _, n in ipairs(sizes) do
      local info = glq.hadamard_info(n)
      assert.equal(1, info.coherence, n .. ": " .. info.description)
      local x = rows_of(n, 3, n)
      local y = glq.hadamard(x)
      assert.same({3, n}, y:shape())
      assert.is_true(relerr_norm(x, y) < 1e-5, "norm at n=" .. n)
      assert.is_true(x:max_abs_diff(glq.hadamard(y, {transpose = true})) < 2e-5, "inverse at n=" .. n)
      if info.symmetric then assert.is_true(x:max_abs_diff(glq.hadamard(y)) < 2e-5) end
    end
    assert.matches("H344 %(Paley I%)", glq.hadamard_info(11008).description) -- GF(7^3)
    assert.matches("H28 %(Paley I%)", glq.hadamard_info(14336).description)  -- GF(3^3)
  end)

  it("uses two Kronecker blocks where no Hadamard matrix of the order is built, and reports the coherence", function()
    local info = glq.hadamard_info(184) -- 8·23: order 184 or 92 is not a Paley order
    assert.matches("^blockdiag", info.description)
    assert.near(math.sqrt(184 / 88), info.coherence, 1e-12)
    local x = rows_of(184, 2, 5)
    assert.is_true(x:max_abs_diff(glq.hadamard(glq.hadamard(x), {transpose = true})) < 1e-5)
  end)

  it("applies along the last dimension of a 3-D tensor, row by row", function()
    local x = glq.randn({2, 3, 24}, 9)
    local y = glq.hadamard(x)
    local y2 = glq.hadamard(x:reshape({6, 24}))
    assert.equal(0, y:reshape({6, 24}):max_abs_diff(y2))
  end)

  it("rejects sizes that are neither powers of two nor multiples of 8", function()
    assert.error_matches(function() glq.hadamard(glq.zeros("f32", {2, 12})) end, "pad to a multiple of 8")
    assert.error_matches(function() glq.hadamard_info(100) end, "size 100")
  end)

  -- runs `glq.hadamard` on x in a child process with the given environment; returns the result
  local function child_hadamard(env, x)
    local base = os.tmpname()
    local rows, n = x:shape()[1], x:shape()[2]
    x:tofile(base .. ".x")
    local script = io.open(base .. ".lua", "w")
    script:write(("package.path = %q; package.cpath = %q\n"):format(package.path, package.cpath))
    script:write(([[local glq = require "glq"
      glq.hadamard(glq.fromfile(%q, "f32", {%d, %d})):tofile(%q)]]):format(base .. ".x", rows, n, base .. ".y"))
    script:close()
    local ok = os.execute(env .. " luajit " .. base .. ".lua")
    assert.truthy(ok == 0 or ok == true)
    local y = glq.fromfile(base .. ".y", "f32", {rows, n})
    for _, f in ipairs {base, base .. ".x", base .. ".y", base .. ".lua"} do os.remove(f) end
    return y
  end

  it("gives identical bytes for 1 and 2 threads (GLQ_THREADS)", function()
    local x = rows_of(5120, 64, 3)
    assert.equal(0, child_hadamard("GLQ_THREADS=1", x):max_abs_diff(child_hadamard("GLQ_THREADS=2", x)))
  end)

  it("gives identical bytes on the portable and the AVX2 path", function()
    local x = rows_of(11008, 4, 17) -- FWHT + dense Paley stage
    assert.equal(0, glq.hadamard(x):max_abs_diff(child_hadamard("GLQ_NO_AVX2=1", x)))
  end)
end)
