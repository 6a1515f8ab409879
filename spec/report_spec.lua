-- report and plot: the printed table (columns, ordering, weighted bits, totals), the JSON file
-- (deterministic, read back), and the SVG (balanced tags, one cell per layer x projection, escaping).
local report = require "glq.report"
local plot = require "glq.plot"
local json = require "glq.json"
local fs = require "glq.fs"

local ROOT = os.tmpname()
os.remove(ROOT)
fs.mkdir_p(ROOT)
teardown(function() fs.remove_tree(ROOT) end)

local function sample()
  local r = report.new()
  -- added out of order on purpose: output is sorted by layer, then q k v o gate up down
  r:add { name = "model.layers.1.mlp.down_proj", shape = { 64, 96 }, format = "e8", bits = 4, sqnr_db = 20.5, proxy_loss = 0.0012, seconds = 0.5 }
  r:add { name = "model.layers.0.self_attn.q_proj", shape = { 64, 64 }, format = "e8", bits = 2, sqnr_db = 9.25, proxy_loss = 0.031, seconds = 0.25 }
  r:add { name = "model.layers.0.mlp.gate_proj", shape = { 96, 64 }, format = "hif4+rht", bits = 4.5, sqnr_db = 21.75, proxy_loss = 0.002, seconds = 0.126 }
  r:add { name = "model.layers.1.self_attn.k_proj", shape = { 32, 64 }, format = "e8", bits = 3, sqnr_db = 14, proxy_loss = 0.01, seconds = 0.124, resid_scale = 2 }
  r:add { name = "lm_head", shape = { 32, 64 }, format = "dense", seconds = 0 }
  return r
end

