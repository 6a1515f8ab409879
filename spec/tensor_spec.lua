-- Tensor core: construction, dtypes and exact conversions, views, printing, raw file I/O.
local glq = require "glq"

local function tmpname() return os.tmpname() end

describe("tensor construction", function()
  it("builds from a flat table with shape and dtype", function()
    local t = glq.tensor({1, 2, 3, 4, 5, 6}, {2, 3}, "f32")
    assert.same({2, 3}, t:shape())
    assert.equal("f32", t:dtype())
    assert.equal(6, t:numel())
    assert.same({1, 2, 3, 4, 5, 6}, t:totable())
    assert.equal(2, #t)
  end)

  it("zeros works for every dtype", function()
    for _, dt in ipairs {"f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool"} do
      local z = glq.zeros(dt, {2, 3})
      assert.equal(dt, z:dtype())
      assert.same({2, 3}, z:shape())
      for _, v in ipairs(z:totable()) do assert.truthy(v == 0 or v == false) end
    end
  end)

  it("supports 0-d and up to 4-d, rejects 5-d", function()
    assert.same({}, glq.zeros("f32", {}):shape())
    assert.same({1, 2, 3, 4}, glq.zeros("f32", {1, 2, 3, 4}):shape())
    assert.has_error(function() glq.zeros("f32", {1, 1, 1, 1, 1}) end)
  end)

  it("rejects bad arguments with clear errors", function()
    assert.has_error(function() glq.tensor({1, 2, 3}, {2, 2}) end, "glq.tensor: 3 values given for a shape of 4 elements")
    assert.error_matches(function() glq.zeros("f33", {2}) end, "unknown dtype 'f33'")
    assert.error_matches(function() glq.zeros("f32", "x") end, "table expected")
    assert.error_matches(function() glq.tensor({1, "a"}) end, "value 2 is a string")
    assert.error_matches(function() glq.zeros("f32", {2}):to({}) end, "string expected")
    assert.error_matches(function() glq.zeros("f32", {-1}) end, "non%-negative")
  end)
end)

describe("dtype conversion", function()
  it("bf16 rounds to nearest even", function()
    -- 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1+2^-7: ties to even (1)
    local t = glq.tensor({1 + 2 ^ -8, 1 + 3 * 2 ^ -8, 1 + 2 ^ -8 + 2 ^ -20, -0.0}, {4}, "f32"):to("bf16")
    assert.same({1, 1 + 2 ^ -6, 1 + 2 ^ -7, 0}, t:to("f32"):totable())
  end)

  it("f16 rounds to nearest even, overflows to inf, keeps subnormals", function()
    local v = {1 + 2 ^ -11, 65504, 65519, 65520, 2 ^ -24, 2 ^ -25, 3 * 2 ^ -25, 1e-10}
    local r = glq.tensor(v, {#v}, "f32"):to("f16"):to("f32"):totable()
    assert.equal(1, r[1])
    assert.equal(65504, r[2])
    assert.equal(65504, r[3])
    assert.equal(math.huge, r[4])
    assert.equal(2 ^ -24, r[5])
    assert.equal(0, r[6])          -- tie between 0 and 2^-24 goes to even (0)
    assert.equal(2 ^ -23, r[7])    -- tie between 2^-24 and 2^-23 goes to even (2^-23)
    assert.equal(0, r[8])
  end)

  it("f16 and bf16 round trip every bit pattern exactly (non-NaN)", function()
    for _, dt in ipairs {"f16", "bf16"} do
      local n = 65536
      local vals = {}
      -- build every 16-bit pattern through an i32 -> u8 byte view is not available; use tofile/fromfile
      local path = tmpname()
      local f = assert(io.open(path, "wb"))
      local bytes = {}
      for i = 0, n - 1 do bytes[#bytes + 1] = string.char(i % 256, math.floor(i / 256)) end
      f:write(table.concat(bytes)); f:close()
      local h = glq.fromfile(path, dt, {n})
      local back = h:to("f32"):to(dt)
      h:tofile(path .. ".a"); back:tofile(path .. ".b")
      local a = assert(io.open(path .. ".a", "rb")):read("*a")
      local b = assert(io.open(path .. ".b", "rb")):read("*a")
      os.remove(path); os.remove(path .. ".a"); os.remove(path .. ".b")
      local mism = 0
      for i = 0, n - 1 do
        local x = a:byte(2 * i + 1) + 256 * a:byte(2 * i + 2)
        local y = b:byte(2 * i + 1) + 256 * b:byte(2 * i + 2)
        local nan = (dt == "f16") and (bit.band(x, 0x7c00) == 0x7c00 and bit.band(x, 0x3ff) ~= 0)
          or (dt == "bf16" and bit.band(x, 0x7f80) == 0x7f80 and bit.band(x, 0x7f) ~= 0)
        if not nan and x ~= y then mism = mism + 1 end
      end
      assert.equal(0, mism)
      vals = nil
    end
  end)

  it("float to int truncates toward zero and saturates; NaN becomes 0", function()
    local t = glq.tensor({-1.7, 1.7, 300, -300, 0 / 0}, {5}, "f64")
    assert.same({-1, 1, 127, -128, 0}, t:to("i8"):totable())
    assert.same({0, 1, 255, 0, 0}, t:to("u8"):totable())
    assert.same({true, true, true, true, true}, glq.tensor({1, -1, 0.5, 2, 3}):to("bool"):totable())
  end)

  it("i64 keeps large integers", function()
    local t = glq.tensor({2 ^ 53, -(2 ^ 53)}, {2}, "i64")
    assert.same({2 ^ 53, -(2 ^ 53)}, t:totable())
  end)
end)

describe("views", function()
  local t = glq.tensor({1, 2, 3, 4, 5, 6}, {2, 3})
  it("reshape shares storage and infers -1", function()
    local r = t:reshape({3, -1})
    assert.same({3, 2}, r:shape())
    assert.same(t:totable(), r:totable())
    assert.error_matches(function() t:reshape({4, 2}) end, "6 elements cannot take a shape of 8")
  end)
  it("narrow and transpose are views; contiguous copies", function()
    local n = t:narrow(2, 2, 2)
    assert.same({2, 2}, n:shape())
    assert.same({2, 3, 5, 6}, n:totable())
    assert.is_false(n:is_contiguous())
    local tr = t:transpose(1, 2)
    assert.same({1, 4, 2, 5, 3, 6}, tr:totable())
    assert.is_true(tr:contiguous():is_contiguous())
    assert.error_matches(function() t:narrow(2, 3, 2) end, "outside dimension 2")
    assert.error_matches(function() tr:reshape({6}) end, "contiguous")
  end)
  it("get/set use 1-based indices and check bounds", function()
    local c = t:clone()
    c:set(42, 2, 3)
    assert.equal(42, c:get(2, 3))
    assert.equal(6, t:get(2, 3))
    assert.error_matches(function() c:get(3, 1) end, "index 3 out of range for dimension 1")
  end)
  it("copy converts dtype and checks shapes", function()
    local d = glq.zeros("f64", {2, 3})
    d:copy(t)
    assert.same(t:totable(), d:totable())
    assert.error_matches(function() glq.zeros("f32", {3, 2}):copy(t) end, "shape mismatch")
  end)
end)

describe("printing", function()
  it("shows dtype, shape and values", function()
    local s = tostring(glq.zeros("f32", {2, 3}))
    assert.equal("tensor f32 (2, 3)\n[[0, 0, 0],\n [0, 0, 0]]", s)
  end)
  it("elides dimensions longer than 8, symmetrically", function()
    local s = tostring(glq.tensor({1, 2, 3, 4, 5, 6, 7, 8}, {8}, "i32"))
    assert.equal("tensor i32 (8)\n[1, 2, 3, 4, 5, 6, 7, 8]", s)
    s = tostring(glq.tensor({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {12}, "i32"))
    assert.equal("tensor i32 (12)\n[ 1,  2,  3, ..., 10, 11, 12]", s)
  end)
  it("aligns columns in one notation and keeps the indent of elided rows", function()
    local v = {}
    for i = 1, 40 do v[i] = (i % 7 - 3) * 0.25 end
    local s = tostring(glq.tensor(v, {10, 4}))
    assert.equal("tensor f32 (10, 4)\n" ..
      "[[-0.5000, -0.2500,  0.0000,  0.2500],\n" ..
      " [ 0.5000,  0.7500, -0.7500, -0.5000],\n" ..
      " [-0.2500,  0.0000,  0.2500,  0.5000],\n" ..
      " ...,\n" ..
      " [-0.5000, -0.2500,  0.0000,  0.2500],\n" ..
      " [ 0.5000,  0.7500, -0.7500, -0.5000],\n" ..
      " [-0.2500,  0.0000,  0.2500,  0.5000]]", s)
    assert.equal("tensor f32 (3)\n[1.0000e-06, 3.0000e+00, 1.0000e+06]", tostring(glq.tensor({1e-6, 3, 1e6})))
  end)
end)

describe("raw files", function()
  it("tofile/fromfile round trip bit-exactly for every dtype", function()
    for _, dt in ipairs {"f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool"} do
      local t = glq.randn({3, 5}, 7):mul(10):to(dt)
      local p = tmpname()
      t:tofile(p)
      local f = io.open(p, "rb"); local size = #f:read("*a"); f:close()
      assert.equal(t:nbytes(), size)
      local u = glq.fromfile(p, dt, {3, 5})
      os.remove(p)
      assert.same(t:totable(), u:totable())
    end
  end)
  it("fromfile reports size mismatches and missing files", function()
    local p = tmpname()
    glq.zeros("f32", {4}):tofile(p)
    assert.error_matches(function() glq.fromfile(p, "f32", {5}) end, "file has 16 bytes but f32 with 5 elements needs 20")
    os.remove(p)
    assert.error_matches(function() glq.fromfile(p, "f32", {5}) end, "cannot open")
  end)
  it("ptr gives an FFI pointer to the data", function()
    local t = glq.tensor({1.5, 2.5}, {2}, "f32")
    local p = t:ptr()
    assert.equal(2.5, p[1])
    p[0] = 9
    assert.equal(9, t:get(1))
  end)
end)

describe("ops", function()
  it("matmul equals the naive product", function()
    local a, b = glq.randn({5, 7}, 1), glq.randn({4, 7}, 2)
    local c = glq.matmul(a, b, {transpose_b = true})
    local at, bt = a:totable(), b:totable()
    local maxerr = 0
    for i = 1, 5 do for j = 1, 4 do
      local s = 0
      for k = 1, 7 do s = s + at[(i - 1) * 7 + k] * bt[(j - 1) * 7 + k] end
      maxerr = math.max(maxerr, math.abs(s - c:get(i, j)))
    end end
    assert.is_true(maxerr < 1e-5)
    assert.error_matches(function() glq.matmul(a, b) end, "inner sizes differ")
  end)
  it("randn is deterministic and roughly standard normal", function()
    local a, b = glq.randn({10000}, 3), glq.randn({10000}, 3)
    assert.equal(0, a:max_abs_diff(b))
    assert.is_true(math.abs(a:sum() / 10000) < 0.05)
    assert.is_true(math.abs(a:norm() ^ 2 / 10000 - 1) < 0.05)
  end)
  it("thread count can be changed, and parallel work after a resize is right", function()
    local n = glq.num_threads()
    local logits = glq.randn({64, 10}, 5)
    local targets = glq.zeros("i32", {64})
    local before = glq.nll_rows(logits, targets)
    assert.equal(1, glq.num_threads(1))
    assert.equal(0, before:max_abs_diff(glq.nll_rows(logits, targets)))
    assert.equal(2, glq.num_threads(2))
    -- workers started by a resize must not replay the previous job
    assert.equal(0, before:max_abs_diff(glq.nll_rows(logits, targets)))
    assert.equal(n, glq.num_threads(n))
    assert.equal(0, before:max_abs_diff(glq.nll_rows(logits, targets)))
  end)
end)

describe("constructors, indexing and reductions (glq.tensor)", function()
  it("zeros and full take (shape, dtype) and still the old (dtype, shape) order", function()
    assert.equal("f32", glq.zeros({2, 3}):dtype())
    assert.same({2, 3}, glq.zeros({2, 3}, "i16"):shape())
    assert.equal("i16", glq.zeros({2, 3}, "i16"):dtype())
    assert.same(glq.zeros("f64", {4}):totable(), glq.zeros({4}, "f64"):totable())
    assert.same({7, 7}, glq.full({2}, 7):totable())
    assert.same({2.5, 2.5, 2.5}, glq.full("f64", {3}, 2.5):totable())
  end)

  it("t[i] is row i (1-based, negative from the end): a number in 1-d, a view otherwise", function()
    local t = glq.tensor({1, 2, 3, 4, 5, 6}, {2, 3}, "f64")
    assert.same({4, 5, 6}, t[2]:totable())
    assert.same({4, 5, 6}, t[-1]:totable())
    assert.equal(5, t[2][2])
    assert.equal(3, t[1][-1])
    t[2]:set(50, 2) -- a view: writes reach t
    assert.equal(50, t:get(2, 2))
    assert.has_error(function() return t[3] end, "tensor index 3 out of range for a first dimension of 2")
    assert.has_error(function() return t[0] end)
    assert.is_function(t.sum)  -- methods still resolve
    assert.is_nil(t.no_such_method)
  end)

  it("mean, max and min over every element, against a direct loop", function()
    local t = glq.randn({7, 9}, 5)
    local v = t:to("f64"):totable()
    local s, mx, mn, at = 0, -math.huge, math.huge, 0
    for k, x in ipairs(v) do -- totable is flat, row-major
      s = s + x
      if x > mx then mx, at = x, k end
      if x < mn then mn = x end
    end
    assert.equal(63, #v)
    assert.near(s / 63, t:mean(), 1e-12)
    local m, pos = t:max()
    assert.equal(mx, m)
    assert.equal(at, pos)
    assert.equal(mn, (t:min()))
    local n = glq.tensor({1, 0 / 0, 3}, {3}, "f64")
    assert.is_true(n:max() ~= n:max()) -- NaN propagates
    assert.has_error(function() glq.zeros({0}):mean() end)
  end)
end)
