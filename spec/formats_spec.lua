-- glq.formats: one entry per layer format; what each predicts matches what the pipeline stores, and
-- glq.quantize's option groups refuse what they do not know.
local glq = require "glq"
local formats = require "glq.formats"
local checkpoint = require "glq.checkpoint"
local model = require "glq.model"

describe("glq.formats", function()
  it("stored bits count code bits over the padded size", function()
    assert.equal(2, formats.stored_bits({ format = "e8", bits = 2 }, 576, 576))
    assert.near(3 * 584 / 580, formats.stored_bits({ format = "e8p", bits = 3 }, 576, 580), 1e-12)
    assert.equal(4.5, formats.stored_bits({ format = "hif4" }, 576, 576))
    assert.near(4.5 * 640 / 580, formats.stored_bits({ format = "hif4", rht = true }, 576, 580), 1e-12)
    assert.equal(16, formats.stored_bits({ format = "dense" }, 576, 576))
  end)

  -- 40 x 72: padded to 40 x 72 (E8), 64 x 96 (trellis), 40 x 128 (HiF4)
  local W = glq.randn({ 40, 72 }, 7)
  local decisions = {
    { format = "e8", bits = 2 }, { format = "e8", bits = 3 }, { format = "e8p", bits = 4 },
    { format = "trellis", bits = 2 }, { format = "hif4" }, { format = "hif4", rht = true },
  }
  for _, d in ipairs(decisions) do
    local f = formats.get(d.format)
    it(f.label(d) .. ": the predicted stored bits are the written entry's, and the entry builds a linear", function()
      local e = f.quantize("model.layers.0.mlp.up_proj", W, nil, d, { seed = 1 })
      assert.near(formats.stored_bits(d, 40, 72), checkpoint.stored_bpw("up", e), 1e-12)
      local lin = model.quantized_linear(e, 40, 72, "up")
      local err = W:sub(lin:dequantize()):norm() / W:norm()
      assert.is_true(err < 0.7, f.label(d) .. " relative error " .. err)
    end)
  end

  it("the stored formats carry their whole checkpoint layout; other names are refused naming them", function()
    local names = {}
    for _, f in ipairs(formats.stored) do
      names[#names + 1] = f.name
      assert.is_true(f.fields[f.tensor_field], f.name)
      for _, hook in ipairs { "tensors", "entry", "record_bpw", "read", "linear" } do
        assert.equal("function", type(f[hook]), f.name .. "." .. hook)
      end
    end
    assert.same({ "e8", "trellis", "hif4" }, names)
    local ok, err = pcall(checkpoint.stored_bpw, "up", { format = "nf4" })
    assert.is_false(ok)
    assert.equal("checkpoint: layer up: unknown format 'nf4' (expected e8, trellis or hif4)", err)
    ok, err = pcall(model.quantized_linear, { format = "e8p" }, 40, 72, "up") -- a decision, stored as e8
    assert.is_false(ok)
    assert.equal("layer up: a checkpoint entry of unknown format 'e8p'", err)
  end)

  it("allocation map values name decisions, and the decisions' values name them back", function()
    for _, v in ipairs { 2, 3, 4, "3", "hif4", "hif4+rht", "hif4+ldlq", "hif4+rht+ldlq", "dense" } do
      local d = formats.from_alloc_value(v)
      assert.truthy(d, tostring(v))
      assert.equal(tonumber(v) or v, formats.get(d.format).alloc_value(d))
    end
    assert.is_nil(formats.from_alloc_value(5))
    assert.is_nil(formats.from_alloc_value("hif8"))
    local a, b = formats.from_alloc_value("hif4+rht"), formats.from_alloc_value("hif4+rht")
    a.rht = false
    assert.is_true(b.rht) -- fresh tables
  end)
end)

describe("glq.quantize options", function()
  local q = require "glq.quantize"
  local base = function()
    return { model = "m.gguf", output = "out", decide = function() end, nsamples = 4, seqlen = 8, min_bpw = 3 }
  end
  it("split into named groups, the CLI's width names read as bits", function()
    local g = q.options(base())
    assert.equal("m.gguf", g.run.model)
    assert.equal(4, g.calib.nsamples)
    assert.equal(3, g.alloc.min_bits)
    assert.is_true(g.calib.needs_calibration)
    assert.equal("e8", g.quant.book_format)
  end)
  it("refuse unknown keys, wrong types and missing requirements", function()
    local o = base(); o.nsample = 4
    assert.error_matches(function() q.options(o) end, "unknown option 'nsample'")
    o = base(); o.seqlen = "8"
    assert.error_matches(function() q.options(o) end, "option seqlen must be a number, got string")
    o = base(); o.seqlen = nil
    assert.error_matches(function() q.options(o) end, "calibration needs nsamples and seqlen")
    o = base(); o.allocate = true
    assert.error_matches(function() q.options(o) end, "allocate needs target_bpw")
  end)
end)
