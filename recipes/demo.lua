-- glq demo: the quickstart `make demo` runs, sized for a 2-core CPU (under 10 minutes there).
-- Fetches SmolLM2-135M-Instruct (a Q4_1 GGUF), quantizes its decoder projections with the E8 shell
-- codebook at 4 bits (the best quality a CPU reaches in minutes: see README's quality table; the trellis
-- codebook is better per bit but its Viterbi search takes hours on two cores), keeps the GGUF's Q8_0
-- embedding as Q8_0, measures perplexity, KL divergence and top-1 agreement against the base on a few
-- WikiText-2 windows (the standard protocol, fewer windows), chats once, and prints a summary.
local cli = require "glq.cli"
local fs = require "glq.fs"
local progress = require "glq.progress"

local here = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."
local wikitext = here .. "/../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt"

local opts = cli.parse({
  prog = "glq demo",
  description = "Quantize SmolLM2-135M-Instruct on the CPU and compare it with the base model.",
  options = {
    { "model", metavar = "PATH", help = "model to use (default: fetch SmolLM2-135M-Instruct with scripts/fetch-model.sh)" },
    { "output", metavar = "DIR", help = "checkpoint directory (default: <cache>/demo-smollm2-e8-<bpw>bit)" },
    { "bpw", type = "int", min = 2, max = 4, default = 4, help = "bits per weight of the E8 layers" },
    { "codebook", type = "choice", choices = { "e8", "e8p", "trellis" }, default = "e8", help = "codebook (trellis: hours on a CPU)" },
    { "nsamples", type = "int", min = 1, default = 8, help = "calibration sequences sampled from the model itself" },
    { "seqlen", type = "int", min = 2, default = 512, help = "calibration sequence length" },
    { "text", metavar = "FILE", help = "evaluation text (default: WikiText-2 test from ../shared when present, else text the base model writes)" },
    { "windows", type = "int", min = 1, default = 3, help = "evaluation windows of 2048 tokens" },
    { "prompt", default = "Give me three tips for staying focused while studying.", help = "chat prompt for the sample" },
  },
}, arg)
if not opts then return end

local t0 = progress.now()
local cache = os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "/tmp") .. "/.cache/glq")
local path = opts.model
if not path then
  local p = io.popen("sh '" .. here .. "/scripts/fetch-model.sh' 2>/dev/null")
  path = p and p:read("*l")
  if p then p:close() end
  if not path or path == "" or not fs.exists(path) then
    error("could not fetch SmolLM2-135M-Instruct (run scripts/fetch-model.sh to see why), or pass --model", 0)
  end
end
local label = opts.codebook .. "-" .. opts.bpw .. "bit"
local out = opts.output or (cache .. "/demo-smollm2-" .. label)
local log = progress.log

local model, q, eval, gen = require "glq.model", require "glq.quantize", require "glq.eval", require "glq.generate"
local policy = require "glq.policy"
log("[demo] model %s", path)
q.run {
  model = path, output = out, calib = "self", nsamples = opts.nsamples, seqlen = opts.seqlen, seed = 42,
  overwrite = true, quiet = false, plot = true, codebook = opts.codebook ~= "trellis" and opts.codebook or nil,
  decide = policy.uniform { format = opts.codebook, bits = opts.bpw },
  fingerprint = { demo = true, codebook = opts.codebook, bpw = opts.bpw, nsamples = opts.nsamples, seqlen = opts.seqlen },
  quantize_config = { tool_version = glq.version, source_model = path, calibration = "self", nsamples = opts.nsamples, seqlen = opts.seqlen },
}
local t_quant = progress.now() - t0

-- evaluation text: WikiText-2 (the standard protocol: windows of 2048 tokens, BOS once) when available
local seqlen = 2048
local base = model.load(path, { max_seq = seqlen })
local quant = model.load(out, { max_seq = seqlen, tokenizer = base:tokenizer() })
local text_path = opts.text or (fs.exists(wikitext) and wikitext or nil)
local ids, what
if text_path then
  ids = eval.tokenize_file(base, text_path)
  what = string.format("WikiText-2 test, first %d windows of %d tokens", opts.windows, seqlen)
  if opts.text then what = string.format("%s, first %d windows of %d tokens", fs.basename(opts.text), opts.windows, seqlen) end
else -- no WikiText-2 here: text the base model samples with a seed the calibration did not use
  local held = q.calib_self(base, opts.windows, seqlen, 7777, true)
  ids = {}
  local p = held:ptr()
  for i = 0, held:numel() - 1 do ids[#ids + 1] = p[i] end
  what = string.format("%d sequences of %d tokens the base model wrote (no WikiText-2 found; pass --text)", opts.windows, seqlen)
end
log("[demo] evaluating on %s", what)
local r = eval.run(quant, ids, { seqlen = seqlen, base = base, max_windows = opts.windows, quiet = true })

-- a chat turn with the quantized model, in its own template
local chat = require "glq.chat"
local ok, fmt = pcall(chat.format_of, base.src)
if not ok then fmt = { name = "chatml", stop = { "<|im_end|>" } } end
local prompt = gen.chat_prompt(fmt, opts.prompt)
io.stdout:write("\n--- the quantized model answers: ", opts.prompt, " ---\n")
gen.run(quant, quant:encode(prompt), { max_new_tokens = 120, stop_ids = chat.stop_ids(fmt, quant:tokenizer()),
  on_text = function(s) io.stdout:write(s); io.stdout:flush() end })
io.stdout:write("\n\n")

local qc = require("glq.json").read_file(out .. "/config.json").quantization_config or {}
local function size(pth) local f = io.open(pth, "rb"); if not f then return 0 end local n = f:seek("end"); f:close(); return n end
local qsize = 0
for _, f in ipairs(fs.list(out)) do if f:match("%.safetensors$") then qsize = qsize + size(fs.join(out, f)) end end
print(string.format("quality on %s:", what))
print(string.format("%-36s %11s %9s %18s %16s %15s", "model", "bits/weight", "file MB", "perplexity", "KL to base", "top-1 agree"))
print(string.format("%-36s %11s %9.1f %10.3f ± %5.3f %16s %15s", "base (Q4_1 GGUF)", "-", size(path) / 1e6, r.base_ppl, r.base_ppl_se, "0", "1"))
print(string.format("%-36s %11.2f %9.1f %10.3f ± %5.3f %9.4f ± %4.4f %7.3f ± %5.3f", "glq " .. opts.codebook .. " " .. opts.bpw .. "-bit (Q8_0 embedding)",
  qc.bpw or opts.bpw, qsize / 1e6, r.ppl, r.ppl_se, r.kld_mean, r.kld_se, r.top1, r.top1_se))
print(string.format("\ncheckpoint: %s (%.0f%% of the GGUF's size); total demo time %s, quantization %s",
  out, 100 * qsize / size(path), progress.fmt_time(progress.now() - t0), progress.fmt_time(t_quant)))
print("on a GPU (glq quantize --device cuda) the full protocol (128 x 2048 calibration tokens) takes about a minute for this\n" ..
  "model, and the trellis codebook (--codebook trellis) gives the lowest loss at 2-4 bits: see docs/results.md.")
