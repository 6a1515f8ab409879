-- Daily use (issue #18): the commands as a user types them (help, validation, info on a checkpoint,
-- eval's fields, chat, the quantize budget and Ctrl-C), the chat formats, the API docs being current.
-- The REPL in a terminal (help, Ctrl-C during a computation) is tests/repl_tmux.sh.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local util = require "spec.support.util"

local BIN = util.bin
local STORIES = "../shared/models/stories260K/stories260K.gguf"
local WIKI = "../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt"
local SMOL = (os.getenv("GLQ_CACHE") or ((os.getenv("HOME") or "") .. "/.cache/glq")) .. "/SmolLM2-135M-Instruct.Q4_1.gguf"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- stdout, stderr, status of `[env] glq args`
local function glq(args, env, stdin)
  local errf = os.tmpname()
  local cmd = (stdin and "printf '%s' " .. q(stdin) .. " | " or "") .. (env or "") .. " " .. q(BIN) .. " " .. args ..
    " 2>" .. errf .. (stdin and "" or " </dev/null") .. '; echo "::status=$?"'
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local status = tonumber(out:match("::status=(%d+)\n$"))
  out = out:gsub("::status=%d+\n$", "")
  local err = util.slurp(errf)
  os.remove(errf)
  return out, err, status
end

-- bytes and weights of the quantized linears of a checkpoint, from its safetensors header
local function glq_info_bytes(dir)
  local glq_ = require "glq"
  local info = glq_.safetensors_info(dir .. "/model.safetensors")
  local ck = require("glq.checkpoint").read(dir)
  local bytes, weights = 0, 0
  for name, e in pairs(ck.layers) do
    weights = weights + e.shape[1] * e.shape[2]
    for k, t in pairs(info) do
      if k:sub(1, #name + 1) == name .. "." then bytes = bytes + t.data_offsets[2] - t.data_offsets[1] end
    end
  end
  return { bytes = bytes, weights = weights }
end

describe("glq help and versions", function()
  it("glq help lists every recipe with its summary; glq help NAME is NAME --help", function()
    local out, _, status = glq("help")
    assert.equal(0, status)
    assert.matches("\n  quantize +quantize a model's decoder projections", out)
    assert.matches("\n  chat +talk with an instruct model", out)
    local h, _, st2 = glq("help eval")
    assert.equal(0, st2)
    assert.matches("^usage: glq eval ", h)
    assert.matches("%-%-chunks N", h)
  end)

  it("every recipe answers --version", function()
    for _, r in ipairs({ "quantize", "eval", "generate", "chat", "info", "hif4" }) do
      local out, err, status = glq(r .. " --version")
      assert.equal(0, status, r .. ": " .. err)
      assert.matches("^glq %d+%.%d+", out)
    end
  end)
end)

describe("option validation", function()
  local cases = {
    { "generate --model M --max-new-tokens -5", "option '%-%-max%-new%-tokens': must be at least 1, got %-5" },
    { "generate --model M --threads 0", "option '%-%-threads': must be at least 1, got 0" },
    { "generate --model M --top-p 1.5", "option '%-%-top%-p': must be at most 1, got 1.5" },
    { "generate --model M --min-p 2", "option '%-%-min%-p': must be at most 1" },
    { "eval --model M --text T --seqlen 1", "option '%-%-seqlen': must be at least 2" },
    { "eval --model M --text T --chunks 0", "option '%-%-chunks': must be at least 1" },
    { "quantize --model M --output O --nsamples 0", "option '%-%-nsamples': must be at least 1" },
    { "quantize --model M --output O --damp -1", "option '%-%-damp': must be at least 0" },
    { "chat --model M --max-new-tokens x", "option '%-%-max%-new%-tokens': expected an integer, got 'x'" },
  }
  for _, c in ipairs(cases) do
    it("rejects " .. c[1], function()
      local out, err, status = glq(c[1])
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^glq: " .. c[2], err)
    end)
  end

  it("rejects GLQ_THREADS that is not a positive integer, once", function()
    for _, v in ipairs({ "abc", "0", "-2", "3x" }) do
      local _, err, status = glq("-e 'print(1)'", "GLQ_THREADS=" .. v)
      assert.equal(1, status)
      assert.equal("glq: GLQ_THREADS='" .. v .. "' is not a positive integer (unset it to use every core)\n", err)
    end
    local out, _, status = glq("-e 'print(glq.num_threads())'", "GLQ_THREADS=2")
    assert.equal(0, status)
    assert.equal("2\n", out)
  end)
end)

describe("with stories260K", function()
  local have = util.exists(STORIES)
  local ck

  setup(function()
    if not have then return end
    ck = util.tmppath()
    local _, err, status = glq(("quantize --model %s --output %s --bpw 2.5 --nsamples 4 --seqlen 64 --quiet"):format(STORIES, ck))
    assert(status == 0, err)
  end)
  teardown(function() if ck then os.execute("rm -rf " .. q(ck)) end end)

  it("glq info DIR summarizes a checkpoint: formats, stored bits, sizes vs bf16, tokenizer", function()
    if not have then pending("needs " .. STORIES) return end
    local out, err, status = glq("info " .. ck)
    assert.equal(0, status, err)
    assert.matches(": glq checkpoint\n", out)
    assert.matches("\n  architecture +LlamaForCausalLM %(llama%): 5 layers, hidden 64, intermediate 172, 8 heads / 4 KV heads, vocab 512", out)
    -- the counts add up to 35 linears; the stored bits of each format are the file's bytes of its tensors
    local n, total = 0, tonumber(out:match("quantized +(%d+) linears"))
    for k in out:gmatch("\n    e8 %d%-bit +(%d+) linears") do n = n + tonumber(k) end
    assert.equal(35, total)
    assert.equal(35, n)
    -- recompute the stored bits per weight from the safetensors header
    local info = glq_info_bytes(ck)
    local bpw = tonumber(out:match("linears, %d+ weights, ([%d.]+) bits per weight stored"))
    assert.near(info.bytes * 8 / info.weights, bpw, 0.0005)
    assert.matches("\n  size +[%d.]+ KiB of safetensors files = 0%.[%d]+x the model in bf16", out)
    assert.matches("\n  tokenizer +tokenizer.json %(spm, 512 tokens%); chat template: none", out)
    assert.matches("\n  made by +glq ", out)
    -- --layers lists the linears in natural order (layers.2 before layers.10 style)
    local l = glq("info -l " .. ck)
    local names = {}
    for name in l:gmatch("\n    (model%.layers%.%d+%.[%w_.]+) ") do names[#names + 1] = name end
    assert.equal(35, #names)
    local text = require "glq.text"
    for i = 2, #names do assert.is_true(text.natural_less(names[i - 1], names[i])) end
  end)

  it("glq eval --base prints base ppl, the ratio, standard errors and window counts", function()
    if not have or not util.exists(WIKI) then pending("needs stories260K and WikiText-2") return end
    local out, err, status = glq(("eval --model %s --base %s --text %s --seqlen 128 --chunks 3"):format(ck, STORIES, WIKI))
    assert.equal(0, status, err)
    local used, total = out:match("^windows: (%d+) of the text's (%d+) %(seqlen 128; a subset")
    assert.equal("3", used)
    assert.is_true(tonumber(total) > 3)
    local ppl, ppl_se = out:match("\nperplexity: ([%d.]+) %+%- ([%d.]+)\n")
    local bppl = out:match("\nbase perplexity: ([%d.]+) %+%- [%d.]+\n")
    local ratio = out:match("\nppl ratio: ([%d.]+) %+%- [%d.]+ ")
    assert.truthy(ppl and bppl and ratio, out)
    assert.near(tonumber(ppl) / tonumber(bppl), tonumber(ratio), 2e-4 * tonumber(ratio))
    assert.is_true(tonumber(ppl_se) > 0)
    assert.matches("\nkld_mean: [%d.]+ %+%- [%d.]+\n", out)
    assert.matches("\ntop1: [%d.]+ %+%- [%d.]+\n", out)
    assert.matches("\ntokens: 381\n", out) -- 3 windows x 127 predicted tokens
  end)

  it("eval's standard errors equal a two-pass computation over the per-token values", function()
    if not have or not util.exists(WIKI) then pending("needs stories260K and WikiText-2") return end
    local glq_ = require "glq"
    local model, eval = require "glq.model", require "glq.eval"
    local m = model.load(ck, { max_seq = 64 })
    local b = model.load(STORIES, { max_seq = 64 })
    local ids = {}
    local all = eval.tokenize_file(m, WIKI)
    for i = 1, 64 * 4 do ids[i] = all[i] end
    local r = eval.run(m, ids, { seqlen = 64, base = b, quiet = true })
    -- the same values, token by token
    local nq, nb, kl = {}, {}, {}
    for w = 0, 3 do
      local toks = model.ids_tensor(ids, w * 64 + 1, (w + 1) * 64)
      local hq, hb = m:hidden(toks), b:hidden(toks)
      local lq = m.c:head(hq:narrow(2, 1, 63)):reshape({ 63, m.cfg.vocab })
      local lb = b.c:head(hb:narrow(2, 1, 63)):reshape({ 63, m.cfg.vocab })
      local tg = glq_.zeros({ 63 }, "i32")
      for i = 0, 62 do tg:ptr()[i] = ids[w * 64 + i + 2] end
      local a, c, k = glq_.nll_rows(lq, tg), glq_.nll_rows(lb, tg), glq_.kl_rows(lb, lq)
      for i = 0, 62 do nq[#nq + 1] = a:ptr()[i]; nb[#nb + 1] = c:ptr()[i]; kl[#kl + 1] = k:ptr()[i] end
    end
    local function mean_se(x)
      local s = 0
      for _, v in ipairs(x) do s = s + v end
      local mean, ss = s / #x, 0
      for _, v in ipairs(x) do ss = ss + (v - mean) ^ 2 end
      return mean, math.sqrt(ss / (#x - 1) / #x)
    end
    local d = {}
    for i = 1, #nq do d[i] = nq[i] - nb[i] end
    local mq, sq = mean_se(nq)
    local mb, sb = mean_se(nb)
    local md, sd = mean_se(d)
    local mk, sk = mean_se(kl)
    assert.equal(252, r.tokens)
    assert.near(math.exp(mq), r.ppl, 1e-9 * r.ppl)
    assert.near(math.exp(mq) * sq, r.ppl_se, 1e-7 * r.ppl_se)
    assert.near(math.exp(mb) * sb, r.base_ppl_se, 1e-7 * r.base_ppl_se)
    assert.near(math.exp(md), r.ppl_ratio, 1e-9)
    assert.near(math.exp(md) * sd, r.ppl_ratio_se, 1e-7 * r.ppl_ratio_se)
    assert.near(mk, r.kld_mean, 1e-9 * r.kld_mean)
    assert.near(sk, r.kld_se, 1e-7 * r.kld_se)
  end)

  it("generate ends its text with a newline before the statistics, and validates --chat", function()
    if not have then pending("needs " .. STORIES) return end
    local out, err, status = glq(("generate --model %s --prompt 'Once upon a time' --max-new-tokens 8"):format(STORIES))
    assert.equal(0, status, err)
    assert.matches("\n$", out)
    assert.matches("^%[generate%] prompt %d+ tokens", err)
    local _, err2, st2 = glq(("generate --model %s --prompt hi --chat"):format(STORIES))
    assert.equal(1, st2)
    assert.matches("the model has no chat template", err2)
  end)

  it("the repetition penalty changes greedy decoding, and 1.0 leaves it as it was", function()
    if not have then pending("needs " .. STORIES) return end
    local gen, model = require "glq.generate", require "glq.model"
    local m = model.load(STORIES, { max_seq = 256 })
    local ids = m:encode("Once upon a time")
    local a = gen.run(m, ids, { max_new_tokens = 60, stop_at_eos = false })
    local b = gen.run(m, ids, { max_new_tokens = 60, stop_at_eos = false, repeat_penalty = 1.0 })
    local c = gen.run(m, ids, { max_new_tokens = 60, stop_at_eos = false, repeat_penalty = 1.5 })
    assert.same(a, b)
    assert.are_not.same(a, c)
  end)

  it("--device cuda without a GPU says so in one line, not nested", function()
    if not have then pending("needs " .. STORIES) return end
    local ok = require("glq").core.cuda.available()
    if ok then pending("a GPU is present") return end
    local _, err, status = glq(("generate --model %s --prompt hi --max-new-tokens 2 --device cuda"):format(STORIES))
    assert.equal(0, status)
    local line = err:match("^glq: %-%-device cuda:[^\n]*\n")
    assert.truthy(line, err)
    local _, opens = line:gsub("%(", "")
    assert.is_true(opens <= 1, line)
  end)

  it("quantize on a CPU without --nsamples/--seqlen picks a budget, says so, and Ctrl-C prints the --resume command", function()
    if not have then pending("needs " .. STORIES) return end
    local out = util.tmppath()
    local errf = os.tmpname()
    -- SIGINT after a second: calibration or the first layers are running
    os.execute(("timeout -s INT 1.5 %s quantize --model %s --output %s --bpw 2 2>%s </dev/null"):format(q(BIN), STORIES, out, errf))
    local err = util.slurp(errf)
    os.remove(errf)
    assert.matches("%[budget%] CPU run without %-%-nsamples/%-%-seqlen: calibrating on 128 x 512 tokens; estimated ", err)
    assert.matches("The full protocol %(%-%-nsamples 128 %-%-seqlen 2048%) would take ~", err)
    assert.matches("\nglq: interrupted\nglq: finished layers are kept in " .. out:gsub("%p", "%%%0") .. "/.glq%-partial; continue with:\n", err)
    local cmd = err:match("continue with:\n  (glq quantize [^\n]+)\n")
    assert.truthy(cmd, err)
    assert.matches("%-%-nsamples 128 %-%-seqlen 512 %-%-resume$", cmd)
    -- the printed command finishes the run
    local rc = os.execute(q(BIN) .. cmd:sub(4) .. " --quiet >/dev/null 2>&1")
    assert.is_true(rc == 0 or rc == true)
    assert.is_true(util.exists(out .. "/config.json"))
    os.execute("rm -rf " .. q(out))
  end)

  it("a profile-only run writes bpw_allocation.json inside the output directory", function()
    if not have then pending("needs " .. STORIES) return end
    local out = util.tmppath()
    local stdout, err, status = glq(("quantize --model %s --output %s --bpw 2.5 --profile-only --nsamples 2 --seqlen 32 --quiet"):format(STORIES, out))
    assert.equal(0, status, err)
    assert.equal(out .. "/bpw_allocation.json\n", stdout)
    assert.is_true(util.exists(out .. "/bpw_allocation.json"))
    os.execute("rm -rf " .. q(out))
  end)
end)

describe("glq chat", function()
  it("answers line by line in SmolLM2's own template, keeps the conversation, /reset clears it", function()
    if not util.exists(SMOL) then pending("needs " .. SMOL .. " (make model)") return end
    local out, err, status = glq(("chat --model %s --max-new-tokens 24 --stats"):format(q(SMOL)), nil,
      "What is the capital of France?\nAnd of Germany?\n/reset\nWhat is the capital of Germany?\n")
    assert.equal(0, status, err)
    assert.matches("%(chatml template%)", err)
    local lines = {}
    for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    assert.equal(3, #lines, out)
    assert.matches("Paris", lines[1])
    assert.matches("Berlin", lines[2])
    -- the second prompt holds the first exchange; after /reset the prompt is short again
    local p = {}
    for n in err:gmatch("%[chat%] prompt (%d+) tokens") do p[#p + 1] = tonumber(n) end
    assert.equal(3, #p)
    assert.is_true(p[2] > p[1] + 10)
    assert.is_true(p[3] < p[2])
    assert.matches("%(conversation cleared%)", err)
  end)
end)

describe("glq.chat formats", function()
  local chat = require "glq.chat"
  local SMOL_TMPL = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
  local msgs = { { role = "user", content = "Hi" }, { role = "assistant", content = "Hello!" }, { role = "user", content = "Bye" } }

  it("chatml with the template's default system message (as transformers renders SmolLM2's)", function()
    local f = assert(chat.recognize(SMOL_TMPL))
    assert.equal("chatml", f.name)
    assert.equal("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" ..
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n" ..
      "<|im_start|>assistant\n", chat.render(f, msgs))
    local with_sys = { { role = "system", content = "Be brief." }, msgs[1] }
    assert.equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
      chat.render(f, with_sys))
  end)

  it("llama3, mistral, llama2 and zephyr", function()
    local l3 = assert(chat.recognize("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"))
    assert.equal("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" ..
      "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
      chat.render(l3, msgs))
    local mi = assert(chat.recognize("{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"))
    assert.equal("mistral", mi.name)
    assert.equal("[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]", chat.render(mi, msgs))
    local l2 = assert(chat.recognize("[INST] <<SYS>>\n"))
    assert.equal("[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
      chat.render(l2, { { role = "system", content = "S" }, msgs[1], msgs[2], msgs[3] }))
    local z = assert(chat.recognize("<|user|>\n{{ m }}</s>\n<|assistant|>\n"))
    assert.equal("<|user|>\nHi</s>\n<|assistant|>\n", chat.render(z, { msgs[1] }))
  end)

  it("an unknown template is an error naming the formats known", function()
    local f, why = chat.recognize("{{ messages | tojson }}")
    assert.is_nil(f)
    assert.matches("chatml, llama3, mistral, llama2, zephyr", why)
  end)
end)

describe("repository conventions", function()
  it("plain `busted` (as a Lua 5.x user types it) runs a spec file under LuaJIT with .busted's paths", function()
    local build = os.getenv("GLQ_BUILD") or "build"
    local rc, out = util.sh("GLQ_BUILD=" .. q(build) .. " busted spec/cli_spec.lua")
    assert.equal(0, rc, out)
    assert.matches("\n%d+ passed, 0 failed, 0 skipped\n", out)
  end)
end)

describe("the API reference", function()
  it("docs/api.md and lua/glq/apidoc.lua are generated from the current docstrings", function()
    local rc, out = util.sh("luajit scripts/gen-api.lua --check")
    assert.equal(0, rc, out)
  end)

  it("help finds a C function, a Lua function, a module and a recipe", function()
    local help = require "glq.help"
    local glq_ = require "glq"
    assert.matches("^glq%.quantize_linear%(W, H|nil, opts%)", help.text(glq_.quantize_linear))
    assert.matches("^glq%.model%.load%(path, opts%) +%[lua/glq/model%.lua%]\n  load a model", help.text(glq_.model.load))
    assert.matches("^glq%.eval %(module%)\n", help.text(glq_.eval))
    assert.matches("^tensor:sum%(%)", help.text(glq_.randn({ 2 }).sum))
    assert.matches("^usage: glq info ", help.text("info"))
    assert.matches("^glq help: ", tostring(help.callable))
    local none, why = help.text("no_such_thing_here")
    assert.is_nil(none)
    assert.matches("no help for 'no_such_thing_here'", why)
  end)
end)
