-- SVG plots of a quantization report: a heatmap of bits per decoder layer x projection (the format
-- named in each cell) and SQNR per layer, one line per projection. Pure string building.
local fs = require "glq.fs"
local modelcfg = require "glq.modelcfg"

local M = {}

M.ROLES = { "q", "k", "v", "o", "gate", "up", "down" }
local LINE_COLORS = { q = "#1f77b4", k = "#ff7f0e", v = "#2ca02c", o = "#d62728", gate = "#9467bd", up = "#8c564b", down = "#e377c2" }
local RAMP = { { 0x44, 0x01, 0x54 }, { 0x3b, 0x52, 0x8b }, { 0x21, 0x91, 0x8c }, { 0x5e, 0xc9, 0x62 }, { 0xfd, 0xe7, 0x25 } }
local MISSING = "#dddddd"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }
function M.escape(s) return (tostring(s):gsub("[&<>\"']", ESC)) end

local function f1(x) return string.format("%.1f", x) end

-- colour of t in [0, 1] on the ramp, as "#rrggbb", and whether dark text reads on it
local function ramp(t)
  t = math.max(0, math.min(1, t)) * (#RAMP - 1)
  local i = math.min(math.floor(t), #RAMP - 2)
  local a, b, u = RAMP[i + 1], RAMP[i + 2], t - i
  local c = {}
  for k = 1, 3 do c[k] = math.floor(a[k] + (b[k] - a[k]) * u + 0.5) end
  local lum = 0.299 * c[1] + 0.587 * c[2] + 0.114 * c[3]
  return string.format("#%02x%02x%02x", c[1], c[2], c[3]), lum > 140
end

local function fmt_bits(b) return (string.format("%.2f", b):gsub("%.?0+$", "")) end

local function cell_label(r)
  local f = r.format or "?"
  if f == "e8" and type(r.bits) == "number" then return "e8 " .. fmt_bits(r.bits) .. "b" end
  return f
end

-- rows of a report (glq.report object or its decoded JSON) placed on the grid
local function collect(report)
  local rows = report.rows or report.layers
  if type(rows) ~= "table" then fail("plot: not a report (no layers)") end
  local grid, nl, bits = {}, 0, {}
  for _, r in ipairs(rows) do
    local l, role = modelcfg.parse_linear_name(r.name or "")
    if l then
      grid[l] = grid[l] or {}
      grid[l][role] = r
      nl = math.max(nl, l + 1)
      if type(r.bits) == "number" then bits[r.bits] = true end
    end
  end
  if nl == 0 then fail("plot: the report has no decoder-layer projections (model.layers.N.*)") end
  local levels = {}
  for b in pairs(bits) do levels[#levels + 1] = b end
  table.sort(levels)
  return grid, nl, levels
end

local function bits_color(b, levels)
  if #levels <= 1 then return ramp(0.5) end
  return ramp((b - levels[1]) / (levels[#levels] - levels[1]))
end

-- a "nice" tick step for a range
local function nice_step(range, n)
  local raw = range / n
  local p = 10 ^ math.floor(math.log10(raw))
  for _, m in ipairs({ 1, 2, 2.5, 5, 10 }) do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

local function text(out, x, y, s, attrs)
  out[#out + 1] = string.format('<text x="%s" y="%s"%s>%s</text>', f1(x), f1(y), attrs and (" " .. attrs) or "", M.escape(s))
end

-- the SVG document for a report; opts.title
function M.svg(report, opts)
  opts = opts or {}
  local grid, nl, levels = collect(report)
  local CW, CH, LX, TOP = 78, 22, 64, 56
  local hw = #M.ROLES * CW
  local out = {}
  local function add(s) out[#out + 1] = s end

  -- heatmap
  text(out, LX, 22, opts.title or "Bits per layer and projection", 'font-size="16" font-weight="bold"')
  for j, role in ipairs(M.ROLES) do
    text(out, LX + (j - 0.5) * CW, TOP - 8, role, 'text-anchor="middle" font-size="12"')
  end
  text(out, LX - 8, TOP - 8, "layer", 'text-anchor="end" font-size="11"')
  add('<g class="heatmap" font-size="11">')
  for l = 0, nl - 1 do
    local y = TOP + l * CH
    text(out, LX - 8, y + CH / 2 + 4, tostring(l), 'text-anchor="end"')
    for j, role in ipairs(M.ROLES) do
      local r = grid[l] and grid[l][role]
      local x = LX + (j - 1) * CW
      local fill, light, label, tip = MISSING, true, "-", string.format("%s (not in the report)", modelcfg.linear_name(l, role))
      if r then
        label = cell_label(r)
        if type(r.bits) == "number" then fill, light = bits_color(r.bits, levels) end
        tip = string.format("%s: %s, %s bits%s", r.name, r.format or "?", type(r.bits) == "number" and fmt_bits(r.bits) or "-",
          type(r.sqnr_db) == "number" and string.format(", SQNR %.2f dB", r.sqnr_db) or "")
      end
      add(string.format('<g class="cell" data-layer="%d" data-proj="%s">', l, role))
      add(string.format('<rect x="%s" y="%s" width="%d" height="%d" fill="%s" stroke="#ffffff"><title>%s</title></rect>',
        f1(x), f1(y), CW, CH, fill, M.escape(tip)))
      text(out, x + CW / 2, y + CH / 2 + 4, label, string.format('text-anchor="middle" fill="%s"', light and "#000000" or "#ffffff"))
      add("</g>")
    end
  end
  add("</g>")

  -- legend of the bit levels present
  local LGX = LX + hw + 24
  text(out, LGX, TOP - 8, "bits", 'font-size="12" font-weight="bold"')
  add('<g class="legend" font-size="11">')
  for i, b in ipairs(levels) do
    local y = TOP + (i - 1) * 20
    add(string.format('<rect x="%s" y="%s" width="16" height="16" fill="%s" stroke="#888888"/>', f1(LGX), f1(y), (bits_color(b, levels))))
    text(out, LGX + 22, y + 12, fmt_bits(b) .. " bits")
  end
  local y = TOP + #levels * 20
  add(string.format('<rect x="%s" y="%s" width="16" height="16" fill="%s" stroke="#888888"/>', f1(LGX), f1(y), MISSING))
  text(out, LGX + 22, y + 12, "no bits / missing")
  add("</g>")
  local heat_bottom = math.max(TOP + nl * CH, y + 20)

  -- SQNR per layer
  local PX, PY, PW, PH = LX, heat_bottom + 70, math.max(hw, 420), 240
  text(out, PX, PY - 24, "SQNR per layer", 'font-size="16" font-weight="bold"')
  local lo, hi = math.huge, -math.huge
  for l = 0, nl - 1 do
    for _, role in ipairs(M.ROLES) do
      local r = grid[l] and grid[l][role]
      local s = r and r.sqnr_db
      if type(s) == "number" and s == s and s > -math.huge and s < math.huge then lo, hi = math.min(lo, s), math.max(hi, s) end
    end
  end
  local have = lo <= hi
  if not have then lo, hi = 0, 1 end
  if hi - lo < 1e-9 then lo, hi = lo - 1, hi + 1 end
  local step = nice_step(hi - lo, 5)
  lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
  local function sx(l) return PX + (nl > 1 and l / (nl - 1) or 0.5) * PW end
  local function sy(v) return PY + PH - (v - lo) / (hi - lo) * PH end
  add('<g class="axes" stroke="#000000" font-size="11">')
  add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s"/>', f1(PX), f1(PY + PH), f1(PX + PW), f1(PY + PH)))
  add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s"/>', f1(PX), f1(PY), f1(PX), f1(PY + PH)))
  local v = lo
  while v <= hi + step * 1e-6 do
    add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s"/>', f1(PX - 4), f1(sy(v)), f1(PX), f1(sy(v))))
    add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e0e0e0"/>', f1(PX), f1(sy(v)), f1(PX + PW), f1(sy(v))))
    text(out, PX - 7, sy(v) + 4, string.format(step % 1 == 0 and "%.0f" or "%.1f", v), 'text-anchor="end" stroke="none"')
    v = v + step
  end
  local xstep = math.max(1, math.ceil(nl / 16))
  for l = 0, nl - 1, xstep do
    add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s"/>', f1(sx(l)), f1(PY + PH), f1(sx(l)), f1(PY + PH + 4)))
    text(out, sx(l), PY + PH + 16, tostring(l), 'text-anchor="middle" stroke="none"')
  end
  add("</g>")
  text(out, PX + PW / 2, PY + PH + 36, "decoder layer", 'text-anchor="middle" font-size="12"')
  text(out, PX - 44, PY + PH / 2, "SQNR (dB)",
    string.format('text-anchor="middle" font-size="12" transform="rotate(-90 %s %s)"', f1(PX - 44), f1(PY + PH / 2)))
  if not have then
    text(out, PX + PW / 2, PY + PH / 2, "no SQNR values in the report", 'text-anchor="middle" font-size="12" fill="#888888"')
  end
  add('<g class="lines" fill="none" stroke-width="1.5">')
  for _, role in ipairs(M.ROLES) do
    -- one polyline per run of consecutive layers with a value: no line across a missing layer
    local runs, pts, dots = {}, {}, {}
    for l = 0, nl do
      local r = l < nl and grid[l] and grid[l][role]
      local s = r and r.sqnr_db
      if type(s) == "number" and s == s and s > -math.huge and s < math.huge then
        pts[#pts + 1] = f1(sx(l)) .. "," .. f1(sy(s))
        dots[#dots + 1] = string.format('<circle cx="%s" cy="%s" r="2.5" fill="%s"><title>%s</title></circle>', f1(sx(l)), f1(sy(s)),
          LINE_COLORS[role], M.escape(string.format("%s: %.2f dB", r.name, s)))
      elseif #pts > 0 then
        if #pts > 1 then runs[#runs + 1] = table.concat(pts, " ") end
        pts = {}
      end
    end
    if #dots > 0 then
      add(string.format('<g class="series" data-proj="%s">', role))
      for _, run in ipairs(runs) do add(string.format('<polyline points="%s" stroke="%s"/>', run, LINE_COLORS[role])) end
      for _, d in ipairs(dots) do add(d) end
      add("</g>")
    end
  end
  add("</g>")
  local LLX = PX + PW + 24
  add('<g class="line-legend" font-size="11">')
  for i, role in ipairs(M.ROLES) do
    local yy = PY + (i - 1) * 18
    add(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"/>', f1(LLX), f1(yy + 6), f1(LLX + 18), f1(yy + 6), LINE_COLORS[role]))
    text(out, LLX + 24, yy + 10, role)
  end
  add("</g>")

  local W = math.max(LGX + 150, LLX + 90)
  local H = PY + PH + 56
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>',
    string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">',
      math.ceil(W), math.ceil(H), math.ceil(W), math.ceil(H)),
    string.format('<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>', math.ceil(W), math.ceil(H)),
    table.concat(out, "\n"),
    "</svg>", "" }, "\n")
end

local function run_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true -- Lua 5.1 status, or 5.2-compatible boolean
end

local function have(cmd) return run_ok("command -v " .. cmd .. " >/dev/null 2>&1") end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- writes the plot to path: SVG, or PNG through rsvg-convert / ImageMagick (the SVG is kept beside it)
function M.write(path, report, opts)
  local svg = M.svg(report, opts)
  if not path:lower():match("%.png$") then
    fs.write_atomic(path, svg)
    return path
  end
  local svgpath = path:gsub("%.[Pp][Nn][Gg]$", ".svg")
  fs.write_atomic(svgpath, svg)
  local cmd
  if have("rsvg-convert") then cmd = "rsvg-convert -o " .. shq(path) .. " " .. shq(svgpath)
  elseif have("magick") then cmd = "magick " .. shq(svgpath) .. " " .. shq(path)
  elseif have("convert") then cmd = "convert " .. shq(svgpath) .. " " .. shq(path)
  else
    fail("%s: cannot make a PNG: neither rsvg-convert nor ImageMagick is installed (install librsvg2-bin or imagemagick), or ask for .svg; the SVG is at %s", path, svgpath)
  end
  if not run_ok(cmd .. " 2>/dev/null") then fail("%s: PNG conversion failed: %s", path, cmd) end
  return path
end

return M