local function balanced(xml)
  local stack, cells = {}, 0
  local body = xml:gsub("^<%?xml[^>]*%?>", "")
  for close, name, rest in body:gmatch("<(/?)([%w:%-]+)([^>]*)>") do
    if close == "/" then
      local top = table.remove(stack)
      if top ~= name then return false, string.format("</%s> closes <%s>", name, tostring(top)) end
    elseif rest:sub(-1) ~= "/" then
      stack[#stack + 1] = name
    end
    if name == "g" and close == "" and rest:find('class="cell"', 1, true) then cells = cells + 1 end
  end
  if #stack > 0 then return false, "unclosed <" .. stack[#stack] .. ">" end
  -- no stray markup characters in text
  for txt in body:gmatch(">([^<]*)<") do
    if txt:find(">", 1, true) then return false, "raw '>' in text: " .. txt end
    for amp in txt:gmatch("&[^;%s]*;?") do
      if not (amp:match("^&%a+;$") or amp:match("^&#%d+;$")) then return false, "bad entity " .. amp end
    end
  end
  return true, cells
end

describe("report", function()
  it("prints a table sorted by layer and projection with weighted bits and totals", function()
    local t = sample():table()
    local lines = {}
    for l in t:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(9, #lines)
    assert.is_truthy(lines[1]:match("^layer%s+shape%s+format%s+bits%s+SQNR dB%s+proxy loss%s+seconds$"), lines[1])
    assert.is_truthy(lines[3]:match("^model%.layers%.0%.self_attn%.q_proj%s+64x64%s+e8%s+2%s+9%.25%s+0%.031%s+0%.25$"), lines[3])
    assert.is_truthy(lines[4]:match("^model%.layers%.0%.mlp%.gate_proj%s+96x64%s+hif4%+rht%s+4%.50%s+21%.75%s+0%.002%s+0%.13$"), lines[4])
    assert.is_truthy(lines[5]:match("model%.layers%.1%.self_attn%.k_proj"))
    assert.is_truthy(lines[6]:match("model%.layers%.1%.mlp%.down_proj"))
    assert.is_truthy(lines[7]:match("^lm_head%s+32x64%s+dense%s+%-%s+%-%s+%-%s+0%.00$"), lines[7])
    -- bits weighted by weights over layers that have bits: (2*4096 + 4.5*6144 + 3*2048 + 4*6144) / 18432
    local bits = (2 * 4096 + 4.5 * 6144 + 3 * 2048 + 4 * 6144) / 18432
    local want = string.format("^total %%(5 layers%%)%%s+20480%%s+%s%%s+16%%.38%%s+1%%.00$", (string.format("%.3f", bits):gsub("%.", "%%.")))
    assert.is_truthy(lines[9]:match(want), lines[9])
    assert.are.equal(lines[2], lines[8])
    local widths = {}
    for _, l in ipairs(lines) do widths[#widths + 1] = #l end
    assert.is_true(#lines[2] >= math.max(unpack(widths)))
  end)

  it("computes totals", function()
    local t = sample():totals()
    assert.are.equal(5, t.layers)
    assert.are.equal(20480, t.weights)
    assert.is_true(math.abs(t.bits - (2 * 4096 + 4.5 * 6144 + 3 * 2048 + 4 * 6144) / 18432) < 1e-12)
    assert.are.equal(1, t.seconds)
    assert.is_true(math.abs(t.sqnr_db - (20.5 + 9.25 + 21.75 + 14) / 4) < 1e-12)
  end)

  it("writes deterministic JSON and reads it back", function()
    local p1, p2 = ROOT .. "/r1.json", ROOT .. "/r2.json"
    sample():write_json(p1)
    local r = sample()
    r:write_json(p2)
    assert.are.equal(fs.read(p1), fs.read(p2))
    local v = json.read_file(p1)
    assert.are.equal(1, v.glq_report)
    assert.are.equal(5, #v.layers)
    assert.are.equal("model.layers.0.self_attn.q_proj", v.layers[1].name)
    assert.are.same({ 64, 64 }, v.layers[1].shape)
    assert.are.equal(2, v.layers[3].resid_scale)
    assert.are.equal(5, v.totals.layers)
    local back = report.read_json(p1)
    assert.are.equal(r:table(), back:table())
    local ok, err = pcall(report.read_json, ROOT .. "/missing.json")
    assert.is_false(ok)
    fs.write_atomic(ROOT .. "/bad.json", '{"x": 1}')
    ok, err = pcall(report.read_json, ROOT .. "/bad.json")
    assert.is_false(ok)
    assert.is_truthy(err:find("not a glq report", 1, true), err)
  end)

  it("stores non-finite numbers as strings JSON can hold", function()
    local r = report.new()
    r:add { name = "model.layers.0.mlp.up_proj", shape = { 8, 8 }, format = "e8", bits = 2, sqnr_db = math.huge, seconds = 0 }
    local p = ROOT .. "/inf.json"
    r:write_json(p)
    assert.are.equal("inf", json.read_file(p).layers[1].sqnr_db)
    assert.is_truthy(r:table():find("%s+inf%s+%-%s+0%.00\n"))
    assert.is_nil(r:totals().sqnr_db)
    assert.has_error(function() r:add { name = "x", shape = { 1, 1 }, w = function() end } end,
      "report:add: layer x: field w is a function (JSON-able values only)")
  end)

  it("requires a name and a shape", function()
    assert.has_error(function() report.new():add { shape = { 1, 1 } } end, "report:add: a row needs a name")
    assert.has_error(function() report.new():add { name = "x" } end, "report:add: layer x needs shape = {out, in}")
  end)
end)

describe("plot", function()
  it("draws a well-formed SVG with one cell per layer and projection", function()
    local svg = plot.svg(sample())
    assert.is_truthy(svg:match('^<%?xml version="1.0" encoding="UTF%-8"%?>\n<svg xmlns="http://www.w3.org/2000/svg"'))
    local ok, cells = balanced(svg)
    assert.is_true(ok, cells)
    assert.are.equal(2 * 7, cells)
    for l = 0, 1 do
      for _, p in ipairs(plot.ROLES) do
        assert.is_truthy(svg:find(string.format('data-layer="%d" data-proj="%s"', l, p), 1, true), l .. p)
      end
    end
    -- formats named in cells, missing cells marked, legend of levels, SQNR series with axes
    assert.is_truthy(svg:find(">e8 2b</text>", 1, true))
    assert.is_truthy(svg:find(">hif4+rht</text>", 1, true))
    assert.is_truthy(svg:find("model.layers.0.self_attn.k_proj (not in the report)", 1, true))
    for _, b in ipairs({ "2 bits", "3 bits", "4 bits", "4.5 bits" }) do assert.is_truthy(svg:find(">" .. b .. "<", 1, true), b) end
    assert.is_truthy(svg:find(">SQNR (dB)</text>", 1, true))
    assert.is_truthy(svg:find(">decoder layer</text>", 1, true))
    local series = 0
    for _ in svg:gmatch('<g class="series"') do series = series + 1 end
    assert.are.equal(4, series) -- q, k, gate, down have SQNR values
    -- down has a value in layer 1 only: a dot, no line; q likewise in layer 0
    assert.is_truthy(svg:find('data-proj="down">\n<circle', 1, true))
    assert.are.equal(0, select(2, svg:gsub("<polyline", "")))
    if os.execute("command -v xmllint >/dev/null 2>&1") == 0 or os.execute("command -v xmllint >/dev/null 2>&1") == true then
      local p = ROOT .. "/plot.svg"
      fs.write_atomic(p, svg)
      local rc = os.execute("xmllint --noout '" .. p .. "' 2>/dev/null")
      assert.is_true(rc == 0 or rc == true, "xmllint rejects the SVG")
    end
  end)

  it("draws lines through consecutive layers and breaks them at missing ones", function()
    local r = report.new()
    for _, l in ipairs({ 0, 1, 2, 4, 5 }) do
      r:add { name = string.format("model.layers.%d.mlp.up_proj", l), shape = { 8, 8 }, format = "e8", bits = 2, sqnr_db = l }
    end
    local svg = plot.svg(r)
    local lines = {}
    for pts in svg:gmatch('<polyline points="([^"]+)"') do lines[#lines + 1] = select(2, pts:gsub(",", ",")) end
    assert.are.same({ 3, 2 }, lines)
    local dots = select(2, svg:gsub("<circle", ""))
    assert.are.equal(5, dots)
    assert.is_true((balanced(svg)))
  end)

  it("escapes names and titles", function()
    local r = report.new()
    r:add { name = "model.layers.0.self_attn.q_proj", shape = { 8, 8 }, format = "<e8&\"'>", bits = 2, sqnr_db = 1 }
    local svg = plot.svg(r, { title = "a < b & c" })
    local ok, why = balanced(svg)
    assert.is_true(ok, why)
    assert.is_truthy(svg:find("a &lt; b &amp; c", 1, true))
    assert.is_truthy(svg:find("&lt;e8&amp;&quot;&apos;&gt;", 1, true))
    assert.is_nil(svg:find("<e8&", 1, true))
  end)

  it("plots the decoded JSON of a report the same way, and writes SVG files", function()
    local p = ROOT .. "/rep.json"
    sample():write_json(p)
    assert.are.equal(plot.svg(sample()), plot.svg(json.read_file(p)))
    local out = plot.write(ROOT .. "/a.svg", report.read_json(p))
    assert.are.equal(plot.svg(sample()), fs.read(out))
  end)

  it("fails clearly on reports without decoder layers", function()
    local r = report.new()
    r:add { name = "lm_head", shape = { 4, 4 } }
    assert.has_error(function() plot.svg(r) end, "plot: the report has no decoder-layer projections (model.layers.N.*)")
  end)
end)
