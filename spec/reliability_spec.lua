-- Issue #17: hostile or unlucky inputs end in a clear error (never a hang, a silent wrong result
-- or a leak). The full-disk and kill/resume checks are scripted in tests/reliability.sh.
local glq = require "glq"
local fs = require "glq.fs"
local json = require "glq.json"
local util = require "spec.support.util"
local bin, sh, tmpdir, read, spit = util.bin, util.sh, util.tmppath, util.slurp, util.spit

local S = "../shared/models/stories260K"
local GGUF, HF = S .. "/stories260K.gguf", S .. "/hf"
local TINY = "../shared/text/calib/tiny.utf8"
local have = io.open(GGUF, "rb") and io.open(TINY, "rb") and io.open(HF .. "/config.json", "rb")
local quick = "--calib " .. TINY .. " --nsamples 4 --seqlen 128 --quiet"

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

local function copy_dir(src, dst)
  assert(os.execute(string.format("mkdir -p '%s' && cp -r '%s'/. '%s'/", dst, src, dst)) == 0)
end

describe("error codes (item 9)", function()
  it("C errors keep their code as a stable prefix", function()
    local e = err_of(glq.load_safetensors, "/nonexistent/model.safetensors")
    assert.truthy(e:match("^EIO: /nonexistent/model%.safetensors"), e)
    assert.equal("EIO", glq.error_code(e))
    local p = tmpdir()
    spit(p, "\8\0\0\0\0\0\0\0{bad json")
    e = err_of(glq.load_safetensors, p)
    assert.equal("EFORMAT", glq.error_code(e), e)
    os.remove(p)
  end)
  it("a shape error and a missing file are told apart", function()
    assert.is_nil(glq.error_code("not from C"))
    local e = err_of(glq.cholesky, glq.zeros("f64", { 3, 3 }))
    assert.equal("ENUMERIC", glq.error_code(e), e)
    e = err_of(glq.gguf.open, "/nonexistent.gguf")
    assert.equal("EIO", glq.error_code(e), e)
  end)
end)

describe("files (items 1, 3)", function()
  it("fs.write_atomic reports a failed write as EIO naming the file", function()
    local e = err_of(fs.write_atomic, "/nonexistent-dir/x.json", "{}")
    assert.truthy(e:match("^EIO: /nonexistent%-dir/x%.json"), e)
  end)
  it("never replaces a device node: a character device is written in place, a directory refused", function()
    local dir = tmpdir()
    assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
    local nd = dir .. "/null"
    if os.execute("mknod -m 666 '" .. nd .. "' c 1 3 2>/dev/null") ~= 0 then
      pending("mknod needs root: skipped")
      return
    end
    fs.write_atomic(nd, "hello")                          -- as /dev/null: the bytes vanish, the node stays
    glq.save_safetensors(nd, { x = glq.zeros({ 2 }) })
    assert.equal("device", (glq.file_kind(nd)))
    local e = err_of(fs.write_atomic, dir, "{}")
    assert.truthy(e:match("^EINVAL: .*not a regular file %(a directory%)"), e)
    os.execute("rm -rf '" .. dir .. "'")
  end)
  it("refuses devices and FIFOs without reading them", function()
    local e = err_of(glq.read_file, "/dev/zero")
    assert.truthy(e:match("not a regular file"), e)
    e = err_of(glq.tokenizer.load, "/dev/zero")
    assert.truthy(e:match("not a regular file"), e)
    local d = tmpdir()
    fs.mkdir_p(d)
    assert(os.execute("mkfifo " .. d .. "/tokenizer.json") == 0)
    local s, msg = fs.read(d .. "/tokenizer.json")
    assert.is_nil(s)
    assert.truthy(msg:match("not a regular file"), msg)
    fs.remove_tree(d)
  end)
  it("a FIFO named model.safetensors is refused, not waited on", function()
    if not have then return pending("../shared is absent") end
    local d = tmpdir()
    fs.mkdir_p(d)
    spit(d .. "/config.json", read(HF .. "/config.json"))
    assert(os.execute("mkfifo " .. d .. "/model.safetensors") == 0)
    local rc, log = sh(string.format("timeout 20 %s eval --model %s --tokenizer %s --text %s --seqlen 64 --max-windows 1", bin, d, GGUF, TINY))
    assert.are_not.equal(124, rc, "hung on the FIFO: " .. log)
    assert.are_not.equal(0, rc, log)
    assert.truthy(log:match("not a regular file"), log)
    fs.remove_tree(d)
  end)
  it("a tokenizer.json id far beyond the vocabulary is refused at once", function()
    local j = { model = { type = "BPE", vocab = { a = 0, b = 1, c = 2147483647 }, merges = {} } }
    local t0 = os.clock()
    local e = err_of(glq.tokenizer.from_json, j)
    assert.truthy(e:match("far beyond"), e)
    assert.truthy(os.clock() - t0 < 1)
  end)
end)

