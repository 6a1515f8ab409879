-- E8 shell codebook: byte-exact table, exact nearest-neighbour encoding against brute force, decoding,
-- Gaussian distortion, and the E8-RHT linear layer against its dequantized weight.
-- GLQ_E8_FULL=1 raises the brute-force comparisons to 10^6 vectors per codebook (slow on 2 cores).
local glq = require "glq"
local ffi = require "ffi"
ffi.cdef [[int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);]]

local SHARED = os.getenv("GLQ_SHARED") or "../shared"
local TABLE_FILE = SHARED .. "/testdata/e8/glq_e8_codebook.f32"
local FULL = os.getenv("GLQ_E8_FULL") == "1"
local RADIUS = math.sqrt(12)

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function bytes(t) return ffi.string(t:ptr(), t:nbytes()) end

-- sha256 of a string via the sha256sum tool, or nil when it is missing
local function sha256(s)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  local p = io.popen("sha256sum " .. tmp .. " 2>/dev/null")
  local out = p and p:read("*a") or ""
  if p then p:close() end
  os.remove(tmp)
  return out:match("^(%x+)")
end

-- run `body` (Lua source; it must return a tensor) in a fresh process with GLQ_THREADS=n and return
-- the tensor's bytes (a child process, because the pool size is fixed at first use)
local function bytes_with_threads(n, body)
  local script, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path, package.cpath))
  f:write("local glq = require 'glq'\nlocal ffi = require 'ffi'\nlocal t = (function() ", body, " end)()\n")
  f:write(("io.open(%q, 'wb'):write(ffi.string(t:ptr(), t:nbytes()))\n"):format(out))
  f:close()
  local ok = os.execute(("GLQ_THREADS=%d luajit %s"):format(n, script))
  local s = read_file(out)
  os.remove(script)
  os.remove(out)
  assert((ok == 0 or ok == true) and s, "child process failed")
  return s
end

-- (N, 8) f32 tensor of N(0, s^2) coordinates
local function gauss(n, s, seed)
  local x = glq.randn({n, 8}, seed)
  return s == 1 and x or x:mul(s)
end

-- index of the first mismatch between two i32 tensors, or nil
local function first_diff(a, b)
  local pa, pb = a:ptr(), b:ptr()
  for i = 0, a:numel() - 1 do
    if pa[i] ~= pb[i] then return i end
  end
  return nil
end

