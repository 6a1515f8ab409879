-- Tokenizers: SentencePiece-style BPE (llama vocab) and GPT-2 byte-level BPE. Ids are checked
-- against independent references (spec/fixtures/tokenizer/README.md says how they were made).
local glq = require "glq"
local util = require "spec.support.util"
local exists = util.exists
local slurp = util.slurp
local cjson = require "cjson"

local STORIES = "../shared/models/stories260K"
local WIKI = "../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt"
local CACHE = os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "") .. "/.cache/glq")
local SMOLLM2 = os.getenv("GLQ_SMOLLM2") or (CACHE .. "/SmolLM2-135M-Instruct.Q4_1.gguf")
local SP = "\226\150\129" -- U+2581

local REF = cjson.decode(slurp("spec/fixtures/tokenizer/reference_ids.json"))

-- every reference string encodes to its ids and decodes back to itself
local function check_reference(tok, key)
  for i, s in ipairs(REF.strings) do
    local ids = tok:encode(s)
    assert.same(REF[key][i], ids, ("%s: %q"):format(key, s))
    assert.equals(s, tok:decode(ids), ("%s decode: %q"):format(key, s))
  end
end

-- GPT-2's byte -> character table (printable Latin-1 stands for itself, the rest from U+0100)
local function byte_level_alphabet()
  local chars, n = {}, 0
  for b = 0, 255 do
    local printable = (b >= 33 and b <= 126) or (b >= 161 and b <= 172) or (b >= 174)
    local cp = printable and b or 256 + n
    if not printable then n = n + 1 end
    chars[b] = cp < 128 and string.char(cp) or string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
  end
  return chars
end

