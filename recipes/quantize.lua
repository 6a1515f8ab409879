-- glq quantize: quantize a model's decoder projections to E8 (2/3/4 bits), HiF4 or a measured
-- mixed-precision allocation, and write a checkpoint that `glq eval` / `glq generate` load.
local cli = require "glq.cli"
local json = require "glq.json"
local fs = require "glq.fs"

local opts = cli.parse({
  prog = "glq quantize",
  description = "Quantize a Llama-family model (GGUF file or HF directory) to E8 lattice codes or HiF4. "
    .. "A fractional --bpw (or --min-bpw/--max-bpw) profiles every layer at every candidate on its "
    .. "calibration Hessian and allocates bits to minimise the total proxy loss.",
  options = {
    { "model", required = true, metavar = "PATH", help = "input model: GGUF file or Hugging Face directory" },
    { "output", required = true, metavar = "DIR", help = "output checkpoint directory" },
    { "bpw", type = "number", default = 2, help = "bits per weight: 2, 3, 4, or a fraction for mixed precision (e.g. 2.5)" },
    { "min-bpw", type = "int", help = "smallest E8 width for mixed precision (2..4; default 2)" },
    { "max-bpw", type = "int", help = "largest E8 width for mixed precision (2..4; default 4)" },
    { "bpw-map", metavar = "FILE", help = "bpw_allocation.json from a profiling run: quantize with it" },
    { "alloc-objective", type = "choice", choices = { "relative", "total" }, default = "relative", help = "mixed precision minimises the sum of each layer's proxy loss tr(dW H dW^T) over its output energy tr(W H W^T) (relative), or the plain sum (total)" },
    { "profile-only", type = "bool", help = "with a fractional --bpw: write bpw_allocation.json and stop" },
    { "tune-iters", type = "int", min = 0, default = 0, help = "extra LDLQ refinement passes" },
    { "nsamples", type = "int", min = 1, default = 128, help = "calibration sequences" },
    { "seqlen", type = "int", min = 2, default = 2048, help = "calibration sequence length in tokens" },
    { "calib", default = "self", metavar = "FILE|self", help = "calibration text file, or 'self': sequences sampled from the model (data-free, seeded)" },
    { "policy", metavar = "FILE.lua", help = "per-layer policy: returns function(layer, default) -> decision" },
    { "format", type = "choice", choices = { "e8", "hif4", "auto" }, default = "e8", help = "e8; hif4 for every projection; auto: HiF4 joins the mixed-precision candidates" },
    { "codebook", type = "choice", choices = { "e8", "e8p", "trellis" }, default = "e8", help = "codebook of the quantized projections: e8 (glq's E8 shell, 8 weights per code), e8p (QuIP#'s E8P: 256-entry absolute grid + signs, glq 0.8.16's indices; 3 bits add an E81B stage, 4 an E8P stage; our checkpoint layout, LDLQ on the CPU; the shell book's quality within a few % at equal bits (docs/results.md)) or trellis (QTIP's bitshift trellis, 3inst code, 16x16 tiles, glq 0.8.16's layout; --bpw 2, 3, 4 or a fraction (mixed precision among the trellis widths); sides padded to multiples of 32; its Viterbi search is much slower than e8's: SmolLM2-135M at 2 bits in ~2 min with --device cuda on the H100 machine, hours on 2 CPU cores)" },
    { "hif4-rht", type = "bool", help = "HiF4 with a randomized Hadamard rotation of the input dimension" },
    { "hif4-ldlq", type = "bool", help = "HiF4 with LDLQ error feedback from the calibration Hessian" },
    { "rescale", type = "bool", default = true, help = "refit each quantized layer's row and column scales (SU/SV) in closed form on the damped calibration Hessian after its codes are chosen: lower proxy loss and KL at no cost in bits, format-compatible (docs/results.md); --no-rescale keeps the LDLQ scales" },
    { "propagate", type = "bool", default = true, help = "calibrate each layer on the outputs of the already-quantized earlier layers (GPTQ-style); --no-propagate uses the dense model's activations" },
    { "dense-dtype", type = "choice", choices = { "auto", "keep", "bf16", "f16", "q8_0", "hif4" }, default = "auto", help = "precision of the tensors kept dense (embeddings, head; norms stay exact): auto = a GGUF's Q8_0 matrices keep their blocks (lossless; not with --glq-compat), wider floats become bf16; keep = as in the source; q8_0 = ggml Q8_0 blocks, hif4 = HiF4 (4.5 bits; both our layout only)" },
    { "seed", type = "int", min = 0, default = 42, help = "seed for signs and self-calibration" },
    { "damp", type = "number", min = 0, default = 0.01, help = "Hessian damping relative to its mean diagonal" },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "cuda: calibration forward, Hessians and the LDLQ sweeps (nearest-codeword search included) on the GPU; falls back to the CPU with a message when there is no GPU" },
    { "ldlq-device", type = "choice", choices = { "auto", "cpu", "cuda" }, default = "auto", help = "where the LDLQ sweeps run (auto = --device); cpu gives the CPU's artifacts byte for byte, cuda differs from them only through the summation order of the 128-column group updates" },
    { "streaming", type = "bool", help = "accepted for glq-quantize compatibility: layers are always streamed" },
    { "resume", type = "bool", help = "continue an interrupted run in --output" },
    { "overwrite", type = "bool", help = "replace an existing checkpoint or unfinished run in --output" },
    { "report", metavar = "FILE", help = "per-layer report JSON (default OUTPUT/report.json)" },
    { "glq-compat", type = "bool", help = "E8 with glq's block-diagonal transform (what glq >= 0.2.9's Python loader reads)" },
    { "threads", type = "int", min = 1, max = 256, help = "threads (default: GLQ_THREADS or all cores)" },
    { "quiet", type = "bool", help = "no progress output" },
  },
}, arg)
if not opts then return end

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end
if opts.threads then glq.num_threads(opts.threads) end
local device = require("glq.model").pick_device(opts.device)
local ldlq_device = opts.ldlq_device == "auto" and device or require("glq.model").pick_device(opts.ldlq_device)
if opts.nsamples < 1 then fail("--nsamples must be at least 1") end
if opts.seqlen < 2 then fail("--seqlen must be at least 2") end
if opts.bpw < 2 or opts.bpw > 4.5 then fail("--bpw %g is out of range (2 to 4, or up to 4.5 with --format auto)", opts.bpw) end
for _, k in ipairs { "min_bpw", "max_bpw" } do
  if opts[k] and (opts[k] < 2 or opts[k] > 4) then fail("--%s must be 2, 3 or 4", k:gsub("_", "-")) end