describe("checkpoints (items 2, 4, 7)", function()
  if not have then
    it("needs ../shared", function() pending("../shared is absent: skipped") end)
    return
  end
  local ck = tmpdir()
  local hf4 = tmpdir()
  setup(function()
    local rc, log = sh(string.format("%s quantize --model %s --output %s --bpw 2 %s", bin, GGUF, ck, quick))
    assert.equal(0, rc, log)
    rc, log = sh(string.format("%s hif4 --model %s --output %s --quiet", bin, GGUF, hf4))
    assert.equal(0, rc, log)
  end)
  teardown(function() fs.remove_tree(ck) fs.remove_tree(hf4) end)

  it("hif4_config.json's filename cannot leave the checkpoint directory", function()
    local d = tmpdir()
    copy_dir(hf4, d .. "/ck")
    fs.mkdir_p(d .. "/x")
    assert(os.execute(string.format("mv %s/ck/model.safetensors %s/x/", d, d)) == 0)
    local c = json.read_file(d .. "/ck/hif4_config.json")
    c.filename = "../x/model.safetensors"
    spit(d .. "/ck/hif4_config.json", json.encode(c))
    local e = err_of(glq.model.open, d .. "/ck")
    assert.truthy(e:match("inside the checkpoint directory"), e)
    fs.remove_tree(d)
  end)
  it("num_hidden_layers smaller than the tensor set is refused", function()
    local d = tmpdir()
    copy_dir(ck, d)
    local c = json.read_file(d .. "/config.json")
    c.num_hidden_layers = 3
    spit(d .. "/config.json", json.encode(c))
    local e = err_of(glq.model.open, d)
    assert.truthy(e:match("belongs to decoder layer [34], but .*num_hidden_layers = 3"), e)
    fs.remove_tree(d)
  end)
  it("num_hidden_layers smaller than a plain model's tensor set is refused", function()
    local d = tmpdir()
    copy_dir(HF, d)
    local c = json.read_file(d .. "/config.json")
    c.num_hidden_layers = 4
    spit(d .. "/config.json", json.encode(c))
    local e = err_of(glq.model.open, d)
    assert.truthy(e:match("belongs to decoder layer 4, but the config declares 4 layers"), e)
    fs.remove_tree(d)
  end)
  it("config values of the wrong type or non-finite are named", function()
    local d = tmpdir()
    copy_dir(ck, d)
    local c = json.read_file(d .. "/config.json")
    c.hidden_size = "64"
    spit(d .. "/config.json", json.encode(c))
    local e = err_of(glq.model.open, d)
    assert.truthy(e:match('hidden_size must be a positive integer, got "64"'), e)
    spit(d .. "/config.json", "null")
    e = err_of(glq.model.open, d)
    assert.truthy(e:match("must hold a JSON object, got null"), e)
    local modelcfg = require "glq.modelcfg"
    local hf = json.read_file(HF .. "/config.json")
    hf.rope_theta = 1 / 0
    e = err_of(modelcfg.from_hf, hf, "config.json")
    assert.truthy(e:match("rope_theta must be a finite positive number"), e)
    fs.remove_tree(d)
  end)
  it("a GGUF with rope.freq_base = inf is refused when opened", function()
    local g = read(GGUF)
    local key = "llama.rope.freq_base"
    local i = g:find(key, 1, true)
    assert.truthy(i)
    local at = i + #key -- u32 type (6 = f32), then the value
    assert.equal(6, g:byte(at))
    local p = tmpdir() .. ".gguf"
    spit(p, g:sub(1, at + 3) .. "\0\0\128\127" .. g:sub(at + 8))
    local e = err_of(glq.model.open, p)
    assert.truthy(e:match("llama%.rope%.freq_base must be a finite positive number, got inf"), e)
    os.remove(p)
  end)
  it("--bpw-map must be a bpw allocation", function()
    local out = tmpdir()
    local rc, log = sh(string.format("%s quantize --model %s --output %s --bpw-map %s/config.json %s", bin, GGUF, out, HF, quick))
    assert.are_not.equal(0, rc, log)
    assert.truthy(log:match("not a bpw allocation"), log)
    assert.is_false(fs.exists(out))
    local policy = require "glq.policy"
    assert.truthy(err_of(policy.check_allocation, { ["model.layers.0.mlp.up_proj"] = 5 }):match("expected 2, 3, 4"))
  end)
  it("a flipped byte in a saved layer stops --resume", function()
    local out = tmpdir()
    local cmd = string.format("%s quantize --model %s --bpw 2 %s --output %s", bin, GGUF, quick, out)
    local rc, log = sh(util.stop_after(9, cmd))
    assert.are_not.equal(0, rc, log)
    local p = out .. "/.glq-partial/layers/00002.safetensors"
    local s = read(p)
    local i = #s - 3
    spit(p, s:sub(1, i - 1) .. string.char((s:byte(i) + 1) % 256) .. s:sub(i + 1))
    rc, log = sh(cmd .. " --resume")
    assert.are_not.equal(0, rc, log)
    assert.truthy(log:match("does not match its checksum"), log)
    assert.is_false(fs.exists(out .. "/config.json"))
    fs.remove_tree(out)
  end)
  it("changed calibration tokens stop --resume", function()
    local out = tmpdir()
    local cmd = string.format("%s quantize --model %s --bpw 2 %s --output %s", bin, GGUF, quick, out)
    local rc, log = sh(util.stop_after(3, cmd))
    assert.are_not.equal(0, rc, log)
    local p = out .. "/.glq-partial/calib_tokens.i32"
    local s = read(p)
    spit(p, s:sub(1, 40) .. string.char((s:byte(41) + 1) % 256) .. s:sub(42))
    rc, log = sh(cmd .. " --resume")
    assert.are_not.equal(0, rc, log)
    assert.truthy(log:match("calibration tokens .* do not match their checksum"), log)
    fs.remove_tree(out)
  end)
  it("--report that cannot be written fails before the first layer", function()
    local out = tmpdir()
    local rc, log = sh(string.format("%s quantize --model %s --output %s --bpw 2 --report /proc/version %s", bin, GGUF, out, quick))
    assert.are_not.equal(0, rc, log)
    assert.truthy(log:match("%-%-report /proc/version"), log)
    assert.is_false(fs.exists(out)) -- nothing was started
  end)
  it("missing or mis-shaped linears are found before the first layer", function()
    local src = glq.model.open(HF)
    src:check_linears()
    local name = "model.layers.4.mlp.down_proj.weight"
    local w = src.tensors[name]
    src.tensors[name] = nil
    assert.truthy(err_of(src.check_linears, src):match("missing tensor " .. name:gsub("%.", "%%.")))
    src.tensors[name] = w:narrow(2, 1, 100)
    assert.truthy(err_of(src.check_linears, src):match("has shape %(64, 100%), the config implies %(64, 172%)"))
  end)
  it("glq info prints tensor names of 100+ characters", function()
    local p = tmpdir() .. ".safetensors"
    local long = string.rep("n", 130)
    glq.save_safetensors(p, { [long] = glq.zeros("f32", { 2 }) })
    local rc, log = sh(string.format("%s info %s", bin, p))
    assert.equal(0, rc, log)
    assert.truthy(log:find(long, 1, true), log)
    os.remove(p)
  end)
end)

