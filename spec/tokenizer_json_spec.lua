-- glq.tokenizer.gguf_to_json: the tokenizer.json written for a GGUF model must load (through
-- glq.tokenizer.load, with the tokenizer_config.json of gguf_config beside it) to a tokenizer that
-- gives the GGUF tokenizer's ids and decoded text on real text, special tokens and BOS/EOS included.
local glq = require "glq"
local util = require "spec.support.util"
local exists = util.exists
local slurp = util.slurp
local spit = util.spit
local json = require "glq.json"
local cjson = require "cjson"

local STORIES = "../shared/models/stories260K/stories260K.gguf"
local CACHE = os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "") .. "/.cache/glq")
local SMOLLM2 = os.getenv("GLQ_SMOLLM2") or (CACHE .. "/SmolLM2-135M-Instruct.Q4_1.gguf")
local TEXTS = { "../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt", "../shared/text/calib/multilingual.utf8" }
local PREFIX = 200 * 1024 -- bytes of each text file compared
local SP = "\226\150\129"

local REF = cjson.decode(slurp("spec/fixtures/tokenizer/reference_ids.json"))

-- the texts both tokenizers must agree on: fixture strings, then the text-file prefixes present
local function corpus()
  local list = {}
  for _, s in ipairs(REF.strings) do list[#list + 1] = s end
  for _, p in ipairs(TEXTS) do
    if exists(p) then list[#list + 1] = slurp(p, PREFIX) end
  end
  return list
end

-- write tokenizer.json + tokenizer_config.json for g into a fresh directory; returns the json path
local function write_checkpoint_files(g)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  spit(dir .. "/tokenizer.json", glq.tokenizer.gguf_to_json(g))
  spit(dir .. "/tokenizer_config.json", json.encode(glq.tokenizer.gguf_config(g), { indent = 2 }))
  return dir .. "/tokenizer.json", dir
end

local function remove_dir(dir)
  os.remove(dir .. "/tokenizer.json")
  os.remove(dir .. "/tokenizer_config.json")
  os.remove(dir)
end

-- ids and decoded text (with and without special tokens) agree, with and without BOS/EOS
local function assert_same_tokenizer(want, got, texts)
  assert.equals(want:kind(), got:kind())
  assert.equals(want:n_vocab(), got:n_vocab())
  assert.equals(want:bos(), got:bos())
  assert.equals(want:eos(), got:eos())
  for id = 0, want:n_vocab() - 1 do
    if want:token(id) ~= got:token(id) then assert.equals(want:token(id), got:token(id), "token " .. id) end
  end
  for i, s in ipairs(texts) do
    local what = ("text %d: %q"):format(i, #s > 60 and (s:sub(1, 60) .. "...") or s)
    for _, o in ipairs({ {}, { add_special = false }, { parse_special = false } }) do
      local ids = want:encode(s, o)
      assert.same(ids, got:encode(s, o), what)
      assert.equals(want:decode(ids), got:decode(ids), what)
      assert.equals(want:decode(ids, { skip_special = true }), got:decode(ids, { skip_special = true }), what)
    end
  end
end

describe("gguf_to_json: stories260K (SPM, scores)", function()
  if not exists(STORIES) then
    pending("skipped: " .. STORIES .. " not found (../shared is not available)")
    return
  end
  local g = glq.gguf.open(STORIES)
  local want = glq.tokenizer.from_gguf(g)
  local path, dir = write_checkpoint_files(g)
  local j = json.read_file(path)
  local got = glq.tokenizer.load(path)

  it("writes a Llama-2 style tokenizer.json (BPE + byte fallback, ▁ normalizer, BOS template)", function()
    assert.equals("1.0", j.version)
    assert.equals("BPE", j.model.type)
    assert.is_true(j.model.byte_fallback)
    assert.equals("<unk>", j.model.unk_token)
    assert.equals(3, j.model.vocab["<0x00>"])
    assert.equals(512, #j.model.scores)
    assert.same({ { type = "Prepend", prepend = SP }, { type = "Replace", pattern = { String = " " }, content = SP } },
      j.normalizer.normalizers)
    assert.same({ "Replace", "ByteFallback", "Fuse", "Strip" },
      { j.decoder.decoders[1].type, j.decoder.decoders[2].type, j.decoder.decoders[3].type, j.decoder.decoders[4].type })
    assert.same({ { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } } }, j.post_processor.single)
    assert.same({ "<unk>", "<s>", "</s>" }, { j.added_tokens[1].content, j.added_tokens[2].content, j.added_tokens[3].content })
    -- merges: every two-token split of a token, best merged score first
    local toks, scores = g:metadata()["tokenizer.ggml.tokens"], g:metadata()["tokenizer.ggml.scores"]
    local id_of, last = {}, math.huge
    for i, t in ipairs(toks) do id_of[t] = i end
    for _, m in ipairs(j.model.merges) do
      local s = scores[id_of[m[1] .. m[2]]]
      assert.is_true(s <= last)
      last = s
    end
    local n = 0 -- every split of every token into two tokens is a merge
    for _, t in ipairs(toks) do
      for k = 1, #t - 1 do n = n + ((id_of[t:sub(1, k)] and id_of[t:sub(k + 1)]) and 1 or 0) end
    end
    assert.equals(n, #j.model.merges)
    assert.same({ { SP .. "t", "he" }, { SP .. "th", "e" } }, { j.model.merges[7], j.model.merges[8] }) -- tie: shorter left first
    assert.equals(glq.tokenizer.gguf_to_json(g), slurp(path)) -- deterministic
  end)

  it("loads to the GGUF tokenizer: same ids and text on fixtures, WikiText-2 and multilingual text", function()
    assert_same_tokenizer(want, got, corpus())
    for i, s in ipairs(REF.strings) do assert.same(REF.stories260K[i], got:encode(s)) end
  end)

  it("adds BOS (and no EOS) as the GGUF says, and drops it again when decoding", function()
    assert.same({ 1, 403, 407, 261, 378 }, got:encode("Once upon a time"))
    assert.same({ 403, 407, 261, 378 }, got:encode("Once upon a time", { add_special = false }))
    assert.equals("Once upon a time", got:decode({ 1, 403, 407, 261, 378 }))
    assert.same({ 1, 2, 1 }, got:encode("</s><s>"))
  end)

  it("rank-greedy merges (the HF reading, scores dropped) agree with llama.cpp's score-greedy merge on the test texts", function()
    local j2 = cjson.decode(slurp(path))
    j2.model.scores = nil
    local ranked = glq.tokenizer.from_json(j2, { eos = 2 })
    assert_same_tokenizer(want, ranked, corpus())
  end)

  teardown(function() remove_dir(dir) end)
end)

describe("gguf_to_json: SmolLM2 (GPT-2 byte-level BPE, smollm pre-tokenizer)", function()
  if not exists(SMOLLM2) then
    pending("skipped: " .. SMOLLM2 .. " not found (run scripts/fetch-model.sh)")
    return
  end
  local g = glq.gguf.open(SMOLLM2)
  local m = g:metadata()
  local want = glq.tokenizer.from_gguf(g)
  local path, dir = write_checkpoint_files(g)
  local j = json.read_file(path)
  local got = glq.tokenizer.load(path)

  it("writes HF's SmolLM2 layout: Digits + ByteLevel pre-tokenizer, GGUF merges, control tokens special", function()
    assert.same({ type = "Sequence", pretokenizers = {
      { type = "Digits", individual_digits = true },
      { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true } } }, j.pre_tokenizer)
    assert.equals("ByteLevel", j.decoder.type)
    assert.equals("ByteLevel", j.post_processor.type) -- the GGUF says add_bos_token = false
    assert.is_false(j.model.byte_fallback)
    assert.is_nil(j.model.scores)
    assert.equals(#m["tokenizer.ggml.merges"], #j.model.merges)
    for r, s in ipairs(m["tokenizer.ggml.merges"]) do
      if j.model.merges[r][1] .. " " .. j.model.merges[r][2] ~= s then assert.equals(s, table.concat(j.model.merges[r], " ")) end
    end
    assert.equals(17, #j.added_tokens)
    for _, a in ipairs(j.added_tokens) do
      assert.is_true(a.special)
      assert.equals(a.id, j.model.vocab[a.content])
    end
    local cfg = json.read_file(dir .. "/tokenizer_config.json")
    assert.equals("<|im_start|>", cfg.bos_token)
    assert.equals("<|im_end|>", cfg.eos_token)
    assert.is_false(cfg.add_bos_token)
    assert.equals(m["tokenizer.chat_template"], cfg.chat_template)
  end)

  it("loads to the GGUF tokenizer: same ids and text on fixtures, WikiText-2 and multilingual text", function()
    assert_same_tokenizer(want, got, corpus())
    for i, s in ipairs(REF.strings) do assert.same(REF.smollm2[i], got:encode(s)) end
  end)

  it("splits special tokens, adds no BOS, and knows BOS/EOS from tokenizer_config.json", function()
    assert.equals(1, got:bos())
    assert.equals(2, got:eos())
    local ids = got:encode("<|im_start|>user\nHi<|im_end|>")
    assert.equals(1, ids[1])
    assert.equals(2, ids[#ids])
    assert.same(want:encode("<|im_start|>", { parse_special = false }), got:encode("<|im_start|>", { parse_special = false }))
    assert.equals("user\nHi", got:decode(ids, { skip_special = true }))
    -- the tokenizer.json alone gives the same ids; only the BOS/EOS facts need the config
    local alone = glq.tokenizer.from_json(path)
    assert.same(ids, alone:encode("<|im_start|>user\nHi<|im_end|>"))
    assert.is_nil(alone:eos())
  end)

  it("adds BOS/EOS through a TemplateProcessing when the GGUF asks for them", function()
    -- same vocabulary with add_bos/add_eos set: the metadata table stands in for the file
    local fake = { metadata = function()
      local t = {}
      for k, v in pairs(m) do t[k] = v end
      t["tokenizer.ggml.add_bos_token"], t["tokenizer.ggml.add_eos_token"] = true, true
      return t
    end }
    local j2 = cjson.decode(glq.tokenizer.gguf_to_json(fake))
    assert.equals("TemplateProcessing", j2.post_processor.type)
    local t = glq.tokenizer.from_json(j2)
    assert.same({ 1, 19556, 905, 2 }, t:encode("Hello world"))
    assert.equals("Hello world", t:decode({ 1, 19556, 905, 2 }))
  end)

  teardown(function() remove_dir(dir) end)
end)

describe("gguf_to_json: pre-tokenizers", function()
  it("expresses every known pre-tokenizer so that from_json gets the same regexes back", function()
    for _, pre in ipairs({ "default", "gpt2", "smollm", "llama-bpe", "dbrx", "qwen2" }) do
      -- a byte-level vocabulary of the 256 byte characters and one merge
      local tokens, types = {}, {}
      for b = 0, 255 do
        local printable = (b >= 33 and b <= 126) or (b >= 161 and b <= 172) or (b >= 174)
        tokens[#tokens + 1] = printable and (b < 128 and string.char(b) or string.char(0xC0 + math.floor(b / 64), 0x80 + b % 64)) or ("#" .. b)
        types[#types + 1] = 1
      end
      local fake = { metadata = function()
        return { ["tokenizer.ggml.model"] = "gpt2", ["tokenizer.ggml.pre"] = pre, ["tokenizer.ggml.tokens"] = tokens,
          ["tokenizer.ggml.token_type"] = types, ["tokenizer.ggml.merges"] = { "a b" } }
      end }
      local j = cjson.decode(glq.tokenizer.gguf_to_json(fake))
      local pats, ignore = glq.tokenizer.pre_patterns(pre)
      assert.equals(pre == "llama-bpe", ignore, pre) -- llama-3 keeps pieces that are tokens whole
      assert.equals(ignore, j.model.ignore_merges, pre)
      local t = glq.tokenizer.from_json(j)
      local s = "Hello, world!! 12345 don't   x\n\n+= 1.5"
      local ref = glq.tokenizer.new({ kind = "bpe", tokens = tokens, types = types, merges = { "a b" }, patterns = pats })
      assert.same(ref:pre_tokenize(s), t:pre_tokenize(s), pre)
      if pre == "gpt2" then assert.same({ type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true }, j.pre_tokenizer) end
      if pre == "llama-bpe" then assert.equals("Split", j.pre_tokenizer.pretokenizers[1].type) end
    end
  end)

  it("refuses tokenizer models and pre-tokenizers it cannot express", function()
    local function fake(meta) return { metadata = function() return meta end } end
    assert.has_error(function() glq.tokenizer.gguf_to_json(fake({ ["tokenizer.ggml.model"] = "bert", ["tokenizer.ggml.tokens"] = { "a" } })) end,
      "gguf: tokenizer model 'bert' is not supported (only llama and gpt2)")
    assert.has_error(function()
      glq.tokenizer.gguf_to_json(fake({ ["tokenizer.ggml.model"] = "gpt2", ["tokenizer.ggml.pre"] = "nope",
        ["tokenizer.ggml.tokens"] = { "a", "b", "ab" }, ["tokenizer.ggml.merges"] = { "a b" } }))
    end, "gguf: pre-tokenizer 'nope' is not supported")
  end)
end)
