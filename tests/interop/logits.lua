-- glq tests/interop/logits.lua DIR IDS.json OUT.f32: all-position logits of a checkpoint (or any
-- model glq reads) for a token list, as raw little-endian f32 (T x vocab); "REFUSED: ..." on an error.
local json = require "glq.json"
local dir, ids_path, out = arg[1], arg[2], arg[3]
local ok, err = pcall(function()
  local m = require("glq.model").load(dir)
  local ids = json.read_file(ids_path)
  local lg = m.c:forward(require("glq.model").ids_tensor(ids), { all_logits = true })
  lg = lg:contiguous()
  glq.write_file(out, require("ffi").string(lg:ptr(), lg:numel() * 4))
end)
print(ok and "ok" or ("REFUSED: " .. tostring(err):gsub("\n", " ")))
