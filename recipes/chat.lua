-- glq chat: talk with an instruct model in its own chat template, turn after turn.
-- The whole conversation is the context of each reply (the oldest turns are dropped when it no longer
-- fits); /reset forgets it, /system TEXT sets the system message, /exit or Ctrl-D leaves; Ctrl-C
-- stops the reply being written (and is not kept in the conversation).
local cli = require "glq.cli"

local opts = cli.parse({
  prog = "glq chat",
  description = "Interactive chat with an instruct model, in the model's own chat template "
    .. "(recognised from tokenizer_config.json or the GGUF's tokenizer.chat_template: chatml, llama3, "
    .. "mistral, llama2, zephyr). Reads one message per line; on a terminal with line editing and history. "
    .. "Commands: /reset, /system TEXT, /exit.",
  options = {
    { "model", required = true, metavar = "PATH", help = "GGUF file, HF directory or glq checkpoint" },
    { "system", help = "system message (default: the template's own, if it has one)" },
    { "max-new-tokens", type = "int", default = 256, min = 1, help = "longest reply in tokens" },
    { "temperature", type = "number", default = 0, min = 0, help = "0 = greedy (reproducible; small models answer best so); try 0.2 with --top-p 0.9 for variety" },
    { "top-k", type = "int", default = 0, min = 0, help = "sample among the k most likely (0 = all)" },
    { "top-p", type = "number", default = 0.9, min = 0, max = 1, help = "nucleus sampling mass" },
    { "min-p", type = "number", default = 0.05, min = 0, max = 1, help = "drop tokens less likely than this fraction of the most likely one" },
    { "repeat-penalty", type = "number", default = 1.1, min = 0.01, help = "repetition penalty (1 = off)" },
    { "repeat-last-n", type = "int", default = 64, min = 1, help = "tokens the repetition penalty looks back over" },
    { "seed", type = "int", default = 0, min = 0, help = "sampler seed (each turn continues from it)" },
    { "max-seq", type = "int", default = 2048, min = 16, help = "context length to allocate" },
    { "tokenizer", metavar = "FILE", help = "tokenizer when the model has none" },
    { "device", type = "choice", choices = { "cpu", "cuda" }, default = "cpu", help = "where the forward runs" },
    { "threads", type = "int", min = 1, max = 256, help = "threads (default: GLQ_THREADS or all cores)" },
    { "stats", type = "bool", help = "print each reply's token counts and speeds to stderr" },
  },
}, arg)
if not opts then return end
if opts.threads then glq.num_threads(opts.threads) end

local model, gen, chat = require "glq.model", require "glq.generate", require "glq.chat"
local m = model.load(opts.model, { max_seq = opts.max_seq, tokenizer = opts.tokenizer })
local fmt = chat.format_of(m.src)
if model.pick_device(opts.device) == "cuda" then m = m:cuda() end
local tok = m:tokenizer()
local stop_ids = chat.stop_ids(fmt, tok)

local ok_host, host = pcall(require, "glq.host")
local tty = ok_host and host.readline and require("glq.fs").isatty(0)
local function read_line()
  if tty then
    local line = host.readline("you> ")
    while line == false do line = host.readline("you> ") end -- Ctrl-C at the prompt: a fresh line
    if line and line:match("%S") then host.add_history(line) end
    return line
  end
  return io.read("*l")
end

io.stderr:write(string.format("glq chat: %s (%s template); /reset, /system TEXT, /exit\n", opts.model, fmt.name))
local system = opts.system
local turns = {} -- {role, content} of the conversation so far
local seed = opts.seed
while true do
  local line = read_line()
  if line == nil or line == "/exit" or line == "/quit" then break end
  if line == "/reset" then
    turns = {}
    io.stderr:write("(conversation cleared)\n")
  elseif line:match("^/system%s") or line == "/system" then
    system = line:match("^/system%s+(.-)%s*$")
    if system == "" then system = nil end
    turns = {}
    io.stderr:write("(system message set; conversation cleared)\n")
  elseif line:match("%S") then
    turns[#turns + 1] = { role = "user", content = line }
    local ids
    while true do -- drop the oldest exchanges until the prompt and a reply fit the context
      local msgs = {}
      if system then msgs[1] = { role = "system", content = system } end
      for _, t in ipairs(turns) do msgs[#msgs + 1] = t end
      ids = m:encode(chat.render(fmt, msgs))
      if #ids + math.min(opts.max_new_tokens, 16) < m.max_seq or #turns <= 1 then break end
      table.remove(turns, 1)
      if turns[1] and turns[1].role == "assistant" then table.remove(turns, 1) end
    end
    if #ids >= m.max_seq then error(string.format("the message needs %d tokens; the context holds %d (--max-seq)", #ids, m.max_seq), 0) end
    -- Ctrl-C stops this reply only (glq.host.call); the unfinished reply is not kept
    local call = ok_host and host.call or pcall
    local ok, _, text, st = call(gen.run, m, ids, {
      max_new_tokens = opts.max_new_tokens, temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p,
      min_p = opts.min_p, repeat_penalty = opts.repeat_penalty, repeat_last_n = opts.repeat_last_n, seed = seed,
      stop_ids = stop_ids, on_text = function(s) io.stdout:write(s); io.stdout:flush() end,
    })
    io.stdout:write("\n")
    io.stdout:flush()
    seed = seed + 1
    if not ok then
      if _ ~= "interrupted" then error(_, 0) end
      table.remove(turns)
      io.stderr:write("(reply interrupted; not kept)\n")
    else
      turns[#turns + 1] = { role = "assistant", content = text }
    end
    if ok and opts.stats then
      io.stderr:write(string.format("[chat] prompt %d tokens, %d new; prefill %.1f tok/s, decode %.1f tok/s\n",
        st.prompt_tokens, st.new_tokens, st.prompt_tokens / math.max(st.prefill_s, 1e-9),
        st.new_tokens / math.max(st.decode_s, 1e-9)))
    end
  end
end
