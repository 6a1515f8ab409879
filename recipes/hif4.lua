-- glq hif4: convert a model's linear layers to HiF4 (4.5 bits/weight), in the reference tool's
-- checkpoint layout. Default policy: every attention and MLP projection (gate_proj included);
-- embeddings, the output head and routers stay dense by module role. --compat applies the
-- reference's rule exactly (case-insensitive substring match on embed, embedding, lm_head, gate,
-- gating, router — which also leaves Llama's gate_proj dense).
local cli = require "glq.cli"
local fs = require "glq.fs"

local opts = cli.parse({
  prog = "glq hif4",
  description = "Convert a model's attention and MLP projections to HiF4.",
  options = {
    { "model", required = true, metavar = "PATH", help = "input model: GGUF file or Hugging Face directory" },
    { "output", required = true, metavar = "DIR", help = "output checkpoint directory" },
    { "compat", type = "bool", help = "the reference tool's substring skip rule (also skips gate_proj)" },
    { "rht", type = "bool", help = "rotate the input dimension with a randomized Hadamard transform first" },
    { "ldlq", type = "bool", help = "LDLQ error feedback with calibration Hessians (needs calibration)" },
    { "calib", default = "self", metavar = "FILE|self", help = "calibration text for --ldlq, or 'self'" },
    { "nsamples", type = "int", min = 1, default = 32, help = "calibration sequences (--ldlq)" },
    { "seqlen", type = "int", min = 2, default = 512, help = "calibration sequence length (--ldlq)" },
    { "seed", type = "int", min = 0, default = 0, help = "seed of the RHT signs and self-calibration" },
    { "dense-dtype", type = "choice", choices = { "auto", "keep", "bf16", "f16", "q8_0", "hif4" }, default = "auto", help = "precision of the tensors kept dense (embeddings, head, skipped linears; norms stay exact): auto = a GGUF's Q8_0 matrices keep their blocks, wider floats become bf16; keep = as in the source; q8_0 = ggml Q8_0 blocks, hif4 = HiF4 (both glq's own reader only)" },
    { "resume", type = "bool", help = "continue an interrupted run" },
    { "overwrite", type = "bool", help = "replace an existing output" },
    { "threads", type = "int", min = 1, max = 256, help = "threads (default: GLQ_THREADS or all cores)" },
    { "quiet", type = "bool", help = "no progress output" },
  },
}, arg)
if not opts then return end
if opts.threads then glq.num_threads(opts.threads) end
if opts.calib ~= "self" and not fs.exists(opts.calib) then error("--calib " .. opts.calib .. ": no such file", 0) end

local policy = require "glq.policy"
local q = require "glq.quantize"
local decision = { format = "hif4", rht = opts.rht or false, ldlq = opts.ldlq or false }
local decide = function(layer)
  if not policy.quantizable_roles[layer.role] then return { format = "dense" } end
  if opts.compat and policy.matches_compat_skip(layer.name) then return { format = "dense" } end
  return decision
end
local fingerprint = { tool = "glq " .. glq.version, model = opts.model, compat = opts.compat or false, rht = decision.rht,
  ldlq = decision.ldlq, calib = opts.ldlq and opts.calib or nil, nsamples = opts.nsamples, seqlen = opts.seqlen, seed = opts.seed, dense_dtype = opts.dense_dtype }
q.run {
  model = opts.model, output = opts.output, decide = decide, calib = opts.calib, nsamples = opts.nsamples,
  seqlen = opts.seqlen, seed = opts.seed, resume = opts.resume, overwrite = opts.overwrite, quiet = opts.quiet,
  fingerprint = fingerprint, needs_calibration = decision.ldlq, dense_dtype = opts.dense_dtype,
  hif4_skip_keywords = opts.compat and policy.hif4_compat_keywords or { "embed", "lm_head", "router" },
  quantize_config = { quantization = "HiF4", tool_version = glq.version, source_model = opts.model, options = fingerprint },
}