describe("silent wrong results (item 4)", function()
  it("an unsupported tokenizer.json normalizer is refused by name", function()
    local j = { normalizer = { type = "NFKC" }, model = { type = "BPE", vocab = { a = 0, b = 1 }, merges = {} } }
    assert.truthy(err_of(glq.tokenizer.from_json, j):match("normalizer NFKC is not supported"))
  end)
  it("NaN weights give an error, not perplexity nan", function()
    if not have then return pending("../shared is absent") end
    local m = glq.model.load(GGUF, { max_seq = 64 })
    local name = "model.layers.2.mlp.up_proj"
    local W = glq.zeros("f32", { 172, 64 })
    W:ptr()[5] = 0 / 0
    m:set_linear(name, glq.linear.dense(W))
    local ids = glq.eval.tokenize_file(m, TINY)
    local e = err_of(glq.eval.run, m, ids, { seqlen = 64, max_windows = 1, quiet = true })
    assert.truthy(e:match("perplexity is not finite"), e)
  end)
  it("--text naming a directory says so", function()
    if not have then return pending("../shared is absent") end
    local m = glq.model.load(GGUF, { max_seq = 64 })
    assert.truthy(err_of(glq.eval.tokenize_file, m, "/tmp"):match("a directory"))
  end)
end)

