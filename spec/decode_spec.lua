-- decode_spec.lua - the one-row paths that decoding takes give the same bytes for any thread count
-- and agree with their batched counterparts: dense rows (8-row register tiles for one row, 3- and
-- 2-row tiles for batches), E8 layers at 2, 3 and 4 bits (64-bit index loads and index prefetch at
-- batch 1, the dense kernel on decoded tiles past batch 8), and a cached decode whose 3 kv heads'
-- query heads are split between the threads of the attention.
local glq = require "glq"

local function with_threads(n, fn)
  local n0 = glq.num_threads()
  glq.num_threads(n)
  local ok, r = pcall(fn)
  glq.num_threads(n0)
  assert(ok, r)
  return r
end

-- random valid E8 artifacts: uint16 codes as i16, +-1 signs, 4-bit second stage
local function e8_artifacts(m, n, bits, seed)
  local function codes(s, hi)
    return glq.rand({ m, n / 8 }, s):mul(hi):to("i32"):sub(glq.full("i32", { m, n / 8 }, hi > 256 and 32768 or 0)):to("i16")
  end
  local function signs(k, s) return glq.rand({ k }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { k }, 1)) end
  local a = { Qidxs = codes(seed, 65535), SU = signs(m, seed + 1), SV = signs(n, seed + 2), Wscale = 0.02, bias = glq.randn({ m }, seed + 4) }
  if bits > 2 then
    a.Qidxs2 = codes(seed + 3, bits == 3 and 255 or 65535)
    a.inv_resid_scale = 1 / 3
  end
  return a
end

