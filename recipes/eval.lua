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
    { "seqlen", type = "int", default = 2048, help = "window length in tokens" },
    { "base", metavar = "PATH", help = "base model for KL divergence and top-1 agreement" },
    { "max-windows", type = "int", help = "evaluate at most N windows" },
    { "first-window", type = "int", default = 0, help = "start at this window (0-based; with --json, runs over disjoint ranges combine exactly through nll_sum and tokens)" },
    { "tokenizer", metavar = "FILE", help = "tokenizer (.gguf, tokenizer.json or llama2.c .bin) when the model has none" },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "where the forward runs (cuda falls back to the CPU with a message when there is no GPU)" },
    { "threads", type = "int", help = "threads (default: GLQ_THREADS or all cores)" },
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
local r = eval.run(m, ids, { seqlen = opts.seqlen, base = base, max_windows = opts.max_windows, first_window = opts.first_window })
if opts.json then
  print(json.encode(r))
else
  print(string.format("perplexity: %.4f", r.ppl))
  print(string.format("nll: %.6f", r.nll))
  print(string.format("tokens: %d", r.tokens))
  if base then
    print(string.format("kld_mean: %.6f", r.kld_mean))
    print(string.format("kld_p99: %.6f", r.kld_p99))
    print(string.format("top1: %.4f", r.top1))
  end
end
