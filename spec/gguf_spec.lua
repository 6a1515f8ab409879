-- GGUF reader: metadata of every type, row-major shapes, zero-copy views, bit-exact
-- dequantization (fixtures from gguf-py's reference code), and errors on malformed files.
local glq = require "glq"
local util = require "spec.support.util"
local exists = util.exists
local slurp = util.slurp
local spit = util.spit
local cjson = require "cjson"
local ffi = require "ffi"

local STORIES = "../shared/models/stories260K"
local FIX = "spec/fixtures/gguf"
local CACHE = os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "") .. "/.cache/glq")
local SMOLLM2 = os.getenv("GLQ_SMOLLM2") or (CACHE .. "/SmolLM2-135M-Instruct.Q4_1.gguf")

-- little-endian encoders for building GGUF files by hand
local function u32(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256)
end
local function u64(n) return u32(n % 4294967296) .. u32(math.floor(n / 4294967296)) end
local function f32(x) return ffi.string(ffi.new("float[1]", x), 4) end
local function f64(x) return ffi.string(ffi.new("double[1]", x), 8) end
local function gstr(s) return u64(#s) .. s end
local function header(version, n_tensors, n_kv) return "GGUF" .. u32(version) .. u64(n_tensors) .. u64(n_kv) end
local function kv(key, typ, payload) return gstr(key) .. u32(typ) .. payload end
local function tinfo(name, ne, typ, offset)
  local s = gstr(name) .. u32(#ne)
  for _, d in ipairs(ne) do s = s .. u64(d) end
  return s .. u32(typ) .. u64(offset)
end
local function pad(s, align)
  align = align or 32
  return s .. string.rep("\0", (align - #s % align) % align)
end

local T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 =
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12

local tmp_files = {}
local function tmpfile(bytes)
  local p = os.tmpname()
  spit(p, bytes)
  tmp_files[#tmp_files + 1] = p
  return p
end
teardown(function() for _, p in ipairs(tmp_files) do os.remove(p) end end)

-- expect glq.gguf.open to fail with a message naming the file and containing `what`
local function open_fails(bytes, what)
  local path = tmpfile(bytes)
  local ok, err = pcall(glq.gguf.open, path)
  assert.is_false(ok)
  assert.matches(path, err, 1, true)
  assert.matches(what, err, 1, true)
end

-- a small valid file: metadata of every type, an f32 (2 x 4) tensor and one q4_0 block
local function valid_file(version)
  local meta = {
    kv("a.u8", T_U8, "\250"), kv("a.i8", T_I8, "\254"), kv("a.u16", T_U16, "\1\1"), kv("a.i16", T_I16, "\255\255"),
    kv("a.u32", T_U32, u32(4000000000)), kv("a.i32", T_I32, u32(4294967295)), kv("a.f32", T_F32, f32(0.5)),
    kv("a.bool", T_BOOL, "\1"), kv("a.str", T_STR, gstr("héllo")), kv("a.u64", T_U64, u64(2 ^ 40)),
    kv("a.i64", T_I64, string.rep("\255", 8)), kv("a.f64", T_F64, f64(-1.25)),
    kv("a.arr", T_ARR, u32(T_I32) .. u64(3) .. u32(1) .. u32(2) .. u32(4294967293)),
    kv("a.strs", T_ARR, u32(T_STR) .. u64(2) .. gstr("x") .. gstr("")),
    kv("a.nested", T_ARR, u32(T_ARR) .. u64(2) .. u32(T_STR) .. u64(2) .. gstr("p") .. gstr("qr") .. u32(T_BOOL) .. u64(1) .. "\0"),
    kv("general.alignment", T_U32, u32(32)),
  }
  local infos = tinfo("w", { 4, 2 }, 0, 0) .. tinfo("q", { 32 }, 2, 32)
  local data = f32(1) .. f32(2) .. f32(3) .. f32(4) .. f32(5) .. f32(6) .. f32(7) .. f32(8)
  local block = "\0\60" .. string.rep("\33", 16) -- d = 1.0 (f16 0x3C00); nibbles 1 (low) and 2 (high)
  return pad(header(version, 2, #meta) .. table.concat(meta) .. infos) .. data .. block
end

describe("gguf reader", function()
  it("reads metadata of every value type, nested arrays included", function()
    for _, version in ipairs({ 2, 3 }) do
      local g = glq.gguf.open(tmpfile(valid_file(version)))
      assert.equals(version, g:version())
      local m = g:metadata()
      assert.equals(250, m["a.u8"])
      assert.equals(-2, m["a.i8"])
      assert.equals(257, m["a.u16"])
      assert.equals(-1, m["a.i16"])
      assert.equals(4000000000, m["a.u32"])
      assert.equals(-1, m["a.i32"])
      assert.equals(0.5, m["a.f32"])
      assert.equals(true, m["a.bool"])
      assert.equals("héllo", m["a.str"])
      assert.equals(2 ^ 40, m["a.u64"])
      assert.equals(-1, m["a.i64"])
      assert.equals(-1.25, m["a.f64"])
      assert.same({ 1, 2, -3 }, m["a.arr"])
      assert.same({ "x", "" }, m["a.strs"])
      assert.same({ { "p", "qr" }, { false } }, m["a.nested"])
      assert.equals("qr", g:get("a.nested")[1][2])
      assert.is_nil(g:get("no.such.key"))
    end
  end)

  it("gives row-major shapes, zero-copy f32 views and dequantized blocks", function()
    local g = glq.gguf.open(tmpfile(valid_file(3)))
    local list = g:tensors()
    assert.same({ name = "w", type = "f32", shape = { 2, 4 }, nbytes = 32 }, list[1])
    assert.same({ name = "q", type = "q4_0", shape = { 32 }, nbytes = 18 }, list[2])
    local w = g:tensor("w")
    assert.equals("f32", w:dtype())
    assert.is_true(w:is_mapped())
    assert.same({ 2, 4 }, w:shape())
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, w:totable())
    local q = g:tensor("q"):totable()
    for i = 1, 16 do assert.equals(-7, q[i]) end   -- (1 - 8) * 1.0
    for i = 17, 32 do assert.equals(-6, q[i]) end  -- (2 - 8) * 1.0
    local ok, err = pcall(g.tensor, g, "missing")
    assert.is_false(ok)
    assert.matches("no tensor named 'missing'", err, 1, true)
  end)

  it("reads files with an alignment below the element size (copying when misaligned)", function()
    for off = 0, 3 do
      local bytes = header(3, 1, 1) .. kv("general.alignment", T_U32, u32(1)) .. tinfo("w", { 2 }, 0, off)
      bytes = bytes .. string.rep("\0", off) .. f32(1.5) .. f32(-2)
      assert.same({ 1.5, -2 }, glq.gguf.open(tmpfile(bytes)):tensor("w"):totable())
    end
  end)

  it("dequantizes q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k bit-exactly (gguf-py reference)", function()
    local g = glq.gguf.open(FIX .. "/quants.gguf")
    local expected = cjson.decode(slurp(FIX .. "/quants.json"))
    assert.equals(10, #expected.tensors)
    for _, e in ipairs(expected.tensors) do
      local t = g:tensor(e.name)
      assert.same(e.shape, t:shape())
      local native = e.name == "f16" or e.name == "bf16"
      assert.equals(native and e.name or "f32", t:dtype())
      local got = t:to("f32"):reshape({ -1 }):totable()
      assert.equals(#e.values, #got)
      for i, v in ipairs(e.values) do
        if got[i] ~= v then error(("%s[%d]: got %.9g, expected %.9g"):format(e.name, i, got[i], v)) end
      end
    end
  end)

  describe("rejects malformed files with a message naming the file", function()
    local good = valid_file(3)
    it("truncated", function()
      open_fails(good:sub(1, 10), "truncated")
      open_fails(good:sub(1, 300), "truncated")
      open_fails("", "truncated")
      open_fails(good:sub(1, #good - 1), "tensor 'q' data (offset 32, 18 bytes) lies beyond the end of the file")
    end)
    it("bad magic", function() open_fails("GGUX" .. good:sub(5), "bad magic") end)
    it("unsupported versions", function()
      open_fails(header(1, 0, 0), "unsupported version 1")
      open_fails(header(4, 0, 0), "unsupported version 4")
      open_fails("GGUF\0\0\0\3" .. u64(0) .. u64(0), "big-endian")
    end)
    it("absurd counts and lengths", function()
      open_fails(header(3, 2 ^ 40, 0), "tensor count")
      open_fails(header(3, 0, 2 ^ 40), "metadata count")
      open_fails(header(3, 0, 1) .. u64(2 ^ 50) .. string.rep("k", 32), "beyond the end of the file")
      open_fails(header(3, 0, 1) .. kv("k", T_STR, u64(1000) .. "short"), "beyond the end of the file")
      open_fails(header(3, 0, 1) .. kv("k", T_ARR, u32(T_U32) .. u64(2 ^ 40) .. u32(1)), "claims 1099511627776 elements")
      open_fails(header(3, 0, 1) .. kv("k", T_ARR, u32(T_STR) .. u64(1000) .. gstr("a")), "claims 1000 elements")
    end)
    it("unknown value types, deep nesting, duplicate keys, bad alignment", function()
      open_fails(header(3, 0, 1) .. kv("k", 13, u32(0)), "unknown value type id 13")
      open_fails(header(3, 0, 1) .. kv("k", T_ARR, u32(77) .. u64(0)), "unknown element type id 77")
      local deep = u32(T_U8) .. u64(0)
      for _ = 1, 9 do deep = u32(T_ARR) .. u64(1) .. deep end
      open_fails(header(3, 0, 1) .. kv("k", T_ARR, deep), "nests deeper")
      open_fails(header(3, 0, 2) .. kv("k", T_U8, "\1") .. kv("k", T_U8, "\2"), "duplicate metadata key 'k'")
      open_fails(header(3, 0, 1) .. kv("general.alignment", T_U32, u32(24)), "not a power of two")
      open_fails(header(3, 0, 1) .. kv("general.alignment", T_U64, u64(32)), "general.alignment is not a u32")
    end)
    it("bad tensor infos", function()
      local function one(info, data) return pad(header(3, 1, 0) .. info) .. (data or string.rep("\0", 64)) end
      open_fails(one(tinfo("t", { 4 }, 99, 0)), "tensor 't' has unknown type id 99")
      open_fails(one(tinfo("t", { 1, 1, 1, 1, 1 }, 0, 0)), "5 dimensions")
      open_fails(one(tinfo("t", { 33 }, 2, 0)), "not a multiple of the q4_0 block size 32")
      open_fails(one(tinfo("t", { 4 }, 0, 8)), "not a multiple of the alignment 32")
      open_fails(one(tinfo("t", { 1000 }, 0, 0)), "beyond the end of the file")
      open_fails(one(tinfo("t", { 2 ^ 62, 2 ^ 62 }, 0, 0)), "absurd size")
      open_fails(pad(header(3, 2, 0) .. tinfo("t", { 4 }, 0, 0) .. tinfo("t", { 4 }, 0, 32)) .. string.rep("\0", 64),
        "duplicate tensor name 't'")
    end)
    it("files that are not there", function()
      local ok, err = pcall(glq.gguf.open, "/nonexistent/x.gguf")
      assert.is_false(ok)
      assert.matches("/nonexistent/x.gguf", err, 1, true)
    end)
  end)
end)

describe("stories260K.gguf", function()
  local path = STORIES .. "/stories260K.gguf"
  if not exists(path) then
    pending("skipped: " .. path .. " not found (../shared is not available)")
    return
  end
  local g = glq.gguf.open(path)

  it("has the llama metadata", function()
    local m = g:metadata()
    assert.equals(3, g:version())
    assert.equals("llama", m["general.architecture"])
    assert.equals(64, m["llama.embedding_length"])
    assert.equals(5, m["llama.block_count"])
    assert.equals(8, m["llama.attention.head_count"])
    assert.equals(4, m["llama.attention.head_count_kv"])
    assert.equals(172, m["llama.feed_forward_length"])
    assert.equals(512, m["llama.vocab_size"])
    assert.equals("llama", m["tokenizer.ggml.model"])
    assert.equals(512, #m["tokenizer.ggml.tokens"])
    assert.equals(512, #m["tokenizer.ggml.scores"])
    assert.equals("<s>", m["tokenizer.ggml.tokens"][2])
  end)

  it("lists 47 f32 tensors with row-major shapes", function()
    local shapes = {}
    for _, t in ipairs(g:tensors()) do
      assert.equals("f32", t.type)
      shapes[t.name] = t.shape
    end
    local n = 0
    for _ in pairs(shapes) do n = n + 1 end
    assert.equals(47, n)
    assert.same({ 512, 64 }, shapes["token_embd.weight"])
    assert.same({ 64, 64 }, shapes["blk.0.attn_q.weight"])
    assert.same({ 32, 64 }, shapes["blk.0.attn_k.weight"])
    assert.same({ 32, 64 }, shapes["blk.4.attn_v.weight"])
    assert.same({ 172, 64 }, shapes["blk.2.ffn_gate.weight"])
    assert.same({ 64, 172 }, shapes["blk.2.ffn_down.weight"])
    assert.same({ 64 }, shapes["output_norm.weight"])
  end)

  it("holds the same f32 values as the HF safetensors", function()
    local hf_path = STORIES .. "/hf/model.safetensors"
    if not exists(hf_path) then return pending("skipped: " .. hf_path .. " not found") end
    local hf = glq.load_safetensors(hf_path)
    local same = { ["token_embd.weight"] = "model.embed_tokens.weight", ["output_norm.weight"] = "model.norm.weight" }
    local per_layer = { attn_norm = "input_layernorm", ffn_norm = "post_attention_layernorm", attn_v = "self_attn.v_proj",
      attn_output = "self_attn.o_proj", ffn_gate = "mlp.gate_proj", ffn_down = "mlp.down_proj", ffn_up = "mlp.up_proj" }
    for l = 0, 4 do
      for k, v in pairs(per_layer) do same[("blk.%d.%s.weight"):format(l, k)] = ("model.layers.%d.%s.weight"):format(l, v) end
    end
    for gname, hname in pairs(same) do
      local a, b = g:tensor(gname), hf[hname]:to("f32")
      assert.same(b:shape(), a:shape())
      assert.equals(0, a:max_abs_diff(b), gname)
    end
    -- q/k rows: llama.cpp interleaves the two rotary halves of each head; HF keeps them apart
    for _, qk in ipairs({ { "attn_q", "q_proj", 8 }, { "attn_k", "k_proj", 4 } }) do
      local a = g:tensor("blk.3." .. qk[1] .. ".weight")
      local b = hf["model.layers.3.self_attn." .. qk[2] .. ".weight"]:to("f32")
      local hd = a:shape()[1] / qk[3]
      assert.is_true(a:max_abs_diff(b) > 0)
      for h = 0, qk[3] - 1 do
        for i = 0, hd / 2 - 1 do
          for j = 0, 1 do
            local ra, rb = a:narrow(1, h * hd + 2 * i + j + 1, 1), b:narrow(1, h * hd + j * hd / 2 + i + 1, 1)
            assert.equals(0, ra:max_abs_diff(rb))
          end
        end
      end
    end
  end)
end)

describe("SmolLM2-135M-Instruct Q4_1 gguf", function()
  if not exists(SMOLLM2) then
    pending("skipped: " .. SMOLLM2 .. " not found (run scripts/fetch-model.sh)")
    return
  end
  local g = glq.gguf.open(SMOLLM2)

  it("has its metadata and tensor types", function()
    local m = g:metadata()
    assert.equals("llama", m["general.architecture"])
    assert.equals(30, m["llama.block_count"])
    assert.equals(576, m["llama.embedding_length"])
    assert.equals("gpt2", m["tokenizer.ggml.model"])
    assert.equals("smollm", m["tokenizer.ggml.pre"])
    local count = {}
    for _, t in ipairs(g:tensors()) do count[t.type] = (count[t.type] or 0) + 1 end
    assert.same({ q4_1 = 210, f32 = 61, q8_0 = 1 }, count)
  end)

  it("dequantizes q8_0 / q4_1 rows exactly as gguf-py does", function()
    local rows = cjson.decode(slurp(FIX .. "/smollm2_rows.json"))
    local cache = {}
    for _, r in ipairs(rows.tensors) do
      cache[r.name] = cache[r.name] or g:tensor(r.name)
      local t = cache[r.name]
      assert.same(r.shape, t:shape())
      local row = t:narrow(1, r.row + 1, 1)
      local vals = row:reshape({ -1 }):totable()
      for i, v in ipairs(r.first) do assert.equals(v, vals[i]) end
      local s = 0
      for _, v in ipairs(vals) do s = s + v end
      assert.near(r.row_sum, s, 1e-9 * math.max(1, math.abs(r.row_sum)))
    end
  end)

  it("token embeddings have sane statistics", function()
    local e = g:tensor("token_embd.weight")
    assert.same({ 49152, 576 }, e:shape())
    local n = e:numel()
    local mean = e:sum() / n
    local std = math.sqrt((e:norm() ^ 2) / n - mean ^ 2)
    assert.is_true(math.abs(mean) < 0.01)
    assert.is_true(std > 0.05 and std < 0.5)
    assert.is_true(e:absmax() < 10)
  end)
end)
