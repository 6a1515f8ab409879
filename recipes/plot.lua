-- glq plot REPORT.json -o alloc.svg: bits per layer x projection and SQNR per layer, as SVG (or PNG).
local cli = require "glq.cli"

local opts = cli.parse({
  prog = "glq plot",
  description = "Plot a quantization report (the --report JSON of glq quantize): a heatmap of bits per\n" ..
    "decoder layer and projection, and SQNR per layer. Writes SVG; a .png output is converted with\n" ..
    "rsvg-convert or ImageMagick when one is installed.",
  args = { { "report", help = "report JSON written by glq quantize" } },
  options = {
    { "output", short = "o", metavar = "FILE", help = "output .svg or .png (default: REPORT with .svg)" },
    { "title", help = "heading of the heatmap" },
  },
}, arg)
if not opts then return end

local report = require "glq.report"
local plot = require "glq.plot"

local out = opts.output or (opts.report:gsub("%.[Jj][Ss][Oo][Nn]$", "") .. ".svg")
local path = plot.write(out, report.read_json(opts.report), { title = opts.title })
print("wrote " .. path)
