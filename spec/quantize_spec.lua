-- The quantize and hif4 recipes end to end on stories260K: checkpoint contents, reload, report and
-- plot, resume after an interruption (byte-identical), mixed precision, and clear errors.
local glq = require "glq"
local fs = require "glq.fs"
local json = require "glq.json"

local S = "../shared/models/stories260K"
local GGUF = S .. "/stories260K.gguf"
local TINY = "../shared/text/calib/tiny.utf8"
local have = io.open(GGUF, "rb") and io.open(TINY, "rb")
local util = require "spec.support.util"
local bin, sh, tmpdir, read = util.bin, util.sh, util.tmppath, util.slurp

describe("glq quantize", function()
  if not have then
    it("needs ../shared (stories260K and calibration text)", function() pending("../shared is absent: skipped") end)
    return
  end
  local quick = "--calib " .. TINY .. " --nsamples 4 --seqlen 128 --quiet"

  it("writes a loadable 3-bit checkpoint with report and plot", function()
    local out = tmpdir()
    local rc, log = sh(string.format("%s quantize --model %s --output %s --bpw 3 %s", bin, GGUF, out, quick))
    assert.equal(0, rc, log)
    local cfg = json.read_file(out .. "/config.json")
    local qc = cfg.quantization_config
    assert.is_nil(qc.quant_method) -- our layout (glq-native): the Python glq is refused it, not misled
    assert.equal("glq-native", qc.format)
    assert.equal("e8_shell", qc.codebook)
    assert.equal(8, qc.codesz)
    assert.equal(3, qc.layer_bpw["model.layers.0.self_attn.q_proj"])
    assert.is_true(qc.bpw >= 3 and qc.bpw < 3.1)
    local t = glq.load_safetensors(out .. "/model.safetensors")
    assert.equal("i16", t["model.layers.0.self_attn.q_proj.Qidxs"]:dtype())
    assert.same({ 64, 8 }, t["model.layers.0.self_attn.q_proj.Qidxs"]:shape())
    assert.same({ 64, 22 }, t["model.layers.0.mlp.down_proj.Qidxs"]:shape()) -- 172 inputs padded to 176 only
    assert.equal("f16", t["model.layers.0.self_attn.q_proj.SU"]:dtype())
    assert.same({}, t["model.layers.0.self_attn.q_proj.Wscale"]:shape())
    assert.is_nil(t["model.layers.0.self_attn.q_proj.weight"])
    assert.truthy(fs.exists(out .. "/report.json"))
    assert.truthy(read(out .. "/report.svg"):find("<svg", 1, true))
    assert.falsy(fs.exists(out .. "/.glq-partial"))
    -- the checkpoint evaluates and generates (tokenizer from the GGUF when the checkpoint has none)
    local tok = fs.exists(out .. "/tokenizer.json") and "" or (" --tokenizer " .. GGUF)
    local rc2, ev = sh(string.format("%s eval --model %s --text %s --seqlen 128 --max-windows 4%s", bin, out, TINY, tok))
    assert.equal(0, rc2, ev)
    local ppl = tonumber(ev:match("perplexity: ([%d%.]+)"))
    assert.is_true(ppl and ppl > 1 and ppl < 20, ev)
    fs.remove_tree(out)
  end)

  it("a run interrupted midway and resumed gives a byte-identical checkpoint", function()
    local a, b = tmpdir(), tmpdir()
    local cmd = string.format("%s quantize --model %s --bpw 2 %s", bin, GGUF, quick)
    assert.equal(0, (sh(cmd .. " --output " .. a)))
    local rc, log = sh(util.stop_after(12, cmd .. " --output " .. b))
    assert.are_not.equal(0, rc)
    assert.truthy(log:find("interrupted", 1, true))
    assert.falsy(fs.exists(b .. "/config.json")) -- does not look finished
    local rc1, log1 = sh(cmd .. " --output " .. b)
    assert.are_not.equal(0, rc1)
    assert.truthy(log1:find("--resume", 1, true))
    assert.equal(0, (sh(cmd .. " --output " .. b .. " --resume")))
    assert.equal(read(a .. "/model.safetensors"), read(b .. "/model.safetensors"))
    assert.equal(read(a .. "/config.json"), read(b .. "/config.json"))
    fs.remove_tree(a); fs.remove_tree(b)
  end)

  it("mixed precision meets the target on stored sizes and writes bpw_allocation.json", function()
    local out = tmpdir()
    local rc, log = sh(string.format("%s quantize --model %s --output %s --bpw 2.5 %s", bin, GGUF, out, quick))
    assert.equal(0, rc, log)
    local map = json.read_file(out .. "/bpw_allocation.json")
    local cfg = json.read_file(out .. "/config.json")
    local seen = {}
    for _, v in pairs(map) do seen[v] = true end
    assert.is_true(cfg.quantization_config.bpw <= 2.5 + 0.01)
    assert.is_true(cfg.quantization_config.bpw >= 2.2)
    assert.is_true(seen[2] and (seen[3] or seen[4]))
    -- the two-pass workflow: the map quantizes the same way
    local out2 = tmpdir()
    assert.equal(0, (sh(string.format("%s quantize --model %s --output %s --bpw-map %s/bpw_allocation.json %s", bin, GGUF, out2, out, quick))))
    assert.same(json.read_file(out .. "/config.json").quantization_config.layer_bpw,
      json.read_file(out2 .. "/config.json").quantization_config.layer_bpw)
    fs.remove_tree(out); fs.remove_tree(out2)
  end)

  it("--no-propagate calibrates later layers on dense activations", function()
    local a, b = tmpdir(), tmpdir()
    local cmd = string.format("%s quantize --model %s --bpw 2 %s", bin, GGUF, quick)
    assert.equal(0, (sh(cmd .. " --output " .. a)))
    assert.equal(0, (sh(cmd .. " --no-propagate --output " .. b)))
    local ta, tb = glq.load_safetensors(a .. "/model.safetensors"), glq.load_safetensors(b .. "/model.safetensors")
    -- the first layer sees the same inputs either way; the last one does not
    local first, last = "model.layers.0.self_attn.q_proj.Qidxs", "model.layers.4.mlp.down_proj.Qidxs"
    assert.equal(0, ta[first]:max_abs_diff(tb[first]))
    assert.is_true(ta[last]:max_abs_diff(tb[last]) > 0)
    fs.remove_tree(a); fs.remove_tree(b)
  end)

  it("rejects bad input with clear messages", function()
    local out = tmpdir()
    local function err(args, pat)
      local rc, log = sh(string.format("%s quantize %s", bin, args))
      assert.are_not.equal(0, rc)
      assert.truthy(log:find(pat), log)
    end
    err("--model " .. GGUF .. " --output " .. out .. " --bogus 1", "unknown option")
    err("--model " .. GGUF .. " --output " .. out .. " --bpw 7", "out of range")
    err("--model " .. S .. "/tok512.bin --output " .. out, "not a model")
    err("--model " .. GGUF .. " --output " .. out .. " --calib " .. TINY .. " --nsamples 100000 --seqlen 512",
      "has %d+ tokens; %-%-nsamples 100000 x %-%-seqlen 512 needs 51200000")
    fs.mkdir_p(out)
    local f = io.open(out .. "/notes.txt", "w"); f:write("mine"); f:close()
    err("--model " .. GGUF .. " --output " .. out .. " " .. quick, "not")
    assert.equal("mine", read(out .. "/notes.txt"))
    fs.remove_tree(out)
  end)
end)