describe("tokenizer (synthetic vocabularies)", function()
  -- byte-level BPE: 256 byte characters, then merges "a b" -> ab, "ab c" -> abc, "Ġ a" -> Ġa
  local alpha = byte_level_alphabet()
  local function bpe_spec(extra)
    local tokens = {}
    for b = 0, 255 do tokens[b + 1] = alpha[b] end
    for _, t in ipairs({ "ab", "abc", alpha[32] .. "a", "<|s|>", "<|e|>" }) do tokens[#tokens + 1] = t end
    local types = {}
    for i = 1, #tokens do types[i] = 1 end
    types[260], types[261] = 3, 4 -- control, user-defined
    local spec = { kind = "bpe", tokens = tokens, types = types, merges = { "a b", "ab c", alpha[32] .. " a" },
      patterns = glq.tokenizer.pre_patterns("gpt2"), bos = 259, eos = 259 }
    for k, v in pairs(extra or {}) do spec[k] = v end
    return spec
  end
  local bpe = glq.tokenizer.new(bpe_spec())

  it("byte-level BPE merges by rank within pre-tokenizer pieces", function()
    -- ids: byte b -> b, ab 256, abc 257, Ġa 258. Pieces "abc", " abd": "a b" (rank 0) beats "Ġ a" (rank 2)
    assert.same({ 257, 32, 256, 100 }, bpe:encode("abc abd"))
    assert.same({ 258, 99, 32, 257 }, bpe:encode(" ac abc"))
    assert.equals(258, bpe:find(alpha[32] .. "a"))
    assert.equals(alpha[32] .. "a", bpe:token(258))
    assert.is_nil(bpe:find("zz"))
    assert.same({ "abc", " abd", "  ", " x" }, bpe:pre_tokenize("abc abd   x"))
    assert.same({ 49, 50, 51, 32, 32, 32, 120 }, bpe:encode("123   x")) -- pieces "123", "  ", " x"
  end)

  it("splits special tokens out first and decodes them as text", function()
    assert.same({ 259, 256, 260, 97 }, bpe:encode("<|s|>ab<|e|>a"))
    assert.same({ 60, 124, 115, 124, 62 }, bpe:encode("<|s|>", { parse_special = false }))
    assert.equals("<|s|>ab<|e|>a", bpe:decode({ 259, 256, 260, 97 }))
    assert.equals("ab<|e|>a", bpe:decode({ 259, 256, 260, 97 }, { skip_special = true }))
  end)

  it("adds BOS/EOS on request and drops them again when decoding", function()
    local t = glq.tokenizer.new(bpe_spec({ add_bos = true, add_eos = true }))
    assert.same({ 259, 97, 259 }, t:encode("a"))
    assert.same({ 97 }, t:encode("a", { add_special = false }))
    assert.equals("a", t:decode(t:encode("a")))
  end)

  it("round-trips arbitrary bytes, invalid UTF-8 included", function()
    local s = "\255\254 x\192\128 \237\160\128 é🙂\0 end"
    assert.equals(s, bpe:decode(bpe:encode(s)))
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    all = table.concat(all)
    assert.equals(all, bpe:decode(bpe:encode(all)))
  end)

  it("loads a byte-level tokenizer.json file", function()
    local vocab = {}
    for b = 0, 255 do vocab[alpha[b]] = b end
    vocab.ab, vocab.abc, vocab[alpha[32] .. "a"] = 256, 257, 258
    local j = {
      model = { type = "BPE", vocab = vocab, merges = { "a b", { "ab", "c" }, alpha[32] .. " a" } },
      added_tokens = { { id = 259, content = "<|s|>", special = true }, { id = 260, content = "<|e|>", special = false } },
      pre_tokenizer = { type = "ByteLevel", add_prefix_space = false, use_regex = true },
      post_processor = { type = "TemplateProcessing", single = { { SpecialToken = { id = "<|s|>" } }, { Sequence = { id = "A" } } } },
    }
    local base = os.tmpname()
    local path = base .. ".json"
    local f = assert(io.open(path, "wb"))
    f:write(cjson.encode(j))
    f:close()
    local t = glq.tokenizer.load(path)
    assert.equals(259, t:bos())
    assert.same({ 259, 257, 32, 256, 100, 260 }, t:encode("abc abd<|e|>"))
    assert.equals("abc abd<|e|>", t:decode(t:encode("abc abd<|e|>")))
    j.model.type = "Unigram"
    f = assert(io.open(path, "wb"))
    f:write(cjson.encode(j))
    f:close()
    local ok, err = pcall(glq.tokenizer.load, path)
    os.remove(path)
    os.remove(base)
    assert.is_false(ok)
    assert.matches(path, err, 1, true)
    assert.matches("model type Unigram is not supported", err, 1, true)
  end)

  it("SPM: score-ordered merges, dummy prefix, byte fallback", function()
    local tokens, scores, types = { "<unk>", "<s>", "</s>" }, { 0, 0, 0 }, { 2, 3, 3 }
    for b = 0, 255 do
      tokens[#tokens + 1] = ("<0x%02X>"):format(b)
      scores[#scores + 1], types[#types + 1] = 0, 6
    end
    for i, t in ipairs({ SP, "a", "b", SP .. "a", "ab", SP .. "ab", "é" }) do
      tokens[#tokens + 1] = t
      scores[#scores + 1], types[#types + 1] = -i, 1
    end
    -- ids: ▁ 259, a 260, b 261, ▁a 262, ab 263, ▁ab 264, é 265
    local spm = glq.tokenizer.new({ kind = "spm", tokens = tokens, scores = scores, types = types,
      bos = 1, eos = 2, unk = 0, add_bos = true })
    -- "▁ab": ▁a (score -4) beats ab (-5), then ▁a+b = ▁ab (-6)
    assert.same({ 1, 264 }, spm:encode("ab"))
    assert.same({ 1, 264, 259, 262 }, spm:encode("ab  a"))
    assert.same({ 1, 259, 265, 3 + 0xC3, 3 + 0xBC }, spm:encode("éü"))
    assert.same({ 1 }, spm:encode(""))
    for _, s in ipairs({ "ab  a", "éü", " lead", "x\255y", "", "<s>a</s>b" }) do
      assert.equals(s, spm:decode(spm:encode(s)))
    end
    assert.same({ 1, 1, 262 }, spm:encode("<s>a"))
  end)

  it("reports bad input with clear errors", function()
    local ok, err = pcall(bpe.decode, bpe, { 1, 99999 })
    assert.is_false(ok)
    assert.matches("id 99999 at position 1 is outside the vocabulary", err, 1, true)
    ok, err = pcall(glq.tokenizer.new, bpe_spec({ patterns = { "(" } }))
    assert.is_false(ok)
    assert.matches("regex 1", err, 1, true)
    ok, err = pcall(glq.tokenizer.new, bpe_spec({ merges = { "nospace" } }))
    assert.is_false(ok)
    assert.matches("merge 0", err, 1, true)
    ok, err = pcall(glq.tokenizer.new, bpe_spec({ bos = 5000 }))
    assert.is_false(ok)
    assert.matches("BOS id 5000", err, 1, true)
  end)

  it("knows the pre-tokenizers of common models", function()
    assert.equals(2, #glq.tokenizer.pre_patterns("smollm"))
    assert.equals("\\p{N}", glq.tokenizer.pre_patterns("smollm")[1])
    assert.equals(1, #glq.tokenizer.pre_patterns("llama-bpe"))
    assert.equals(1, #glq.tokenizer.pre_patterns("qwen2"))
    assert.is_nil(glq.tokenizer.pre_patterns("no-such-model"))
  end)
end)

describe("stories260K tokenizer (SPM, llama vocab)", function()
  local gguf_path, bin_path = STORIES .. "/stories260K.gguf", STORIES .. "/tok512.bin"
  if not exists(gguf_path) then
    pending("skipped: " .. gguf_path .. " not found (../shared is not available)")
    return
  end
  local tok = glq.tokenizer.load(gguf_path)

  it("matches llama2.c's ids and round-trips (from the GGUF)", function()
    assert.equals("spm", tok:kind())
    assert.equals(512, tok:n_vocab())
    assert.equals(1, tok:bos())
    assert.equals(2, tok:eos())
    check_reference(tok, "stories260K")
    local ref = cjson.decode(slurp(STORIES .. "/reference/prompt_once_upon_a_time_logits.json"))
    assert.same(ref.token_ids_with_bos, tok:encode(ref.prompt))
  end)

  it("loads llama2.c's tok512.bin with the same result", function()
    local t2 = glq.tokenizer.load(bin_path)
    check_reference(t2, "stories260K")
    for id = 0, 511 do
      if id > 2 then assert.equals(tok:token(id), t2:token(id)) end
    end
  end)

  it("gives the reference token count for WikiText-2 test (815070 with BOS)", function()
    if not exists(WIKI) then return pending("skipped: " .. WIKI .. " not found") end
    local text = slurp(WIKI)
    local ids = tok:encode(text)
    assert.equals(815070, #ids)
    assert.equals(text, tok:decode(ids))
  end)

  it("builds the same tokenizer from a Llama-2 style tokenizer.json (merges by rank)", function()
    -- vocab + merges as HF's converter makes them: every split of a token into two tokens,
    -- ordered by the merged token's score
    local g = glq.gguf.open(gguf_path)
    local m = g:metadata()
    local toks, scores = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.scores"]
    local vocab, added, pairs_ = {}, {}, {}
    for i, t in ipairs(toks) do
      if i <= 3 then added[#added + 1] = { id = i - 1, content = t, special = true } else vocab[t] = i - 1 end
    end
    for i, t in ipairs(toks) do
      if i > 3 + 256 then
        for k = 1, #t - 1 do
          local a, b = t:sub(1, k), t:sub(k + 1)
          if vocab[a] and vocab[b] then pairs_[#pairs_ + 1] = { a, b, scores[i], i } end
        end
      end
    end
    table.sort(pairs_, function(x, y) if x[3] ~= y[3] then return x[3] > y[3] end return x[4] < y[4] end)
    local merges = {}
    for i, p in ipairs(pairs_) do merges[i] = p[1] .. " " .. p[2] end
    local j = {
      model = { type = "BPE", vocab = vocab, merges = merges, byte_fallback = true, unk_token = "<unk>" },
      added_tokens = added,
      normalizer = { type = "Sequence", normalizers = {
        { type = "Prepend", prepend = SP }, { type = "Replace", pattern = { String = " " }, content = SP } } },
      post_processor = { type = "TemplateProcessing", single = { { SpecialToken = { id = "<s>" } }, { Sequence = { id = "A" } } } },
    }
    local t = glq.tokenizer.from_json(j)
    assert.equals("spm", t:kind())
    check_reference(t, "stories260K")
  end)
end)

describe("SmolLM2 tokenizer (GPT-2 byte-level BPE, smollm pre-tokenizer)", function()
  if not exists(SMOLLM2) then
    pending("skipped: " .. SMOLLM2 .. " not found (run scripts/fetch-model.sh)")
    return
  end
  local g = glq.gguf.open(SMOLLM2)
  local tok = glq.tokenizer.from_gguf(g)

  it("matches HF tokenizers' ids and round-trips (from the GGUF)", function()
    assert.equals("bpe", tok:kind())
    assert.equals(49152, tok:n_vocab())
    assert.equals(1, tok:bos())
    check_reference(tok, "smollm2")
  end)

  it("builds the same tokenizer from a tokenizer.json", function()
    local m = g:metadata()
    local vocab, added = {}, {}
    for i, t in ipairs(m["tokenizer.ggml.tokens"]) do
      if m["tokenizer.ggml.token_type"][i] == 3 then
        added[#added + 1] = { id = i - 1, content = t, special = true }
      end
      vocab[t] = i - 1
    end
    local merges = {}
    for i, s in ipairs(m["tokenizer.ggml.merges"]) do -- the newer [left, right] form
      local a, b = s:match("^(.-) (.*)$")
      merges[i] = { a, b }
    end
    local t = glq.tokenizer.from_json({
      model = { type = "BPE", vocab = vocab, merges = merges },
      added_tokens = added,
      pre_tokenizer = { type = "Sequence", pretokenizers = {
        { type = "Digits", individual_digits = true },
        { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true } } },
      decoder = { type = "ByteLevel" },
    })
    check_reference(t, "smollm2")
  end)

  it("splits text like HF's pre-tokenizers (smollm, llama3, qwen2 regexes)", function()
    local m = g:metadata()
    for _, pre in ipairs({ "smollm", "llama3", "qwen2" }) do
      local t = glq.tokenizer.new({ kind = "bpe", tokens = m["tokenizer.ggml.tokens"], types = m["tokenizer.ggml.token_type"],
        merges = m["tokenizer.ggml.merges"], patterns = glq.tokenizer.pre_patterns(pre), ignore_merges = pre == "llama3" })
      local key = pre == "smollm" and "smollm2" or ("smollm2_vocab_" .. pre .. "_pre")
      for i, s in ipairs(REF.strings) do
        assert.same(REF.pieces[pre][i], t:pre_tokenize(s), ("%s pieces: %q"):format(pre, s))
        assert.same(REF[key][i], t:encode(s), ("%s ids: %q"):format(pre, s))
      end
    end
  end)

  it("round-trips WikiText-2 test", function()
    if not exists(WIKI) then return pending("skipped: " .. WIKI .. " not found") end
    local text = slurp(WIKI)
    assert.equals(text, tok:decode(tok:encode(text)))
  end)
end)
