-- glq.generate: autoregressive generation with a KV cache and a sampler, streaming text.
local glq = require "glq"
local core = glq.core
local model = require "glq.model"

local M = {}

-- one user turn in a chat format (a glq.chat format table, or its name), the assistant's turn opened
function M.chat_prompt(style, user)
  local chat = require "glq.chat"
  local fmt = type(style) == "table" and style or { name = style, stop = {} }
  if fmt.name == nil then error("this model has no chat template glq recognises", 0) end
  return chat.render(fmt, { { role = "user", content = user } })
end

-- length of the longest prefix of s that ends on a UTF-8 character boundary
local function complete_utf8(s)
  local n = #s
  local i = n
  while i > 0 and i > n - 4 do
    local b = s:byte(i)
    if b < 0x80 then return n end
    if b >= 0xC0 then
      local need = b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2
      return (n - i + 1 >= need) and n or i - 1
    end
    i = i - 1
  end
  return n
end

-- m: loaded model; prompt_ids: list; opts: max_new_tokens, temperature, top_k, top_p, seed, min_p,
-- repeat_penalty (1 = off), repeat_last_n (64),
-- kv_cache ("f32"|"f16"|"int8"), residual_length, on_text(str) streaming callback, stop_at_eos (default true)
-- returns generated ids (list), text, stats {prompt_tokens, new_tokens, prefill_s, decode_s, cache_bytes}
function M.run(m, prompt_ids, opts)
  opts = opts or {}
  local maxn = opts.max_new_tokens or 128
  local ctx = m.max_seq
  if #prompt_ids >= ctx then
    error(string.format("the prompt has %d tokens; the context holds %d", #prompt_ids, ctx), 0)
  end
  if #prompt_ids == 0 then error("empty prompt (no tokens)", 0) end
  maxn = math.min(maxn, ctx - #prompt_ids)
  local cache = m:new_cache { dtype = opts.kv_cache or "f32", batch = 1, max_seq = ctx,
    residual_length = opts.residual_length }
  local sampler = core.sampler.new { temperature = opts.temperature or 0, top_k = opts.top_k or 0,
    top_p = opts.top_p or 1, seed = opts.seed or 0, min_p = opts.min_p or 0,
    repeat_penalty = opts.repeat_penalty or 1, repeat_last_n = opts.repeat_last_n or 64 }
  local penalty = (opts.repeat_penalty or 1) ~= 1
  if penalty then sampler:accept(opts.history or prompt_ids) end
  local now = require("glq.progress").now
  -- greedy where the device picks the token (only its id comes back, no logits copy); a repetition
  -- penalty changes the row first, so then the sampler chooses
  local dev_greedy = m.c:has("argmax") and (opts.temperature or 0) <= 0 and not penalty
  local t0 = now()
  local logits, next_id
  if dev_greedy then next_id = m.c:forward(model.ids_tensor(prompt_ids), { cache = cache, argmax = true })
  else logits = m.c:forward(model.ids_tensor(prompt_ids), { cache = cache }) end
  local t1 = now()
  local eos = m:tokenizer():eos()
  local out, text_done = {}, 0
  local tok = m:tokenizer()
  -- text of the new tokens = decode(prompt + new) minus decode(prompt): decoding the new ids
  -- alone would drop the leading space SentencePiece decoders strip from a first token
  local all = {}
  for i, v in ipairs(prompt_ids) do all[i] = v end
  local prefix = tok:decode(all, { skip_special = true })
  local function new_text()
    local full = tok:decode(all, { skip_special = true })
    if full:sub(1, #prefix) == prefix then return full:sub(#prefix + 1) end
    return tok:decode(out, { skip_special = true })
  end
  local text = ""
  -- every step writes into the prefill's logits tensor: no per-token garbage for the collector
  local one = glq.zeros("i32", { 1, 1 })
  local step = { cache = cache, out = logits, argmax = dev_greedy or nil }
  for _ = 1, maxn do
    local id = next_id or sampler:sample(logits:reshape({ m.cfg.vocab }))
    if opts.stop_at_eos ~= false and (id == eos or (opts.stop_ids and opts.stop_ids[id])) then break end
    if penalty then sampler:accept(id) end
    out[#out + 1] = id
    all[#all + 1] = id
    if opts.on_text then
      text = new_text()
      local upto = complete_utf8(text)
      if upto > text_done then
        opts.on_text(text:sub(text_done + 1, upto))
        text_done = upto
      end
    end
    if #out == maxn then break end
    one:ptr()[0] = id
    if dev_greedy then next_id = m.c:forward(one, step) else m.c:forward(one, step) end
  end
  local t2 = now()
  text = new_text()
  if opts.on_text and #text > text_done then opts.on_text(text:sub(text_done + 1)) end
  return out, text, { prompt_tokens = #prompt_ids, new_tokens = #out, prefill_s = t1 - t0, decode_s = t2 - t1,
    cache_bytes = cache:bytes() }
end

return M
