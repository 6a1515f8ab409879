-- Linear algebra for the quantizer: f64 Hessian accumulation, Cholesky, block LDL.
local glq = require "glq"

-- naive f64 XᵀX from the tensor's values
local function naive_xtx(x, rows, n)
  local v, h = x:totable(), {}
  for i = 1, n do
    for j = 1, n do
      local s = 0
      for r = 0, rows - 1 do s = s + v[r * n + i] * v[r * n + j] end
      h[(i - 1) * n + j] = s
    end
  end
  return h
end

-- an SPD test matrix: XᵀX/rows + 0.1·I from a correlated X
local function spd(n, seed)
  local x = glq.randn({4 * n, n}, seed)
  local h = glq.zeros("f64", {n, n})
  glq.hessian_accumulate(h, x)
  h = h:mul(1 / (4 * n))
  for i = 1, n do h:set(h:get(i, i) + 0.1, i, i) end
  return h
end

local function max_rel(a, b, n)
  local ta, tb, scale, worst = a:totable(), b:totable(), 0, 0
  for i = 1, n * n do scale = math.max(scale, math.abs(tb[i])) end
  for i = 1, n * n do worst = math.max(worst, math.abs(ta[i] - tb[i])) end
  return worst / scale
end

describe("hessian_accumulate", function()
  it("adds XᵀX in f64 (more rows than one internal chunk) and keeps both triangles equal", function()
    local rows, n = 300, 12
    local x = glq.randn({rows, n}, 4)
    local h = glq.zeros("f64", {n, n})
    assert.equal(h, glq.hessian_accumulate(h, x))
    local want, got = naive_xtx(x, rows, n), h:totable()
    for i = 1, n * n do assert.near(want[i], got[i], 1e-9 * math.abs(want[i]) + 1e-9) end
    for i = 1, n do for j = 1, n do assert.equal(h:get(i, j), h:get(j, i)) end end
    glq.hessian_accumulate(h, x) -- accumulates
    for i = 1, n * n do assert.near(2 * want[i], h:totable()[i], 2e-9 * math.abs(want[i]) + 1e-9) end
  end)

  it("flattens leading dimensions and converts bf16 inputs", function()
    local x = glq.randn({2, 5, 8}, 6)
    local a, b = glq.zeros("f64", {8, 8}), glq.zeros("f64", {8, 8})
    glq.hessian_accumulate(a, x)
    glq.hessian_accumulate(b, x:reshape({10, 8}))
    assert.equal(0, a:max_abs_diff(b))
    local c = glq.zeros("f64", {8, 8})
    glq.hessian_accumulate(c, x:to("bf16"))
    assert.is_true(c:max_abs_diff(a) < 0.1)
  end)

  it("rejects a non-f64 accumulator and mismatched widths", function()
    assert.error_matches(function() glq.hessian_accumulate(glq.zeros("f32", {4, 4}), glq.zeros("f32", {2, 4})) end,
      "contiguous square f64")
    assert.error_matches(function() glq.hessian_accumulate(glq.zeros("f64", {4, 4}), glq.zeros("f32", {2, 5})) end,
      "last dimension must be 4")
  end)
end)

describe("cholesky", function()
  it("factors an SPD matrix: C lower triangular and C·Cᵀ = A", function()
    local n = 24
    local a = spd(n, 7)
    local c = glq.cholesky(a)
    for i = 1, n do for j = i + 1, n do assert.equal(0, c:get(i, j)) end end
    assert.is_true(max_rel(glq.matmul(c, c, {transpose_b = true}), a, n) < 1e-12)
  end)

  it("reports a matrix that is not positive definite", function()
    local a = glq.tensor({1, 2, 2, 1}, {2, 2}, "f64")
    assert.error_matches(function() glq.cholesky(a) end, "not positive definite")
    assert.error_matches(function() glq.cholesky(glq.zeros("f64", {2, 3})) end, "A must be a 2 x 2 matrix")
  end)
end)

describe("block_ldl", function()
  it("reconstructs A = L·blkdiag(D)·Lᵀ with unit diagonal blocks and symmetric D", function()
    local n, b = 32, 8
    local a = spd(n, 8)
    local l, d = glq.block_ldl(a)
    assert.same({n, n}, l:shape())
    assert.same({n / b, b, b}, d:shape())
    local bd = glq.zeros("f32", {n, n}) -- blkdiag(D)
    for k = 0, n / b - 1 do
      for i = 1, b do
        for j = 1, b do
          bd:set(d:get(k + 1, i, j), k * b + i, k * b + j)
          assert.equal(d:get(k + 1, i, j), d:get(k + 1, j, i))
          assert.equal(i == j and 1 or 0, l:get(k * b + i, k * b + j))
        end
      end
    end
    for i = 1, n do for j = i + 1, n do assert.equal(0, l:get(i, j)) end end
    local ldl = glq.matmul(glq.matmul(l, bd), l, {transpose_b = true})
    assert.is_true(max_rel(ldl:to("f64"), a, n) < 1e-5)
  end)

  it("supports other block sizes and rejects a size that is not a multiple", function()
    local a = spd(12, 9)
    local l, d = glq.block_ldl(a, 4)
    assert.same({3, 4, 4}, d:shape())
    assert.error_matches(function() glq.block_ldl(a, 8) end, "not a multiple of the block size 8")
  end)
end)