local function expect_same_as_bruteforce(x, size, what)
  local got, want = glq.e8.encode(x, size), glq.e8._encode_bruteforce(x, size)
  local i = first_diff(got, want)
  if i then
    local p = x:ptr()
    local v = {}
    for k = 0, 7 do v[#v + 1] = ("%.9g"):format(p[8 * i + k]) end
    error(("%s, size %d: vector %d (%s): encode %d, brute force %d"):format(what, size, i, table.concat(v, ", "),
      got:ptr()[i], want:ptr()[i]))
  end
end

-- squared norms of the table rows, exactly (every coordinate is a multiple of 1/2)
local function norms(tab)
  local p, n = tab:ptr(), {}
  for j = 0, tab:shape()[1] - 1 do
    local s = 0
    for k = 0, 7 do s = s + p[8 * j + k] ^ 2 end
    n[j] = s
  end
  return n
end

local function row(tab, j)
  local p, r = tab:ptr(), {}
  for k = 0, 7 do r[k + 1] = p[8 * j + k] end
  return r
end

describe("e8 codebook", function()
  local cb = glq.e8.codebook()
  local tab = cb:table()

  it("has glq's sha256 (fp32 LE) and the 256 prefix's", function()
    local h = sha256(bytes(tab))
    if not h then pending("sha256sum not available") return end
    assert.equal("c46821e43e5a573cc3431a06377121bc3b7d694e6ae0d20cb8e765c97b47cff7", h)
    assert.equal("1734ea980a644f48648053473fe17c2c52f9f6478c94c4bd724785f39cad9c56", sha256(bytes(glq.e8.codebook(256):table())))
  end)

  it("equals glq's bundled table byte for byte", function()
    local ref = read_file(TABLE_FILE)
    if not ref then pending("shared table not found at " .. TABLE_FILE) return end
    assert.equal(2097152, #ref)
    assert.is_true(ref == bytes(tab))
  end)

  it("has the documented shells, rows and prefix", function()
    assert.equal(65536, cb:size())
    local n = norms(tab)
    local starts = {}
    for j = 0, 65535 do
      if j > 0 then assert.is_true(n[j] >= n[j - 1], "norms not sorted at " .. j) end
      if j == 0 or n[j] ~= n[j - 1] then starts[#starts + 1] = j end
    end
    assert.same({0, 1, 241, 2401, 9121, 26641, 56881}, starts)
    assert.same({0, 0, 0, 0, 0, 0, 0, 0}, row(tab, 0))
    assert.same({0, 1, 0, 0, 0, 0, -1, 0}, row(tab, 1))
    assert.same({0.5, 0.5, -0.5, -0.5, -0.5, 0.5, -0.5, 0.5}, row(tab, 2))
    assert.same({-1.5, 0.5, -0.5, -1.5, 0.5, 0.5, -0.5, 2.5}, row(tab, 65535))
    local small = glq.e8.codebook(256)
    assert.equal(256, small:size())
    assert.is_true(bytes(small:table()) == bytes(tab:narrow(1, 1, 256)))
    assert.has_error(function() glq.e8.codebook(100) end, "EINVAL: e8.codebook: e8 codebook: size must be 65536 or 256, got 100")
  end)
end)

describe("e8 encode", function()
  local tab = glq.e8.codebook():table()

  it("maps every table row to its own index", function()
    for _, size in ipairs({65536, 256}) do
      local idx = glq.e8.encode(tab:narrow(1, 1, size), size)
      local p = idx:ptr()
      for j = 0, size - 1 do
        if p[j] ~= j then error(("size %d: row %d encodes to %d"):format(size, j, p[j])) end
      end
    end
  end)

  -- scales of N(0, s^2) per coordinate; ||x|| ~ 2.83 s, so 0.1x to 10x the table radius sqrt(12)
  local scales = {0.125, 0.5, 1, 2, 4, 12.5}

  it("equals brute force on Gaussian vectors at 0.1x to 10x the table radius (65536)", function()
    local n = FULL and 170000 or 10000
    for i, s in ipairs(scales) do expect_same_as_bruteforce(gauss(n, s, 100 + i), 65536, "scale " .. s) end
  end)

  it("equals brute force on Gaussian vectors at 0.1x to 10x the table radius (256)", function()
    local n = 170000
    for i, s in ipairs(scales) do expect_same_as_bruteforce(gauss(n, s, 200 + i), 256, "scale " .. s) end
  end)

  it("resolves exact ties to the lowest index (grid points, midpoints, deep holes)", function()
    -- coordinates on the 1/4 grid in [-4, 4]: many points are equidistant from several entries
    for _, size in ipairs({65536, 256}) do
      local n = (size == 256 or FULL) and 100000 or 20000
      local x = glq.rand({n, 8}, 7 + size)
      local p = x:ptr()
      for i = 0, 8 * n - 1 do p[i] = math.floor(p[i] * 33) / 4 - 4 end
      expect_same_as_bruteforce(x, size, "quarter grid")
    end
    -- midpoints of random pairs of entries, and the deep hole (1, 0, ..., 0) with its 16 nearest points
    local n = FULL and 100000 or 5000
    local x = glq.zeros("f32", {n + 1, 8})
    local p, t = x:ptr(), tab:ptr()
    local r = glq.rand({2 * n}, 3):ptr()
    for i = 0, n - 1 do
      local a, b = math.floor(r[2 * i] * 65536), math.floor(r[2 * i + 1] * 65536)
      for k = 0, 7 do p[8 * i + k] = (t[8 * a + k] + t[8 * b + k]) / 2 end
    end
    p[8 * n] = 1
    for _, size in ipairs({65536, 256}) do expect_same_as_bruteforce(x, size, "midpoints") end
    local zero = glq.e8.encode(glq.zeros("f32", {1, 8})):ptr()[0]
    assert.equal(0, zero)
  end)

  it("is exact where double sums are not: huge and tiny coordinates", function()
    -- x = (2^100, e, 0, ...): the key ||c||^2 - 2<c, x> ranks by c1 (largest), then ||c||^2, then e * c2
    for _, size in ipairs({65536, 256}) do
      local t = tab:ptr()
      for _, e in ipairs({2 ^ -100, -2 ^ -100, 0}) do
        local best, bkey
        for j = 0, size - 1 do
          local c1, c2, nn = t[8 * j], t[8 * j + 1], 0
          for k = 0, 7 do nn = nn + t[8 * j + k] ^ 2 end
          local key = {-c1, nn, -(e > 0 and c2 or (e < 0 and -c2 or 0))}
          local better = not bkey or key[1] < bkey[1] or (key[1] == bkey[1] and (key[2] < bkey[2] or
            (key[2] == bkey[2] and key[3] < bkey[3])))
          if better then best, bkey = j, key end
        end
        local x = glq.zeros("f32", {1, 8})
        x:ptr()[0], x:ptr()[1] = 2 ^ 100, e
        assert.equal(best, glq.e8.encode(x, size):ptr()[0], ("size %d, e = %g"):format(size, e))
      end
    end
    -- the largest floats: for x = -M * ones the key is ||c||^2 + 2M sum(c): smallest sum, then norm, then index
    local x = glq.full("f32", {1, 8}, -3.4028234e38)
    for _, size in ipairs({65536, 256}) do
      local t, best, bs, bn = tab:ptr()
      for j = 0, size - 1 do
        local sum, nn = 0, 0
        for k = 0, 7 do sum, nn = sum + t[8 * j + k], nn + t[8 * j + k] ^ 2 end
        if not best or sum < bs or (sum == bs and nn < bn) then best, bs, bn = j, sum, nn end
      end
      assert.equal(best, glq.e8.encode(x, size):ptr()[0])
    end
  end)

  it("rejects non-finite input and bad shapes, naming them", function()
    local x = glq.zeros("f32", {3, 8})
    x:ptr()[13] = 0 / 0
    assert.has_error(function() glq.e8.encode(x) end, "EINVAL: e8.encode: e8 encode: x[13] (vector 1) is not finite")
    assert.has_error(function() glq.e8.encode(glq.zeros("f32", {3, 4})) end,
      "e8.encode: x must be (N, 8), got a 2-d tensor with last size 4")
  end)

  it("gives the same bytes with 1 and 2 threads and with the portable kernels", function()
    local body = "local x = glq.randn({20000, 8}, 9):mul(1.5) return glq.e8.encode(x, %d)"
    for _, size in ipairs({65536, 256}) do
      local one = bytes_with_threads(1, body:format(size))
      assert.is_true(one == bytes_with_threads(2, body:format(size)), "size " .. size)
      ffi.C.setenv("GLQ_NO_AVX2", "1", 1)
      local portable = glq.e8.encode(gauss(20000, 1.5, 9), size)
      ffi.C.unsetenv("GLQ_NO_AVX2")
      assert.is_true(one == bytes(portable), "portable, size " .. size)
    end
  end)
end)

describe("e8 decode and distortion", function()
  local tab = glq.e8.codebook():table()

  it("decodes indices masked to 16 bits, and two stages as C[i] + inv_rs * C2[j]", function()
    local idx = glq.tensor({0, 1, 65535, -1, -65535, 300}, nil, "i32")
    local d = glq.e8.decode(idx)
    assert.same(row(tab, 65535), {d:get(3, 1), d:get(3, 2), d:get(3, 3), d:get(3, 4), d:get(3, 5), d:get(3, 6), d:get(3, 7), d:get(3, 8)})
    assert.equal(0, d:narrow(1, 4, 1):max_abs_diff(d:narrow(1, 3, 1)))  -- -1 is 65535
    assert.equal(0, d:narrow(1, 5, 1):max_abs_diff(d:narrow(1, 2, 1)))  -- -65535 is 1
    assert.has_error(function() glq.e8.decode(idx, 256) end, "e8.decode: idx[2] = 65535 is not below the codebook size 256")
    local i2 = glq.tensor({5, 255, 7, 0, 1, 2}, nil, "i16")
    local d2 = glq.e8.decode2(idx, i2, 1 / 3, 256)
    local inv = ffi.new("float[1]", 1 / 3)[0]
    local p, q = tab:ptr(), d2:ptr()
    for r = 0, 5 do
      local a, b = idx:ptr()[r] % 65536, i2:get(r + 1)
      for k = 0, 7 do
        local want = ffi.new("float[1]", p[8 * a + k] + ffi.new("float[1]", inv * p[8 * b + k])[0])[0]
        assert.equal(want, q[8 * r + k])
      end
    end
  end)

  -- MSE per dimension of (two-stage) quantization of 10^5 N(0,1) vectors
  local function mse(size2, rs)
    local x = gauss(100000, 1, 42)
    local i1 = glq.e8.encode(x)
    local xhat = glq.e8.decode(i1)
    if size2 then
      local i2 = glq.e8.encode(x:sub(xhat):mul(rs), size2)
      xhat = glq.e8.decode2(i1, i2, 1 / rs, size2)
    end
    return x:sub(xhat):norm() ^ 2 / (8 * 100000)
  end

  it("matches glq's Gaussian distortion at 2, 3 and 4 bits", function()
    local m2, m3, m4 = mse(nil), mse(256, 2), mse(65536, 3)
    if os.getenv("GLQ_E8_VERBOSE") then print(("\nMSE/dim 2 bits %.5f, 3 bits %.5f, 4 bits %.5f"):format(m2, m3, m4)) end
    assert.is_true(math.abs(m2 - 0.0913) < 0.0005, "2 bits: " .. m2)
    assert.is_true(math.abs(m3 - 0.0300) < 0.0003, "3 bits (rs 2): " .. m3)
    assert.is_true(math.abs(m4 - 0.0100) < 0.0001, "4 bits (rs 3): " .. m4)
  end)
end)

describe("e8 linear", function()
  local function signs(n, seed)
    local s = glq.rand({n}, seed):to("f32")
    local p = s:ptr()
    for i = 0, n - 1 do p[i] = p[i] < 0.5 and -1 or 1 end
    return s:to("f16")
  end

  local function indices(m, nb, seed, limit)
    local r = glq.rand({m, nb}, seed)
    local q = glq.zeros("i16", {m, nb})
    local pr, pq = r:ptr(), q:ptr()
    for i = 0, m * nb - 1 do
      local v = math.floor(pr[i] * limit)
      pq[i] = v >= 32768 and v - 65536 or v
    end
    return q
  end

  local function artifacts(m, n, mp, np, bits, bias)
    local a = {Qidxs = indices(mp, np / 8, m + n, 65536), SU = signs(mp, 1), SV = signs(np, 2),
      Wscale = glq.tensor({0.0123}, {}), out_features = m, in_features = n, bits = bits}
    if bits > 2 then
      a.Qidxs2 = indices(mp, np / 8, 3 * m + n, bits == 3 and 256 or 65536)
      a.inv_resid_scale = bits == 3 and 0.5 or 1 / 3
    end
    if bias then a.bias = glq.randn({m}, 5) end
    return a
  end

  -- W from the artifacts with the transforms of glq.rht (W̃ decoded row by row)
  local function reconstruct(a, m, n, mp, np)
    local q = a.Qidxs:to("i32"):reshape({-1})
    local wt
    if a.Qidxs2 then
      local q2 = a.Qidxs2:to("i32"):reshape({-1})
      wt = glq.e8.decode2(q, q2, a.inv_resid_scale, a.bits == 3 and 256 or 65536)
    else
      wt = glq.e8.decode(q)
    end
    wt = wt:reshape({mp, np}):mul(a.Wscale:get())
    return glq.rht.weight_inverse(wt, a.SU, a.SV, mp, np):narrow(1, 1, m):narrow(2, 1, n)
  end

  -- |y - (x·Wᵀ + b)| <= 1e-5 * ||x_b|| * ||W_i|| for every output (a bound on the dot product's f32 error)
  local function check_forward(lin, w, bias, m, n)
    local wn = {}
    local pw = w:ptr()
    for i = 0, m - 1 do
      local s = 0
      for k = 0, n - 1 do s = s + pw[i * n + k] ^ 2 end
      wn[i] = math.sqrt(s)
    end
    for _, B in ipairs({1, 3, 8, 9, 64}) do
      local x = glq.randn({B, n}, B)
      local y = lin:forward(x)
      local want = glq.matmul(x:to("f64"), w:to("f64"), {transpose_b = true})
      local px, py, pr = x:ptr(), y:ptr(), want:ptr()
      for b = 0, B - 1 do
        local s = 0
        for k = 0, n - 1 do s = s + px[b * n + k] ^ 2 end
        local xn = math.sqrt(s)
        for i = 0, m - 1 do
          local ref = pr[b * m + i] + (bias and bias:ptr()[i] or 0)
          local err = math.abs(py[b * m + i] - ref) / (xn * wn[i])
          if err > 1e-5 then error(("B=%d row %d: %g vs %g (rel %g)"):format(B, i, py[b * m + i], ref, err)) end
        end
      end
    end
  end

  local shapes = {{256, 512, 256, 512}, {96, 200, 96, 200}, {100, 300, 104, 304}, {100, 300, 128, 512}}

  it("dequantizes to diag(SU)·Hmᵀ·W̃·Hn·diag(SV) and forwards like x·Wᵀ + b (batch 1..64, 2/3/4 bits)", function()
    for si, s in ipairs(shapes) do
      local m, n, mp, np = s[1], s[2], s[3], s[4]
      for bits = 2, 4 do
        local a = artifacts(m, n, mp, np, bits, si % 2 == 1)
        local lin = glq.e8.linear(a)
        assert.equal("e8", lin:kind())
        assert.same({m, n}, lin:shape())
        local w = lin:dequantize()
        local ref = reconstruct(a, m, n, mp, np)
        assert.is_true(w:max_abs_diff(ref) <= 1e-6 * ref:absmax(), ("%dx%d (%dx%d) %d bits"):format(m, n, mp, np, bits))
        check_forward(lin, w, a.bias, m, n)
        local idx_bytes = mp * np / 8 * 2 * (bits > 2 and 2 or 1)
        assert.equal(idx_bytes + 2 * (mp + np) + 4 + (bits > 2 and 4 or 0) + (a.bias and 2 * m or 0), lin:stored_bytes())
      end
    end
  end)

  it("forwards the same bytes with 1 and 2 threads; the portable kernel agrees within f32 error", function()
    local a = artifacts(256, 512, 256, 512, 4, true)
    local x = glq.randn({5, 512}, 11)
    local y = glq.e8.linear(a):forward(x)
    for _, B in ipairs({1, 5, 20}) do
      local body = ([[
        local q, q2 = glq.rand({256, 64}, 1), glq.rand({256, 64}, 2)
        local function i16(r) local t = r:mul(65535):to("i32"):to("i16") return t end
        local a = {Qidxs = i16(q), Qidxs2 = i16(q2), inv_resid_scale = 1 / 3, Wscale = 0.02,
          SU = glq.randn({256}, 3), SV = glq.randn({512}, 4), bias = glq.randn({256}, 5)}
        return glq.e8.linear(a):forward(glq.randn({%d, 512}, 6))]]):format(B)
      assert.is_true(bytes_with_threads(1, body) == bytes_with_threads(2, body), "batch " .. B)
    end
    ffi.C.setenv("GLQ_NO_AVX2", "1", 1)
    local lin = glq.e8.linear(a)
    ffi.C.unsetenv("GLQ_NO_AVX2")
    check_forward(lin, lin:dequantize(), a.bias, 256, 512)
    assert.is_true(lin:forward(x):max_abs_diff(y) <= 1e-5 * y:absmax())
  end)

  it("rejects malformed artifacts, naming the field", function()
    local a = artifacts(64, 64, 64, 64, 3, false)
    local function bad(change, msg)
      local b = {}
      for k, v in pairs(a) do b[k] = v end
      for k, v in pairs(change) do b[k] = v end
      if change.drop then b[change.drop], b.drop = nil, nil end
      assert.has_error(function() glq.e8.linear(b) end, "EINVAL: e8.linear: " .. msg)
    end
    bad({Qidxs = a.Qidxs:to("i32")}, "field 'Qidxs' must be i16 (uint16 bit patterns), got i32")
    bad({drop = "Qidxs"}, "field 'Qidxs' must be a 2-d i16 tensor (out_pad, in_pad/8)")
    bad({drop = "Wscale"}, "field 'Wscale' is missing")
    bad({SU = signs(63, 1)}, "field 'SU' has 63 values, expected 64")
    bad({in_features = 65}, "e8 linear: padded shape 64 x 64 is smaller than 64 x 65")
    bad({Qidxs2 = indices(64, 8, 1, 65536)}, "e8 linear: 3-bit Qidxs2[0][0] = 37130 is not below 256")
    bad({Qidxs2 = indices(64, 4, 1, 256)}, "field 'Qidxs2' must have the shape of Qidxs (64, 8)")
    bad({bits = 2}, "e8 linear: 2 bits takes no Qidxs2")
    bad({bias = glq.zeros("f32", {3})}, "field 'bias' has 3 values, expected 64")
    bad({Qidxs = indices(64, 7, 1, 65536), Qidxs2 = indices(64, 7, 1, 256), SV = signs(56, 1)},
      "e8 linear: padded shape 64 x 56 is smaller than 64 x 64")
    assert.has_error(function() glq.e8.linear(a, {transform = "rotated"}) end,
      'e8.linear: transform must be "glq-hadamard-v1", "block-diagonal" or "pow2-padded", got "rotated"')
    assert.has_error(function() glq.e8.linear(artifacts(96, 200, 96, 200, 2), {transform = "pow2-padded"}) end,
      "EUNSUPPORTED: e8.linear: transform 'pow2-padded' with stored size 96 x 200: only powers of two are supported")
    assert.has_error(function() glq.e8.linear({}, {name = "layers.0.q"}) end,
      "EINVAL: e8.linear (layers.0.q): field 'Qidxs' must be a 2-d i16 tensor (out_pad, in_pad/8)")
  end)

  it("takes bias, bits and the transform from an options table (lua/glq/model.lua)", function()
    local a = artifacts(48, 40, 64, 64, 3, false)
    local bias = glq.randn({48}, 8)
    local lin = glq.e8.linear(a, {bias = bias, bits = 4, transform = "pow2-padded", name = "x"})
    a.bias = bias
    local ref = glq.e8.linear(a)
    local x = glq.randn({2, 40}, 4)
    assert.equal(0, lin:forward(x):max_abs_diff(ref:forward(x)))
    assert.equal(lin:stored_bytes(), ref:stored_bytes())
  end)
end)
