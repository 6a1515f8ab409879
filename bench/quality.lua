-- quality.lua - the quality table: quantize a model in every configuration, then measure
-- WikiText-2 perplexity and KL divergence / top-1 agreement against the base model on the same
-- windows, with the true stored bits per weight and the checkpoint size.
--   build/glq bench/quality.lua --model M.gguf --calib wiki.utf8 --text wikitext2_test_hf_joined.txt \
--     [--nsamples 128 --seqlen 2048 --eval-seqlen 2048 --max-windows N --rows e8-2,hif4 --out DIR]
-- Prints a markdown table (also written to OUT/quality.md) and the command line that produced it.
local cli = require "glq.cli"
local fs = require "glq.fs"
local json = require "glq.json"
local progress = require "glq.progress"

local opts = cli.parse({
  prog = "glq bench/quality.lua",
  description = "Quantize a model in every configuration and measure perplexity and KL against the base.",
  options = {
    { "model", required = true, metavar = "PATH" },
    { "calib", required = true, metavar = "FILE", help = "calibration text" },
    { "text", required = true, metavar = "FILE", help = "evaluation text (WikiText-2 test, joined)" },
    { "nsamples", type = "int", default = 128 },
    { "seqlen", type = "int", default = 2048 },
    { "eval-seqlen", type = "int", default = 2048 },
    { "max-windows", type = "int", help = "evaluate the first N windows only" },
    { "rows", default = "base,e8-2,e8-3,e8-4,mixed-2.5,mixed-3.5,hif4-compat,hif4,hif4-rht,hif4-rht-ldlq" },
    { "out", default = "quality-out", metavar = "DIR" },
    { "seed", type = "int", default = 42 },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "cuda: calibration, evaluation and Hessians on the GPU" },
    { "ldlq-device", type = "choice", choices = { "auto", "cpu", "cuda" }, default = "auto", help = "where the LDLQ sweeps (E8 shell) and the trellis Viterbi searches run (auto = --device)" },
  },
}, arg)
if not opts then return end

local model, q, eval, policy = require "glq.model", require "glq.quantize", require "glq.eval", require "glq.policy"
local modelcfg = require "glq.modelcfg"
fs.mkdir_p(opts.out)

local ROWS = {
  ["e8-2"] = { label = "E8 2-bit", decide = policy.uniform { format = "e8", bits = 2 } },
  ["e8-3"] = { label = "E8 3-bit", decide = policy.uniform { format = "e8", bits = 3 } },
  ["e8-4"] = { label = "E8 4-bit", decide = policy.uniform { format = "e8", bits = 4 } },
  ["e8p-2"] = { label = "E8P 2-bit", codebook = "e8p", decide = policy.uniform { format = "e8", bits = 2 } },
  ["e8p-3"] = { label = "E8P 3-bit", codebook = "e8p", decide = policy.uniform { format = "e8", bits = 3 } },
  ["e8p-4"] = { label = "E8P 4-bit", codebook = "e8p", decide = policy.uniform { format = "e8", bits = 4 } },
  ["trellis-2"] = { label = "trellis 2-bit", decide = policy.uniform { format = "trellis", bits = 2 } },
  ["trellis-3"] = { label = "trellis 3-bit", decide = policy.uniform { format = "trellis", bits = 3 } },
  ["trellis-4"] = { label = "trellis 4-bit", decide = policy.uniform { format = "trellis", bits = 4 } },
  ["mixed-2.5"] = { label = "E8 mixed 2.5", allocate = 2.5 },
  ["mixed-3.5"] = { label = "E8 mixed 3.5", allocate = 3.5 },
  ["trellis-mixed-2.5"] = { label = "trellis mixed 2.5", codebook = "trellis", allocate = 2.5 },
  ["trellis-mixed-3.5"] = { label = "trellis mixed 3.5", codebook = "trellis", allocate = 3.5 },
  ["mixed-2.5-total"] = { label = "E8 mixed 2.5 (total-loss objective)", allocate = 2.5, objective = "total" },
  ["mixed-3.5-total"] = { label = "E8 mixed 3.5 (total-loss objective)", allocate = 3.5, objective = "total" },
  ["hif4-compat"] = { label = "HiF4 (reference rule, --compat)", calib = false, decide = function(l)
    if not policy.quantizable_roles[l.role] or policy.matches_compat_skip(l.name) then return { format = "dense" } end
    return { format = "hif4" }
  end },
  ["hif4"] = { label = "HiF4 (default policy)", calib = false, decide = policy.uniform { format = "hif4" } },
  ["hif4-rht"] = { label = "HiF4 + RHT", calib = false, decide = policy.uniform { format = "hif4", rht = true } },
  ["hif4-rht-ldlq"] = { label = "HiF4 + RHT + LDLQ", decide = policy.uniform { format = "hif4", rht = true, ldlq = true } },
}