describe("glq hif4", function()
  if not have then
    it("needs ../shared", function() pending("../shared is absent: skipped") end)
    return
  end
  local model = require "glq.model"
  it("converts 35 linears by default and 30 with --compat; reloads to identical logits", function()
    local a, b = tmpdir(), tmpdir()
    assert.equal(0, (sh(string.format("%s hif4 --model %s --output %s --dense-dtype keep --quiet", bin, GGUF, a))))
    assert.equal(0, (sh(string.format("%s hif4 --model %s --output %s --compat --dense-dtype keep --quiet", bin, GGUF, b))))
    local function count(dir)
      local n = 0
      for k in pairs(glq.load_safetensors(dir .. "/model.safetensors")) do if k:match("%.e6m2$") then n = n + 1 end end
      return n
    end
    assert.equal(35, count(a))
    assert.equal(30, count(b))
    local hc = json.read_file(b .. "/hif4_config.json")
    assert.equal("HiF4", hc.format)
    assert.equal("model.safetensors", hc.filename)
    local _, meta = glq.load_safetensors(a .. "/model.safetensors")
    assert.equal("HiF4", meta.quantization)
    -- in-memory conversion == saved and reloaded checkpoint
    local base = model.load(GGUF)
    local mem = model.load(GGUF)
    local q = require "glq.quantize"
    for l = 0, 4 do
      for _, r in ipairs(require("glq.modelcfg").roles) do
        local name = require("glq.modelcfg").linear_name(l, r.role)
        local W = base.src:need(name .. ".weight"):to("f32")
        local _, lin = q.quantize_linear(name, W, nil, nil, { format = "hif4" }, {})
        mem:set_linear(name, lin)
      end
    end
    local loaded = model.load(a, { tokenizer = GGUF })
    local ids = base:encode("Once upon a time there was a little girl")
    assert.equal(0, mem:logits(ids):max_abs_diff(loaded:logits(ids)))
    local kl = glq.kl_rows(base:logits(ids):reshape({ 1, 512 }), loaded:logits(ids):reshape({ 1, 512 }))
    assert.is_true(kl:get(1) < 0.05)
    fs.remove_tree(a); fs.remove_tree(b)
  end)
end)
