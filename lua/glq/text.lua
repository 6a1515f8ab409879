-- glq.text: small formatting helpers shared by recipes and the REPL.
local M = {}

-- "natural" order: digit runs compare as numbers, so layers.2 < layers.10 (then plain order)
function M.natural_less(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then return tostring(a) < tostring(b) end
  local i, j = 1, 1
  while i <= #a and j <= #b do
    local da, db = a:match("^%d+", i), b:match("^%d+", j)
    if da and db then
      local na, nb = tonumber(da), tonumber(db)
      if na ~= nb then return na < nb end
      if #da ~= #db then return #da < #db end -- "01" before "1"... then by length
      i, j = i + #da, j + #db
    else
      local ca, cb = a:sub(i, i), b:sub(j, j)
      if ca ~= cb then return ca < cb end
      i, j = i + 1, j + 1
    end
  end
  return #a - i < #b - j
end

-- 1536 -> "1.5 KiB"
function M.human_bytes(bytes)
  local units, u = { "B", "KiB", "MiB", "GiB", "TiB" }, 1
  while bytes >= 1024 and u < #units do bytes, u = bytes / 1024, u + 1 end
  return u == 1 and ("%d B"):format(bytes) or ("%.1f %s"):format(bytes, units[u])
end

-- a quantized layer entry (glq.checkpoint) as "e8 2-bit", "e8p 3-bit", "trellis 2-bit", "hif4+rht"
function M.layer_label(e)
  local name = (e.codebook and e.codebook ~= "e8_shell") and e.codebook or e.format
  return tostring(name) .. (e.bits and (" " .. e.bits .. "-bit") or "") .. (e.sv and "+rht" or "")
end

return M
