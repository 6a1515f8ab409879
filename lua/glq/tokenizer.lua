-- glq.tokenizer: tokenizers built from a GGUF file, a Hugging Face tokenizer.json, or llama2.c's
-- tokenizer.bin. The work is in C (src/model/tokenizer.c); this file reads the formats.
--   tok = glq.tokenizer.load(path)            -- .gguf, .json (tokenizer.json) or llama2.c .bin
--   tok:encode(text, {add_special = true, parse_special = true}) -> {ids} (ids are 0-based)
--   tok:decode(ids, {skip_special = false}) -> text
--   glq.tokenizer.gguf_to_json(g) -> text     -- a tokenizer.json equivalent to the GGUF's tokenizer
--   glq.tokenizer.gguf_config(g) -> table     -- the tokenizer_config.json that goes with it
local core = require "glq.core"
local json = require "glq.json"

local C = core.tokenizer
local M = { new = C.new, load_llama2c = C.load_llama2c, pre_patterns = C.pre_patterns }

-- token types (GGUF tokenizer.ggml.token_type values)
local NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
local SP = "\226\150\129" -- U+2581, SentencePiece's space

-- from a GGUF file object (glq.gguf.open) or path
function M.from_gguf(g)
  if type(g) == "string" then g = core.gguf.open(g) end
  return C.from_gguf(g)
end

-- visit every node of a pre_tokenizer / normalizer / decoder tree (Sequence nodes are flattened)
local function each_node(node, fn)
  if type(node) ~= "table" then return end
  local list = node.pretokenizers or node.normalizers or node.decoders
  if node.type == "Sequence" and list then
    for _, n in ipairs(list) do each_node(n, fn) end
  else
    fn(node)
  end
end

local function regex_literal(s) return "\\Q" .. s .. "\\E" end

