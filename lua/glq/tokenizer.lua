-- glq.tokenizer: tokenizers built from a GGUF file, a Hugging Face tokenizer.json, or llama2.c's
-- tokenizer.bin. The work is in C (src/model/tokenizer.c); this file reads the formats.
--   tok = glq.tokenizer.load(path)            -- .gguf, .json (tokenizer.json) or llama2.c .bin
--   tok:encode(text, {add_special = true, parse_special = true}) -> {ids} (ids are 0-based)
--   tok:decode(ids, {skip_special = false}) -> text
local core = require "glq.core"
local json = require "glq.json"

local C = core.tokenizer
local M = { new = C.new, load_llama2c = C.load_llama2c, pre_patterns = C.pre_patterns }

-- token types (GGUF tokenizer.ggml.token_type values)
local NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6

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
    if n.type == "Replace" and n.pattern and n.pattern.String == " " and n.content == "\226\150\129" then spm = true end
    if n.type == "Prepend" and n.prepend == "\226\150\129" then prefix = true end
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

-- from a tokenizer.json (path or decoded table); opts may set bos, eos, add_bos, add_eos
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
  local tokens, types, ids, n = {}, {}, {}, 0
  local function add(text, id, ty)
    if type(id) ~= "number" or id < 0 or id % 1 ~= 0 then error(where .. ": bad id for token " .. tostring(text), 0) end
    tokens[id + 1], types[id + 1], ids[text] = text, ty, id
    if id + 1 > n then n = id + 1 end
  end
  for text, id in pairs(model.vocab or {}) do
    add(text, id, (model.byte_fallback and text:match("^<0x%x%x>$")) and BYTE or NORMAL)
  end
  for _, a in ipairs(j.added_tokens or {}) do add(a.content, a.id, a.special and CONTROL or USER_DEFINED) end
  if n == 0 then error(where .. ": empty vocabulary", 0) end
  for i = 1, n do -- ids nobody uses
    if not tokens[i] then tokens[i], types[i] = "", UNUSED end
  end
  local merges = {}
  for i, m in ipairs(model.merges or {}) do
    merges[i] = type(m) == "table" and (m[1] .. " " .. m[2]) or m
  end
  local spm, prefix = spm_style(j)
  local bos, eos = template_specials(j, ids)
  local spec = {
    kind = spm and "spm" or "bpe", tokens = tokens, types = types, merges = merges,
    unk = model.unk_token and model.unk_token ~= json.null and ids[model.unk_token] or nil,
    bos = opts.bos or bos, eos = opts.eos or eos,
    add_bos = opts.add_bos, add_eos = opts.add_eos,
    add_space_prefix = prefix, ignore_merges = model.ignore_merges == true,
  }
  if spec.add_bos == nil then spec.add_bos = bos ~= nil end
  if spec.add_eos == nil then spec.add_eos = eos ~= nil end
  if not spm then spec.patterns = byte_level_patterns(j.pre_tokenizer, where) end
  return C.new(spec)
end

-- by file kind: .gguf, .json, else llama2.c's tokenizer.bin
function M.load(path, opts)
  if path:match("%.gguf$") then return M.from_gguf(path) end
  if path:match("%.json$") then return M.from_json(path, opts) end
  return C.load_llama2c(path)
end

return M