end
if opts.min_bpw and opts.max_bpw and opts.min_bpw > opts.max_bpw then fail("--min-bpw is above --max-bpw") end
if opts.calib ~= "self" and not fs.exists(opts.calib) then fail("--calib %s: no such file", opts.calib) end
if opts.glq_compat and (opts.dense_dtype == "q8_0" or opts.dense_dtype == "hif4") then fail("--glq-compat: the Python glq cannot read %s dense tensors; use --dense-dtype auto, bf16, f16 or keep", opts.dense_dtype) end
if opts.glq_compat and opts.codebook == "e8p" then
  fail("--glq-compat: E8P layers are written in our layout only (glq 0.8.16's tensor-core packed Qidxs_e8p is not implemented); drop --codebook e8p")
end
if opts.glq_compat and opts.format ~= "e8" then
  fail("--glq-compat writes E8 layers only (glq has no HiF4); drop --format %s", opts.format)
end

if opts.codebook == "trellis" and ldlq_device == "cpu" and not opts.quiet then
  io.stderr:write("glq quantize: the trellis Viterbi searches run on the CPU (no GPU in use): expect hours for a whole "
    .. "model (one 4096x4096 layer takes ~15 min on 2 cores); with a GPU, --device cuda runs them there\n")
end

local policy = require "glq.policy"
local q = require "glq.quantize"

