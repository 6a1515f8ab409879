-- glq generate: stream a continuation of a prompt. Only the generated text goes to stdout;
-- progress and statistics go to stderr.
local cli = require "glq.cli"

local opts = cli.parse({
  prog = "glq generate",
  description = "Generate text from a prompt (greedy by default).",
  options = {
    { "model", required = true, metavar = "PATH", help = "GGUF file, HF directory or glq checkpoint" },
    { "prompt", default = "", help = "prompt text" },
    { "max-new-tokens", type = "int", min = 1, default = 128, help = "stop after this many new tokens" },
    { "temperature", type = "number", min = 0, default = 0, help = "0 = greedy" },
    { "top-k", type = "int", min = 0, default = 0, help = "sample among the k most likely (0 = all)" },
    { "top-p", type = "number", max = 1, default = 1, help = "nucleus sampling mass" },
    { "seed", type = "int", min = 0, default = 0, help = "sampler seed" },
    { "kv-cache", type = "choice", choices = { "f32", "f16", "int8" }, default = "f32", help = "KV cache storage" },
    { "residual-length", type = "int", min = 0, default = 128, help = "int8 cache: recent tokens kept in full precision" },
    { "min-p", type = "number", default = 0, min = 0, max = 1, help = "drop tokens less likely than this fraction of the most likely one (0 = off)" },
    { "repeat-penalty", type = "number", default = 1, min = 0.01, help = "divide the logits of recently seen tokens by this (1 = off; llama.cpp's 1.1 is typical)" },
    { "repeat-last-n", type = "int", default = 64, min = 1, help = "tokens (prompt included) the repetition penalty looks back over" },
    { "chat", type = "bool", help = "wrap the prompt in the model's own chat template (chatml, llama3, mistral, llama2, zephyr; see glq chat)" },
    { "system", help = "with --chat: a system message" },
    { "max-seq", type = "int", min = 2, default = 2048, help = "context length to allocate" },
    { "tokenizer", metavar = "FILE", help = "tokenizer (.gguf, tokenizer.json or llama2.c .bin) when the model has none" },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "where the forward runs (cuda: f32 KV cache; falls back to the CPU with a message when there is no GPU)" },
    { "threads", type = "int", min = 1, max = 256, help = "threads (default: GLQ_THREADS or all cores)" },
  },
}, arg)
if not opts then return end
if opts.threads then glq.num_threads(opts.threads) end
if opts.temperature < 0 then error("--temperature must be >= 0", 0) end
if opts.top_p <= 0 or opts.top_p > 1 then error("--top-p must be in (0, 1]", 0) end

local model, gen = require "glq.model", require "glq.generate"
local m = model.load(opts.model, { max_seq = opts.max_seq, tokenizer = opts.tokenizer })
if model.pick_device(opts.device) == "cuda" then
  if opts.kv_cache ~= "f32" then error("--kv-cache " .. opts.kv_cache .. " runs on the CPU only; the GPU cache is f32", 0) end
  m = m:cuda()
end
local text = opts.prompt
local stop_ids
if opts.chat then
  local chat = require "glq.chat"
  local fmt = chat.format_of(m.src)
  local msgs = { { role = "user", content = text } }
  if opts.system then table.insert(msgs, 1, { role = "system", content = opts.system }) end
  text = chat.render(fmt, msgs)
  stop_ids = chat.stop_ids(fmt, m:tokenizer())
end
local ids = m:encode(text)
local _, _, st = gen.run(m, ids, {
  max_new_tokens = opts.max_new_tokens, temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p,
  seed = opts.seed, kv_cache = opts.kv_cache, residual_length = opts.residual_length, min_p = opts.min_p,
  repeat_penalty = opts.repeat_penalty, repeat_last_n = opts.repeat_last_n, stop_ids = stop_ids,
  on_text = function(s) io.stdout:write(s); io.stdout:flush() end,
})
io.stdout:write("\n")
io.stdout:flush() -- the statistics line (stderr) starts on a line of its own
io.stderr:write(string.format("[generate] prompt %d tokens, %d new; prefill %.1f tok/s, decode %.1f tok/s; KV cache %.1f KiB (%s)\n",
  st.prompt_tokens, st.new_tokens, st.prompt_tokens / math.max(st.prefill_s, 1e-9),
  st.new_tokens / math.max(st.decode_s, 1e-9), st.cache_bytes / 1024, opts.kv_cache))
