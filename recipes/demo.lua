-- glq demo: the quickstart `make demo` runs. Fetches SmolLM2-135M-Instruct, quantizes it to a
-- mixed 2.5 bits/weight with a small data-free calibration (sequences sampled from the model
-- itself), measures perplexity and KL divergence against the base on held-out text the base
-- model generates with another seed, generates a sample, and prints a summary table.
local cli = require "glq.cli"
local fs = require "glq.fs"
local progress = require "glq.progress"

local opts = cli.parse({
  prog = "glq demo",
  description = "Quantize SmolLM2-135M-Instruct to a mixed 2.5 bits/weight and evaluate it against the base.",
  options = {
    { "model", metavar = "PATH", help = "model to use (default: fetch SmolLM2-135M-Instruct with scripts/fetch-model.sh)" },
    { "output", metavar = "DIR", help = "checkpoint directory (default: <cache>/demo-smollm2-2.5bpw)" },
    { "bpw", type = "number", default = 2.5, help = "target bits per weight" },
    { "nsamples", type = "int", min = 1, default = 8, help = "self-generated calibration sequences" },
    { "seqlen", type = "int", min = 2, default = 256, help = "calibration sequence length" },
    { "eval-sequences", type = "int", min = 1, default = 4, help = "held-out sequences of 512 tokens" },
    { "prompt", default = "Write a short poem about the sea.", help = "prompt for the sample" },
  },
}, arg)
if not opts then return end

local t0 = progress.now()
local cache = os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "/tmp") .. "/.cache/glq")
local path = opts.model
if not path then
  -- scripts/ sits beside recipes/ in the source tree and in the installed share directory
  local here = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."
  local p = io.popen("sh '" .. here .. "/scripts/fetch-model.sh' 2>/dev/null")
  path = p and p:read("*l")
  if p then p:close() end
  if not path or path == "" or not fs.exists(path) then
    error("could not fetch SmolLM2-135M-Instruct (run scripts/fetch-model.sh to see why), or pass --model", 0)
  end
end
local out = opts.output or (cache .. "/demo-smollm2-" .. opts.bpw .. "bpw")
local log = progress.log

local model, q, eval, gen = require "glq.model", require "glq.quantize", require "glq.eval", require "glq.generate"
log("[demo] model %s", path)
q.run {
  model = path, output = out, calib = "self", nsamples = opts.nsamples, seqlen = opts.seqlen, seed = 42,
  overwrite = true, allocate = true, target_bpw = opts.bpw, min_bpw = 2, max_bpw = 4, quiet = false,
  fingerprint = { demo = true, bpw = opts.bpw, nsamples = opts.nsamples, seqlen = opts.seqlen },
  allocation_path = out .. ".bpw_allocation.json", plot = true,
  quantize_config = { tool_version = glq.version, source_model = path, calibration = "self", nsamples = opts.nsamples, seqlen = opts.seqlen },
}
local t_quant = progress.now() - t0

-- held-out text: sequences the base model samples with a seed the calibration did not use
local base = model.load(path, { max_seq = 512 })
local held = q.calib_self(base, opts.eval_sequences, 512, 7777, true)
local ids = {}
local p = held:ptr()
for i = 0, held:numel() - 1 do ids[#ids + 1] = p[i] end
local quant = model.load(out, { max_seq = 512 })
local rb = eval.run(base, ids, { seqlen = 512, quiet = true })
local rq = eval.run(quant, ids, { seqlen = 512, base = base, quiet = true })

-- a sample from the quantized model
local prompt = gen.chat_prompt(quant.src:chat_style() or "chatml", opts.prompt)
io.stdout:write("\n--- sample from the quantized model (", opts.prompt, ") ---\n")
gen.run(quant, quant:encode(prompt), { max_new_tokens = 80, on_text = function(s) io.stdout:write(s); io.stdout:flush() end })
io.stdout:write("\n\n")

local qc = require("glq.json").read_file(out .. "/config.json").quantization_config
local function size(pth) local f = io.open(pth, "rb"); local n = f:seek("end"); f:close(); return n end
print(string.format("%-34s %12s %12s %10s %8s %8s", "model", "bits/weight", "file MB", "held-out ppl", "KL", "top-1"))
print(string.format("%-34s %12s %12.1f %10.3f %8s %8s", "base (Q4_1 GGUF, dequantized)", "-", size(path) / 1e6, rb.ppl, "0", "1"))
print(string.format("%-34s %12.2f %12.1f %10.3f %8.4f %8.3f", "glq E8 mixed " .. opts.bpw, qc.bpw, size(out .. "/model.safetensors") / 1e6,
  rq.ppl, rq.kld_mean, rq.top1))
print(string.format("\ncheckpoint: %s   (total demo time %s)", out, progress.fmt_time(progress.now() - t0)))
print(string.format("quantization took %s; the per-layer report is %s/report.json, the plot %s/report.svg", progress.fmt_time(t_quant), out, out))
