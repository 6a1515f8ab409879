-- glq.chat: the model's own chat format, for `glq chat` and `glq generate --chat`.
--
-- Rather than a Jinja engine, the template text (tokenizer_config.json's chat_template or the GGUF
-- key tokenizer.chat_template) is recognised as one of the formats real instruct models use, and
-- the conversation is rendered by that format's rule:
--   chatml   <|im_start|>role\n...<|im_end|>\n        SmolLM2, Qwen2/2.5/3, Hermes; a default system
--                                                   message written in the template is kept
--   llama3   <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>   Llama-3.x Instruct
--   mistral  [INST] user [/INST]assistant</s>       Mistral/Mixtral Instruct (a system message is
--                                                   put before the first user message)
--   llama2   [INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] assistant </s>   Llama-2-chat
--   zephyr   <|system|>\n...</s>\n<|user|>\n...</s>\n<|assistant|>\n        Zephyr, TinyLlama-chat
-- An unrecognised template is an error that names the formats known.
local M = {}
local unpack = table.unpack or unpack

-- Recognises a template's text; returns the format table or nil, why.
function M.recognize(tmpl)
  if type(tmpl) ~= "string" or tmpl == "" then return nil, "the model has no chat template" end
  local function has(s) return tmpl:find(s, 1, true) ~= nil end
  if has("<|im_start|>") then
    -- a default system message, as in SmolLM2's and Qwen2.5's templates
    local sys = tmpl:match("<|im_start|>system\n(.-)<|im_end|>")
    if sys and sys:find("[{}%[%]'\"+]") then sys = nil end   -- an expression, not literal text
    return { name = "chatml", default_system = sys, stop = { "<|im_end|>" } }
  end
  if has("<|start_header_id|>") then return { name = "llama3", stop = { "<|eot_id|>", "<|eom_id|>" } } end
  if has("<<SYS>>") then return { name = "llama2", stop = {} } end
  if has("[INST]") then return { name = "mistral", stop = {} } end
  if has("<|user|>") and has("<|assistant|>") then return { name = "zephyr", stop = {} } end
  return nil, "its chat template is none of the formats glq knows (chatml, llama3, mistral, llama2, zephyr)"
end

-- messages: {{role = "system"|"user"|"assistant", content = "..."}, ...} -> prompt text (with the
-- assistant's turn opened). The text's first BOS is left to the tokenizer (which adds it when the
-- model wants one); bos: the BOS text a format repeats inside the conversation (llama2's "<s>").
function M.render(fmt, messages, bos)
  local out = {}
  local function w(s) out[#out + 1] = s end
  local msgs = messages
  if fmt.name == "chatml" then
    if fmt.default_system and (msgs[1] == nil or msgs[1].role ~= "system") then
      w("<|im_start|>system\n" .. fmt.default_system .. "<|im_end|>\n")
    end
    for _, m in ipairs(msgs) do w("<|im_start|>" .. m.role .. "\n" .. m.content .. "<|im_end|>\n") end
    w("<|im_start|>assistant\n")
  elseif fmt.name == "llama3" then
    for _, m in ipairs(msgs) do
      w("<|start_header_id|>" .. m.role .. "<|end_header_id|>\n\n" .. m.content:match("^%s*(.-)%s*$") .. "<|eot_id|>")
    end
    w("<|start_header_id|>assistant<|end_header_id|>\n\n")
  elseif fmt.name == "mistral" or fmt.name == "llama2" then
    local sys
    if msgs[1] and msgs[1].role == "system" then sys = msgs[1].content; msgs = { unpack(msgs, 2) } end
    local first = true
    for _, m in ipairs(msgs) do
      if m.role == "user" then
        local text = m.content
        if first and sys then
          text = fmt.name == "llama2" and ("<<SYS>>\n" .. sys .. "\n<</SYS>>\n\n" .. text) or (sys .. "\n\n" .. text)
        end
        w((not first and fmt.name == "llama2" and (bos or "<s>") or "") .. "[INST] " .. text .. " [/INST]")
        first = false
      elseif m.role == "assistant" then
        w((fmt.name == "llama2" and " " or "") .. m.content .. (fmt.name == "llama2" and " " or "") .. "</s>")
      end
    end
  elseif fmt.name == "zephyr" then
    for _, m in ipairs(msgs) do w("<|" .. m.role .. "|>\n" .. m.content .. "</s>\n") end
    w("<|assistant|>\n")
  else
    error("unknown chat format " .. tostring(fmt.name), 0)
  end
  return table.concat(out)
end

-- The model's format (from a glq.model Source or loaded model); raises with the reason.
function M.format_of(src)
  local fmt, why = M.recognize(src:chat_template())
  if not fmt then error(src.path .. ": " .. why, 0) end
  return fmt
end

-- Token ids that end the assistant's turn: EOS and the format's end-of-turn tokens.
function M.stop_ids(fmt, tok)
  local ids = { [tok:eos()] = true }
  for _, s in ipairs(fmt.stop) do
    local id = tok:find(s)
    if id then ids[id] = true end
  end
  return ids
end

return M
