-- Llama forward, KV cache, sampler and dense linear, checked against llama2.c's stories260K
-- references (built directly from the llama2.c checkpoint, without the GGUF loader).
local glq = require "glq"
local util = require "spec.support.util"
local exists = util.exists
local slurp = util.slurp
local cjson = require "cjson"

local DIR = "../shared/models/stories260K"

local function int32(s, i) -- little-endian signed int32 at byte i (1-based)
  local a, b, c, d = s:byte(i, i + 3)
  local v = a + b * 256 + c * 65536 + d * 16777216
  return v >= 2 ^ 31 and v - 2 ^ 32 or v
end

-- llama2.c checkpoint: 7 int32 (dim, ffn, layers, heads, kv heads, vocab (< 0: untied), seq_len)
-- then f32 arrays; every tensor here is a view of one f32 tensor holding the whole file.
local function load_stories()
  local path = DIR .. "/stories260K.bin"
  local raw = slurp(path)
  local h = {}
  for i = 1, 7 do h[i] = int32(raw, 4 * i - 3) end
  local dim, ffn, nl, nh, nkv, vocab, seq = h[1], h[2], h[3], h[4], h[5], math.abs(h[6]), h[7]
  local hd = dim / nh
  local all = glq.fromfile(path, "f32", { #raw / 4 })
  local off = 7
  local function take(...)
    local shape, n = { ... }, 1
    for _, s in ipairs(shape) do n = n * s end
    local t = all:narrow(1, off + 1, n):reshape(shape)
    off = off + n
    return t
  end
  local emb = take(vocab, dim)
  local rms_att = take(nl, dim)
  local wq, wk, wv = take(nl, dim, dim), take(nl, nkv * hd, dim), take(nl, nkv * hd, dim)
  local wo, rms_ffn = take(nl, dim, dim), take(nl, dim)
  local w1, w2, w3 = take(nl, ffn, dim), take(nl, dim, ffn), take(nl, ffn, dim)
  local fin = take(dim)
  take(seq * hd) -- freq_cis_real, freq_cis_imag
  local cfg = { dim = dim, n_layers = nl, n_heads = nh, n_kv_heads = nkv, head_dim = hd, ffn_dim = ffn,
    vocab = vocab, max_seq = seq, norm_eps = 1e-5, rope_theta = 10000, rope_layout = "interleaved", tied = h[6] > 0 }
  local m = glq.llama.new(cfg)
  m:set_embedding(emb)
  m:set_final_norm(fin)
  if h[6] < 0 then m:set_head(glq.linear.dense(take(vocab, dim))) end
  local function sub(t, l) return t:narrow(1, l + 1, 1):reshape(t:shape()[2], t:shape()[3]) end
  for l = 0, nl - 1 do
    m:set_layer(l, {
      attn_norm = rms_att:narrow(1, l + 1, 1), ffn_norm = rms_ffn:narrow(1, l + 1, 1),
      q = glq.linear.dense(sub(wq, l)), k = glq.linear.dense(sub(wk, l)), v = glq.linear.dense(sub(wv, l)),
      o = glq.linear.dense(sub(wo, l)), gate = glq.linear.dense(sub(w1, l)), up = glq.linear.dense(sub(w3, l)),
      down = glq.linear.dense(sub(w2, l)),
    })
  end
  return m, cfg, emb, rms_att
end

-- tok512.bin: int32 max_len, then per token f32 score, int32 length, bytes
local function load_pieces(vocab)
  local raw = slurp(DIR .. "/tok512.bin")
  local pieces, pos = {}, 5
  for i = 0, vocab - 1 do
    local len = int32(raw, pos + 4)
    pieces[i] = raw:sub(pos + 8, pos + 7 + len)
    pos = pos + 8 + len
  end
  return pieces
end

-- llama2.c's decode + safe_printf
local function piece_text(pieces, prev, tok)
  local p = pieces[tok]
  if prev == 1 and p:sub(1, 1) == " " then p = p:sub(2) end
  local hex = p:match("^<0x(%x%x)>$")
  if hex then p = string.char(tonumber(hex, 16)) end
  if #p == 1 and not p:match("[%g%s]") then return "" end
  return p
end

local function max_abs(a, b)
  local m = 0
  for i = 1, #a do m = math.max(m, math.abs(a[i] - b[i])) end
  return m
end

describe("llama forward on stories260K", function()
  if not exists(DIR .. "/stories260K.bin") then
    it("needs ../shared", function() pending("skipped: " .. DIR .. "/stories260K.bin not found (../shared is not available)") end)
    return
  end
  local m, cfg, emb, rms_att = load_stories()
  local V = cfg.vocab

  it("matches the reference top-5 logits of 'Once upon a time' within 1e-4", function()
    local ref = cjson.decode(slurp(DIR .. "/reference/prompt_once_upon_a_time_logits.json"))
    local logits = m:forward(ref.token_ids_with_bos):totable()
    assert.equal(V, #logits)
    local order = {}
    for i = 1, V do order[i] = i end
    table.sort(order, function(a, b) return logits[a] > logits[b] end)
    for k, e in ipairs(ref.last_position_top5) do
      assert.equal(e[1], order[k] - 1)
      assert.is_true(math.abs(logits[e[1] + 1] - e[3]) <= 1e-4, ("logit %d: %g vs %g"):format(e[1], logits[e[1] + 1], e[3]))
    end
    local all = m:forward(ref.token_ids_with_bos, { all_logits = true })
    assert.same({ 1, 5, V }, all:shape())
    for p = 1, 5 do
      local s = all:narrow(2, p, 1):sum()
      assert.is_true(math.abs(s - ref.logits_fp64_rowsum_per_position[p]) < 1e-2)
    end
  end)

  it("reproduces llama2.c's 256-step greedy text byte for byte", function()
    local pieces = load_pieces(V)
    local cache = glq.llama.kvcache(m, { max_seq = 256 })
    local greedy = glq.sampler.new({ temperature = 0 })
    local out, tok = {}, 1
    for _ = 1, 256 do
      local nxt = greedy:sample(m:forward({ tok }, { cache = cache }))[1]
      if nxt == 1 then break end
      out[#out + 1] = piece_text(pieces, tok, nxt)
      tok = nxt
    end
    assert.equal(256, cache:len())
    assert.equal(slurp(DIR .. "/reference/greedy_t0_empty_prompt_256steps.txt"), table.concat(out) .. "\n")
  end)

  local seqs = { { 1, 403, 407, 261, 378 }, { 1, 50, 77, 300, 12 } }

  it("batched prefill (B=2, T=5) equals cached decode within 1e-5", function()
    local full = m:forward(seqs, { all_logits = true })
    assert.same({ 2, 5, V }, full:shape())
    local cache = glq.llama.kvcache(m, { batch = 2, max_seq = 16 })
    for t = 1, 5 do
      local step = m:forward({ { seqs[1][t] }, { seqs[2][t] } }, { cache = cache })
      assert.same({ 2, V }, step:shape())
      assert.is_true(step:max_abs_diff(full:narrow(2, t, 1):contiguous():reshape(2, V)) <= 1e-5)
    end
    -- a prefill of 3 through the cache, then 2 decode steps, ends at the same logits
    cache:reset()
    m:forward({ { 1, 403, 407 }, { 1, 50, 77 } }, { cache = cache })
    m:forward({ { 261 }, { 300 } }, { cache = cache })
    local last = m:forward({ { 378 }, { 12 } }, { cache = cache })
    assert.is_true(last:max_abs_diff(full:narrow(2, 5, 1):contiguous():reshape(2, V)) <= 1e-5)
  end)

  it("embed + layer + head equals forward, and gives the same bytes for 1 and 2 threads", function()
    local ref = m:forward(seqs, { all_logits = true })
    local h = m:embed(seqs)
    assert.same({ 2, 5, cfg.dim }, h:shape())
    for l = 0, cfg.n_layers - 1 do m:layer(l, h) end
    assert.equal(0, m:head(h):max_abs_diff(ref))
    local n0 = glq.num_threads()
    glq.num_threads(1)
    local one = m:forward(seqs, { all_logits = true })
    glq.num_threads(2)
    local two = m:forward(seqs, { all_logits = true })
    glq.num_threads(n0)
    assert.equal(0, one:max_abs_diff(two))
    assert.equal(0, one:max_abs_diff(ref))
  end)

  it("captures the four Hessians in f64, accumulating across calls", function()
    local h = m:embed(seqs)
    local x0 = h:totable()
    local _, cap = m:layer(0, h:clone(), { capture = true })
    assert.same({ qkv = 10, o = 10, gate_up = 10, down = 10 }, cap.rows)
    assert.same({ cfg.dim, cfg.dim }, cap.qkv:shape())
    assert.same({ cfg.n_heads * cfg.head_dim, cfg.n_heads * cfg.head_dim }, cap.o:shape())
    assert.same({ cfg.ffn_dim, cfg.ffn_dim }, cap.down:shape())
    assert.equal("f64", cap.down:dtype())
    -- H_qkv = Σ xnᵀxn, xn = RMSNorm(embedding row) ⊙ attn_norm, summed here in Lua doubles
    local w = rms_att:narrow(1, 1, 1):totable()
    local D = cfg.dim
    local xn = {}
    for r = 0, 9 do
      local ss = 0
      for i = 1, D do ss = ss + x0[r * D + i] ^ 2 end
      local inv = 1 / math.sqrt(ss / D + 1e-5)
      for i = 1, D do xn[r * D + i] = x0[r * D + i] * inv * w[i] end
    end
    local H = cap.qkv:totable()
    local maxerr, maxh = 0, 0
    for i = 1, D do
      for j = 1, D do
        local s = 0
        for r = 0, 9 do s = s + xn[r * D + i] * xn[r * D + j] end
        maxerr = math.max(maxerr, math.abs(s - H[(i - 1) * D + j]))
        maxh = math.max(maxh, math.abs(s))
      end
    end
    assert.is_true(maxerr <= 1e-5 * maxh, ("H_qkv error %g of %g"):format(maxerr, maxh))
    local before = cap.down:totable()
    m:layer(0, h:clone(), { capture = cap })
    assert.same({ qkv = 20, o = 20, gate_up = 20, down = 20 }, cap.rows)
    local after = cap.down:totable()
    for i = 1, #after, 97 do assert.is_true(math.abs(after[i] - 2 * before[i]) <= 1e-12 * math.abs(after[i]) + 1e-300) end
  end)

  it("keeps f16 and INT8 (KIVI) caches close to f32 and reports their bytes", function()
    local function run(opts, steps)
      opts.max_seq = 256
      local cache = glq.llama.kvcache(m, opts)
      local greedy, tok, rows = glq.sampler.new({}), 1, {}
      for s = 1, steps do
        local lg = m:forward({ tok }, { cache = cache })
        rows[s] = lg:totable()
        tok = greedy:sample(lg)[1]
      end
      return rows, cache:bytes()
    end
    local ref, b32 = run({ dtype = "f32" }, 150)
    local f16, b16 = run({ dtype = "f16" }, 150)
    local q8, b8 = run({ dtype = "int8", residual_length = 16, group = 16 }, 150)
    local q8w = run({ dtype = "int8", residual_length = 160, group = 32 }, 150)
    local d16, d8, d8w = 0, 0, 0
    for s = 1, 150 do
      d16 = math.max(d16, max_abs(ref[s], f16[s]))
      d8 = math.max(d8, max_abs(ref[s], q8[s]))
      d8w = math.max(d8w, max_abs(ref[s], q8w[s]))
    end
    assert.is_true(d16 < 0.05, "f16 drift " .. d16)
    assert.is_true(d8 > 0 and d8 < 1.0, "int8 drift " .. d8)
    assert.equal(0, d8w) -- everything still inside the f32 window
    -- head_dim 8 makes INT8's per-token value scales and f32 window weigh heavily here
    assert.is_true(b16 < 0.51 * b32 and b8 < 0.6 * b32, ("bytes f32 %d f16 %d int8 %d"):format(b32, b16, b8))
    -- at SmolLM2 shapes (head_dim 64, 2048 positions) INT8 with a 128-token window is < 40% of f32
    local big = glq.llama.new({ dim = 576, n_layers = 30, n_heads = 9, n_kv_heads = 3, ffn_dim = 1536,
      vocab = 49152, max_seq = 2048, rope_layout = "half" })
    local f32b = glq.llama.kvcache(big, {}):bytes()
    assert.is_true(f32b >= 2 * 30 * 3 * 2048 * 64 * 4)
    assert.is_true(glq.llama.kvcache(big, { dtype = "f16" }):bytes() < 0.51 * f32b)
    assert.is_true(glq.llama.kvcache(big, { dtype = "int8" }):bytes() < 0.4 * f32b)
  end)

  it("a cache for a long context takes memory only as positions are written", function()
    local f = io.open("/proc/self/statm")
    if not f then pending("no /proc/self/statm on this system") return end
    f:close()
    local function rss_mb()
      local h = io.open("/proc/self/statm")
      local pages = tonumber(h:read("*l"):match("^%d+%s+(%d+)"))
      h:close()
      return pages * 4096 / 2 ^ 20
    end
    -- Llama-3-8B's keys and values for 16 K positions: 4.3 GB
    local big = glq.llama.new({ dim = 4096, n_layers = 32, n_heads = 32, n_kv_heads = 8, ffn_dim = 14336,
      vocab = 128, max_seq = 16384, rope_layout = "half" })
    local before = rss_mb()
    local cache = glq.llama.kvcache(big, {})
    assert.is_true(cache:bytes() >= 2 * 32 * 8 * 16384 * 128 * 4)
    local grew = rss_mb() - before
    assert.is_true(grew < 64, ("creating the cache made %.0f MB resident"):format(grew))
  end)

  it("rejects bad input with messages that name the problem", function()
    assert.has_error(function() m:forward({ 1, V }) end)
    local ok, err = pcall(function() m:forward({ 1, V }) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("outside"))
    ok, err = pcall(function() m:set_layer(0, { q = glq.linear.dense(glq.zeros("f32", { 3, 3 })) }) end)
    assert.truthy(tostring(err):find("missing"))
    local c = glq.llama.kvcache(m, { batch = 2, max_seq = 8 })
    ok, err = pcall(function() m:forward({ 1 }, { cache = c }) end)
    assert.truthy(tostring(err):find("batch"))
    local short = glq.llama.kvcache(m, { max_seq = 4 })
    ok, err = pcall(function() m:forward({ 1, 2, 3, 4, 5 }, { cache = short }) end)
    assert.truthy(tostring(err):find("max_seq"))
    assert.equal(0, short:len())
    assert.has_error(function() glq.sampler.new({ seed = -1 }) end)
    assert.has_error(function() glq.llama.kvcache(m, { dtype = "q4" }) end)
    assert.has_error(function() glq.llama.new({ dim = 8, n_layers = 1, n_heads = 2, ffn_dim = 8, vocab = 4, max_seq = 4 }) end)
  end)
end)

describe("llama forward on a random model", function()
  -- dim 128, 2 q heads / 1 kv head of 64, qk_norm, llama3 rope scaling
  local base = { dim = 128, n_layers = 2, n_heads = 2, n_kv_heads = 1, head_dim = 64, ffn_dim = 96, vocab = 50,
    max_seq = 64, rope_theta = 500000, qk_norm = true, tied = true,
    rope_scaling = { type = "llama3", factor = 8, low_freq_factor = 1, high_freq_factor = 4,
      original_max_position_embeddings = 16 } }
  local seed = 100
  local function rnd(...) seed = seed + 1; return glq.randn({ ... }, seed):mul(0.1) end
  local W = { emb = rnd(50, 128), fin = rnd(128):add(glq.full("f32", { 128 }, 1)), layers = {} }
  for l = 1, 2 do
    W.layers[l] = { attn_norm = rnd(128):add(glq.full("f32", { 128 }, 1)), ffn_norm = rnd(128):add(glq.full("f32", { 128 }, 1)),
      q_norm = rnd(64):add(glq.full("f32", { 64 }, 1)), k_norm = rnd(64):add(glq.full("f32", { 64 }, 1)),
      q = rnd(128, 128), k = rnd(64, 128), v = rnd(64, 128), o = rnd(128, 128), gate = rnd(96, 128), up = rnd(96, 128),
      down = rnd(128, 96) }
  end
  -- HF's rotate-half layout is the interleaved one with each head's rows (and q/k norms) reordered:
  -- new position i < d/2 takes old row 2i, new position d/2 + i takes old row 2i + 1
  local function to_half(t, hd)
    local shape, v = t:shape(), t:totable()
    local cols = shape[2] or 1
    local out = {}
    for r = 0, shape[1] - 1 do
      local h, i = math.floor(r / hd), r % hd
      local src = h * hd + (i < hd / 2 and 2 * i or 2 * (i - hd / 2) + 1)
      for c = 1, cols do out[r * cols + c] = v[src * cols + c] end
    end
    return glq.tensor(out, shape)
  end
  local function build(layout)
    local cfg = {}
    for k, v in pairs(base) do cfg[k] = v end
    cfg.rope_layout = layout
    local m = glq.llama.new(cfg)
    m:set_embedding(W.emb)
    m:set_final_norm(W.fin)
    for l = 0, 1 do
      local w, D = W.layers[l + 1], glq.linear.dense
      local perm = layout == "half" and function(t) return to_half(t, 64) end or function(t) return t end
      m:set_layer(l, { attn_norm = w.attn_norm, ffn_norm = w.ffn_norm, q_norm = perm(w.q_norm), k_norm = perm(w.k_norm),
        q = D(perm(w.q)), k = D(perm(w.k)), v = D(w.v), o = D(w.o), gate = D(w.gate), up = D(w.up), down = D(w.down) })
    end
    return m
  end
  local toks = { { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4 }, { 2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4, 5, 2, 3, 5, 3 } }

  it("gives the same logits for the interleaved and the rotate-half RoPE layouts", function()
    local a = build("interleaved"):forward(toks, { all_logits = true })
    local b = build("half"):forward(toks, { all_logits = true })
    assert.is_true(a:max_abs_diff(b) < 1e-4 * a:absmax(), ("%g of %g"):format(a:max_abs_diff(b), a:absmax()))
  end)

  it("prefill equals decode through f32 and windowed INT8 caches, across thread counts", function()
    local m = build("half")
    local full = m:forward(toks, { all_logits = true })
    for _, opts in ipairs({ { dtype = "f32" }, { dtype = "int8", residual_length = 64 } }) do
      opts.batch = 2
      local c = glq.llama.kvcache(m, opts)
      m:forward({ { 3, 1, 4, 1, 5, 9, 2, 6 }, { 2, 7, 1, 8, 2, 8, 1, 8 } }, { cache = c }) -- prefill 8
      for t = 9, 20 do
        local step = m:forward({ { toks[1][t] }, { toks[2][t] } }, { cache = c })
        local want = full:narrow(2, t, 1):contiguous():reshape(2, 50)
        assert.is_true(step:max_abs_diff(want) <= 1e-5 * want:absmax())
      end
      assert.equal(20, c:len())
    end
    local n0 = glq.num_threads()
    glq.num_threads(1)
    local one = m:forward(toks, { all_logits = true })
    glq.num_threads(n0)
    assert.equal(0, one:max_abs_diff(full))
  end)

  it("decodes the same bytes at 1, 2 and 3 threads through E8 and trellis layers, also with one layer in two roles", function()
    local function signs(n, s) return glq.rand({ n }, s):to("f64"):mul(2):to("i32"):to("f32"):mul(2):sub(glq.full("f32", { n }, 1)):to("f16") end
    local function e8(out, inn, s)
      local q = glq.rand({ out, inn / 8 }, s):mul(65535):to("i32"):sub(glq.full("i32", { out, inn / 8 }, 32768)):to("i16")
      return glq.e8.linear({ Qidxs = q, SU = signs(out, s + 1), SV = signs(inn, s + 2), Wscale = glq.tensor({ 0.05 }, {}, "f32"),
        out_features = out, in_features = inn }, { bits = 2 })
    end
    local function trellis(out, inn, s)
      local n = (out / 16) * (inn / 16)
      local packed = glq.rand({ n, 32 }, s):mul(65535):to("i32"):sub(glq.full("i32", { n, 32 }, 32768)):to("i16")
      return glq.trellis.linear({ trellis_packed = packed, SU = signs(out, s + 1), SV = signs(inn, s + 2),
        Wscale = glq.tensor({ 0.05 }, {}, "f32"), bits = 2, out_features = out, in_features = inn })
    end
    local function decode(shared)
      local m = build("half")
      for l = 0, 1 do
        local w = W.layers[l + 1]
        local kv, gu = e8(64, 128, 10 * l + 1), trellis(96, 128, 10 * l + 2)
        m:set_layer(l, { attn_norm = w.attn_norm, ffn_norm = w.ffn_norm, q_norm = w.q_norm, k_norm = w.k_norm,
          q = e8(128, 128, 10 * l + 3), k = kv, v = shared and kv or e8(64, 128, 10 * l + 4), o = e8(128, 128, 10 * l + 5),
          gate = gu, up = shared and gu or trellis(96, 128, 10 * l + 6), down = e8(128, 96, 10 * l + 7) })
      end
      local n0, out = glq.num_threads(), {}
      for threads = 1, 3 do
        glq.num_threads(threads)
        local c = glq.llama.kvcache(m, { batch = 2 })
        m:forward({ { 3, 1, 4, 1, 5 }, { 2, 7, 1, 8, 2 } }, { cache = c })
        out[threads] = {}
        for t = 1, 4 do out[threads][t] = m:forward({ { toks[1][t] }, { toks[2][t] } }, { cache = c }) end
      end
      glq.num_threads(n0)
      for t = 1, 4 do
        assert.equal(0, out[1][t]:max_abs_diff(out[2][t]))
        assert.equal(0, out[1][t]:max_abs_diff(out[3][t]))
      end
      return out[1][4]
    end
    assert.is_true(decode(false):max_abs_diff(decode(true)) > 0) -- the shared layers do change the model
  end)

  it("quantizes INT8 keys once they leave the f32 window, with a bounded error", function()
    local m = build("half")
    local full = m:forward(toks, { all_logits = true })
    local c = glq.llama.kvcache(m, { dtype = "int8", batch = 2, residual_length = 4, group = 4 })
    local out = m:forward(toks, { cache = c, all_logits = true }) -- the prefill itself attends in f32
    assert.is_true(out:max_abs_diff(full) <= 1e-5 * full:absmax())
    local step = m:forward({ { 1 }, { 2 } }, { cache = c }) -- now 16 of 20 cached positions are INT8
    local c32 = glq.llama.kvcache(m, { batch = 2 })
    m:forward(toks, { cache = c32 })
    local ref = m:forward({ { 1 }, { 2 } }, { cache = c32 })
    local d = step:max_abs_diff(ref)
    assert.is_true(d > 0 and d < 0.02 * ref:absmax(), ("int8 error %g of %g"):format(d, ref:absmax()))
  end)
end)

describe("dense linear", function()
  it("matches glq.matmul for f32 and bf16 weights, with a bias", function()
    local w, x, b = glq.randn({ 37, 70 }, 1), glq.randn({ 5, 70 }, 2), glq.randn({ 37 }, 3)
    local lin = glq.linear.dense(w, b)
    assert.equal("dense", lin:kind())
    assert.same({ 37, 70 }, lin:shape())
    local y = lin:forward(x):totable()
    local r = glq.matmul(x, w, { transpose_b = true }):totable()
    local bt = b:totable()
    for i = 1, 5 do for j = 1, 37 do r[(i - 1) * 37 + j] = r[(i - 1) * 37 + j] + bt[j] end end
    assert.is_true(max_abs(y, r) < 1e-4)
    local wb = w:to("bf16")
    local lb = glq.linear.dense(wb)
    assert.equal(37 * 70 * 2, lb:stored_bytes())
    assert.equal(0, lb:dequantize():max_abs_diff(wb:to("f32")))
    -- a row alone gives the same bytes as inside a batch
    assert.equal(0, lb:forward(x:narrow(1, 3, 1)):max_abs_diff(lb:forward(x):narrow(1, 3, 1)))
  end)
end)

describe("sampler", function()
  local logits = glq.tensor({ 0.5, 2, 2, -1, 1.5 })
  it("is greedy at temperature 0 (lowest index on ties)", function()
    assert.equal(1, glq.sampler.new({}):sample(logits))
    assert.same({ 1, 1 }, glq.sampler.new({}):sample(glq.tensor({ 0, 3, 3, 1, 5, 1 }, { 2, 3 })))
  end)
  it("replays a seed and follows the softmax distribution", function()
    local function draw(opts, n)
      local s, out = glq.sampler.new(opts), {}
      for i = 1, n do out[i] = s:sample(logits) end
      return out
    end
    assert.same(draw({ temperature = 1, seed = 7 }, 50), draw({ temperature = 1, seed = 7 }, 50))
    assert.are_not.same(draw({ temperature = 1, seed = 7 }, 50), draw({ temperature = 1, seed = 8 }, 50))
    local n, counts = 20000, { [0] = 0, 0, 0, 0, 0 }
    for _, t in ipairs(draw({ temperature = 1, seed = 1 }, n)) do counts[t] = counts[t] + 1 end
    local l, z = logits:totable(), 0
    for i = 1, 5 do z = z + math.exp(l[i]) end
    for i = 1, 5 do assert.is_true(math.abs(counts[i - 1] / n - math.exp(l[i]) / z) < 0.015) end
  end)
  it("restricts to top-k and top-p", function()
    for _, t in ipairs((function()
      local s, out = glq.sampler.new({ temperature = 2, top_k = 2, seed = 3 }), {}
      for i = 1, 200 do out[i] = s:sample(logits) end
      return out
    end)()) do assert.truthy(t == 1 or t == 2) end
    local s = glq.sampler.new({ temperature = 1, top_p = 0.05, seed = 3 })
    for _ = 1, 50 do assert.equal(1, s:sample(logits)) end
    assert.has_error(function() glq.sampler.new({}):sample(glq.tensor({ 0, 0 / 0 })) end)
  end)
end)
