-- glq.quantize: the model-level pipeline behind `glq quantize` and `glq hif4`.
--   calibration tokens -> embeddings -> for each decoder layer: capture the Hessians of its four
--   distinct linear inputs (q/k/v share one, gate/up share one), ask the policy for a decision per
--   projection, quantize, swap the quantized linear in, and run the layer again so the next layer
--   sees the quantized outputs (GPTQ-style propagation) -> checkpoint, report.
-- Layers are built one at a time from the source (streaming: memory stays at about one decoder
-- layer plus the calibration activations). Every finished layer is saved in the output's
-- .glq-partial/ directory so an interrupted run can resume and give byte-identical results.
local glq = require "glq"
local core = glq.core
local model = require "glq.model"
local modelcfg = require "glq.modelcfg"
local policy = require "glq.policy"
local checkpoint = require "glq.checkpoint"
local progress = require "glq.progress"
local json = require "glq.json"
local fs = require "glq.fs"

local M = {}

local CAPTURE_OF = { q = "qkv", k = "qkv", v = "qkv", o = "o", gate = "gate_up", up = "gate_up", down = "down" }

local function log(fmt, ...) if not M.quiet then progress.log(fmt, ...) end end

-- ---------------------------------------------------------------- calibration data

-- (nsamples, seqlen) i32 tokens: the first nsamples*seqlen tokens of the text (BOS once at the
-- start), cut into contiguous windows as glq and GPTQ do.
function M.calib_from_text(m, path, nsamples, seqlen)
  local f, err = io.open(path, "rb")
  if not f then error("--calib: " .. tostring(err), 0) end
  local text = f:read("*a")
  if type(text) ~= "string" then f:close() error("--calib " .. path .. ": cannot read text from it (a directory?)", 0) end
  f:close()
  local ids = m:encode(text)
  local need = nsamples * seqlen
  if #ids < need then
    error(string.format("--calib %s has %d tokens; --nsamples %d x --seqlen %d needs %d (lower --nsamples or --seqlen, or give a longer file)",
      path, #ids, nsamples, seqlen, need), 0)
  end
  local t = glq.zeros("i32", { nsamples, seqlen })
  local p = t:ptr()
  for i = 0, need - 1 do p[i] = ids[i + 1] end
  return t, { source = path, tokens_available = #ids }
end

-- data-free calibration: nsamples sequences sampled from the model itself (temperature 1,
-- seeded), each starting at BOS, generated in batches with a KV cache.
function M.calib_self(m, nsamples, seqlen, seed, quiet)
  local t = glq.zeros("i32", { nsamples, seqlen })
  local p = t:ptr()
  local bos = m:tokenizer():bos() or 0
  local batch = math.min(nsamples, 16)
  local bar = progress.new("calib", nsamples * seqlen, { quiet = quiet })
  local done = 0
  for s0 = 0, nsamples - 1, batch do
    local B = math.min(batch, nsamples - s0)
    local cache = core.llama.kvcache(m.c, { dtype = "f32", batch = B, max_seq = seqlen })
    local sampler = core.sampler.new { temperature = 1.0, top_k = 0, top_p = 1.0, seed = seed + s0 }
    local cur = glq.zeros("i32", { B, 1 })
    local cp = cur:ptr()
    for b = 0, B - 1 do cp[b] = bos; p[(s0 + b) * seqlen] = bos end
    for pos = 1, seqlen - 1 do
      local logits = m.c:forward(cur, { cache = cache })
      local ids = sampler:sample(logits)
      if type(ids) ~= "table" then ids = { ids } end
      for b = 0, B - 1 do
        cp[b] = ids[b + 1]
        p[(s0 + b) * seqlen + pos] = ids[b + 1]
      end
      done = done + B
      bar:update(done, string.format("samples %d-%d", s0 + 1, s0 + B))
    end
    done = (s0 + B) * seqlen
  end
  bar:finish(string.format("%d self-generated sequences of %d tokens", nsamples, seqlen))
  return t, { source = "self", seed = seed }
end

-- ---------------------------------------------------------------- per-layer quantization

local function sqnr_db(W, What)
  local d = W:sub(What):norm()
  local n = W:norm()
  if d == 0 then return math.huge end
  return 20 * math.log10(n / d)
end

-- total proxy loss tr(ΔW H ΔWᵀ) (H the mean input Hessian; identity when nil)
local function proxy_loss(W, What, H)
  if H then return glq.hif4.proxy_loss(W, What, H) end
  local d = W:sub(What):norm()
  return d * d
end

local function f16_signs(signs) return signs:to("f16") end

-- the options of glq.quantize_linear for decision d
local function e8_options(name, d, opts)
  return { bpw = d.bpw, tune_iters = opts.tune_iters or 0, seed = opts.seed or 42, damp = opts.damp or 0.01, name = name,
    transform = opts.transform or checkpoint.TRANSFORM, -- "block-diagonal" with --glq-compat
    codebook = opts.codebook == "e8p" and "e8p" or nil, -- QuIP#'s E8P (its sweeps run on the CPU)
    device = opts.ldlq_device == "cuda" and "cuda" or nil } -- LDLQ sweeps on the GPU (E8 shell only)
end

-- E8 jobs {name, W, H, d} quantized side by side (glq.quantize_linears: SmolLM2-sized layers keep
-- every thread busy that way); returns their glq.quantize_linear results in order.
local function e8_side_by_side(jobs, opts)
  local args = {}
  for i, j in ipairs(jobs) do args[i] = { j[2], j[3], e8_options(j[1], j[4], opts) } end
  return #args > 0 and glq.quantize_linears(args) or {}
end

-- quantize one linear W (out x in, f32) with Hessian H (f64 or nil) per decision d; pre: its
-- glq.quantize_linear result when that was computed already (e8_side_by_side).
local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

local function dir_size(dir, pattern)
  local n = 0
  for _, f in ipairs(fs.list(dir) or {}) do
    if not pattern or f:match(pattern) then n = n + file_size(fs.join(dir, f)) end
  end
  return n
end

-- prints the checkpoint's size next to its source's and a bf16 copy's (2 bytes per weight)
function M.print_sizes(out, src, layers, dense)
  local weights = 0
  for _, e in pairs(layers) do weights = weights + e.shape[1] * e.shape[2] end
  for _, t in pairs(dense) do
    if glq.is_tensor(t) then weights = weights + t:numel() else weights = weights + t.shape[1] * t.shape[2] end
  end
  local src_size = fs.is_dir(src.path) and dir_size(src.path, "%.safetensors$") or file_size(src.path)
  local mb = function(b) return string.format("%.1f MB", b / 1e6) end
  io.stderr:write(string.format("[quantize] size: %s (model.safetensors %s); source %s; a bf16 copy %s\n",
    mb(dir_size(out)), mb(file_size(fs.join(out, "model.safetensors"))), mb(src_size), mb(2 * weights)))
end

-- returns entry (checkpoint layer entry or nil for dense), the built linear, stats
function M.quantize_linear(name, W, bias, H, d, opts, pre)
  local m, n = W:size(1), W:size(2)
  local t0 = progress.now()
  local entry, lin
  if d.format == "e8" then
    local eo = e8_options(name, d, opts)
    local tr = eo.transform
    local a = pre or glq.quantize_linear(W, H, eo)
    if pre then t0 = t0 - a.stats.seconds end
    entry = { format = "e8", bits = d.bpw, transform = tr, shape = { m, n }, bias = bias, codebook = a.codebook,
      label = a.codebook and (a.codebook .. "-" .. d.bpw) or nil,
      artifacts = { Qidxs = a.Qidxs, Qidxs2 = a.Qidxs2, SU = a.SU, SV = a.SV, Wscale = a.Wscale,
        inv_resid_scale = a.inv_resid_scale } }
  elseif d.format == "trellis" then
    local o = e8_options(name, d, opts)
    o.codebook = "trellis" -- with --ldlq-device cuda the tiles' Viterbi searches run on the GPU (same states)
    o.transform = "block-diagonal" -- glq 0.8.16's (the checkpoint reader assumes it for trellis layers)
    local a = glq.trellis.quantize_linear(W, H, o)
    entry = { format = "trellis", bits = d.bpw, variant = a.variant, transform = a.transform, shape = { m, n }, bias = bias,
      artifacts = { trellis_packed = a.trellis_packed, SU = a.SU, SV = a.SV, Wscale = a.Wscale, tlut = a.tlut } }
  elseif d.format == "hif4" then
    local pack
    if d.ldlq then
      if not H then error("layer " .. name .. ": HiF4 with LDLQ needs calibration Hessians", 0) end
      pack = glq.hif4.quantize_ldlq(W, H, { rht = d.rht or false, seed = opts.seed or 0, damp = opts.damp or 0.01 })
    elseif d.rht then
      pack = glq.hif4.quantize_rht(W, { seed = opts.seed or 0 })
    else
      pack = glq.hif4.quantize(W, { name = name })
    end
    local fields = { e6m2 = pack.e6m2, e1_8_packed = pack.e1_8_packed, e1_16_packed = pack.e1_16_packed,
      s1p2_packed = pack.s1p2_packed, shape = { m, n } }
    entry = { format = "hif4", pack = fields, shape = { m, n }, bias = bias,
      sv = pack.signs and f16_signs(pack.signs) or nil, rht_seed = pack.signs and pack.seed or nil,
      label = d.rht and (d.ldlq and "hif4+rht+ldlq" or "hif4+rht") or (d.ldlq and "hif4+ldlq" or "hif4") }
  else
    return nil, nil, { format = "dense", bits = 16, seconds = 0 }
  end
  lin = model.quantized_linear(entry, m, n, name)
  local What = lin:dequantize()
  local bits = checkpoint.stored_bpw(name, entry)
  local st = { format = d.format, label = entry.label or (d.format .. "-" .. d.bpw), bits = bits, sqnr_db = sqnr_db(W, What),
    proxy_loss = proxy_loss(W, What, H), seconds = progress.now() - t0 }
  return entry, lin, st
end

-- ---------------------------------------------------------------- the pipeline

local function hessian_summary(H)
  if not H then return nil end
  local n = H:size(1)
  local tr = 0
  for i = 1, n do tr = tr + H:get(i, i) end
  return { trace = tr, mean_diag = tr / n, n = n }
end

-- calibration hidden states of the tokens: on the GPU when o.device is "cuda" (then run_layer
-- copies each layer to the device and runs it there; Hessians come back as f64 tensors)
local function embed(m, tokens, o)
  if o.device == "cuda" then
    m.gpu = core.cuda.model(m.c)
    m.gpu:sync_head()
    return m.gpu:embed(tokens)
  end
  return m.c:embed(tokens)
end

-- run layer l over every calibration sample of `hidden` (nsamples, T, dim); with capture the
-- Hessians are returned (normalised to means) and the samples are left as they were, unless
-- in_place asks for the layer's outputs too (used when quantized outputs are not propagated)
local function run_layer(m, l, hidden, capture, in_place)
  local cap
  if m.gpu then
    m.gpu:sync_layer(l)
    local _, c = m.gpu:layer(l, hidden, { capture = capture, in_place = in_place or not capture })
    cap = c
  else
    cap = capture and {} or nil
    for s = 1, hidden:size(1) do
      local h = hidden:narrow(1, s, 1)
      if capture then
        if not in_place then h = h:clone() end
        local _, c = m.c:layer(l, h, { capture = cap })
        cap = c
      else
        m.c:layer(l, h)
      end
    end
  end
  if cap then
    for k, rows in pairs(cap.rows or {}) do
      if rows > 0 and cap[k] then cap[k] = cap[k]:mul(1 / rows):to("f64") end
    end
  end
  return cap
end

-- non-finite numbers do not survive JSON: keep them as strings
local function json_safe_stats(st)
  local t = {}
  for k, v in pairs(st) do
    if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      t[k] = v ~= v and "nan" or (v > 0 and "inf" or "-inf")
    else
      t[k] = v
    end
  end
  return t
end

-- describe layer (l, role) for policies
local function describe(cfg, l, role, H)
  local shapes = model.layer_shapes(cfg)
  return { name = modelcfg.linear_name(l, role), role = role, shape = { shapes[role][1], shapes[role][2] },
    index = l, n_layers = cfg.n_layers, hessian = hessian_summary(H) }
end

-- options (see recipes/quantize.lua): model, output, decide(layer)->decision or a profile/allocation
-- spec, calib, nsamples, seqlen, seed, tune_iters, damp, resume, overwrite, report, fingerprint, quiet
function M.run(o)
  M.quiet = o.quiet
  local t_start = progress.now()
  local src = model.open(o.model)
  local cfg = src.cfg
  -- everything that would otherwise fail only after the last layer is checked now
  src:check_linears()
  if o.report then fs.check_writable(o.report, "--report") end
  if o.plot_path then fs.check_writable(o.plot_path, "--plot") end
  if o.needs_calibration == nil then o.needs_calibration = true end
  local m = model.load(src, { lazy = not (o.needs_calibration and o.calib == "self"), max_seq = math.max(o.seqlen, 8) })
  -- a calibration file is checked before the output directory is touched
  local text_tokens, text_info
  if o.needs_calibration and o.calib ~= "self" then
    text_tokens, text_info = M.calib_from_text(m, o.calib, o.nsamples, o.seqlen)
  end
  local run = checkpoint.partial(o.output, o.fingerprint, { resume = o.resume, overwrite = o.overwrite })

  -- calibration tokens (saved with the run so a resumed run uses the very same ones)
  local calib_tokens, calib_info
  if o.needs_calibration then
    local saved = run:get("calibration")
    local tok_path = fs.join(fs.join(o.output, checkpoint.PARTIAL), "calib_tokens.i32")
    if saved and fs.exists(tok_path) then
      if saved.checksum ~= nil and glq.file_checksum(tok_path) ~= saved.checksum then
        error(string.format("%s: the saved calibration tokens (%s) do not match their checksum in state.json (the file was changed or damaged); pass --overwrite to start over",
          o.output, tok_path), 0)
      end
      calib_tokens = glq.fromfile(tok_path, "i32", { o.nsamples, o.seqlen })
      calib_info = saved
      log("[calib] reusing the run's %d x %d calibration tokens", o.nsamples, o.seqlen)
    else
      if o.calib == "self" then
        calib_tokens, calib_info = M.calib_self(m, o.nsamples, o.seqlen, o.seed, o.quiet)
      else
        calib_tokens, calib_info = text_tokens, text_info
      end
      calib_tokens:tofile(tok_path)
      calib_info.checksum = glq.file_checksum(tok_path) -- verified when the run resumes
      run:put("calibration", calib_info)
    end
    if o.calib == "self" then m = model.load(src, { lazy = true, max_seq = math.max(o.seqlen, 8) }) end
  end

  -- mixed precision: profile every candidate on real Hessians, then allocate
  local decide = o.decide
  if o.allocate then
    local map = run:get("allocation")
    if not map then
      map = M.profile_and_allocate(m, src, cfg, calib_tokens, o)
      run:put("allocation", map)
    else
      log("[alloc] reusing the run's allocation")
    end
    if o.allocation_path then fs.write_atomic(o.allocation_path, json.encode(map, { indent = 2 }) .. "\n") end
    if o.profile_only then
      log("[alloc] wrote %s (profile only: no model written)", o.allocation_path or "(nowhere)")
      return { allocation = map }
    end
    decide = policy.from_allocation(map)
    m = model.load(src, { lazy = true, max_seq = math.max(o.seqlen, 8) })
  end

  local report = require("glq.report").new()
  local hidden = calib_tokens and embed(m, calib_tokens, o)
  local total = cfg.n_layers * #modelcfg.roles
  local bar = progress.new("quantize", total, { quiet = o.quiet })
  local done = 0
  local layers = {}
  local stop_after = tonumber(os.getenv("GLQ_TEST_STOP_AFTER") or "")
  for l = 0, cfg.n_layers - 1 do
    m:load_layer(l)
    local all_saved = true
    for _, r in ipairs(modelcfg.roles) do
      if not run:has(modelcfg.linear_name(l, r.role)) then all_saved = false end
    end
    -- o.propagate == false: the next layer sees this layer's dense outputs (one pass instead of two)
    local dense_outputs = o.propagate == false
    local cap = (hidden and not all_saved) and run_layer(m, l, hidden, true, dense_outputs) or nil
    if hidden and all_saved and dense_outputs then run_layer(m, l, hidden, false) end
    -- decisions first, so that the layer's E8 projections are quantized side by side
    local decisions, weights, pre, jobs = {}, {}, {}, {}
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      if not run:has(name) then
        local H = cap and cap[CAPTURE_OF[r.role]] or nil
        decisions[name] = policy.decide(decide, describe(cfg, l, r.role, H))
        weights[name] = src:need(name .. ".weight"):to("f32")
        if decisions[name].format == "e8" then jobs[#jobs + 1] = { name, weights[name], H, decisions[name] } end
      end
    end
    for i, a in ipairs(e8_side_by_side(jobs, o)) do pre[jobs[i][1]] = a end
    jobs = nil
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local H = cap and cap[CAPTURE_OF[r.role]] or nil
      local entry, lin, st
      if run:has(name) then
        entry = run:load_layer(name)
        local stats = run:get("stats:" .. name) or {}
        if entry then
          lin = model.quantized_linear(entry, entry.shape[1], entry.shape[2], name)
        end
        st = stats
      else
        local bias = src:tensor(name .. ".bias")
        entry, lin, st = M.quantize_linear(name, weights[name], bias and bias:to("f32") or nil, H, decisions[name], o, pre[name])
        weights[name], pre[name] = nil, nil
        if entry then
          entry.stats = json_safe_stats(st)
          run:save_layer(name, entry)
        end
        run:put("stats:" .. name, json_safe_stats(st))
      end
      if lin then m:set_linear(name, lin); layers[name] = entry end
      local shapes = model.layer_shapes(cfg)[r.role]
      report:add { name = name, shape = { shapes[1], shapes[2] }, format = st.label or st.format, bits = st.bits,
        sqnr_db = st.sqnr_db, proxy_loss = st.proxy_loss, seconds = st.seconds }
      done = done + 1
      -- testing hook: simulate an interruption after N linears (GLQ_TEST_STOP_AFTER=N)
      if stop_after and done >= stop_after then error(string.format("interrupted after %d linears (GLQ_TEST_STOP_AFTER)", done), 0) end
      bar:update(done, st.sqnr_db and string.format("%s %s %.2f dB", name, st.label or st.format, st.sqnr_db) or name)
    end
    if hidden and not dense_outputs then run_layer(m, l, hidden, false) end
    if m.gpu then m.gpu:drop_layer(l) end
  end
  bar:finish(string.format("%d linears", total))

  -- checkpoint
  local dense = {}
  -- dense tensors (norms stay exact): keep = the source's dtype; bf16/f16; q8_0 = ggml Q8_0 blocks (our
  -- layout only); auto (default) = a GGUF's Q8_0 matrices keep their blocks, wider floats become bf16
  local function keep(name)
    local t = src:tensor(name)
    if not t then return end
    local dt = o.dense_dtype or "auto"
    if name:find("norm%.weight$") or dt == "keep" then dense[name] = t return end
    local raw, ty
    if src.kind == "gguf" and src.by_hf and src.by_hf[name] then raw, ty = src.g:raw(src.by_hf[name]) end
    local s = t:shape()
    local matrix = #s == 2 and s[2] % 32 == 0
    if matrix and (dt == "q8_0" or (dt == "auto" and ty == "q8_0" and not o.python_compat)) then
      -- the file's own blocks when it has them (lossless), else ggml's Q8_0 rounding
      local blocks = ty == "q8_0" and raw:reshape({ s[1], s[2] / 32 * 34 }) or glq.gguf.quantize_q8_0(t:dtype() == "f32" and t or t:to("f32"))
      dense[name] = { format = "q8_0", blocks = blocks, shape = { s[1], s[2] } }
      return
    end
    if dt == "auto" then dt = (t:dtype() == "f32" or t:dtype() == "f64") and "bf16" or t:dtype() end
    if dt == "q8_0" then dt = "bf16" end -- vectors (biases) and dims that are not whole blocks
    if t:dtype() ~= dt then t = t:to(dt) end
    dense[name] = t
  end
  keep("model.embed_tokens.weight")
  keep("model.norm.weight")
  if not cfg.tied then keep("lm_head.weight") end
  for l = 0, cfg.n_layers - 1 do
    local p = string.format("model.layers.%d.", l)
    keep(p .. "input_layernorm.weight")
    keep(p .. "post_attention_layernorm.weight")
    if cfg.qk_norm then keep(p .. "self_attn.q_norm.weight"); keep(p .. "self_attn.k_norm.weight") end
    for _, r in ipairs(modelcfg.roles) do
      local name = p .. r.hf
      if not layers[name] then keep(name .. ".weight"); keep(name .. ".bias") end
    end
  end
  local hf_config = src.hf_config
  local tok_files = M.tokenizer_files(src)
  local qc = o.quantize_config or {}
  qc.total_time_s = math.floor((progress.now() - t_start) * 10 + 0.5) / 10
  run:finish {
    config = hf_config, layers = layers, dense = dense, quantize_config = qc, python_compat = o.python_compat,
    tokenizer_files = tok_files, hif4_skip_keywords = o.hif4_skip_keywords,
  }
  log("[quantize] wrote %s", o.output)
  if not o.quiet then M.print_sizes(o.output, src, layers, dense) end
  local rpath = o.report or fs.join(o.output, "report.json")
  fs.mkdir_p(fs.dirname(rpath)) -- check_writable probed the nearest existing directory above it
  report:write_json(rpath)
  if not o.quiet then io.stderr:write(report:table(), "\n") end
  if o.plot ~= false then
    local ok, perr = pcall(function()
      require("glq.plot").write(o.plot_path or fs.join(o.output, "report.svg"), report:data())
    end)
    if not ok then log("[quantize] plot skipped: %s", tostring(perr)) end
  end
  return { report = report, output = o.output }
end

-- tokenizer files for the checkpoint: copied from an HF directory, or a tokenizer.json written
-- from the GGUF vocabulary (so eval/generate work on the checkpoint alone)
function M.tokenizer_files(src)
  local files = {}
  if src.kind == "gguf" then
    local tokmod = require "glq.tokenizer"
    if tokmod.gguf_to_json then
      files["tokenizer.json"] = tokmod.gguf_to_json(src.g)
    end
    if tokmod.gguf_config then
      files["tokenizer_config.json"] = json.encode(tokmod.gguf_config(src.g), { indent = 2 }) .. "\n"
    end
  else
    for _, f in ipairs { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
      "tokenizer.model", "vocab.json", "merges.txt" } do
      local p = fs.join(src.path, f)
      if fs.exists(p) then files[f] = fs.read(p) end
    end
  end
  return files
end

-- ---------------------------------------------------------------- mixed precision

-- candidates per layer: E8 at each allowed bit width (and HiF4 when enabled)
local function candidates(o)
  local c = {}
  for b = o.min_bpw or 2, o.max_bpw or 4 do c[#c + 1] = { format = "e8", bpw = b } end
  if o.hif4_candidate then c[#c + 1] = { format = "hif4", rht = o.hif4_rht, ldlq = o.hif4_ldlq } end
  return c
end

-- the profiling pass: every layer's proxy loss at every candidate, measured on its real Hessian
-- (inputs propagate through the dense model), then the exact knapsack allocation
function M.profile_and_allocate(m, src, cfg, calib_tokens, o)
  local alloc = require "glq.alloc"
  local cands = candidates(o)
  local hidden = calib_tokens and embed(m, calib_tokens, o)
  local total = cfg.n_layers * #modelcfg.roles
  local bar = progress.new("profile", total, { quiet = o.quiet })
  local layers, done = {}, 0
  for l = 0, cfg.n_layers - 1 do
    m:load_layer(l)
    local cap = hidden and run_layer(m, l, hidden, true) or nil
    -- every E8 candidate of the layer's projections side by side
    local jobs, pre, weights = {}, {}, {}
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local W = src:need(name .. ".weight"):to("f32")
      weights[name] = W
      for ci, d in ipairs(cands) do
        if d.format == "e8" then jobs[#jobs + 1] = { name, W, cap and cap[CAPTURE_OF[r.role]] or nil, d, ci } end
      end
    end
    for i, a in ipairs(e8_side_by_side(jobs, o)) do pre[jobs[i][1] .. "#" .. jobs[i][5]] = a end
    jobs = nil
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local H = cap and cap[CAPTURE_OF[r.role]] or nil
      local W = weights[name]
      weights[name] = nil
      -- "relative" (default): each loss over the layer's output energy tr(W H Wᵀ) (1/SQNR at its
      -- outputs), so layers with large activations do not dominate; "total": the raw tr(ΔW H ΔWᵀ).
      -- On SmolLM2-135M (full protocol) relative gave perplexity 26.71 vs 28.45 at 3.5 bits.
      local scale = 1
      if (o.alloc_objective or "relative") == "relative" then
        local e = proxy_loss(W, glq.zeros("f32", { W:size(1), W:size(2) }), H)
        scale = e > 0 and 1 / e or 1
      end
      local opts = {}
      for ci, d in ipairs(cands) do
        local entry, _, st = M.quantize_linear(name, W, nil, H, d, o, pre[name .. "#" .. ci])
        opts[#opts + 1] = { bits = st.bits, loss = st.proxy_loss * scale, key = d.format == "e8" and d.bpw or (entry.label or "hif4") }
      end
      layers[#layers + 1] = { name = name, numel = W:numel(), options = opts }
      done = done + 1
      bar:update(done, name)
    end
    if hidden then run_layer(m, l, hidden, false) end
    if m.gpu then m.gpu:drop_layer(l) end
  end
  bar:finish("profiled " .. #layers .. " linears")
  local choice, summary = alloc.allocate(layers, o.target_bpw)
  log("[alloc] target %.3f bits/weight: allocated %.3f, %s proxy loss %.4g", o.target_bpw, summary.bits,
    o.alloc_objective or "relative", summary.loss)
  return alloc.to_map(choice)
end

return M