local integer_bpw = opts.bpw == math.floor(opts.bpw)
local mixed = not opts.bpw_map and (not integer_bpw or opts.min_bpw ~= nil or opts.max_bpw ~= nil or opts.format == "auto")
if opts.codebook == "trellis" and opts.format == "hif4" then fail("--codebook trellis: --format hif4 quantizes every projection to HiF4; use --format e8 or auto") end
if opts.format == "hif4" and mixed then fail("--format hif4 quantizes every projection to HiF4; drop the fractional --bpw or use --format auto") end
if not mixed and opts.format == "e8" and not opts.bpw_map and (opts.bpw < 2 or opts.bpw > 4) then fail("--bpw must be 2, 3 or 4") end

-- the decision rule
local base
if opts.bpw_map then
  local map, err = json.read_file(opts.bpw_map)
  if not map then fail("--bpw-map: %s", err) end
  policy.check_allocation(map, "--bpw-map " .. opts.bpw_map)
  base = policy.from_allocation(map)
elseif opts.format == "hif4" then
  base = policy.uniform({ format = "hif4", rht = opts.hif4_rht, ldlq = opts.hif4_ldlq })
else
  base = policy.uniform({ format = opts.codebook, bits = math.floor(opts.bpw) }) -- e8, e8p or trellis
end
local decide = opts.policy and policy.load(opts.policy, base) or base
if opts.glq_compat then -- glq reads E8 layers only: a policy or bpw map must not choose HiF4
  local inner = decide
  decide = function(layer)
    local d = inner(layer)
    if type(d) == "table" and d.format == "hif4" then fail("--glq-compat: layer %s: glq cannot read HiF4 layers", layer.name) end
    return d
  end
end

local needs_calib = true
if opts.format == "hif4" and not opts.hif4_ldlq and not mixed and not opts.policy then needs_calib = false end

