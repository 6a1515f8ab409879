-- glq tests/interop/export_hf.lua SRC OUTDIR: a dense Hugging Face directory (f32 safetensors, config.json,
-- tokenizer files) of a model glq reads, for the Python glq to quantize (interop part b).
local fs = require "glq.fs"
local json = require "glq.json"
local src, out = arg[1], arg[2]
local s = require("glq.model").open(src)
fs.mkdir_p(out)
local ts = {}
for _, name in ipairs(s.names) do
  local t = s:tensor(name)
  ts[name] = t:dtype() == "f32" and t or t:to("f32")
end
glq.save_safetensors(fs.join(out, "model.safetensors"), ts, { format = "pt" })
for f, data in pairs(require("glq.quantize").tokenizer_files(s)) do fs.write_atomic(fs.join(out, f), data) end
local cfg = {}
for k, v in pairs(s.hf_config) do cfg[k] = v end
cfg.torch_dtype = "float32"
fs.write_atomic(fs.join(out, "config.json"), json.encode(cfg, { indent = 2 }) .. "\n")
print(out)