-- the regexes of a byte-level pre-tokenizer chain (each splits the pieces of the one before)
local function byte_level_patterns(pre, where)
  local patterns = {}
  local gpt2 = C.pre_patterns("gpt2")[1]
  each_node(pre, function(n)
    if n.type == "ByteLevel" then
      if n.add_prefix_space then error(where .. ": ByteLevel add_prefix_space is not supported", 0) end
      if n.use_regex ~= false then patterns[#patterns + 1] = gpt2 end
    elseif n.type == "Digits" then
      patterns[#patterns + 1] = n.individual_digits and "\\p{N}" or "\\p{N}+"
    elseif n.type == "Split" then
      if n.behavior ~= "Isolated" or n.invert then
        error(where .. ": Split with behavior " .. tostring(n.behavior) .. " is not supported (only Isolated)", 0)
      end
      local p = n.pattern or {}
      patterns[#patterns + 1] = p.Regex or regex_literal(assert(p.String, where .. ": Split without a pattern"))
    else
      error(where .. ": pre-tokenizer " .. tostring(n.type) .. " is not supported", 0)
    end
  end)
  return patterns
end

-- SentencePiece-style json (Llama-2 and the like): spaces become "▁" in the normalizer or a
-- Metaspace pre-tokenizer; returns is_spm, add_space_prefix
local function spm_style(j)
  local spm, prefix = false, false
  local function visit(n)
    if n.type == "Replace" and n.pattern and n.pattern.String == " " and n.content == SP then spm = true end
    if n.type == "Prepend" and n.prepend == SP then prefix = true end
    if n.type == "Metaspace" then
      spm = true
      prefix = prefix or n.add_prefix_space == true or n.prepend_scheme == "always" or n.prepend_scheme == "first"
    end
  end
  each_node(j.normalizer, visit)
  each_node(j.pre_tokenizer, visit)
  return spm, prefix
end

-- BOS/EOS from a TemplateProcessing post-processor: special tokens before / after $A
local function template_specials(j, ids)
  local pp, bos, eos = j.post_processor, nil, nil
  local nodes = {}
  if type(pp) == "table" and pp.type == "Sequence" then nodes = pp.processors or {} else nodes = { pp } end
  for _, n in ipairs(nodes) do
    if type(n) == "table" and n.type == "TemplateProcessing" then
      local seen_a = false
      for _, item in ipairs(n.single or {}) do
        if item.Sequence then seen_a = true
        elseif item.SpecialToken then
          local id = ids[item.SpecialToken.id]
          if seen_a then eos = eos or id else bos = bos or id end
        end
      end
    end
  end
  return bos, eos
end

-- from a tokenizer.json (path or decoded table); opts may set bos, eos (ids), bos_token, eos_token
-- (texts, used when the post-processor adds none: tokenizer_config.json's), add_bos, add_eos.
-- An SPM model with `scores` (one per id; written by gguf_to_json) merges by score as llama.cpp
-- does, else by the merge ranks.
function M.from_json(src, opts)
  opts = opts or {}
  local where = type(src) == "string" and ("tokenizer.json '" .. src .. "'") or "tokenizer.json"
  local j = src
  if type(src) == "string" then
    local err
    j, err = json.read_file(src)
    if not j then error(where .. ": " .. tostring(err), 0) end
  end
  local model = j.model or {}
  if model.type ~= "BPE" then error(where .. ": model type " .. tostring(model.type) .. " is not supported (only BPE)", 0) end
  if (model.continuing_subword_prefix and model.continuing_subword_prefix ~= json.null)
    or (model.end_of_word_suffix and model.end_of_word_suffix ~= json.null) then
    error(where .. ": BPE subword prefixes/suffixes are not supported", 0)
  end
  -- normalizers change the text before the merges: one we do not apply would give other tokens silently
  -- (NFC is accepted: text that is already NFC, nearly all text, is unchanged by it and is not re-normalized)
  each_node(j.normalizer, function(nd)
    local t = nd.type
    local spm_space = t == "Replace" and type(nd.pattern) == "table" and nd.pattern.String == " " and nd.content == SP
    if not (spm_space or (t == "Prepend" and nd.prepend == SP) or t == "NFC" or t == "Sequence") then
      error(string.format("%s: normalizer %s is not supported", where, tostring(t)), 0)
    end
  end)
  -- ids are bounded by the number of entries (a few holes allowed) before any table is sized by them
  local entries = #(j.added_tokens or {})
  for _ in pairs(model.vocab or {}) do entries = entries + 1 end
  local max_id = 2 * entries + 1024
  local tokens, types, ids, n = {}, {}, {}, 0
  local function add(text, id, ty)
    if type(id) ~= "number" or id < 0 or id % 1 ~= 0 then error(where .. ": bad id for token " .. tostring(text), 0) end
    if id >= max_id then
      error(string.format("%s: token %s has id %d, far beyond the %d entries of the vocabulary", where, tostring(text), id, entries), 0)
    end
    tokens[id + 1], types[id + 1], ids[text] = text, ty, id
    if id + 1 > n then n = id + 1 end
  end
  for text, id in pairs(model.vocab or {}) do
    add(text, id, (model.byte_fallback and text:match("^<0x%x%x>$")) and BYTE or NORMAL)
  end
  local unk_token = model.unk_token ~= json.null and model.unk_token or nil
  for _, a in ipairs(j.added_tokens or {}) do
    add(a.content, a.id, not a.special and USER_DEFINED or a.content == unk_token and UNKNOWN or CONTROL)
  end
  if n == 0 then error(where .. ": empty vocabulary", 0) end
  for i = 1, n do -- ids nobody uses
    if not tokens[i] then tokens[i], types[i] = "", UNUSED end
  end
  local merges = {}
  for i, m in ipairs(model.merges or {}) do
    merges[i] = type(m) == "table" and (m[1] .. " " .. m[2]) or m
  end
  local spm, prefix = spm_style(j)
  local scores = spm and type(model.scores) == "table" and model.scores or nil
  if scores and #scores ~= n then error(where .. (": model.scores has %d entries for %d tokens"):format(#scores, n), 0) end
  local bos, eos = template_specials(j, ids)
  local spec = {
    kind = spm and "spm" or "bpe", tokens = tokens, types = types, scores = scores, merges = not scores and merges or nil,
    unk = unk_token and ids[unk_token],
    bos = opts.bos or bos or ids[opts.bos_token], eos = opts.eos or eos or ids[opts.eos_token],
    add_bos = opts.add_bos, add_eos = opts.add_eos,
    add_space_prefix = prefix, ignore_merges = model.ignore_merges == true,
  }
  if spec.add_bos == nil then spec.add_bos = bos ~= nil end
  if spec.add_eos == nil then spec.add_eos = eos ~= nil end
  if not spm then spec.patterns = byte_level_patterns(j.pre_tokenizer, where) end
  return C.new(spec)
end

-- BOS/EOS texts from the tokenizer_config.json beside a tokenizer.json (strings or AddedToken tables)
local function config_specials(path, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local c = json.read_file((path:match("^(.*)/[^/]*$") or ".") .. "/tokenizer_config.json")
  if type(c) ~= "table" then return o end
  local function text(x)
    if type(x) == "table" then x = x.content end
    return type(x) == "string" and x or nil
  end
  o.bos_token = o.bos_token or text(c.bos_token)
  o.eos_token = o.eos_token or text(c.eos_token)
  return o
end

-- by file kind: .gguf, .json (with tokenizer_config.json's BOS/EOS when present), else llama2.c's tokenizer.bin
function M.load(path, opts)
  if path:match("%.gguf$") then return M.from_gguf(path) end
  if path:match("%.json$") then return M.from_json(path, config_specials(path, opts)) end
  return C.load_llama2c(path)
end

-- ---------------------------------------------------------------- GGUF -> tokenizer.json

-- the tokenizer facts of a GGUF file, with the defaults llama.cpp (and glq_tokenizer_from_gguf) use
local function gguf_vocab(g)
  if type(g) == "string" then g = core.gguf.open(g) end
  local m = g:metadata()
  local kind = m["tokenizer.ggml.model"]
  if kind ~= "llama" and kind ~= "gpt2" then
    error(("gguf: tokenizer model '%s' is not supported (only llama and gpt2)"):format(tostring(kind)), 0)
  end
  local spm = kind == "llama"
  local tokens = m["tokenizer.ggml.tokens"]
  if type(tokens) ~= "table" or #tokens == 0 then error("gguf: no tokenizer.ggml.tokens", 0) end
  local function id(key, dflt)
    local v = m["tokenizer.ggml." .. key]
    if v == nil then v = dflt end
    return v and v >= 0 and v or nil
  end
  local function flag(key, dflt)
    local v = m["tokenizer.ggml." .. key]
    if v == nil then return dflt end
    return v == true or (type(v) == "number" and v ~= 0)
  end
  local v = {
    spm = spm, tokens = tokens, types = m["tokenizer.ggml.token_type"] or {}, scores = m["tokenizer.ggml.scores"],
    merges = m["tokenizer.ggml.merges"] or {}, pre = m["tokenizer.ggml.pre"] or "default",
    bos = id("bos_token_id", spm and 1), eos = id("eos_token_id", spm and 2), unk = id("unknown_token_id", spm and 0),
    add_bos = flag("add_bos_token", spm), add_eos = flag("add_eos_token", false),
    add_space_prefix = flag("add_space_prefix", spm), chat_template = m["tokenizer.chat_template"],
  }
  if spm and not v.scores then
    v.scores = {}
    for i = 1, #tokens do v.scores[i] = 0 end
  end
  return v
end

-- "left right" as the C tokenizer reads it (split at the first space after byte 0) -> {left, right}
local function merge_pair(s)
  local k = s:find(" ", 2, true)
  if not k then error(("gguf: merge '%s' is not two tokens separated by a space"):format(s:sub(1, 64)), 0) end
  return { s:sub(1, k - 1), s:sub(k + 1) }
end

-- SPM merges for Hugging Face: every split of a token into two tokens, by the merged token's score
-- (highest first); ties by the merged token's id, then by the left part's length. Only the merged
-- token's text matters to llama.cpp's score-greedy merge, which the C tokenizer (and from_json,
-- through `scores`) follows exactly; the rank order is the nearest a merge list can come.
local function spm_merges(v)
  local ids = {}
  for i, t in ipairs(v.tokens) do ids[t] = i - 1 end
  local list = {}
  for i, t in ipairs(v.tokens) do
    if ids[t] == i - 1 then -- a duplicate text is only ever found as its last id
      for k = 1, #t - 1 do
        local a, b = t:sub(1, k), t:sub(k + 1)
        if ids[a] and ids[b] then list[#list + 1] = { a, b, v.scores[i], i, k } end
      end
    end
  end
  table.sort(list, function(x, y)
    if x[3] ~= y[3] then return x[3] > y[3] end
    if x[4] ~= y[4] then return x[4] < y[4] end
    return x[5] < y[5]
  end)
  local merges = json.array()
  for r, p in ipairs(list) do merges[r] = { p[1], p[2] } end
  return merges
end

local function byte_level(use_regex)
  return { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = use_regex }
end

-- the pre-tokenizer of a tokenizer.ggml.pre name, in the terms HF uses (Digits, ByteLevel with
-- GPT-2's regex, Split for other regexes); from_json turns it back into the same regexes
local function byte_level_pre(pre)
  local pats, ignore_merges = C.pre_patterns(pre)
  if not pats then error(("gguf: pre-tokenizer '%s' is not supported"):format(pre), 0) end
  local gpt2 = C.pre_patterns("gpt2")[1]
  local nodes = {}
  for i, p in ipairs(pats) do
    if p == "\\p{N}" or p == "\\p{N}+" then
      nodes[i] = { type = "Digits", individual_digits = p == "\\p{N}" }
    elseif p == gpt2 and i == #pats then
      nodes[i] = byte_level(true)
    else
      nodes[i] = { type = "Split", pattern = { Regex = p }, behavior = "Isolated", invert = false }
    end
  end
  if pats[#pats] ~= gpt2 then nodes[#nodes + 1] = byte_level(false) end
  return #nodes == 1 and nodes[1] or { type = "Sequence", pretokenizers = nodes }, ignore_merges
end

-- TemplateProcessing that adds BOS / EOS as the GGUF says
local function template(v)
  local single, pair, specials = json.array(), json.array(), {}
  local function special(list, id, type_id)
    local t = v.tokens[id + 1]
    list[#list + 1] = { SpecialToken = { id = t, type_id = type_id } }
    specials[t] = { id = t, ids = { id }, tokens = { t } }
  end
  for _, s in ipairs({ { single, "A", 0 }, { pair, "A", 0 }, { pair, "B", 1 } }) do
    local list, name, type_id = s[1], s[2], s[3]
    if v.add_bos and v.bos then special(list, v.bos, type_id) end
    list[#list + 1] = { Sequence = { id = name, type_id = type_id } }
    if v.add_eos and v.eos then special(list, v.eos, type_id) end
  end
  return { type = "TemplateProcessing", single = single, pair = pair, special_tokens = specials }
end

-- A Hugging Face tokenizer.json (text) for a GGUF file's tokenizer (object or path). from_json reads it
-- back to the same tokenizer; Hugging Face tokenizers reads it too (for SPM vocabularies, as the merge
-- list approximates the score order; the `scores` it ignores keep glq exact).
function M.gguf_to_json(g)
  local v = gguf_vocab(g)
  local vocab, added, byte_tokens = {}, json.array(), false
  for i, t in ipairs(v.tokens) do
    local ty = v.types[i] or NORMAL
    vocab[t] = i - 1
    byte_tokens = byte_tokens or ty == BYTE
    if ty == CONTROL or ty == USER_DEFINED or ty == UNKNOWN then
      added[#added + 1] = { id = i - 1, content = t, single_word = false, lstrip = false, rstrip = false,
        normalized = false, special = ty ~= USER_DEFINED }
    end
  end
  -- from_json types the model's unk_token UNKNOWN, so it is named only when the GGUF's is of that type
  local unk = v.unk and v.types[v.unk + 1] == UNKNOWN and v.tokens[v.unk + 1] or json.null
  local model = { type = "BPE", dropout = json.null, unk_token = unk, continuing_subword_prefix = json.null,
    end_of_word_suffix = json.null, fuse_unk = v.spm, byte_fallback = v.spm or byte_tokens, ignore_merges = false,
    vocab = vocab }
  local j = { version = "1.0", truncation = json.null, padding = json.null, added_tokens = added, model = model,
    normalizer = json.null, pre_tokenizer = json.null, post_processor = json.null }
  if v.spm then
    model.merges, model.scores = spm_merges(v), v.scores
    local norm, dec = json.array(), json.array()
    if v.add_space_prefix then norm[1] = { type = "Prepend", prepend = SP } end
    norm[#norm + 1] = { type = "Replace", pattern = { String = " " }, content = SP }
    dec[1] = { type = "Replace", pattern = { String = SP }, content = " " }
    dec[2] = { type = "ByteFallback" }
    dec[3] = { type = "Fuse" }
    if v.add_space_prefix then dec[4] = { type = "Strip", content = " ", start = 1, stop = 0 } end
    j.normalizer = { type = "Sequence", normalizers = norm }
    j.decoder = { type = "Sequence", decoders = dec }
  else
    model.merges = json.array()
    for r, s in ipairs(v.merges) do model.merges[r] = merge_pair(s) end
    j.pre_tokenizer, model.ignore_merges = byte_level_pre(v.pre)
    j.decoder = { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true }
    j.post_processor = { type = "ByteLevel", add_prefix_space = true, trim_offsets = false, use_regex = true }
  end
  if v.add_bos or v.add_eos then j.post_processor = template(v) end
  return json.encode(j, { indent = 2 }) .. "\n"
end

-- The tokenizer_config.json (a table) that goes with gguf_to_json's file: BOS/EOS/unk texts (M.load
-- reads BOS/EOS from it when the post-processor adds none), add flags and the chat template.
function M.gguf_config(g)
  local v = gguf_vocab(g)
  local function text(id) return id and v.tokens[id + 1] or json.null end
  return { tokenizer_class = "PreTrainedTokenizerFast", bos_token = text(v.bos), eos_token = text(v.eos),
    unk_token = text(v.unk), add_bos_token = v.add_bos, add_eos_token = v.add_eos,
    clean_up_tokenization_spaces = false, chat_template = v.chat_template }
end

return M