-- On a CPU without --nsamples/--seqlen: a calibration budget that finishes in minutes (glq.budget;
-- it depends on the model's size only, so outputs stay reproducible), and a time estimate first.
local budget = require "glq.budget"
local cfg = require("glq.model").open(opts.model).cfg
local chose_budget = false
if device == "cpu" and needs_calib and not cli.given(arg, "nsamples") and not cli.given(arg, "seqlen") then
  local st = opts.resume and json.read_file(fs.join(fs.join(opts.output, ".glq-partial"), "state.json"))
  local fp = type(st) == "table" and type(st.fingerprint) == "table" and st.fingerprint
  if fp and fp.nsamples and fp.seqlen then
    opts.nsamples, opts.seqlen = fp.nsamples, fp.seqlen -- resuming: the unfinished run's choice
  else
    opts.nsamples, opts.seqlen = budget.cpu_choice(cfg)
  end
  chose_budget = true
end
if not opts.quiet and device == "cpu" then
  local rate = budget.gemm_rate()
  local function est(n, s)
    return budget.estimate(cfg, { nsamples = n, seqlen = s, self = opts.calib == "self", calibrate = needs_calib, mixed = mixed }, rate)
  end
  local e = est(opts.nsamples, opts.seqlen)
  if chose_budget then
    io.stderr:write(string.format("[budget] CPU run without --nsamples/--seqlen: calibrating on %d x %d tokens; estimated %s.\n"
      .. "[budget] The full protocol (--nsamples %d --seqlen %d) would take ~%s here: pass both to use it, or run with --device cuda.\n",
      opts.nsamples, opts.seqlen, budget.describe(e), budget.FULL.nsamples, budget.FULL.seqlen,
      require("glq.progress").fmt_time(est(budget.FULL.nsamples, budget.FULL.seqlen).total)))
  else
    io.stderr:write(string.format("[estimate] %s on this CPU (rough)%s\n", budget.describe(e),
      e.total > 1800 and "; for a quick run pass a smaller --nsamples/--seqlen, or use --device cuda" or ""))
  end
end

-- Ctrl-C keeps the finished layers (OUTPUT/.glq-partial); the host prints how to continue
do
  local function q(s) return s:match("^[%w%-_./=:,+]+$") and s or "'" .. s:gsub("'", "'\\''") .. "'" end
  local words, has_resume = { "glq quantize" }, false
  for i = 1, #arg do
    words[#words + 1] = q(tostring(arg[i]))
    if arg[i] == "--resume" then has_resume = true end
  end
  if chose_budget then words[#words + 1] = string.format("--nsamples %d --seqlen %d", opts.nsamples, opts.seqlen) end
  if not has_resume then words[#words + 1] = "--resume" end
  local ok, host = pcall(require, "glq.host")
  if ok then
    host.interrupt_hint(string.format("glq: finished layers are kept in %s; continue with:\n  %s",
      fs.join(opts.output, ".glq-partial"), table.concat(words, " ")))
  end
end

local fingerprint = {
  tool = "glq " .. glq.version, model = opts.model, bpw = opts.bpw, min_bpw = opts.min_bpw, max_bpw = opts.max_bpw,
  bpw_map = opts.bpw_map and fs.read(opts.bpw_map) or nil, policy = opts.policy and fs.read(opts.policy) or nil,
  tune_iters = opts.tune_iters, alloc_objective = mixed and opts.alloc_objective or nil, nsamples = opts.nsamples, seqlen = opts.seqlen, calib = opts.calib,
  format = opts.format, codebook = opts.codebook ~= "e8" and opts.codebook or nil, hif4_rht = opts.hif4_rht or false, hif4_ldlq = opts.hif4_ldlq or false,
  seed = opts.seed, damp = opts.damp, glq_compat = opts.glq_compat or nil, dense_dtype = opts.dense_dtype, propagate = opts.propagate,
  rescale = opts.rescale, device = device ~= "cpu" and device or nil, ldlq_device = ldlq_device ~= "cpu" and ldlq_device or nil,
}

local r = q.run {
  model = opts.model, output = opts.output, decide = decide, calib = opts.calib, nsamples = opts.nsamples,
  seqlen = opts.seqlen, seed = opts.seed, tune_iters = opts.tune_iters, damp = opts.damp, resume = opts.resume,
  overwrite = opts.overwrite, report = opts.report, fingerprint = fingerprint, quiet = opts.quiet,
  needs_calibration = needs_calib, device = device, ldlq_device = ldlq_device, dense_dtype = opts.dense_dtype, propagate = opts.propagate,
  allocate = mixed, alloc_objective = opts.alloc_objective, target_bpw = opts.bpw, min_bpw = opts.min_bpw or 2, max_bpw = opts.max_bpw or 4,
  hif4_candidate = opts.format == "auto", hif4_rht = opts.hif4_rht, hif4_ldlq = opts.hif4_ldlq,
  profile_only = opts.profile_only, transform = opts.glq_compat and "block-diagonal" or nil, python_compat = opts.glq_compat,
  codebook = opts.codebook, rescale = opts.rescale,
  allocation_path = mixed and fs.join(opts.output, "bpw_allocation.json") or nil,
  quantize_config = {
    quant_method = "glq", codebook = (opts.codebook == "trellis" or opts.codebook == "e8p") and opts.codebook or "e8_shell",
    codesz = opts.codebook == "trellis" and 16 or 8, tool_version = glq.version, source_model = opts.model,
    options = fingerprint, nsamples = opts.nsamples, seqlen = opts.seqlen, calibration = opts.calib,
  },
}
if r.allocation and opts.profile_only then
  print(fs.join(opts.output, "bpw_allocation.json"))
end