describe("bindings do not leak when they raise (item 8)", function()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int malloc_trim(size_t pad);")
  local function rss_mb()
    -- freed heap memory goes back to the system first, so what remains is what is still allocated
    -- (glibc keeps large freed blocks in its heap once its mmap threshold has grown)
    ffi.C.malloc_trim(0)
    local s = read("/proc/self/statm")
    return tonumber(s:match("^%d+%s+(%d+)")) * 4096 / 2 ^ 20
  end
  -- ASan's quarantine keeps freed memory mapped, so RSS says nothing there
  local asan = os.getenv("GLQ_ASAN") == "1"
  local function bounded(label, f)
    collectgarbage() collectgarbage()
    for _ = 1, 3 do pcall(f) end
    collectgarbage() collectgarbage()
    local before = rss_mb()
    for _ = 1, 100 do
      local ok = pcall(f)
      assert.is_false(ok, label .. " should fail")
    end
    collectgarbage() collectgarbage()
    local grew = rss_mb() - before
    if not asan then assert.truthy(grew < 24, string.format("%s: RSS grew %.0f MB over 100 failing calls", label, grew)) end
  end
  it("glq.rht.weight with a bad SV (SU converted from f16 first)", function()
    local n = 2 ^ 20
    local W = glq.zeros("f32", { n, 1 })
    local SU = glq.zeros("f16", { n })
    local badSV = glq.zeros("f32", { 3 })
    bounded("rht.weight", function() return glq.rht.weight(W, SU, badSV) end)
  end)
  it("glq.nll_rows with bad targets (logits converted first)", function()
    local lg = glq.zeros("f16", { 512, 1024 })
    bounded("nll_rows", function() return glq.nll_rows(lg, "not a tensor") end)
  end)
  it("e8.decode2 with a bad second index tensor", function()
    local a = glq.zeros("i16", { 2 ^ 20 })
    bounded("e8.decode2", function() return glq.e8.decode2(a, "x", 1.0, 256) end)
  end)
end)
