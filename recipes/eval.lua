-- glq eval: perplexity of a model on a text file (standard non-overlapping windows), and with
-- --base the KL divergence of its next-token distributions from a base model's and top-1 agreement.
local cli = require "glq.cli"
local json = require "glq.json"

local opts = cli.parse({
  prog = "glq eval",
  description = "Perplexity of a model on a text file; with --base also KL divergence and top-1 agreement.",
  options = {
    { "model", required = true, metavar = "PATH", help = "GGUF file, HF directory or glq checkpoint" },
    { "text", required = true, metavar = "FILE", help = "text file, tokenized once with BOS" },
    { "seqlen", type = "int", min = 2, default = 2048, help = "window length in tokens" },
    { "base", metavar = "PATH", help = "base model for KL divergence and top-1 agreement" },
    { "max-windows", type = "int", min = 1, help = "evaluate at most N windows (default: all of them)" },
    { "chunks", type = "int", min = 1, help = "the same as --max-windows (llama-perplexity's name)" },
    { "first-window", type = "int", min = 0, default = 0, help = "start at this window (0-based; with --json, runs over disjoint ranges combine exactly through nll_sum and tokens)" },
    { "tokenizer", metavar = "FILE", help = "tokenizer (.gguf, tokenizer.json or llama2.c .bin) when the model has none" },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "where the forward runs (cuda falls back to the CPU with a message when there is no GPU)" },
    { "threads", type = "int", min = 1, max = 256, help = "threads (default: GLQ_THREADS or all cores)" },
    { "json", type = "bool", help = "print one JSON object instead of lines" },
  },
}, arg)
if not opts then return end
if opts.seqlen < 2 then error("--seqlen must be at least 2", 0) end
if opts.threads then glq.num_threads(opts.threads) end

local model, eval = require "glq.model", require "glq.eval"
local m = model.load(opts.model, { max_seq = opts.seqlen, tokenizer = opts.tokenizer })
local base = opts.base and model.load(opts.base, { max_seq = opts.seqlen })
if base and base.cfg.vocab ~= m.cfg.vocab then
  error(string.format("--base has a vocabulary of %d tokens, the model %d", base.cfg.vocab, m.cfg.vocab), 0)
end
if model.pick_device(opts.device) == "cuda" then
  m = m:cuda()
  base = base and base:cuda()
end
local ids = eval.tokenize_file(m, opts.text)
io.stderr:write(string.format("%s: %d tokens\n", opts.text, #ids))
if opts.chunks and opts.max_windows and opts.chunks ~= opts.max_windows then
  error("--chunks and --max-windows are the same option; give one", 0)
end
local r = eval.run(m, ids, { seqlen = opts.seqlen, base = base, max_windows = opts.max_windows or opts.chunks, first_window = opts.first_window })
if opts.json then
  print(json.encode(r))
else
  -- the same lines as before (scripts match them), each with its standard error
  local partial = r.windows < r.windows_total
  print(string.format("windows: %d of the text's %d (seqlen %d%s)", r.windows, r.windows_total, r.seqlen,
    partial and "; a subset: compare only runs over the same windows" or ""))
  print(string.format("perplexity: %.4f +- %.4f", r.ppl, r.ppl_se))
  if base then
    print(string.format("base perplexity: %.4f +- %.4f", r.base_ppl, r.base_ppl_se))
    print(string.format("ppl ratio: %.4f +- %.4f (model / base, paired per token)", r.ppl_ratio, r.ppl_ratio_se))
  end
  print(string.format("nll: %.6f", r.nll))
  print(string.format("tokens: %d", r.tokens))
  if base then
    print(string.format("kld_mean: %.6f +- %.6f", r.kld_mean, r.kld_se))
    print(string.format("kld_p99: %.6f", r.kld_p99))
    print(string.format("top1: %.4f +- %.4f", r.top1, r.top1_se))
  end
end
