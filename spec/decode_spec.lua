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
end)
