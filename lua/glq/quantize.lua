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
local formats = require "glq.formats"
local events = require "glq.events"
local rescale = require "glq.rescale"

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

-- ---------------------------------------------------------------- options

-- M.run's options, checked in one place and split into small named groups (an unknown key or a
-- value of the wrong type is refused). Each group is what one step reads:
--   run:   model, output (required), fingerprint, resume, overwrite, quiet -> the source and the resumable run
--   calib: calib ("self" or a text file), nsamples, seqlen, seed, needs_calibration (default true),
--          device ("cuda": calibration forward on the GPU), propagate (false: the next layer sees dense outputs)
--   quant: decide(layer) -> decision (glq.policy), codebook ("e8p"/"trellis" turn E8 decisions, and the
--          allocation's candidates, into that codebook), transform, tune_iters, damp, seed, ldlq_device,
--          rescale (default true: refit each layer's SU/SV, glq.rescale) -> glq.formats' quantize / ldlq_options
--   alloc: allocate (mixed precision), target_bpw, min_bpw/max_bpw (read as min_bits/max_bits: E8 widths),
--          alloc_objective, hif4_candidate, hif4_rht, hif4_ldlq, profile_only, allocation_path
--   write: dense_dtype, python_compat, quantize_config, hif4_skip_keywords, report, plot, plot_path
local OPTION_GROUPS = {
  run = { model = "string", output = "string", fingerprint = "table", resume = "boolean", overwrite = "boolean", quiet = "boolean" },
  calib = { calib = "string", nsamples = "number", seqlen = "number", seed = "number", needs_calibration = "boolean",
    device = "string", propagate = "boolean" },
  quant = { decide = "function", codebook = "string", transform = "string", tune_iters = "number", damp = "number",
    seed = "number", ldlq_device = "string", rescale = "boolean" },
  alloc = { allocate = "boolean", target_bpw = "number", min_bpw = "number", max_bpw = "number", alloc_objective = "string",
    hif4_candidate = "boolean", hif4_rht = "boolean", hif4_ldlq = "boolean", profile_only = "boolean", allocation_path = "string" },
  write = { dense_dtype = "string", python_compat = "boolean", quantize_config = "table", hif4_skip_keywords = "table",
    report = "string", plot = "boolean", plot_path = "string" },
}
local RENAMED = { min_bpw = "min_bits", max_bpw = "max_bits" } -- the CLI's names for widths

local function option_error(fmt, ...) error("glq.quantize.run: " .. string.format(fmt, ...), 0) end

function M.options(o)
  if type(o) ~= "table" then option_error("options must be a table, got %s", type(o)) end
  local g = {}
  for name in pairs(OPTION_GROUPS) do g[name] = {} end
  for k, v in pairs(o) do
    local known = false
    for name, keys in pairs(OPTION_GROUPS) do
      if keys[k] then
        if type(v) ~= keys[k] then option_error("option %s must be a %s, got %s", tostring(k), keys[k], type(v)) end
        g[name][RENAMED[k] or k], known = v, true
      end
    end
    if not known then option_error("unknown option '%s'", tostring(k)) end
  end
  if not g.run.model or not g.run.output then option_error("model and output are required") end
  if not g.quant.decide and not g.alloc.allocate then option_error("decide (a policy) or allocate is required") end
  if g.calib.needs_calibration == nil then g.calib.needs_calibration = true end
  if g.calib.needs_calibration and not (g.calib.nsamples and g.calib.seqlen) then
    option_error("calibration needs nsamples and seqlen")
  end
  if g.alloc.allocate and not g.alloc.target_bpw then option_error("allocate needs target_bpw") end
  if g.quant.rescale == nil then g.quant.rescale = true end
  -- an "e8" decision (a policy's, a bpw map's width) means the run's codebook
  local cb = g.quant.codebook
  g.quant.book_format = (cb == "e8p" or cb == "trellis") and cb or "e8"
  return g
end

-- ---------------------------------------------------------------- per-linear quantization

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

-- jobs {name=, W=, H=, d=}: the glq.quantize_linear results of those whose format quantizes side by side
-- (glq.quantize_linears: SmolLM2-sized layers keep every thread busy that way), by job index
local function side_by_side(jobs, quant)
  local args, at, pre = {}, {}, {}
  for i, j in ipairs(jobs) do
    local f = formats.get(j.d.format)
    if f.side_by_side then
      args[#args + 1] = { j.W, j.H, f.ldlq_options(j.name, j.d, quant) }
      at[#args] = i
    end
  end
  if #args > 0 then
    for k, a in ipairs(glq.quantize_linears(args)) do pre[at[k]] = a end
  end
  return pre
end

-- Quantizes one linear W (out x in, f32) with Hessian H (f64 or nil) per decision d (quant: the run's
-- quant options; pre: its glq.quantize_linear result when computed side by side already). Returns its
-- checkpoint entry (nil when it stays dense), the built linear and stats {format, label, stored_bpw,
-- sqnr_db, proxy_loss, seconds}.
function M.quantize_linear(name, W, bias, H, d, quant, pre)
  local f = formats.get(d.format)
  if not f.quantize then return nil, nil, { format = d.format, label = f.label(d), stored_bpw = 16, seconds = 0 } end
  local t0 = progress.now()
  if pre then t0 = t0 - pre.stats.seconds end
  local entry = f.quantize(name, W, H, d, quant, pre)
  entry.bias = bias
  local lin = model.quantized_linear(entry, W:size(1), W:size(2), name)
  local What = lin:dequantize()
  local a = entry.artifacts
  if quant.rescale and a and a.SU and a.SV then -- refit SU/SV (glq.rescale), then the layer as stored
    rescale.apply(a, W, What, H, { damp = quant.damp or 0.01 })
    lin = model.quantized_linear(entry, W:size(1), W:size(2), name)
    What = lin:dequantize()
  end
  local st = { format = d.format, label = f.label(d), stored_bpw = checkpoint.stored_bpw(name, entry), sqnr_db = sqnr_db(W, What),
    proxy_loss = proxy_loss(W, What, H), seconds = progress.now() - t0 }
  return entry, lin, st
end

-- ---------------------------------------------------------------- the layer loop

local function hessian_summary(H)
  if not H then return nil end
  local n = H:size(1)
  local tr = 0
  for i = 1, n do tr = tr + H:get(i, i) end
  return { trace = tr, mean_diag = tr / n, n = n }
end

-- calibration hidden states of the tokens, on o.device ("cuda": the model's forward moves to the GPU,
-- which then holds the head and, while run_layer uses it, one decoder layer)
local function embed(m, tokens, o)
  m:use(o.device or "cpu", { layers = false })
  return m.c:embed(tokens)
end

-- run layer l over every calibration sample of `hidden` (nsamples, T, dim) on the model's device (its
-- copy of the layer refreshed first); with capture the Hessians are returned (normalised to means) and
-- the samples are left as they were, unless in_place asks for the layer's outputs too (used when
-- quantized outputs are not propagated)
local function run_layer(m, l, hidden, capture, in_place)
  m.c:sync_layer(l)
  local _, cap = m.c:layer(l, hidden, { capture = capture, in_place = in_place or not capture })
  if cap then
    for k, rows in pairs(cap.rows or {}) do
      if rows > 0 and cap[k] then cap[k] = cap[k]:mul(1 / rows):to("f64") end
    end
  end
  return cap
end

-- The one walk over the decoder layers, for quantizing and for profiling. For each layer l: load it;
-- when capture(l), capture the Hessians of its linear inputs over the calibration hidden states
-- (nsamples, T, dim); visit(l, cap) does the layer's work; then the hidden states move on to the next
-- layer: the dense layer's outputs when dense_outputs (computed by the capture pass itself), else the
-- outputs of the layer as visit left it (its quantized linears swapped in). hidden may be nil (no
-- calibration): then visit gets no Hessians.
local function each_layer(m, cfg, hidden, o)
  for l = 0, cfg.n_layers - 1 do
    m:load_layer(l)
    local capture = hidden ~= nil and o.capture(l)
    local cap = capture and run_layer(m, l, hidden, true, o.dense_outputs) or nil
    if hidden and not capture and o.dense_outputs then run_layer(m, l, hidden, false) end
    o.visit(l, cap)
    if hidden and not o.dense_outputs then run_layer(m, l, hidden, false) end
    m.c:drop_layer(l)
  end
end

-- describe layer (l, role) for policies
local function describe(cfg, l, role, H)
  local shapes = model.layer_shapes(cfg)
  return { name = modelcfg.linear_name(l, role), role = role, shape = { shapes[role][1], shapes[role][2] },
    index = l, n_layers = cfg.n_layers, hessian = hessian_summary(H) }
end

-- the policy's decision for a layer; "e8" stands for the run's codebook
local function decide(quant, layer)
  local d = policy.decide(quant.decide, layer)
  if d.format == "e8" and quant.book_format ~= "e8" then
    local t = {}
    for k, v in pairs(d) do t[k] = v end
    t.format = quant.book_format
    d = t
  end
  return d
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

-- Quantizes every decoder projection the run has not saved yet (GPTQ-style: each layer is calibrated on
-- the outputs of the quantized layers before it unless propagate is false), swaps the quantized
-- linears into m and saves each to the run as it finishes; emits "quantize.linear" {name, done, total}
-- after each linear (glq.events). Returns the checkpoint entries by name and the report.
local function quantize_layers(g, m, src, run, hidden)
  local cfg = src.cfg
  local report = require("glq.report").new()
  local total = cfg.n_layers * #modelcfg.roles
  local bar = progress.new("quantize", total, { quiet = g.run.quiet })
  local done, layers = 0, {}
  local function pending(l)
    for _, r in ipairs(modelcfg.roles) do
      if not run:has(modelcfg.linear_name(l, r.role)) then return true end
    end
    return false
  end
  local function visit(l, cap)
    -- decisions first, so that the layer's E8 projections are quantized side by side
    local jobs, job_of = {}, {}
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      if not run:has(name) then
        local H = cap and cap[CAPTURE_OF[r.role]] or nil
        jobs[#jobs + 1] = { name = name, H = H, d = decide(g.quant, describe(cfg, l, r.role, H)),
          W = src:need(name .. ".weight"):to("f32") }
        job_of[name] = #jobs
      end
    end
    local pre = side_by_side(jobs, g.quant)
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local entry, lin, st
      local i = job_of[name]
      if not i then -- saved by the run this one resumes
        entry = run:load_layer(name)
        if entry then lin = model.quantized_linear(entry, entry.shape[1], entry.shape[2], name) end
        st = run:get("stats:" .. name) or {}
      else
        local j = jobs[i]
        local bias = src:tensor(name .. ".bias")
        entry, lin, st = M.quantize_linear(name, j.W, bias and bias:to("f32") or nil, j.H, j.d, g.quant, pre[i])
        jobs[i], pre[i] = nil, nil
        if entry then
          entry.stats = json_safe_stats(st)
          run:save_layer(name, entry)
        end
        run:put("stats:" .. name, json_safe_stats(st))
      end
      if lin then m:set_linear(name, lin); layers[name] = entry end
      local shape = model.layer_shapes(cfg)[r.role]
      report:add { name = name, shape = { shape[1], shape[2] }, format = st.label or st.format, bits = st.stored_bpw,
        sqnr_db = st.sqnr_db, proxy_loss = st.proxy_loss, seconds = st.seconds }
      done = done + 1
      events.emit("quantize.linear", { name = name, done = done, total = total })
      bar:update(done, st.sqnr_db and string.format("%s %s %.2f dB", name, st.label or st.format, st.sqnr_db) or name)
    end
  end
  each_layer(m, cfg, hidden, { capture = pending, dense_outputs = g.calib.propagate == false, visit = visit })
  bar:finish(string.format("%d linears", total))
  return layers, report
end

-- ---------------------------------------------------------------- mixed precision

-- candidates per layer: the run's codebook at each allowed width (and HiF4 when enabled)
local function candidates(g)
  local c = {}
  for b = g.alloc.min_bits or 2, g.alloc.max_bits or 4 do c[#c + 1] = { format = g.quant.book_format, bits = b } end
  if g.alloc.hif4_candidate then c[#c + 1] = { format = "hif4", rht = g.alloc.hif4_rht, ldlq = g.alloc.hif4_ldlq } end
  return c
end

-- The profiling pass: every layer's proxy loss at every candidate, measured on its real Hessian
-- (inputs propagate through the dense model), then the exact knapsack allocation (a bpw map).
local function profile_and_allocate(g, m, src, hidden)
  local cfg = src.cfg
  local alloc = require "glq.alloc"
  local cands = candidates(g)
  local total = cfg.n_layers * #modelcfg.roles
  local bar = progress.new("profile", total, { quiet = g.run.quiet })
  local layers = {}
  local function visit(l, cap)
    -- every side-by-side candidate of the layer's projections together
    local jobs = {}
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role)
      local W = src:need(name .. ".weight"):to("f32")
      for _, d in ipairs(cands) do jobs[#jobs + 1] = { name = name, W = W, H = cap and cap[CAPTURE_OF[r.role]] or nil, d = d } end
    end
    local pre = side_by_side(jobs, g.quant)
    for ri = 1, #modelcfg.roles do
      local first = jobs[(ri - 1) * #cands + 1]
      local W, H = first.W, first.H
      -- "relative" (default): each loss over the layer's output energy tr(W H Wᵀ) (1/SQNR at its
      -- outputs), so layers with large activations do not dominate; "total": the raw tr(ΔW H ΔWᵀ).
      -- On SmolLM2-135M (full protocol) relative gave perplexity 26.71 vs 28.45 at 3.5 bits.
      local scale = 1
      if (g.alloc.alloc_objective or "relative") == "relative" then
        local e = proxy_loss(W, glq.zeros("f32", { W:size(1), W:size(2) }), H)
        scale = e > 0 and 1 / e or 1
      end
      local opts = {}
      for ci, d in ipairs(cands) do
        local i = (ri - 1) * #cands + ci
        local _, _, st = M.quantize_linear(first.name, W, nil, H, d, g.quant, pre[i])
        jobs[i], pre[i] = nil, nil
        opts[#opts + 1] = { bits = st.stored_bpw, loss = st.proxy_loss * scale, key = formats.get(d.format).alloc_value(d) }
      end
      layers[#layers + 1] = { name = first.name, numel = W:numel(), options = opts }
      bar:update(#layers, first.name)
    end
  end
  each_layer(m, cfg, hidden, { capture = function() return true end, dense_outputs = true, visit = visit })
  bar:finish("profiled " .. #layers .. " linears")
  local choice, summary = alloc.allocate(layers, g.alloc.target_bpw)
  log("[alloc] target %.3f bits/weight: allocated %.3f, %s proxy loss %.4g", g.alloc.target_bpw, summary.bits,
    g.alloc.alloc_objective or "relative", summary.loss)
  return alloc.to_map(choice)
end

-- ---------------------------------------------------------------- the pipeline's steps

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


-- the source, checked for everything that would otherwise fail only after the last layer
local function open_source(g)
  local src = model.open(g.run.model)
  src:check_linears()
  if g.write.report then fs.check_writable(g.write.report, "--report") end
  if g.write.plot_path then fs.check_writable(g.write.plot_path, "--plot") end
  return src
end

local function load_model(src, g, lazy)
  return model.load(src, { lazy = lazy, max_seq = math.max(g.calib.seqlen or 0, 8) })
end

-- the calibration tokens, saved with the run so that a resumed run uses the very same ones (text_tokens:
-- read from the text file before the run was opened); nil without calibration
local function calibration_tokens(g, m, run, text_tokens, text_info)
  local c = g.calib
  if not c.needs_calibration then return nil end
  local saved = run:get("calibration")
  local tok_path = fs.join(fs.join(g.run.output, checkpoint.PARTIAL), "calib_tokens.i32")
  if saved and fs.exists(tok_path) then
    if saved.checksum ~= nil and glq.file_checksum(tok_path) ~= saved.checksum then
      error(string.format("%s: the saved calibration tokens (%s) do not match their checksum in state.json (the file was changed or damaged); pass --overwrite to start over",
        g.run.output, tok_path), 0)
    end
    log("[calib] reusing the run's %d x %d calibration tokens", c.nsamples, c.seqlen)
    return glq.fromfile(tok_path, "i32", { c.nsamples, c.seqlen })
  end
  local tokens, info = text_tokens, text_info
  if c.calib == "self" then tokens, info = M.calib_self(m, c.nsamples, c.seqlen, c.seed, g.run.quiet) end
  tokens:tofile(tok_path)
  info.checksum = glq.file_checksum(tok_path) -- verified when the run resumes
  run:put("calibration", info)
  return tokens
end

-- mixed precision: the run's allocation (profiled now, or saved by the run this one resumes) as a policy
local function allocation(g, m, src, run, tokens)
  local map = run:get("allocation")
  if not map then
    map = profile_and_allocate(g, m, src, tokens and embed(m, tokens, g.calib))
    run:put("allocation", map)
  else
    log("[alloc] reusing the run's allocation")
  end
  if g.alloc.allocation_path then fs.write_atomic(g.alloc.allocation_path, json.encode(map, { indent = 2 }) .. "\n") end
  return map
end

-- the tensors the checkpoint keeps dense: embeddings, norms (exact), head, unquantized projections.
-- dense_dtype: keep = the source's dtype; bf16/f16; q8_0 = ggml Q8_0 blocks, hif4 = HiF4 (our layout only); auto
-- (default) = a GGUF's Q8_0 matrices keep their blocks, wider floats become bf16
local function dense_tensors(g, src, layers)
  local cfg = src.cfg
  local dense = {}
  local function keep(name)
    local t = src:tensor(name)
    if not t then return end
    local dt = g.write.dense_dtype or "auto"
    if name:find("norm%.weight$") or dt == "keep" then dense[name] = t return end
    local raw, ty
    if src.kind == "gguf" and src.by_hf and src.by_hf[name] then raw, ty = src.g:raw(src.by_hf[name]) end
    local s = t:shape()
    local matrix = #s == 2 and s[2] % 32 == 0
    if matrix and (dt == "q8_0" or (dt == "auto" and ty == "q8_0" and not g.write.python_compat)) then
      -- the file's own blocks when it has them (lossless), else ggml's Q8_0 rounding
      local blocks = ty == "q8_0" and raw:reshape({ s[1], s[2] / 32 * 34 }) or glq.gguf.quantize_q8_0(t:dtype() == "f32" and t or t:to("f32"))
      dense[name] = { format = "q8_0", blocks = blocks, shape = { s[1], s[2] } }
      return
    end
    if #s == 2 and dt == "hif4" then -- HiF4 fields (our layout only), any number of columns
      dense[name] = { format = "hif4", pack = glq.hif4.quantize(t:dtype() == "f32" and t or t:to("f32"), { name = name }), shape = { s[1], s[2] } }
      return
    end
    if dt == "auto" then dt = (t:dtype() == "f32" or t:dtype() == "f64") and "bf16" or t:dtype() end
    if dt == "q8_0" or dt == "hif4" then dt = "bf16" end -- vectors (biases) and dims that are not whole blocks
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
  return dense
end

-- the checkpoint (from the run's saved layers), its report, the size line and the plot
local function finish(g, src, run, layers, report, t_start)
  local dense = dense_tensors(g, src, layers)
  local qc = g.write.quantize_config or {}
  qc.total_time_s = math.floor((progress.now() - t_start) * 10 + 0.5) / 10
  run:finish {
    config = src.hf_config, layers = layers, dense = dense, quantize_config = qc, python_compat = g.write.python_compat,
    tokenizer_files = M.tokenizer_files(src), hif4_skip_keywords = g.write.hif4_skip_keywords,
  }
  log("[quantize] wrote %s", g.run.output)
  if not g.run.quiet then M.print_sizes(g.run.output, src, layers, dense) end
  local rpath = g.write.report or fs.join(g.run.output, "report.json")
  fs.mkdir_p(fs.dirname(rpath)) -- check_writable probed the nearest existing directory above it
  report:write_json(rpath)
  if not g.run.quiet then io.stderr:write(report:table(), "\n") end
  if g.write.plot ~= false then
    local ok, perr = pcall(function()
      require("glq.plot").write(g.write.plot_path or fs.join(g.run.output, "report.svg"), report:data())
    end)
    if not ok then log("[quantize] plot skipped: %s", tostring(perr)) end
  end
end

-- Runs the pipeline (options: M.options; recipes/quantize.lua and recipes/hif4.lua build them):
-- source -> calibration tokens -> [profiling and allocation] -> the layer loop -> checkpoint, report.
-- Returns {report =, output =}, or {allocation =} with profile_only.
function M.run(o)
  local g = M.options(o)
  M.quiet = g.run.quiet
  local t_start = progress.now()
  local src = open_source(g)
  local c = g.calib
  local m = load_model(src, g, not (c.needs_calibration and c.calib == "self"))
  -- a calibration file is checked before the output directory is touched
  local text_tokens, text_info
  if c.needs_calibration and c.calib ~= "self" then
    text_tokens, text_info = M.calib_from_text(m, c.calib, c.nsamples, c.seqlen)
  end
  local run = checkpoint.partial(g.run.output, g.run.fingerprint, { resume = g.run.resume, overwrite = g.run.overwrite })
  local tokens = calibration_tokens(g, m, run, text_tokens, text_info)
  if c.needs_calibration and c.calib == "self" then m = load_model(src, g, true) end -- drop the sampled-from model
  if g.alloc.allocate then
    local map = allocation(g, m, src, run, tokens)
    if g.alloc.profile_only then
      log("[alloc] wrote %s (profile only: no model written)", g.alloc.allocation_path or "(nowhere)")
      return { allocation = map }
    end
    g.quant.decide = policy.from_allocation(map)
    m = load_model(src, g, true)
  end
  local layers, report = quantize_layers(g, m, src, run, tokens and embed(m, tokens, c))
  finish(g, src, run, layers, report, t_start)
  return { report = report, output = g.run.output }
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

return M
