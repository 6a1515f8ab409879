-- HiF4: bit-exact reference vectors, an independent Lua model of the reference algorithm,
-- edge cases, pack/unpack, the fused linear layer, RHT and LDLQ.
local glq = require "glq"
local util = require "spec.support.util"
local slurp = util.slurp
local cjson = require "cjson"

local FIX = "spec/fixtures/hif4"

local function flat(t) return t:reshape({t:numel()}):totable() end

local function nblocks(k) return math.ceil(k / 64) end

-- Run `body` (Lua using `glq`) in a fresh process with GLQ_THREADS=threads; returns what it prints.
-- A new process per thread count keeps the pool of this one untouched.
local function with_threads(threads, body)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(string.format("package.path = %q\npackage.cpath = %q\nlocal glq = require 'glq'\n%s\n",
    package.path, package.cpath, body))
  f:close()
  local p = assert(io.popen(string.format("GLQ_THREADS=%d luajit %s 2>&1", threads, path)))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

-- shape of a field for original shape `shape` and trailing size `last` (nil: e6m2)
local function field_shape(shape, last)
  local s = {}
  for i = 1, #shape - 1 do s[i] = shape[i] end
  s[#shape] = nblocks(shape[#shape])
  if last then s[#shape + 1] = last end
  return s
end

-- first index where two flat tables differ, or nil
local function first_diff(a, b)
  if #a ~= #b then return 0 end
  for i = 1, #a do
    if a[i] ~= b[i] and not (a[i] ~= a[i] and b[i] ~= b[i]) then return i end
  end
end

local function assert_same_bytes(got, want, what)
  local i = first_diff(got, want)
  assert(i == nil, string.format("%s differs at flat index %s: got %s, want %s", what, tostring(i and i - 1),
    tostring(i and got[i]), tostring(i and want[i])))
end

---------------------------------------------------------------------------------------------
-- An independent model of the user's reference in Lua doubles (every product it takes is exact
-- in f32, so doubles reproduce it once the two explicit roundings are modelled).
local function round_bits(v, bits) -- round to `bits` significant bits, nearest-even
  if v == 0 or v ~= v or math.abs(v) == math.huge then return v end
  local m, e = math.frexp(v)
  local s = m * 2 ^ bits
  local f = math.floor(s)
  local d = s - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
  local r = f * 2 ^ (e - bits)
  if math.abs(r) >= 2 ^ 128 then r = r > 0 and math.huge or -math.huge end
  return r
end
local function bf16(v) return round_bits(v, 8) end
local function f32(v) return round_bits(v, 24) end
local function round_away(t) local i = math.floor(t); if t - i >= 0.5 then i = i + 1 end; return i end

local function e6m2_encode(sf)
  if not (sf > 0) then return 0 end
  if sf >= 65536 then return 63 * 4 + 2 end
  local m, ex = math.frexp(sf)
  local e, mm = ex - 1, round_away((2 * m - 1) * 4)
  if mm == 4 then e, mm = e + 1, 0 end
  if e < -48 then e, mm = -48, 0 end
  if e > 15 then e, mm = 15, 2 end
  if e == 15 and mm == 3 then mm = 2 end
  return (e + 48) * 4 + mm
end
local function e6m2_value(c) return 2 ^ (math.floor(c / 4) - 48) * (1 + (c % 4) / 4) end

-- quantize one unit of 64 values (already zero-padded): code, e1_8 bits, e1_16 bits, s1p2 codes
local function ref_unit(x)
  local v16, v8, vmax = {}, {}, 0
  for i = 1, 64 do x[i] = bf16(x[i]) end
  for j = 0, 15 do
    v16[j] = math.max(math.abs(x[4 * j + 1]), math.abs(x[4 * j + 2]), math.abs(x[4 * j + 3]), math.abs(x[4 * j + 4]))
  end
  for g = 0, 7 do v8[g] = math.max(v16[2 * g], v16[2 * g + 1]); vmax = math.max(vmax, v8[g]) end
  local code = e6m2_encode(bf16(vmax * 0.142578125))
  local rec = bf16(f32(1 / e6m2_value(code)))
  local b8, b16, q = {}, {}, {}
  for g = 0, 7 do b8[g] = (v8[g] * rec >= 4) and 1 or 0 end
  for j = 0, 15 do b16[j] = (v16[j] * rec * (b8[math.floor(j / 2)] == 1 and 0.5 or 1) >= 2) and 1 or 0 end
  for i = 0, 63 do
    local v = x[i + 1] * rec * (b8[math.floor(i / 8)] == 1 and 0.5 or 1) * (b16[math.floor(i / 4)] == 1 and 0.5 or 1)
    v = math.min(math.max(v, -1.75), 1.75)
    local mag = math.min(round_away(math.abs(v) * 4), 7)
    q[i] = mag + ((v < 0 and mag > 0) and 8 or 0)
  end
  return code, b8, b16, q
end

-- whole tensor (flat values, shape) -> unpacked fields as flat tables, and dequantized values
local function ref_quantize(vals, shape)
  local k = shape[#shape]
  local rows, nb = #vals / math.max(k, 1), nblocks(k)
  local e6, e8, e16, s, dq = {}, {}, {}, {}, {}
  for r = 0, rows - 1 do
    for b = 0, nb - 1 do
      local x = {}
      for i = 1, 64 do
        local c = b * 64 + i - 1
        x[i] = c < k and vals[r * k + c + 1] or 0
      end
      local code, b8, b16, q = ref_unit(x)
      e6[#e6 + 1] = code
      for g = 0, 7 do e8[#e8 + 1] = b8[g] end
      for j = 0, 15 do e16[#e16 + 1] = b16[j] end
      for i = 0, 63 do
        s[#s + 1] = q[i]
        local c = b * 64 + i
        if c < k then
          local mag = (q[i] % 8) / 4 * 2 ^ (b8[math.floor(i / 8)] + b16[math.floor(i / 4)])
          dq[r * k + c + 1] = e6m2_value(code) * (q[i] >= 8 and -mag or mag)
        end
      end
    end
  end
  return {e6m2 = e6, e1_8 = e8, e1_16 = e16, s1p2 = s}, dq
end

local function check_against_model(t)
  local vals, shape = flat(t:to("f32")), t:shape()
  local want, wdq = ref_quantize(vals, shape)
  local p = glq.hif4.quantize(t)
  local u = glq.hif4.unpack(p)
  for _, f in ipairs {"e6m2", "e1_8", "e1_16", "s1p2"} do assert_same_bytes(flat(u[f]), want[f], f) end
  assert_same_bytes(flat(glq.hif4.dequantize(p)), wdq, "dequant")
  return p
end

---------------------------------------------------------------------------------------------
describe("hif4 reference vectors", function()
  local manifest = cjson.decode(slurp(FIX .. "/manifest.json"))

  it("has the cases we expect", function()
    assert.equal(64, manifest.block)
    assert.equal(11, #manifest.cases)
  end)

  for _, case in ipairs(manifest.cases) do
    it("reproduces every byte of " .. case.name, function()
      local shape = case.shape
      local x = glq.fromfile(FIX .. "/" .. case.files.input, "f32", shape)
      local p = glq.hif4.quantize(x)
      assert.same(shape, p.shape)
      assert.equal(case.n_blocks_per_row, p.e6m2:shape()[#shape])
      local fields = {e6m2 = false, e1_8_packed = 1, e1_16_packed = 2, s1p2_packed = 32}
      for name, last in pairs(fields) do
        local fs = field_shape(shape, last or nil)
        assert.same(fs, p[name]:shape())
        assert.equal("u8", p[name]:dtype())
        local want = glq.fromfile(FIX .. "/" .. case.files[name], "u8", fs)
        assert_same_bytes(flat(p[name]), flat(want), case.name .. " " .. name)
      end
      local dq = glq.hif4.dequantize(p)
      assert.same(shape, dq:shape())
      assert_same_bytes(flat(dq), flat(glq.fromfile(FIX .. "/" .. case.files.dequant, "f32", shape)), case.name .. " dequant")
      -- the Lua model of the reference agrees too
      check_against_model(x)
    end)
  end
end)

describe("hif4 edge cases", function()
  local function unit(vals) -- a 64-value row, zeros elsewhere; vals = {[index0] = value}
    local t = {}
    for i = 1, 64 do t[i] = 0 end
    for i, v in pairs(vals) do t[i + 1] = v end
    return glq.tensor(t, {1, 64}, "f32")
  end

  it("all zeros: scale code 0 and no bits", function()
    local p = glq.hif4.quantize(glq.zeros("f32", {2, 64}))
    assert.same({0, 0}, flat(p.e6m2))
    for _, f in ipairs {"e1_8_packed", "e1_16_packed", "s1p2_packed"} do
      for _, v in ipairs(flat(p[f])) do assert.equal(0, v) end
    end
    for _, v in ipairs(flat(glq.hif4.dequantize(p))) do assert.equal(0, v) end
  end)

  it("a single non-zero value, worked by hand", function()
    -- vmax 1: sf = bf16(0.142578125) -> e=-3, m=round(0.5625)=1 -> 0.15625, code 45*4+1 = 181;
    -- rec = bf16(6.4) = 6.40625; both micro-exponents fire; 1*6.40625/4*4 = 6.41 -> magnitude 6
    local p = glq.hif4.quantize(unit({[9] = 1.0, [20] = 0.0}))
    local u = glq.hif4.unpack(p)
    assert.same({181}, flat(p.e6m2))
    assert.same({0, 1, 0, 0, 0, 0, 0, 0}, flat(u.e1_8))
    local e16 = flat(u.e1_16)
    for j = 1, 16 do assert.equal(j == 3 and 1 or 0, e16[j]) end
    local s = flat(u.s1p2)
    for i = 1, 64 do assert.equal(i == 10 and 6 or 0, s[i]) end
    assert.equal(0.9375, flat(glq.hif4.dequantize(p))[10])
    local n = glq.hif4.quantize(unit({[9] = -1.0}))
    assert.equal(14, flat(glq.hif4.unpack(n).s1p2)[10])
    assert.equal(-0.9375, flat(glq.hif4.dequantize(n))[10])
  end)

  it("values below 2^-48*7 use the smallest scale; -0 is written as +0", function()
    -- 2^-50: code 0 (2^-48), rec 2^48 -> 0.25 -> magnitude 1, exact round trip
    -- -2^-53: 0.03125*4 = 0.125 rounds to 0, and the sign is dropped (code 0, not 8)
    local p = glq.hif4.quantize(unit({[0] = 2 ^ -50, [1] = -2 ^ -53, [5] = -2 ^ -50}))
    assert.same({0}, flat(p.e6m2))
    local s = flat(glq.hif4.unpack(p).s1p2)
    assert.same({1, 0, 0, 0, 0, 9}, {s[1], s[2], s[3], s[4], s[5], s[6]})
    local d = flat(glq.hif4.dequantize(p))
    assert.equal(2 ^ -50, d[1])
    assert.equal(0, d[2])
    assert.equal(-2 ^ -50, d[6])
    assert.equal(math.huge, 1 / d[2]) -- +0, not -0
  end)

  it("values above 49152*7 saturate at the largest scale (0xFE), also past the bf16 range", function()
    local p = glq.hif4.quantize(unit({[0] = 1e6, [1] = -3.4028234e38, [8] = 1000}))
    assert.same({0xFE}, flat(p.e6m2))
    local d = flat(glq.hif4.dequantize(p))
    assert.equal(49152 * 4 * 1.75, d[1])
    assert.equal(-49152 * 4 * 1.75, d[2])
    check_against_model(unit({[0] = 1e6, [8] = 1000, [63] = -5e5}))
  end)

  it("rounds exact ties away from zero, in S1P2 and in the E6M2 mantissa", function()
    -- vmax 7 -> sf = bf16(0.998046875) = 1 (tie to even), rec = 1; groups without large values keep scale 1
    local p = glq.hif4.quantize(unit({[0] = 7, [8] = 0.125, [9] = 0.375, [10] = 0.625, [11] = -0.125,
      [12] = 1.625, [13] = 1.875, [16] = 2.25, [17] = 2.0, [24] = 4.0}))
    assert.same({192}, flat(p.e6m2))
    local u = glq.hif4.unpack(p)
    local s, d = flat(u.s1p2), flat(glq.hif4.dequantize(p))
    assert.same({1, 2, 3, 9, 7, 7}, {s[9], s[10], s[11], s[12], s[13], s[14]})
    assert.same({0.25, 0.5, 0.75, -0.25, 1.75, 1.75}, {d[9], d[10], d[11], d[12], d[13], d[14]})
    -- 2.25 and 2.0 share a group of 4 with max >= 2: halved once; 2.25/2*4 = 4.5 -> 5
    assert.same({5, 4}, {s[17], s[18]})
    assert.same({2.5, 2}, {d[17], d[18]})
    -- 4.0 exactly reaches the E1_8 threshold
    assert.same({1, 0, 0, 1, 0, 0, 0, 0}, flat(u.e1_8))
    -- sf = 1.125 (vmax 7.875): (1.125-1)*4 = 0.5 rounds away -> m = 1 (half-even would give 0)
    assert.same({193}, flat(glq.hif4.quantize(unit({[0] = 7.875})).e6m2))
  end)

  it("handles last dimensions 1, 63, 64, 65, 130, 1-d and 3-d shapes (Lua model)", function()
    for i, shape in ipairs {{3, 1}, {2, 63}, {2, 64}, {2, 65}, {3, 130}, {200}, {2, 2, 70}} do
      local x = glq.randn(shape, 100 + i):mul(3)
      local p = check_against_model(x)
      assert.same(field_shape(shape, 32), p.s1p2_packed:shape())
    end
    -- scales spread over many octaves
    local v = {}
    for i = 1, 4 * 64 do v[i] = (i % 7 - 3) * 2 ^ ((i * 37) % 120 - 60) end
    check_against_model(glq.tensor(v, {4, 64}, "f32"))
  end)

  it("accepts bf16 and f16 input (the cast to bf16 is the first step)", function()
    local x = glq.randn({4, 100}, 5)
    local a = glq.hif4.quantize(x)
    local b = glq.hif4.quantize(x:to("bf16"))
    local h = x:to("f16")
    local c, d = glq.hif4.quantize(h), glq.hif4.quantize(h:to("f32"))
    for _, f in ipairs {"e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed"} do
      assert_same_bytes(flat(a[f]), flat(b[f]), f)
      assert_same_bytes(flat(c[f]), flat(d[f]), f)
    end
  end)

  it("names the tensor and the first non-finite index", function()
    local x = glq.zeros("f32", {2, 3, 100})
    x:set(0 / 0, 2, 1, 71)
    x:set(math.huge, 2, 3, 1)
    assert.error_matches(function() glq.hif4.quantize(x, {name = "blk.0.wq"}) end,
      "blk%.0%.wq: non%-finite value .*flat index 370, coordinates %(1, 0, 70%)")
    local y = glq.zeros("bf16", {5})
    y:set(-math.huge, 4)
    assert.error_matches(function() glq.hif4.quantize(y) end, "flat index 3, coordinates %(3%)")
  end)

  it("can write a unit holding NaN/Inf as scale 0xFF that decodes to NaN", function()
    local x = glq.randn({2, 130}, 9)
    x:set(0 / 0, 1, 70)
    local p = glq.hif4.quantize(x, {nonfinite = "nan"})
    local e = flat(p.e6m2)
    assert.equal(0xFF, e[2])
    assert.is_true(e[1] ~= 0xFF and e[3] ~= 0xFF)
    local clean = glq.hif4.quantize(x:narrow(1, 2, 1):contiguous())
    local u = glq.hif4.unpack(p)
    local s1 = flat(u.s1p2)
    for i = 65, 128 do assert.equal(0, s1[i]) end
    assert.equal(0, flat(u.e1_8)[9])
    local d = flat(glq.hif4.dequantize(p))
    for c = 65, 128 do assert.is_true(d[c] ~= d[c]) end
    assert.is_true(d[1] == d[1] and d[129] == d[129])
    assert_same_bytes({e[4], e[5], e[6]}, flat(clean.e6m2), "other row")
    assert.error_matches(function() glq.hif4.quantize(x, {nonfinite = "zero"}) end, "nonfinite must be")
  end)

  it("rejects 0-d and 4-d tensors and integer dtypes", function()
    assert.error_matches(function() glq.hif4.quantize(glq.zeros("f32", {})) end, "0 dims")
    assert.error_matches(function() glq.hif4.quantize(glq.zeros("f32", {1, 1, 1, 64})) end, "4 dims")
    assert.error_matches(function() glq.hif4.quantize(glq.zeros("i32", {64})) end, "dtype i32")
  end)
end)

describe("hif4 pack and unpack", function()
  it("pack(unpack(p)) is the identity on arbitrary packed bytes", function()
    local shape = {3, 130}
    local p = {shape = shape,
      e6m2 = glq.rand(field_shape(shape), 1):mul(255.99):to("u8"),
      e1_8_packed = glq.rand(field_shape(shape, 1), 2):mul(255.99):to("u8"),
      e1_16_packed = glq.rand(field_shape(shape, 2), 3):mul(255.99):to("u8"),
      s1p2_packed = glq.rand(field_shape(shape, 32), 4):mul(255.99):to("u8")}
    local u = glq.hif4.unpack(p)
    assert.same(field_shape(shape, 64), u.s1p2:shape())
    assert.same(field_shape(shape, 8), u.e1_8:shape())
    local q = glq.hif4.pack(u)
    for _, f in ipairs {"e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed"} do
      assert_same_bytes(flat(q[f]), flat(p[f]), f)
    end
  end)

  it("packs bits LSB first and element 2i into the low nibble", function()
    local u = glq.hif4.unpack(glq.hif4.quantize(glq.zeros("f32", {64})))
    local s = glq.zeros("u8", {1, 64})
    s:set(3, 1, 1); s:set(12, 1, 2); s:set(15, 1, 64)
    local b8 = glq.zeros("u8", {1, 8}); b8:set(1, 1, 1); b8:set(1, 1, 8)
    local b16 = glq.zeros("u8", {1, 16}); b16:set(1, 1, 2); b16:set(1, 1, 9)
    local p = glq.hif4.pack({shape = {64}, e6m2 = u.e6m2, e1_8 = b8, e1_16 = b16, s1p2 = s})
    assert.same({0x81}, flat(p.e1_8_packed))
    assert.same({0x02, 0x01}, flat(p.e1_16_packed))
    local sp = flat(p.s1p2_packed)
    assert.equal(0xC3, sp[1])
    assert.equal(0xF0, sp[32])
  end)

  it("rejects out-of-range unpacked values and malformed tables", function()
    local u = glq.hif4.unpack(glq.hif4.quantize(glq.zeros("f32", {64})))
    u.e1_8:set(2, 1, 3)
    assert.error_matches(function() glq.hif4.pack(u) end, "e1_8 flat index 2 holds 2")
    local p = glq.hif4.quantize(glq.zeros("f32", {2, 64}))
    p.s1p2_packed = glq.zeros("u8", {2, 1, 31})
    assert.error_matches(function() glq.hif4.dequantize(p) end, "field s1p2_packed must be a contiguous u8 tensor of shape %(2, 1, 32%)")
    p.s1p2_packed = nil
    assert.error_matches(function() glq.hif4.dequantize(p) end, "field 's1p2_packed' must be a tensor")
  end)
end)

---------------------------------------------------------------------------------------------
local function rel_err(y, ref)
  return y:max_abs_diff(ref) / math.max(ref:absmax(), 1e-30)
end

local function add_bias(y, b) -- y (B, out) + b (out)
  local B, out = y:shape()[1], y:shape()[2]
  local vals, bv = flat(y), flat(b)
  for i = 0, B - 1 do for j = 1, out do vals[i * out + j] = vals[i * out + j] + bv[j] end end
  return glq.tensor(vals, {B, out}, "f32")
end

describe("hif4 linear", function()
  it("forward equals x * dequant(W)^T (+ b) for batches 1..64 and odd in-dims, both kernels", function()
    for _, dims in ipairs {{37, 130}, {16, 64}, {9, 1}, {24, 200}} do
      local out, inn = dims[1], dims[2]
      local p = glq.hif4.quantize(glq.randn({out, inn}, out + inn))
      local W = glq.hif4.dequantize(p)
      local bias = glq.randn({out}, 3)
      for _, kernel in ipairs {"auto", "portable"} do
        local lin = glq.hif4.linear(p, {kernel = kernel})
        local linb = glq.hif4.linear(p, bias, {kernel = kernel})
        assert.equal(0, lin:dequantize():max_abs_diff(W))
        for _, B in ipairs {1, 3, 8, 9, 64} do
          local x = glq.randn({B, inn}, B)
          local ref = glq.matmul(x, W, {transpose_b = true})
          local e1, e2 = rel_err(lin:forward(x), ref), rel_err(linb:forward(x), add_bias(ref, bias))
          assert(e1 < 1e-5 and e2 < 1e-5, string.format("%dx%d B=%d %s: rel err %g / %g", out, inn, B, kernel, e1, e2))
        end
      end
    end
  end)

  it("gives identical bytes for GLQ_THREADS=1 and 2", function()
    local body = [[
      local lin = glq.hif4.linear(glq.hif4.quantize(glq.randn({300, 256}, 1)))
      for _, B in ipairs {1, 5, 20} do
        for _, v in ipairs(lin:forward(glq.randn({B, 256}, 2)):reshape({B * 300}):totable()) do
          io.write(string.format("%.9g ", v))
        end
      end]]
    local a, b = with_threads(1, body), with_threads(2, body)
    assert.is_true(#a > 1000)
    assert.equal(a, b)
  end)

  it("reports storage and rejects bad shapes", function()
    local p = glq.hif4.quantize(glq.randn({37, 130}, 1))
    local lin = glq.hif4.linear(p)
    assert.equal(37 * 3 * 288, lin:stored_bits())
    assert.equal(37 * 3 * 288, glq.hif4.stored_bits(p))
    assert.equal("hif4", lin:kind())
    assert.same({37, 130}, lin:shape())
    assert.error_matches(function() glq.hif4.linear(p, glq.zeros("f32", {36})) end, "bias must be a numeric tensor of 37 elements")
    assert.error_matches(function() glq.hif4.linear(glq.hif4.quantize(glq.randn({64}, 1))) end, "2%-D")
    assert.error_matches(function() lin:forward(glq.zeros("f32", {2, 129})) end, "input must be %(130%)")
    assert.error_matches(function() glq.hif4.linear(p, {kernel = "fast"}) end, "kernel must be")
  end)
end)

---------------------------------------------------------------------------------------------
local function sq_err(a, b)
  local s, x, y = 0, flat(a), flat(b)
  for i = 1, #x do s = s + (x[i] - y[i]) ^ 2 end
  return s
end

-- Student-t (3 degrees of freedom) rows
local function student_t(rows, cols, seed)
  local z = flat(glq.randn({rows, cols}, seed))
  local c = flat(glq.randn({rows * cols, 3}, seed + 1))
  local v = {}
  for i = 1, rows * cols do
    local chi = (c[3 * i - 2] ^ 2 + c[3 * i - 1] ^ 2 + c[3 * i] ^ 2) / 3
    v[i] = z[i] / math.sqrt(chi)
  end
  return glq.tensor(v, {rows, cols}, "f32")
end

describe("hif4 with a randomized Hadamard rotation", function()
  it("uses a seeded +-1 sign vector (per layer name, padded to a multiple of 8)", function()
    local a, b, c = flat(glq.hif4.rht_signs(1000, 7)), flat(glq.hif4.rht_signs(1000, 7)), flat(glq.hif4.rht_signs(1000, 8))
    assert.same(a, b)
    assert.are_not.same(a, flat(glq.hif4.rht_signs(1000, 7, "blk.1.attn_q")))
    assert.equal(136, glq.hif4.rht_signs(130, 7):numel())
    local neg, diff = 0, 0
    for i = 1, 1000 do
      assert.is_true(a[i] == 1 or a[i] == -1)
      if a[i] < 0 then neg = neg + 1 end
      if a[i] ~= c[i] then diff = diff + 1 end
    end
    assert.is_true(neg > 400 and neg < 600 and diff > 400)
  end)

  it("lowers the error on heavy-tailed rows", function()
    local W = student_t(64, 512, 11)
    local plain = sq_err(glq.hif4.dequantize(glq.hif4.quantize(W)), W)
    local p = glq.hif4.quantize_rht(W, {seed = 3})
    local rht = sq_err(glq.hif4.dequantize(p), W)
    assert(rht < 0.9 * plain, string.format("rht %g vs plain %g", rht, plain))
    assert.near(4.5 + 1 / 64, p.stats.bits_per_weight, 1e-12)
    assert.equal(64 * 8 * 288 + 512, glq.hif4.stored_bits(p))
  end)

  it("makes a linear layer that rotates its input (forward == x * dequant^T)", function()
    local W = glq.randn({40, 96}, 4)
    local p = glq.hif4.quantize_rht(W, {seed = 5})
    local Wq = glq.hif4.dequantize(p)
    local bias = glq.randn({40}, 6)
    local lin = glq.hif4.linear(p, bias)
    assert.is_true(lin:dequantize():max_abs_diff(Wq) < 1e-5 * Wq:absmax())
    for _, B in ipairs {1, 3, 9, 64} do
      local x = glq.randn({B, 96}, B)
      local ref = add_bias(glq.matmul(x, Wq, {transpose_b = true}), bias)
      assert.is_true(rel_err(lin:forward(x), ref) < 1e-5)
    end
  end)

  it("pads an in-dimension that is not a multiple of 8 (rht.h convention)", function()
    local W = glq.randn({5, 130}, 8)
    local p = glq.hif4.quantize_rht(W, {seed = 2, name = "blk.0.ffn_down"})
    assert.same({136}, p.signs:shape())
    assert.same({5, 3}, p.e6m2:shape())
    local Wq = glq.hif4.dequantize(p)
    assert.same({5, 130}, Wq:shape())
    assert.is_true(rel_err(Wq, W) < 0.2)
    local lin = glq.hif4.linear(p)
    local x = glq.randn({3, 130}, 9)
    assert.is_true(rel_err(lin:forward(x), glq.matmul(x, Wq, {transpose_b = true})) < 1e-5)
    assert.equal(5 * 3 * 288 + 136, lin:stored_bits())
    p.signs = glq.zeros("f32", {130})
    assert.error_matches(function() glq.hif4.linear(p) end,
      "signs %(glq_rht_pad%(in%) values%) must be a numeric tensor of 136 elements")
  end)
end)

describe("hif4 with LDLQ error feedback", function()
  local n, m = 128, 32
  local function ar1_hessian(rho)
    local v = {}
    for i = 0, n - 1 do for j = 0, n - 1 do v[i * n + j + 1] = rho ^ math.abs(i - j) end end
    return glq.tensor(v, {n, n}, "f32")
  end

  it("computes the proxy loss tr(D H D^T)", function()
    local a, b, H = glq.randn({3, 5}, 1), glq.randn({3, 5}, 2), glq.randn({5, 5}, 3)
    local A, Bv, Hv = flat(a), flat(b), flat(H)
    local want = 0
    for r = 0, 2 do for i = 0, 4 do for j = 0, 4 do
      want = want + (A[r * 5 + i + 1] - Bv[r * 5 + i + 1]) * Hv[i * 5 + j + 1] * (A[r * 5 + j + 1] - Bv[r * 5 + j + 1])
    end end end
    assert.near(want, glq.hif4.proxy_loss(a, b, H), 1e-9 * math.abs(want) + 1e-12)
  end)

  it("equals plain rounding for an identity Hessian", function()
    local W = glq.randn({m, 100}, 1)
    local I = {}
    for i = 0, 99 do for j = 0, 99 do I[i * 100 + j + 1] = (i == j) and 1 or 0 end end
    local a, b = glq.hif4.quantize(W), glq.hif4.quantize_ldlq(W, glq.tensor(I, {100, 100}, "f32"))
    for _, f in ipairs {"e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed"} do assert_same_bytes(flat(a[f]), flat(b[f]), f) end
    assert.near(0.01, b.stats.damp, 1e-15)
  end)

  it("lowers the proxy loss on a correlated Hessian, with and without RHT", function()
    local W, H = glq.randn({m, n}, 2), ar1_hessian(0.95)
    local plain = glq.hif4.proxy_loss(W, glq.hif4.dequantize(glq.hif4.quantize(W)), H)
    local ldlq = glq.hif4.proxy_loss(W, glq.hif4.dequantize(glq.hif4.quantize_ldlq(W, H)), H)
    local rht = glq.hif4.proxy_loss(W, glq.hif4.dequantize(glq.hif4.quantize_rht(W, {seed = 1})), H)
    local both = glq.hif4.proxy_loss(W, glq.hif4.dequantize(glq.hif4.quantize_ldlq(W, H, {rht = true, seed = 1})), H)
    assert(ldlq < 0.7 * plain, string.format("ldlq %g vs plain %g", ldlq, plain))
    assert(both < 0.7 * rht, string.format("ldlq+rht %g vs rht %g", both, rht))
  end)

  it("is deterministic across GLQ_THREADS", function()
    local body = [[
      local n, v = 128, {}
      for i = 0, n - 1 do for j = 0, n - 1 do v[i * n + j + 1] = 0.9 ^ math.abs(i - j) end end
      local p = glq.hif4.quantize_ldlq(glq.randn({32, n}, 3), glq.tensor(v, {n, n}, "f32"), {rht = true, seed = 2})
      for _, f in ipairs {"e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed"} do
        io.write(table.concat(p[f]:reshape({p[f]:numel()}):totable(), " "), "\n")
      end]]
    local a, b = with_threads(1, body), with_threads(2, body)
    assert.is_true(#a > 1000)
    assert.equal(a, b)
  end)

  it("zeroes dead columns, climbs the damping ladder, and reports bad Hessians", function()
    local W, H = glq.randn({4, 64}, 4), ar1_hessian(0.5):narrow(1, 1, 64):narrow(2, 1, 64):contiguous()
    for j = 1, 64 do H:set(0, 5, j); H:set(0, j, 5) end
    local p = glq.hif4.quantize_ldlq(W, H)
    assert.equal(1, p.stats.dead)
    local d = glq.hif4.dequantize(p)
    for r = 1, 4 do assert.equal(0, d:get(r, 5)) end
    -- indefinite but fixable with more damping: -0.5 on one diagonal entry of the identity
    local I = glq.zeros("f32", {64, 64})
    for j = 1, 64 do I:set(1, j, j) end
    I:set(-0.5, 7, 7)
    assert.is_true(glq.hif4.quantize_ldlq(W, I).stats.damp >= 1)
    local neg = glq.zeros("f32", {64, 64})
    for j = 1, 64 do neg:set(-1, j, j) end
    assert.error_matches(function() glq.hif4.quantize_ldlq(W, neg) end, "not positive definite")
    assert.error_matches(function() glq.hif4.quantize_ldlq(W, glq.zeros("f32", {63, 63})) end, "hessian must be a 64 x 64 float tensor")
  end)
end)