describe("decode paths", function()
  it("dense: one row gives the bytes it has inside a batch, for 1, 2 and 3 threads (f32, bf16)", function()
    for _, dt in ipairs({ "f32", "bf16" }) do
      local w = glq.randn({ 1031, 577 }, 1):mul(0.05)
      local lin = glq.linear.dense(dt == "f32" and w or w:to(dt), glq.randn({ 1031 }, 2))
      local x = glq.randn({ 5, 577 }, 3)
      local ref = with_threads(1, function() return lin:forward(x) end)
      for _, n in ipairs({ 1, 2, 3 }) do
        with_threads(n, function()
          assert.equal(0, lin:forward(x):max_abs_diff(ref))
          for i = 1, 5 do
            local row = lin:forward(x:narrow(1, i, 1))
            assert.equal(0, row:max_abs_diff(ref:narrow(1, i, 1)), ("%s, %d threads, row %d"):format(dt, n, i))
          end
        end)
      end
    end
  end)

  it("E8: batch 1, 3 and 12 give the same bytes for 1, 2 and 3 threads and stay within f32 error of x·Wᵀ + b", function()
    for _, s in ipairs({ { 576, 1536 }, { 200, 96 } }) do
      local m, n = s[1], s[2]
      for bits = 2, 4 do
        local a = e8_artifacts(m, n, bits, 10 * bits)
        local lin = glq.e8.linear(a)
        local w = lin:dequantize()
        for _, B in ipairs({ 1, 3, 12 }) do
          local x = glq.randn({ B, n }, B)
          local ref = with_threads(1, function() return lin:forward(x) end)
          for _, t in ipairs({ 2, 3 }) do
            assert.equal(0, with_threads(t, function() return lin:forward(x) end):max_abs_diff(ref),
              ("%dx%d, %d bits, batch %d, %d threads"):format(m, n, bits, B, t))
          end
          -- against the dequantized weight in f64, relative to |x|·|w_i| per output
          local want = glq.matmul(x:to("f64"), w:to("f64"), { transpose_b = true }):totable()
          local got, xs, ws, bias = ref:totable(), x:totable(), w:totable(), a.bias:totable()
          for b = 0, B - 1 do
            local xn = 0
            for k = 1, n do xn = xn + xs[b * n + k] ^ 2 end
            for i = 0, m - 1 do
              local wn = 0
              for k = 1, n do wn = wn + ws[i * n + k] ^ 2 end
              local err = math.abs(got[b * m + i + 1] - want[b * m + i + 1] - bias[i + 1]) / math.sqrt(xn * wn)
              assert.is_true(err <= 1e-5, ("%dx%d, %d bits, batch %d, row %d: rel err %g"):format(m, n, bits, B, i, err))
            end
          end
        end
      end
    end
  end)

  it("a cached decode with 9 query heads over 3 kv heads gives the same bytes for 1, 2 and 3 threads", function()
    local cfg = { dim = 96, n_layers = 2, n_heads = 9, n_kv_heads = 3, head_dim = 64, ffn_dim = 80, vocab = 40,
      max_seq = 32, rope_theta = 10000, rope_layout = "half", tied = true }
    local m = glq.llama.new(cfg)
    local seed = 50
    local function rnd(...) seed = seed + 1; return glq.randn({ ... }, seed):mul(0.1) end
    local ones = glq.full("f32", { cfg.dim }, 1)
    m:set_embedding(rnd(cfg.vocab, cfg.dim))
    m:set_final_norm(ones)
    local D, qd, kd = glq.linear.dense, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for l = 0, cfg.n_layers - 1 do
      m:set_layer(l, { attn_norm = ones, ffn_norm = ones, q = D(rnd(qd, cfg.dim)), k = D(rnd(kd, cfg.dim)),
        v = D(rnd(kd, cfg.dim)), o = D(rnd(cfg.dim, qd)), gate = D(rnd(cfg.ffn_dim, cfg.dim)),
        up = D(rnd(cfg.ffn_dim, cfg.dim)), down = D(rnd(cfg.dim, cfg.ffn_dim)) })
    end
    local toks = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8 }
    local function decode()
      local c = glq.llama.kvcache(m, {})
      m:forward({ 3, 1, 4, 1, 5, 9 }, { cache = c })
      local rows = {}
      for t = 7, #toks do rows[#rows + 1] = m:forward({ toks[t] }, { cache = c }) end
      return rows
    end
    local ref = with_threads(1, decode)
    local full = m:forward(toks, { all_logits = true })
    for i, r in ipairs(ref) do
      local want = full:narrow(2, 6 + i, 1):contiguous():reshape(1, cfg.vocab)
      assert.is_true(r:max_abs_diff(want) <= 1e-5 * want:absmax(), "decode step " .. i .. " vs prefill")
    end
    for _, t in ipairs({ 2, 3 }) do
      local got = with_threads(t, decode)
      for i = 1, #ref do assert.equal(0, got[i]:max_abs_diff(ref[i]), ("%d threads, step %d"):format(t, i)) end
    end
  end)

  -- a small tied model with SmolLM2's head arrangement (9 query heads over 3 kv heads)
  local function small_model(vocab)
    local cfg = { dim = 96, n_layers = 1, n_heads = 9, n_kv_heads = 3, head_dim = 32, ffn_dim = 64, vocab = vocab,
      max_seq = 16, rope_theta = 10000, rope_layout = "half", tied = true }
    local m = glq.llama.new(cfg)
    local seed = 70
    local function rnd(...) seed = seed + 1; return glq.randn({ ... }, seed):mul(0.1) end
    local ones = glq.full("f32", { cfg.dim }, 1)
    m:set_final_norm(ones)
    local D, qd, kd = glq.linear.dense, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    m:set_layer(0, { attn_norm = ones, ffn_norm = ones, q = D(rnd(qd, cfg.dim)), k = D(rnd(kd, cfg.dim)),
      v = D(rnd(kd, cfg.dim)), o = D(rnd(cfg.dim, qd)), gate = D(rnd(cfg.ffn_dim, cfg.dim)),
      up = D(rnd(cfg.ffn_dim, cfg.dim)), down = D(rnd(cfg.dim, cfg.ffn_dim)) })
    return m, cfg
  end

  -- ggml Q8_0 blocks (f16 scale, 32 int8) with random scales and codes, and their exact f32 values
  local function q8_0_blocks(rows, cols, seed)
    local bytes, vals = {}, {}
    local r = glq.rand({ rows * cols / 32 * 34 }, seed):mul(256):to("i32"):totable()
    local n = 0
    for b = 0, rows * cols / 32 - 1 do
      local e, mant = 4 + r[b * 34 + 1] % 12, r[b * 34 + 2] * 4 % 1024 -- normal f16: 2^(e-15) * (1 + mant/1024)
      local d = 2 ^ (e - 15) * (1 + mant / 1024)
      local h = e * 1024 + mant
      bytes[#bytes + 1], bytes[#bytes + 2] = h % 256, math.floor(h / 256)
      for k = 1, 32 do
        local q = r[b * 34 + 2 + k] % 256
        bytes[#bytes + 1] = q
        n = n + 1
        vals[n] = (q >= 128 and q - 256 or q) * d
      end
    end
    return glq.tensor(bytes, { #bytes }, "u8"), glq.tensor(vals, { rows, cols }, "f32")
  end

  it("a Q8_0 head gives the f32 head's logits bit for bit, and is refused for other weights", function()
    local m, cfg = small_model(50)
    local blocks, emb = q8_0_blocks(cfg.vocab, cfg.dim, 5)
    m:set_embedding(emb)
    local function decode()
      local c = glq.llama.kvcache(m, {})
      local rows = { m:forward({ 3, 1, 4 }, { cache = c }) }
      for _, t in ipairs({ 1, 5, 9, 2 }) do rows[#rows + 1] = m:forward({ t }, { cache = c }) end
      return rows
    end
    local ref = decode()
    local hidden = glq.randn({ 4, cfg.dim }, 9)
    local head_ref = m:head(hidden)
    m:set_head_q8_0(blocks)
    local got = decode()
    for i = 1, #ref do assert.equal(0, got[i]:max_abs_diff(ref[i]), "step " .. i) end
    assert.equal(0, m:head(hidden):max_abs_diff(head_ref))
    for r = 1, 4 do assert.equal(0, m:head(hidden:narrow(1, r, 1)):max_abs_diff(head_ref:narrow(1, r, 1))) end
    -- blocks that are not the embedding's (one code changed) are refused, naming the row
    local bad = blocks:clone()
    bad:ptr()[34 * 3 * 7 + 5] = (bad:ptr()[34 * 3 * 7 + 5] + 1) % 256
    assert.has_error(function() m:set_head_q8_0(bad) end, "EINVAL: llama:set_head_q8_0: Q8_0 head: row 7 of the blocks is not the embedding's")
    assert.has_error(function() m:set_head_q8_0(blocks:narrow(1, 1, 34)) end)
    -- an untied model has no embedding-backed head to replace
    m:set_head(glq.linear.dense(emb))
    assert.has_error(function() m:set_head_q8_0(blocks) end, "EINVAL: llama:set_head_q8_0: Q8_0 head: the model's head is not tied to its embedding")
  end)

  it("forward writes into a caller's tensor with out = t and checks its shape", function()
    local m, cfg = small_model(40)
    m:set_embedding(glq.randn({ cfg.vocab, cfg.dim }, 3))
    local c1, c2 = glq.llama.kvcache(m, {}), glq.llama.kvcache(m, {})
    local out = glq.full("f32", { 1, cfg.vocab }, 0 / 0)
    for _, t in ipairs({ 2, 7, 1 }) do
      local want = m:forward({ t }, { cache = c1 })
      assert.equal(out, m:forward({ t }, { cache = c2, out = out }))
      assert.equal(0, out:max_abs_diff(want))
    end
    local all = glq.zeros("f32", { 1, 3, cfg.vocab })
    m:forward({ 4, 5, 6 }, { all_logits = true, out = all })
    assert.equal(0, all:max_abs_diff(m:forward({ 4, 5, 6 }, { all_logits = true })))
    assert.has_error(function() m:forward({ 1 }, { out = glq.zeros("f32", { 2, cfg.vocab }) }) end,
      "llama:forward: out must be a writable contiguous f32 tensor of 1 x 40")
    assert.has_error(function() m:forward({ 1 }, { out = glq.zeros("f64", { 1, cfg.vocab }) }) end)
    assert.has_error(function() m:forward({ 1 }, { out = "logits" }) end)
  end)
end)