local base = model.load(opts.model, { max_seq = opts.eval_seqlen })
local ids = eval.tokenize_file(base, opts.text)
opts.device = model.pick_device(opts.device)
opts.ldlq_device = opts.ldlq_device == "auto" and opts.device or model.pick_device(opts.ldlq_device)
if opts.device == "cuda" then base = base:cuda() end
local cfg = base.cfg
local shapes = model.layer_shapes(cfg)
local total_w = 0
for _, r in ipairs(modelcfg.roles) do total_w = total_w + shapes[r.role][1] * shapes[r.role][2] end
total_w = total_w * cfg.n_layers

local function fsize(p) local f = io.open(p, "rb"); if not f then return 0 end local n = f:seek("end"); f:close(); return n end

local lines = {}
local function emit(s)
  print(s)
  lines[#lines + 1] = s
  fs.write_atomic(fs.join(opts.out, "quality.md"), table.concat(lines, "\n") .. "\n")
end
emit(string.format("command: glq bench/quality.lua %s", table.concat(arg, " ")))
emit(string.format("machine: %d threads; calibration %d x %d tokens of %s; eval %s, seqlen %d%s",
  glq.num_threads(), opts.nsamples, opts.seqlen, opts.calib, opts.text, opts.eval_seqlen,
  opts.max_windows and (", first " .. opts.max_windows .. " windows") or ", all windows"))
emit("")
emit("| configuration | linear bits/weight (stored) | model.safetensors MB | perplexity | KL to base (mean) | KL p99 | top-1 agree | quantize s |")
emit("|---|---|---|---|---|---|---|---|")

local base_ppl
for name in opts.rows:gmatch("[^,]+") do
  local t0 = progress.now()
  if name == "base" then
    local r = eval.run(base, ids, { seqlen = opts.eval_seqlen, max_windows = opts.max_windows, quiet = true })
    base_ppl = r.ppl
    emit(string.format("| base (%s) | %s | %.1f | %.4f | 0 | 0 | 1 | - |", fs.basename(opts.model), "-",
      fsize(opts.model) / 1e6, r.ppl))
  else
    -- NAME-plain: row NAME without the closed-form scale refit (glq.rescale), the pipeline before 2026-12-06
    local base_name = name:match("^(.-)%-plain$")
    local row = ROWS[base_name or name]
    if not row then error("unknown row " .. name, 0) end
    if base_name then
      local r = {}
      for k, v in pairs(row) do r[k] = v end
      r.label, r.rescale = row.label .. " (no scale refit)", false
      row = r
    end
    local out = fs.join(opts.out, name)
    local needs_calib = row.calib ~= false
    q.run {
      model = opts.model, output = out, decide = row.decide, calib = opts.calib, nsamples = opts.nsamples,
      seqlen = opts.seqlen, seed = opts.seed, overwrite = true, quiet = true, plot = false,
      fingerprint = { row = name }, needs_calibration = needs_calib,
      allocate = row.allocate ~= nil, target_bpw = row.allocate, min_bpw = 2, max_bpw = 4,
      alloc_objective = row.objective, device = opts.device, codebook = row.codebook, rescale = row.rescale,
      ldlq_device = opts.ldlq_device ~= "cpu" and opts.ldlq_device or nil,
      allocation_path = row.allocate and fs.join(opts.out, name .. ".bpw_allocation.json") or nil,
      quantize_config = { tool_version = glq.version, source_model = opts.model, row = name },
    }
    local tq = progress.now() - t0
    io.stderr:write(string.format("row %s: quantized in %.0f s, evaluating\n", name, tq))
    -- stored bits over every decoder projection (dense-kept ones count as stored: f32 = 32)
    local rep = json.read_file(fs.join(out, "report.json"))
    local bits = 0
    for _, r in ipairs(rep.layers or rep.rows or {}) do
      local b = r.bits
      if r.format == "dense" then b = 32 end
      bits = bits + b * r.shape[1] * r.shape[2]
    end
    local qm = model.load(out, { max_seq = opts.eval_seqlen, tokenizer = base:tokenizer() })
    if opts.device == "cuda" then qm = qm:cuda() end
    local r = eval.run(qm, ids, { seqlen = opts.eval_seqlen, base = base, max_windows = opts.max_windows, quiet = true })
    emit(string.format("| %s | %.3f | %.1f | %.4f | %.5f | %.4f | %.4f | %.0f |", row.label, bits / total_w,
      fsize(fs.join(out, "model.safetensors")) / 1e6, r.ppl, r.kld_mean, r.kld_p99, r.top1, tq))
    qm = nil
    collectgarbage()
  end
end
